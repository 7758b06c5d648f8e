"""How much a refiner helps: final latents of an H/P/R plan against a many-step reference solution, from the same
noise, with the trained refiner, with an untrained (zero) refiner, and with the R steps run as Heun steps; the
refiner's offset scale calibrated against the same kind of reference; and, step by step, how well it predicts the
teacher's velocity change at each noise level; and which plans to recommend for the model, chosen by measurement."""

from __future__ import annotations

import itertools
import math
import statistics
import time
from contextlib import contextmanager

import torch

DEFAULT_OFFSET_SCALES = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
DEFAULT_SIGMA_EDGES = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.45, 0.6, 1.0)
# The plans recommend_plans measures: R plans from short to long, and the training-free H1P plans whose costs span
# theirs (so that every R plan is compared with H/P plans of the same cost).
DEFAULT_REFINER_PLANS = ("H1P2R2", "H1P3R3", "H1P5R3", "H1P7R3", "H1P9R4")
DEFAULT_TRAINING_FREE_PLANS = tuple(f"H1P{n}" for n in range(1, 15))
# Recommended when no R plan beats the training-free plans of its cost: the H/P plan of the paper's 6-step budget
# and its any-step-count form.
TRAINING_FREE_RECOMMENDATION = ("H1P5", "H1P*")


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
    from ..reference import heun_pipeline, reference_solve, sample_latents

    call_kwargs = _without_steps(call_kwargs)
    reference = reference_solve(pipe, prompts, seeds, reference_steps, call_kwargs)
    if steps is not None:
        call_kwargs["num_inference_steps"] = steps
    turbo = heun_pipeline(pipe)  # given each refiner and plan in turn
    results = {"plan": plan, "reference": f"Heun, {reference_steps} steps"}
    zero = untrained_like(refiner, pipe._execution_device)
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


def untrained_like(refiner, device=None):
    """A refiner of ``refiner``'s config, untrained: its output layer is zero-initialised, so its R steps reuse the
    last velocity unchanged (the baseline that shows what training added)."""
    from ..refiner import VelocityRefiner

    return VelocityRefiner.from_config(refiner.config).to(device=device)


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
    from .trajectories import (
        check_dt_range,
        group_calls,
        record_teacher_calls,
        stack_calls,
        step_towards_data,
        timestep_convention,
    )

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


@torch.no_grad()
def refiner_call_cost(pipe, refiner, plan: str, prompts: list, seeds: list[int], call_kwargs: dict | None = None,
                      repeats: int = 3) -> float:
    """The measured cost of one R evaluation as a fraction of one base-model evaluation, on this machine.

    Runs ``plan`` (a fixed plan with R steps) ``repeats + 1`` times on ``prompts`` / ``seeds`` with ``refiner`` loaded
    and times every call of the pipeline's base denoiser (the refiner's ``base_denoiser``); the first run is discarded
    (warm-up, placement). A call the refiner answers costs the routing hook and the refiner; one it does not, the base
    model. Returns the median time of the first over the median of the second; CUDA is synchronised around each call.
    Raises ``ValueError`` for a fill plan or a plan without R steps.
    """
    from ..plan import Plan
    from ..reference import heun_pipeline, sample_latents

    parsed = Plan.parse(plan)
    if parsed.is_fill or not parsed.has_refiner_steps:
        raise ValueError(f"Timing the refiner needs a fixed plan with R steps, such as H1P5R3; got {plan!r}.")
    turbo = heun_pipeline(pipe)
    turbo.load_refiner(refiner)
    turbo.set_plan(plan)
    module = getattr(turbo, refiner.config.base_denoiser)
    device = pipe._execution_device
    times: dict[str, list[float]] = {"base": [], "refiner": []}
    started: dict[str, float] = {}

    def synchronize():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def before(*_):
        synchronize()
        started["refiner_count"] = turbo.scheduler.run.counts["refiner"]
        started["time"] = time.perf_counter()

    def after(*_):
        synchronize()
        kind = "refiner" if turbo.scheduler.run.counts["refiner"] > started["refiner_count"] else "base"
        times[kind].append(time.perf_counter() - started["time"])

    handles = [module.register_forward_pre_hook(before), module.register_forward_hook(after)]
    try:
        for run in range(repeats + 1):
            if run == 1:  # the first run warmed up
                times = {"base": [], "refiner": []}
            sample_latents(turbo, prompts, seeds, _without_steps(call_kwargs))
    finally:
        for handle in handles:
            handle.remove()
    if not times["refiner"] or not times["base"]:
        raise RuntimeError(f"Plan {plan} made no {'refiner' if not times['refiner'] else 'base-model'} call through "
                           f"{refiner.config.base_denoiser!r}, so the refiner's cost cannot be timed: give a plan with "
                           "both kinds of steps, and a refiner whose base_denoiser is the one the R steps reach.")
    return statistics.median(times["refiner"]) / statistics.median(times["base"])


