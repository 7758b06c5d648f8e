"""Compile a FlowTurbo pipeline for its plan, warm it up, and compare it with the eager pipeline on the same noise.

Uses the bundled model and its refiner (offline). On a GPU, pass ``--device cuda --mode reduce-overhead`` for CUDA
graphs. Timings here are a quick look; the benchmark (`flowturbo bench --compile`) measures them properly.

    python examples/compiled_pipeline.py --batch-size 8
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from flowturbo_diffusers import FlowTurboPipeline
from flowturbo_diffusers.bundled import BUNDLED_CALL_DEFAULTS, bundled_model_path


def seconds_per_image(pipes: dict, prompts, call_kwargs, repeats: int) -> dict:
    """Median time per image of each pipeline, timed in alternating rounds so that a machine whose speed drifts slows
    both alike (the ratio is what this example reports)."""
    times = {name: [] for name in pipes}
    for _ in range(repeats):
        for name, pipe in pipes.items():
            start = time.perf_counter()
            pipe(prompts, generator=torch.Generator().manual_seed(0), **call_kwargs)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) / len(prompts) for name, values in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--mode", default=None, help="torch.compile mode, e.g. reduce-overhead (CUDA graphs)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    call_kwargs = dict(BUNDLED_CALL_DEFAULTS, output_type="latent")
    call_kwargs.pop("num_inference_steps")  # the plan fixes the steps
    prompts = ["a red 7 on a blue background"] * args.batch_size
    eager = FlowTurboPipeline.from_pretrained(bundled_model_path()).to(args.device)
    compiled = FlowTurboPipeline.from_pretrained(bundled_model_path(), compile={"mode": args.mode}).to(args.device)
    for pipe in (eager, compiled):
        pipe.set_progress_bar_config(disable=True)

    height, width = call_kwargs["height"], call_kwargs["width"]
    warmup = compiled.flowturbo_warmup(args.batch_size, height, width,
                                       max_sequence_length=call_kwargs["max_sequence_length"])
    print(f"plan {compiled.plan}: compiled for batch {args.batch_size} at {height}x{width} in {warmup['seconds']:.1f} s")

    a = eager(prompts, generator=torch.Generator().manual_seed(0), **call_kwargs).images
    b = compiled(prompts, generator=torch.Generator().manual_seed(0), **call_kwargs).images
    print(f"largest difference of the final latents, compiled vs eager: {(a - b).abs().max().item():.2e}")

    times = seconds_per_image({"eager": eager, "compiled": compiled}, prompts, call_kwargs, args.repeats)
    t_eager, t_compiled = times["eager"], times["compiled"]
    print(f"time per image: eager {1000 * t_eager:.1f} ms, compiled {1000 * t_compiled:.1f} ms "
          f"({t_eager / t_compiled:.2f}x)")


if __name__ == "__main__":
    main()
