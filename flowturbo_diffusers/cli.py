"""The ``flowturbo`` command: ``generate`` (the main job), more subcommands as they land."""

from __future__ import annotations

import argparse
import sys


def _dtype(name: str):
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def add_generate_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="generate a grid with FlowTurbo and with the pipeline's own scheduler, and compare their cost",
        description="Generate images for a few prompts with FlowTurbo and with the pipeline's default scheduler, "
        "print time per image and model evaluations side by side, and write the images as a PNG grid. Runs "
        "offline on the bundled model by default.",
    )
    parser.add_argument("--model", help="diffusers pipeline: local folder or Hub id (default: the bundled model)")
    parser.add_argument("--refiner", help="refiner folder or Hub id; 'none' for none (default: the model's refiner/)")
    parser.add_argument("--plan", help="FlowTurbo plan, e.g. H1P5R3 or H1P* (default: the refiner's recommended plan)")
    parser.add_argument("--steps", type=int, help="FlowTurbo steps for a fill plan such as H1P* (default: 10)")
    parser.add_argument("--baseline-steps", type=int, help="steps for the pipeline's own scheduler")
    parser.add_argument("--prompt", action="append", dest="prompts", help="a prompt (repeat for several)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--guidance-scale", type=float)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--output", default="flowturbo_grid.png", help="PNG to write (default: flowturbo_grid.png)")
    parser.set_defaults(run=run_generate)


def run_generate(args) -> int:
    from .generate import DEFAULT_PROMPTS, compare, report, save_grid

    call_kwargs = {"guidance_scale": args.guidance_scale} if args.guidance_scale is not None else {}
    prompts = args.prompts or DEFAULT_PROMPTS
    runs = compare(
        model=args.model,
        refiner=args.refiner,
        plan=args.plan,
        steps=args.steps,
        baseline_steps=args.baseline_steps,
        prompts=prompts,
        seed=args.seed,
        device=args.device,
        dtype=_dtype(args.dtype),
        call_kwargs=call_kwargs,
    )
    print(report(runs))
    print(f"Wrote {save_grid(runs, prompts, args.output)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flowturbo", description="FlowTurbo sampling for diffusers flow pipelines.")
    subparsers = parser.add_subparsers(title="commands")
    add_generate_parser(subparsers)
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 1
    _quiet_libraries()
    return args.run(args)


def _quiet_libraries() -> None:
    """Keep the command's output to its own report: diffusers and transformers log per-call notices otherwise."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()


if __name__ == "__main__":
    sys.exit(main())
