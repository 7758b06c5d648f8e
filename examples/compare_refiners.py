"""Compare refiners for the bundled model by the fidelity of FlowTurbo plans with refiner steps.

For each refiner folder, every plan samples the benchmark's prompts and noise seeds, and its final latents are
compared with a many-step Heun solve from the same noise (latent PSNR, as in ``flowturbo bench``). With ``--oracle``
it also runs the plans with the R steps as Heun steps on the base model: what a perfect refiner would give. With
``--offset-scales`` each refiner also runs with its offsets scaled by each value given, in place of its own
``offset_scale`` (docs/refiner.md, "Offset scale").

    python examples/compare_refiners.py flowturbo_diffusers/bundled/model/refiner my-refiner/refiner --oracle
    python examples/compare_refiners.py flowturbo_diffusers/bundled/model/refiner --offset-scales 1 0.5 --oracle
"""

from __future__ import annotations

import argparse

from flowturbo_diffusers.benchmark.metrics import psnr
from flowturbo_diffusers.benchmark.run import Benchmark, BenchmarkSettings
from flowturbo_diffusers.benchmark.samplers import flowturbo_spec

PLANS = ["H1P1R2", "H1P1R4", "H1P2R3", "H1P2R4", "H1P3R4", "H1P5R3", "H1P7R3", "H1P9R3", "H1P9R4", "H1P11R4"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("refiners", nargs="+", help="refiner folders (VelocityRefiner.save_pretrained output)")
    parser.add_argument("--plans", nargs="+", default=PLANS)
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--reference-steps", type=int, default=64)
    parser.add_argument("--oracle", action="store_true", help="also run each plan with its R steps as Heun steps")
    parser.add_argument("--offset-scales", type=float, nargs="+", default=[], metavar="SCALE",
                        help="also run each refiner with its offsets scaled by each of these")
    args = parser.parse_args(argv)

    bench = Benchmark(BenchmarkSettings(quality_samples=args.samples, reference_steps=args.reference_steps),
                      progress=False)
    reference = bench.reference()
    print(f"reference: {reference['description']}, within {reference['psnr_of_half_steps_solution_db']:.1f} dB of "
          "the solve with half as many steps")
    specs = [flowturbo_spec(plan, has_refiner=True) for plan in args.plans]

    def fidelity(latents) -> float:
        return float(psnr(latents, reference["latents"]).mean())

    def with_refiner(spec) -> float:
        with bench.switch.use(spec) as (pipe, call_kwargs):
            return fidelity(bench.samples.generate_all(pipe, call_kwargs))

    rows = {}
    if args.oracle:
        rows["R steps as Heun steps (oracle)"] = {s.plan: fidelity(bench.perfect_refiner_latents(s)) for s in specs}
    for folder in args.refiners:
        refiner = bench.switch.turbo.load_refiner(folder)
        own = refiner.config.offset_scale
        rows[f"{folder} (its offset scale, {own:g})"] = {spec.plan: with_refiner(spec) for spec in specs}
        for scale in args.offset_scales:
            refiner.register_to_config(offset_scale=scale)
            rows[f"{folder}, offset scale {scale:g}"] = {spec.plan: with_refiner(spec) for spec in specs}
        refiner.register_to_config(offset_scale=own)
    print("\nlatent PSNR (dB) against the reference, per plan:\n")
    print("| refiner | " + " | ".join(spec.plan for spec in specs) + " |")
    print("|---|" + "---|" * len(specs))
    for name, row in rows.items():
        print(f"| {name} | " + " | ".join(f"{row[spec.plan]:.2f}" for spec in specs) + " |")


if __name__ == "__main__":
    main()
