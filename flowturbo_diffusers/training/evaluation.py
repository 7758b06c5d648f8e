"""How much a refiner helps: final latents of an H/P/R plan against a many-step reference solution, from the same
noise, with the trained refiner, with an untrained (zero) refiner, and with the R steps run as Heun steps."""

from __future__ import annotations

import torch


def _latents(pipe, prompts, seeds, steps, call_kwargs):
    generators = [torch.Generator(pipe._execution_device).manual_seed(seed) for seed in seeds]
    key = "class_labels" if isinstance(prompts[0], int) else "prompt"
    kwargs = {key: list(prompts), "generator": generators, "output_type": "latent", **call_kwargs}
    if steps is not None:
        kwargs["num_inference_steps"] = steps
    return pipe(**kwargs).images.float()


def relative_error(latents: torch.Tensor, reference: torch.Tensor) -> float:
    """``||latents - reference|| / ||reference||`` over the whole batch."""
    return ((latents - reference).norm() / reference.norm()).item()


@torch.no_grad()
def refiner_errors(
    pipe,
    refiner,
    plan: str,
    prompts: list,
    seeds: list[int],
    call_kwargs: dict | None = None,
    reference_steps: int = 100,
    steps: int | None = None,
) -> dict[str, float | str]:
    """Relative errors of ``plan`` against a ``reference_steps`` Heun solve: with ``refiner``, with a zero refiner,
    and with R replaced by H (what a perfect refiner would give at that step count). ``steps`` is needed for fill
    plans such as ``H1P*R3``."""
    from ..pipeline import FlowTurboPipeline
    from ..refiner import VelocityRefiner

    call_kwargs = {k: v for k, v in (call_kwargs or {}).items() if k != "num_inference_steps"}
    turbo = FlowTurboPipeline.from_pipe(pipe, refiner=False, plan="H*")
    turbo.set_progress_bar_config(disable=True)
    reference = _latents(turbo, prompts, seeds, reference_steps, call_kwargs)
    results = {"plan": plan, "reference": f"Heun, {reference_steps} steps"}
    zero = VelocityRefiner.from_config(refiner.config).to(device=pipe._execution_device)
    for name, candidate in (("trained_refiner", refiner), ("zero_refiner", zero)):
        turbo.load_refiner(candidate)
        turbo.set_plan(plan)
        results[f"error_{name}"] = relative_error(_latents(turbo, prompts, seeds, steps, call_kwargs), reference)
    turbo.set_plan(plan.replace("R", "H"))
    results["error_heun_instead_of_R"] = relative_error(_latents(turbo, prompts, seeds, steps, call_kwargs), reference)
    return results
