"""How much a refiner helps: final latents of an H/P/R plan against a many-step reference solution, from the same
noise, with the trained refiner, with an untrained (zero) refiner, and with the R steps run as Heun steps; the
refiner's offset scale calibrated against the same kind of reference; and, step by step, how well it predicts the
teacher's velocity change at each noise level."""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch

DEFAULT_OFFSET_SCALES = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
DEFAULT_SIGMA_EDGES = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.45, 0.6, 1.0)


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
    from ..refiner import VelocityRefiner
    from ..reference import heun_pipeline, reference_solve, sample_latents

    call_kwargs = _without_steps(call_kwargs)
    reference = reference_solve(pipe, prompts, seeds, reference_steps, call_kwargs)
    if steps is not None:
        call_kwargs["num_inference_steps"] = steps
    turbo = heun_pipeline(pipe)  # given each refiner and plan in turn
    results = {"plan": plan, "reference": f"Heun, {reference_steps} steps"}
    zero = VelocityRefiner.from_config(refiner.config).to(device=pipe._execution_device)
    for name, candidate in (("trained_refiner", refiner), ("zero_refiner", zero)):
        turbo.load_refiner(candidate)
        turbo.set_plan(plan)
        results[f"error_{name}"] = relative_error(sample_latents(turbo, prompts, seeds, call_kwargs), reference)
    scale = refiner.config.offset_scale
    if scale != 1:  # a calibrated refiner: also its error with the offset applied as trained
        turbo.load_refiner(refiner)
        with _offset_scale(refiner, 1.0):
            latents = sample_latents(turbo, prompts, seeds, call_kwargs)
        results["error_trained_refiner_unscaled"] = relative_error(latents, reference)
    turbo.set_plan(plan.replace("R", "H"))
    results["error_heun_instead_of_R"] = relative_error(sample_latents(turbo, prompts, seeds, call_kwargs), reference)
    return results


@torch.no_grad()
def calibrate_offset_scale(
    pipe,
    refiner,
    plans: list[str],
    prompts: list,
    seeds: list[int],
    call_kwargs: dict | None = None,
    reference_steps: int = 100,
    scales: tuple[float, ...] = DEFAULT_OFFSET_SCALES,
    progress: bool = True,
) -> dict:
    """Set ``refiner``'s ``offset_scale`` to the one of ``scales`` whose ``plans`` come closest to a
    ``reference_steps`` Heun solve from the same noise and prompts, and return the figures.

    Closest means the lowest mean, over the plans, of the log relative error of the final latents (the highest mean
    PSNR). Trained on teacher velocities, a refiner is fed its own refined velocities in R steps, and its offsets can
    over-correct; a scale below 1 shrinks them (docs/refiner.md). Calibrate on prompts and seeds that are not used to
    evaluate the refiner afterwards. Returns ``{"offset_scale", "plans", "samples", "reference", "errors"}``, with
    ``errors[scale][plan]`` the relative errors.
    """
    from tqdm.auto import tqdm

    from ..reference import heun_pipeline, reference_solve, sample_latents

    plans = check_calibration_plans(plans)
    if not scales or any(not (0 <= scale <= 2) for scale in scales):
        raise ValueError(f"Offset scales must be a non-empty list of values in [0, 2], got {scales}.")
    if not prompts or len(prompts) != len(seeds):
        raise ValueError(f"Calibration needs one seed per prompt and at least one of each; got {len(prompts)} prompts "
                         f"and {len(seeds)} seeds.")
    call_kwargs = _without_steps(call_kwargs)
    reference = reference_solve(pipe, prompts, seeds, reference_steps, call_kwargs)
    turbo = heun_pipeline(pipe)
    turbo.load_refiner(refiner)
    errors = {}
    for scale in tqdm(scales, desc="Calibrating the refiner's offset scale", disable=not progress):
        with _offset_scale(refiner, float(scale)):
            errors[float(scale)] = {}
            for plan in plans:
                turbo.set_plan(plan)
                latents = sample_latents(turbo, prompts, seeds, call_kwargs)
                errors[float(scale)][plan] = relative_error(latents, reference)
    best = min(errors, key=lambda scale: sum(math.log(error) for error in errors[scale].values()))
    refiner.register_to_config(offset_scale=best)
    return {"offset_scale": best, "plans": plans, "samples": len(seeds), "reference": f"Heun, {reference_steps} steps",
            "errors": errors}