@torch.no_grad()
def recommend_plans(
    pipe,
    refiner,
    prompts: list,
    seeds: list[int],
    call_kwargs: dict | None = None,
    reference_steps: int = 100,
    refiner_plans: tuple[str, ...] = DEFAULT_REFINER_PLANS,
    training_free_plans: tuple[str, ...] = DEFAULT_TRAINING_FREE_PLANS,
    refiner_cost: float | None = None,
    top: int = 3,
    progress: bool = True,
) -> dict:
    """Measure R plans against training-free H/P plans of the same cost on this model, and recommend plans by it.

    Every plan runs on ``prompts`` / ``seeds`` (one seed per prompt; use ones the refiner was not calibrated on) and
    is scored by the mean latent PSNR of its final latents against a ``reference_steps`` Heun solve from the same
    noise. A plan's cost is in base-model evaluations: its base evaluations plus its refiner evaluations times
    ``refiner_cost``, the refiner's cost as a fraction of a base evaluation (measured with :func:`refiner_call_cost`
    on the first R plan at batch 1 when ``None``: the dearest case for the refiner, whose share falls with batch size). Guidance multiplies both counts alike, so it does not change the comparison.

    An R plan's gain is its PSNR less the training-free plans' PSNR at its cost (linear between the training-free
    plans around it; no gain outside their range). The recommended plans are the R plans with a positive gain, best
    first (at most ``top``); if none has one, the refiner does not pay on this model and the recommendation is
    :data:`TRAINING_FREE_RECOMMENDATION` (the model card says so). Fill plans such as ``H1P*`` are not measured.

    Returns ``{"recommended_plans", "refiner_pays", "refiner_cost", "samples", "reference", "plans"}``, where
    ``plans`` has one row per plan: ``plan``, ``base_evaluations``, ``refiner_evaluations``, ``cost``, ``psnr_db``,
    and for R plans ``training_free_psnr_db`` (at the same cost, or ``None``), ``gain_db`` and
    ``zero_refiner_psnr_db`` (the plan with an untrained, zero-offset refiner: what training added is the difference). Raises ``ValueError``
    for fill plans, R steps in ``training_free_plans`` or a plan without them in ``refiner_plans``, or prompts
    without one seed each.
    """
    from tqdm.auto import tqdm

    from ..plan import Plan
    from ..reference import heun_pipeline, reference_solve, sample_latents

    if not refiner_plans or not training_free_plans:
        raise ValueError("Give one or more plans with R steps and one or more without, to compare.")
    parsed = {plan: Plan.parse(plan) for plan in (*refiner_plans, *training_free_plans)}
    if any(p.is_fill for p in parsed.values()) or any(not parsed[p].has_refiner_steps for p in refiner_plans) or any(
            parsed[p].has_refiner_steps for p in training_free_plans):
        raise ValueError(f"Give fixed plans (no '*'): refiner_plans all with R steps, training_free_plans none; got "
                         f"{refiner_plans} and {training_free_plans}.")
    if not prompts or len(prompts) != len(seeds):
        raise ValueError(f"Recommending plans needs one seed per prompt and at least one of each; got {len(prompts)} "
                         f"prompts and {len(seeds)} seeds.")
    call_kwargs = _without_steps(call_kwargs)
    if refiner_cost is None:
        refiner_cost = refiner_call_cost(pipe, refiner, refiner_plans[0], prompts[:1], seeds[:1], call_kwargs)
    reference = reference_solve(pipe, prompts, seeds, reference_steps, call_kwargs)
    turbo = heun_pipeline(pipe)
    turbo.load_refiner(refiner)
    rows = []
    for plan in tqdm((*training_free_plans, *refiner_plans), desc="Measuring plans", disable=not progress):
        turbo.set_plan(plan)
        latents = sample_latents(turbo, prompts, seeds, call_kwargs)
        counts = parsed[plan].count_evaluations()
        rows.append({"plan": plan, "base_evaluations": counts["base"], "refiner_evaluations": counts["refiner"],
                     "cost": counts["base"] + refiner_cost * counts["refiner"],
                     "psnr_db": _psnr_db(latents, reference)})
    # The same R plans with an untrained (zero-offset) refiner: what the R steps give by reusing the last velocity,
    # at the same cost, so that the card shows what training added on top.
    turbo.load_refiner(untrained_like(refiner, pipe._execution_device))
    for row in rows:
        if row["refiner_evaluations"]:
            turbo.set_plan(row["plan"])
            row["zero_refiner_psnr_db"] = _psnr_db(sample_latents(turbo, prompts, seeds, call_kwargs), reference)
    turbo.load_refiner(refiner)
    curve = [(row["cost"], row["psnr_db"]) for row in rows if not row["refiner_evaluations"]]
    for row in rows:
        if row["refiner_evaluations"]:
            row["training_free_psnr_db"] = psnr_at_cost(curve, row["cost"])
            row["gain_db"] = (None if row["training_free_psnr_db"] is None
                              else row["psnr_db"] - row["training_free_psnr_db"])
    winners = sorted((row for row in rows if (row.get("gain_db") or 0) > 0), key=lambda row: -row["gain_db"])
    recommended = [row["plan"] for row in winners[:top]] or list(TRAINING_FREE_RECOMMENDATION)
    return {"recommended_plans": recommended, "refiner_pays": bool(winners), "refiner_cost": refiner_cost,
            "samples": len(seeds), "reference": f"Heun, {reference_steps} steps", "plans": rows}


def psnr_at_cost(curve: list[tuple[float, float]], cost: float) -> float | None:
    """The PSNR of the training-free curve ``[(cost, psnr), ...]`` at ``cost``: the best point of each cost, linear
    between the points around ``cost``; ``None`` outside the curve's range."""
    best: dict[float, float] = {}
    for point_cost, value in curve:
        best[point_cost] = max(value, best.get(point_cost, -math.inf))
    points = sorted(best.items())
    if points and cost == points[0][0]:
        return points[0][1]
    for (c0, v0), (c1, v1) in itertools.pairwise(points):
        if c0 < cost <= c1:
            return v0 + (v1 - v0) * (cost - c0) / (c1 - c0)
    return None


def _psnr_db(latents: torch.Tensor, reference: torch.Tensor) -> float:
    """The mean over samples of the latent PSNR (peak: each reference sample's range), as the benchmark reports it."""
    from ..benchmark.metrics import psnr

    return float(psnr(latents, reference).mean())


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
