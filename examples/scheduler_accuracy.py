"""How close do Euler, Heun and FlowTurbo's H/P plans get to the exact ODE solution, at equal cost?

Runs one pipeline (the bundled model by default, offline) from the same noise and prompt with each sampler, at several
budgets of base-model evaluations, and prints the RMSE of the final latents against a many-step Heun reference
solution. "at sigma 0" is FlowTurbo H1P* with ``evaluate_at_zero=True``: the last step evaluates the model at sigma 0
instead of ending with an Euler step (docs/scheduler.md, "The last step").

    python examples/scheduler_accuracy.py --budgets 5 9 17
"""

from __future__ import annotations

import argparse
import copy

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FlowMatchHeunDiscreteScheduler
from transformers.utils import logging as transformers_logging

from flowturbo_diffusers import FlowTurboScheduler, Plan
from flowturbo_diffusers.hooks import count_calls


def load_pipeline(model: str | None):
    if model:
        from diffusers import DiffusionPipeline

        return DiffusionPipeline.from_pretrained(model), {}
    from flowturbo_diffusers.generate import load_default_model

    return load_default_model()


def steps_for_budget(plan: str, budget: int, evaluate_at_zero: bool = False) -> int | None:
    """The most steps of ``plan`` whose base-model evaluations fit ``budget`` (``None`` if none do)."""
    parsed = Plan.parse(plan)
    fitting = [n for n in range(max(parsed.fixed_steps, 1), budget + 2)
               if parsed.count_evaluations(n, evaluate_at_zero)["base"] <= budget]
    return max(fitting) if fitting else None


def samplers_for_budget(budget: int):
    """(name, scheduler class, scheduler kwargs, num_inference_steps) whose base-model evaluations fit ``budget``."""
    candidates = [
        ("Euler", FlowMatchEulerDiscreteScheduler, {}, budget),
        ("Heun (diffusers)", FlowMatchHeunDiscreteScheduler, {}, (budget + 1) // 2),
        ("FlowTurbo H*", FlowTurboScheduler, {"plan": "H*"}, steps_for_budget("H*", budget)),
        ("FlowTurbo H1P*", FlowTurboScheduler, {"plan": "H1P*"}, steps_for_budget("H1P*", budget)),
        ("  at sigma 0", FlowTurboScheduler, {"plan": "H1P*", "evaluate_at_zero": True},
         steps_for_budget("H1P*", budget, evaluate_at_zero=True)),
        ("FlowTurbo H2P*", FlowTurboScheduler, {"plan": "H2P*"}, steps_for_budget("H2P*", budget)),
    ]
    return [c for c in candidates if c[3]]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="pipeline path or Hub id (default: the bundled model)")
    parser.add_argument("--prompt", default="a red 7 on a blue background")
    parser.add_argument("--budgets", type=int, nargs="+", default=[5, 9, 17])
    parser.add_argument("--reference-steps", type=int, default=200)
    parser.add_argument("--seeds", type=int, default=4)
    args = parser.parse_args()
    transformers_logging.set_verbosity_error()

    pipe, call_kwargs = load_pipeline(args.model)
    pipe.set_progress_bar_config(disable=True)
    own_config = copy.deepcopy(pipe.scheduler.config)

    def run(scheduler, steps):
        pipe.scheduler = scheduler
        generators = [torch.Generator().manual_seed(seed) for seed in range(args.seeds)]
        with count_calls(pipe.transformer) as calls:
            latents = pipe(
                [args.prompt] * args.seeds, num_inference_steps=steps, generator=generators, output_type="latent",
                **call_kwargs,
            ).images
        return latents.float(), calls.count

    reference, _ = run(FlowMatchHeunDiscreteScheduler.from_config(own_config), args.reference_steps)
    check, _ = run(FlowMatchHeunDiscreteScheduler.from_config(own_config), args.reference_steps // 2)
    scale = reference.pow(2).mean().sqrt().item()
    print(f"reference: Heun, {args.reference_steps} steps; its own error vs half as many steps: "
          f"{(check - reference).pow(2).mean().sqrt().item() / scale:.2e} (relative RMSE)\n")
    print(f"{'budget':>6}  {'sampler':<18} {'steps':>5} {'evals':>5}  relative RMSE")
    for budget in args.budgets:
        for name, scheduler_class, kwargs, steps in samplers_for_budget(budget):
            latents, evaluations = run(scheduler_class.from_config(own_config, **kwargs), steps)
            error = (latents - reference).pow(2).mean().sqrt().item() / scale
            print(f"{budget:>6}  {name:<18} {steps:>5} {evaluations:>5}  {error:.2e}")
        print()


if __name__ == "__main__":
    main()