@torch.no_grad()
def offset_errors_by_sigma(
    pipe,
    refiner,
    prompts: list,
    seed: int = 0,
    call_kwargs: dict | None = None,
    dt_range: tuple[float, float] = (0.06, 0.12),
    sigma_edges: tuple[float, ...] = DEFAULT_SIGMA_EDGES,
    batch_size: int = 16,
    progress: bool = True,
) -> list[dict]:
    """How well ``refiner`` predicts the change of the teacher's velocity, by noise level.

    The pipeline samples ``prompts`` with its own scheduler (prompt ``i`` from seed ``seed + i``: use prompts and
    seeds the refiner was not trained on), and every recorded transformer call ``(x, sigma, v)`` becomes a pair as in
    training: a step of ``dt ~ U(dt_range)`` towards the data along ``v``, and the teacher's velocity there. The
    refiner's offset (as R steps apply it, ``offset_scale`` included) is compared with the teacher's, per bin of the
    moved sigma. Each row: ``sigma_min``, ``sigma_max``, ``pairs``, ``true_offset_rms``, ``relative_error``
    (``||offset - true|| / ||true||``: 0 is exact, 1 is no better than no offset) and ``best_scale``, the offset scale
    that would minimise this bin's error (``None`` for a refiner whose offsets are all zero). The default ``dt_range``
    brackets an R step on a 9- to 16-step grid.
    """
    from tqdm.auto import tqdm

    from ..adapters import adapter_for
    from ..routing import _place_like
    from .trajectories import (check_dt_range, group_calls, record_teacher_calls, stack_calls, step_towards_data,
                               timestep_convention)

    check_dt_range(dt_range)
    low, high = dt_range
    if list(sigma_edges) != sorted(set(sigma_edges)) or len(sigma_edges) < 2:
        raise ValueError(f"sigma_edges must be at least two increasing values, got {sigma_edges}.")
    denoiser = refiner.config.base_denoiser
    transformer = getattr(pipe, denoiser)
    calls = record_teacher_calls(pipe, prompts, call_kwargs, batch_size, seed, progress=progress, denoiser=denoiser)
    adapter = timestep_convention(adapter_for(transformer), calls)
    generator = torch.Generator().manual_seed(seed)
    edges = torch.tensor(sigma_edges, dtype=torch.float64)
    # Per bin: pairs, and the sums over pairs of the per-element means of true * true, (offset - true)^2,
    # offset * true and offset * offset.
    sums = torch.zeros(len(edges) - 1, 5, dtype=torch.float64)

    def mean_product(a, b):
        return (a * b).flatten(1).mean(1)

    chunks = [group[i : i + batch_size] for group in group_calls(calls) for i in range(0, len(group), batch_size)]
    for chunk in tqdm(chunks, desc="Refiner offsets against the teacher", disable=not progress):
        sample, velocity, sigma, arguments = stack_calls(chunk, pipe._execution_device, transformer.dtype, adapter)
        dt = low + (high - low) * torch.rand(len(chunk), generator=generator)
        moved, moved_sigma = step_towards_data(sample, adapter.output_sign * velocity, sigma, dt, adapter.channel_axis)
        call = adapter.read(transformer, (), adapter.with_sample(arguments, moved, moved_sigma), transformer.forward,
                            sigma=moved_sigma)
        truth = call.evaluate_base().double() - velocity.double()
        _place_like(refiner, velocity)
        offset = refiner.offset(call, velocity).double()
        error = offset - truth
        ones = torch.ones(len(chunk), dtype=torch.float64, device=truth.device)
        per_sample = torch.stack([ones, mean_product(truth, truth), mean_product(error, error),
                                  mean_product(offset, truth), mean_product(offset, offset)], 1)
        bins = torch.bucketize(moved_sigma.double().cpu(), edges, right=True) - 1
        inside = (bins >= 0) & (bins < len(sums))
        sums.index_add_(0, bins[inside], per_sample.cpu()[inside])
    rows = []
    for (lo, hi), (pairs, true, error, cross, predicted) in zip(zip(sigma_edges, sigma_edges[1:]), sums.tolist()):
        if pairs:
            rows.append({
                "sigma_min": lo, "sigma_max": hi, "pairs": int(pairs),
                "true_offset_rms": math.sqrt(true / pairs),
                "relative_error": math.sqrt(error / true) if true else float("nan"),
                "best_scale": refiner.config.offset_scale * cross / predicted if predicted else None,
            })
    return rows


def check_calibration_plans(plans) -> list[str]:
    """The plans as strings, or a ``ValueError`` for a plan that cannot calibrate the offset scale."""
    from ..plan import Plan

    if isinstance(plans, str) or not plans:
        raise ValueError(f"Give a list of one or more plans with R steps to calibrate on, such as ['H1P5R3'], got "
                         f"{plans!r}.")
    parsed = [Plan.parse(plan) for plan in plans]
    for plan in parsed:
        if plan.is_fill or not plan.has_refiner_steps:
            raise ValueError(f"Plan {plan} cannot calibrate the refiner's offset scale: use fixed plans with R steps, "
                             "such as H1P5R3 (no '*', and at least one R).")
    return [str(plan) for plan in parsed]


@contextmanager
def _offset_scale(refiner, scale: float):
    """Within the block, ``refiner`` scales its offsets by ``scale``; its own scale is put back on exit."""
    previous = refiner.config.offset_scale
    refiner.register_to_config(offset_scale=scale)
    try:
        yield
    finally:
        refiner.register_to_config(offset_scale=previous)


def _without_steps(call_kwargs: dict | None) -> dict:
    return {k: v for k, v in (call_kwargs or {}).items() if k != "num_inference_steps"}
