"""Calibrated plans on the bundled model: fidelity at 4, 6 and 8 base evaluations, against uncalibrated plans and an
OSS-style Euler grid, on held-out prompts and seeds and at a resolution it was not calibrated at.

It runs ``flowturbo_diffusers.calibration.calibrate_plans`` twice, each time for all the budgets at once (one teacher
solve and one dynamic program shared by the budgets): with H, P and E steps (FlowTurbo's plan family), and with E steps
only (an Euler grid found by the same dynamic program, as OSS does for Euler; Pei et al.,
arXiv 2503.21774). It prints latent PSNR against a many-step Heun solve on the calibration samples, on held-out ones,
and on held-out samples at 48x48 (the model was calibrated at 32x32), next to the best uncalibrated FlowTurbo plan of
the same cost on the pipeline's own grid, and the wall time of each calibration (docs/calibration.md).

    python examples/calibrate_plans.py --budgets 4 6 8
"""

from __future__ import annotations

import argparse

import torch
from transformers.utils import logging as transformers_logging

from flowturbo_diffusers import FlowTurboScheduler
from flowturbo_diffusers.bundled import BUNDLED_CALL_DEFAULTS, digits, load_bundled_pipeline
from flowturbo_diffusers.calibration import CalibrationSettings, _compare_uncalibrated, _Sampler, calibrate_plans, latent_psnr


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budgets", type=int, nargs="+", default=[4, 6, 8])
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--held-out-samples", type=int, default=16)
    parser.add_argument("--other-size", type=int, default=48, help="height and width of the resolution check")
    args = parser.parse_args(argv)
    transformers_logging.set_verbosity_error()

    pipe = load_bundled_pipeline()
    pipe.set_progress_bar_config(disable=True)
    call = {k: v for k, v in BUNDLED_CALL_DEFAULTS.items() if k != "num_inference_steps"}
    prompts = digits.all_prompts()[::7]
    held = digits.render_batch(args.held_out_samples, seed=77).prompts
    seeds = [10_000 + i for i in range(args.held_out_samples)]
    other = {**call, "height": args.other_size, "width": args.other_size}
    other_sampler = _Sampler(pipe, held, seeds, other)
    own = dict(pipe.scheduler.config)
    other_reference = other_sampler.solve(FlowTurboScheduler.from_config(own, plan="H*"), 96)

    rows = []
    for kinds in ("HPE", "E"):
        settings = CalibrationSettings(kinds=kinds, samples=args.samples, held_out_samples=args.held_out_samples)
        results = calibrate_plans(pipe, prompts, args.budgets, settings, call, held_out_prompts=held, progress=False)
        for budget, result in sorted(results.items()):
            figures = result.figures
            scheduler = FlowTurboScheduler.from_config(own, plan=result.plan, calibrated_grid=result.grid)
            at_other_size = latent_psnr(other_sampler.solve(scheduler, len(result.grid) - 1), other_reference)
            baseline = _compare_uncalibrated(other_sampler, other_reference, own, budget, prefix="other")
            rows.append((budget, "FlowTurbo (H, P, E)" if kinds == "HPE" else "Euler grid (OSS-style)", result.plan,
                         figures, at_other_size, baseline["other_best_uncalibrated_psnr_db"]))
            print(f"budget {budget}, {kinds}: {result.plan} {[round(t, 3) for t in result.grid]}, "
                  f"{figures['model_evaluations']} evaluations, {figures['seconds']:.0f} s "
                  f"({figures['shared_seconds']:.0f} s shared by the budgets)", flush=True)
    rows.sort(key=lambda row: row[0])

    print("\n| budget | search | plan | calibration samples | held-out samples | best uncalibrated (held-out) | "
          f"held-out at {args.other_size}x{args.other_size} | best uncalibrated there | evaluations | calibration time |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for budget, search, plan, f, other_psnr, other_base in rows:
        print(f"| {budget} | {search} | `{plan}` | {f['calibration_psnr_db']:.2f} dB | {f['held_out_psnr_db']:.2f} dB "
              f"| {f['held_out_best_uncalibrated_psnr_db']:.2f} dB ({f['held_out_best_uncalibrated']}) "
              f"| {other_psnr:.2f} dB | {other_base:.2f} dB | {f['model_evaluations']:,} | {f['seconds']:.0f} s |")


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
