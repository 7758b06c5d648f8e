"""``flowturbo generate``: images from FlowTurbo and from the pipeline's own scheduler, side by side, with timings.

The default model is the bundled one, so the command runs offline on any CPU in seconds. Both samplers share every
module; each runs once to warm up, then all prompts are generated in one timed call per sampler.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

DEFAULT_PROMPTS = [
    "a red 7 on a blue background",
    "a yellow 2 on a black background",
    "a white 5 on a green background",
    "a blue 0 on an orange background",
]


@dataclass
class SamplerRun:
    """The outcome of one sampler on all prompts."""

    name: str
    steps: int
    base_evaluations: int
    refiner_evaluations: int
    seconds_per_image: float
    images: list


def load_default_model(dtype: torch.dtype = torch.float32):
    """The bundled pipeline and its recommended call arguments (a clear error if the bundled folder is missing)."""
    from .bundled import BUNDLED_CALL_DEFAULTS, load_bundled_pipeline

    return load_bundled_pipeline(torch_dtype=dtype), dict(BUNDLED_CALL_DEFAULTS)


def compare(
    model: str | None = None,
    refiner: str | None = None,
    plan: str | None = None,
    steps: int | None = None,
    baseline_steps: int | None = None,
    prompts: list[str] | None = None,
    seed: int = 0,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    call_kwargs: dict | None = None,
    progress: bool = True,
    compile_mode: str | None | bool = False,
) -> list[SamplerRun]:
    """Generate ``prompts`` with the pipeline's own scheduler and with FlowTurbo; return both runs.

    ``compile_mode`` (``None`` for torch's default mode, or e.g. ``"reduce-overhead"``; ``False`` for eager) compiles
    FlowTurbo's graphs; the transformer is shared, so the baseline then runs it compiled too. The baseline's
    evaluations are its transformer calls, counted during its timed call by a hook that is removed afterwards.
    """
    from tqdm.auto import tqdm

    from .hooks import count_calls
    from .pipeline import FlowTurboPipeline

    if model is None:
        base, defaults = load_default_model(dtype)
    else:
        from diffusers import DiffusionPipeline

        base, defaults = DiffusionPipeline.from_pretrained(model, torch_dtype=dtype), {}
    base.to(device)
    defaults.update(call_kwargs or {})
    turbo = FlowTurboPipeline.from_pipe(base, refiner=refiner if refiner != "none" else False, plan=plan)
    for pipe in (base, turbo):
        pipe.set_progress_bar_config(disable=True)
    if compile_mode is not False:
        turbo.enable_flowturbo_compile(mode=compile_mode)
    prompts = prompts or DEFAULT_PROMPTS
    baseline_steps = baseline_steps or defaults.pop("num_inference_steps", None) or 28
    defaults.pop("num_inference_steps", None)
    turbo_steps = steps or turbo.plan.num_steps or 10

    def generate(pipe, n_steps, batch):
        generator = [torch.Generator(device).manual_seed(seed + i) for i in range(len(batch))]
        return pipe(batch, num_inference_steps=n_steps, generator=generator, **defaults).images

    runs = []
    jobs = [
        (f"{type(base.scheduler).__name__}, {baseline_steps} steps", base, baseline_steps, "pipeline default"),
        (f"FlowTurbo {turbo.plan}" + (" compiled" if compile_mode is not False else ""), turbo, turbo_steps,
         "flowturbo"),
    ]
    for name, pipe, n_steps, _ in tqdm(jobs, desc="Sampling", disable=not progress):
        generate(pipe, n_steps, prompts)  # warm-up (and compilation) at the timed shapes
        with count_calls(base.transformer) as counter:
            start = time.perf_counter()
            images = generate(pipe, n_steps, prompts)
            seconds = (time.perf_counter() - start) / len(prompts)
        if pipe is turbo:
            counts = turbo.last_evaluation_counts
            base_calls, refiner_calls = counts["base"], counts["refiner"]
        else:
            base_calls, refiner_calls = counter.count, 0
        runs.append(SamplerRun(name, n_steps, base_calls, refiner_calls, seconds, images))
    return runs


def report(runs: list[SamplerRun]) -> str:
    """A plain-text table of the runs, with FlowTurbo's speed-up over the first one."""
    lines = [f"{'sampler':<44} {'steps':>5} {'base evals':>10} {'refiner evals':>13} {'time/image':>11}"]
    for run in runs:
        lines.append(
            f"{run.name:<44} {run.steps:>5} {run.base_evaluations:>10} {run.refiner_evaluations:>13} "
            f"{1000 * run.seconds_per_image:>8.1f} ms"
        )
    if len(runs) > 1 and runs[-1].seconds_per_image > 0:
        lines.append(f"FlowTurbo: {runs[0].seconds_per_image / runs[-1].seconds_per_image:.2f}x faster per image")
    return "\n".join(lines)


def save_grid(runs: list[SamplerRun], prompts: list[str], path: str | Path) -> Path:
    """Write the images as a grid: one row per sampler, one column per prompt."""
    from .images import image_grid

    width = runs[0].images[0].size[0]
    grid = image_grid(
        [run.images for run in runs],
        row_labels=[run.name.split(",")[0] for run in runs],
        column_labels=prompts,
        scale=max(1, 128 // width),
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    return path
