"""What the step onto sigma 0 costs: FlowTurbo plans with and without a model evaluation at sigma 0.

By default FlowTurboScheduler ends the last step with an Euler step from its start velocity, as diffusers'
FlowMatchHeunDiscreteScheduler does, so that no pipeline sees sigma 0 (LTX2 divides by it); ``evaluate_at_zero=True``
makes the full H, P or R step there instead, with one more evaluation. This runs both on the bundled model (offline),
from the same prompts and noise, and prints each plan's latent PSNR against a many-step Heun solve, with its model
calls, at the same step count and at the same number of base-model evaluations (docs/scheduler.md, "The last step").

    python examples/last_step.py --samples 32
    python examples/last_step.py --samples 32 --grid UniPCMultistepScheduler   # Wan's grid: a larger last interval

``--grid`` puts the bundled model on another diffusers flow grid: Euler's (the model's own) ends with a last interval
of about 0.003 sigma, the flow grids of DPM-Solver and UniPC (Sana, Wan) with one of about 3/N, so the step onto sigma
0 matters more there.
"""

from __future__ import annotations

import argparse

import torch
from transformers.utils import logging as transformers_logging

from flowturbo_diffusers import FlowTurboPipeline, Plan
from flowturbo_diffusers.benchmark.metrics import psnr
from flowturbo_diffusers.bundled import BUNDLED_CALL_DEFAULTS, bundled_model_path, load_bundled_pipeline
from flowturbo_diffusers.bundled import digits

HP_PLANS = [("H1P*", 6), ("H1P*", 8), ("H1P*", 12), ("H*", 4), ("H*", 6)]
R_PLANS = ["H1P2R2", "H1P5R3", "H1P9R3"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--reference-steps", type=int, default=128)
    parser.add_argument("--grid", default="FlowMatchEulerDiscreteScheduler",
                        choices=["FlowMatchEulerDiscreteScheduler", "DPMSolverMultistepScheduler",
                                 "UniPCMultistepScheduler"], help="the diffusers scheduler whose grid is used")
    args = parser.parse_args(argv)
    transformers_logging.set_verbosity_error()

    call = {k: v for k, v in BUNDLED_CALL_DEFAULTS.items() if k != "num_inference_steps"}
    prompts = digits.render_batch(args.samples, seed=10_000).prompts
    base = load_bundled_pipeline()
    pipe = FlowTurboPipeline.from_pipe(base, refiner=bundled_model_path() / "refiner", plan="H1P*")
    pipe.scheduler.register_to_config(sigma_schedule=args.grid)
    pipe.set_progress_bar_config(disable=True)

    def run(plan: str, steps: int | None, evaluate_at_zero: bool) -> tuple[torch.Tensor, dict]:
        pipe.set_plan(plan)
        pipe.scheduler.register_to_config(evaluate_at_zero=evaluate_at_zero)
        generators = [torch.Generator().manual_seed(i) for i in range(args.samples)]
        kwargs = {"num_inference_steps": steps} if steps else {}
        latents = pipe(prompts, generator=generators, output_type="latent", **call, **kwargs).images.float()
        return latents, dict(pipe.last_evaluation_counts)

    reference, _ = run("H*", args.reference_steps, False)
    print(f"reference: H*, {args.reference_steps} steps; {args.samples} samples of the bundled model on "
          f"{args.grid}'s grid (shift {pipe.scheduler.config.shift:g})\n")
    print("| plan | steps | last step | base calls | refiner calls | latent PSNR (dB) |")
    print("|---|---|---|---|---|---|")
    rows = [(plan, steps) for plan, steps in HP_PLANS] + [(plan, Plan.parse(plan).num_steps) for plan in R_PLANS]
    for plan, steps in rows:
        for evaluate_at_zero in (False, True):
            latents, counts = run(plan, steps, evaluate_at_zero)
            last = "evaluated at sigma 0" if evaluate_at_zero else "Euler (default)"
            print(f"| {plan} | {steps} | {last} | {counts['base']} | {counts['refiner']} | "
                  f"{float(psnr(latents, reference).mean()):.2f} |")
    pipe.scheduler.register_to_config(evaluate_at_zero=False)


if __name__ == "__main__":
    main()
