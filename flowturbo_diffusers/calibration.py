"""Calibrated plans: the step kinds and sigma grid that bring one model closest to its own many-step solve, at a cost.

The pipeline's grid is chosen for Euler at many steps; at a few steps, where the steps lie matters as much as the
solver. :func:`calibrate_plan` searches both, data-free, from the model's own solves of a few prompts and seeds, with
guidance as the user samples:

1. **Teacher.** A Heun solve on a fine grid (``reference_substeps`` Heun steps per candidate interval) records the
   teacher's states at ``candidates + 1`` candidate times, uniform in time before the pipeline's shift.
2. **Dynamic program**, in the manner of OSS (Optimal Stepsize, Pei et al., arXiv 2503.21774): for every cost (base
   model evaluations) and candidate time, the best state reachable there, by any sequence of H (2 evaluations), P (1:
   reuses the last velocity) and E (1) steps between candidate times, scored by its distance to the teacher's state
   there. The step onto sigma 0 makes no evaluation at 0 (docs/scheduler.md, "The last step"): an E or H step there
   costs 1, a P step 0.
3. **Continuous refinement** of the chosen times (LD3-style, arXiv 2405.15506, but derivative-free): coordinate
   descent on the final error of whole solves.

The result is a scheduler config (:meth:`CalibrationResult.scheduler`): a fixed plan and its ``calibrated_grid``, the
times before the pipeline's shift, so the grid maps through the pipeline's shift and follows ``mu`` (resolution) as
the pipeline's own grid does. It saves and loads with ``save_pretrained`` / ``from_pretrained``, with a model card.

All model evaluations run inside unchanged pipeline calls: a :class:`ProbeScheduler` lists the times of a program of
evaluations as its ``timesteps`` and, in ``step()``, hands the pipeline the next latent to evaluate, so batching,
guidance (batched or separate calls) and conditioning are the pipeline's own. R steps are not searched yet.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Generator

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from .plan import EULER, HEUN, PSEUDO_CORRECTOR, Plan
from .steps import euler_step, heun_step
from .reference import output_tensor

# A program receives (velocity, latents) after each evaluation and yields the latents of the next one.
Program = Generator[torch.Tensor | None, tuple[torch.Tensor, torch.Tensor], None]


class ProbeScheduler(SchedulerMixin, ConfigMixin):
    """A scheduler that runs a program of velocity evaluations inside an unchanged pipeline call.

    Its ``timesteps`` are the model timesteps of the program's sigmas (``sigma * num_train_timesteps``), and its
    ``step()`` sends the pipeline's guided velocity and the latents it was computed at to the program, which returns
    the latents the next evaluation is made at. The sigmas and timesteps the pipeline passes are ignored; ``mu`` (the
    pipeline's dynamic shift for this resolution) is recorded.
    """

    order = 1

    @register_to_config
    def __init__(self, num_train_timesteps: int = 1000):
        self.sigmas_to_run: list[float] = [1.0]
        self.program: Program | None = None
        self.mu = None
        self.timesteps = torch.ones(1) * num_train_timesteps
        self.sigmas = torch.tensor([1.0, 0.0])
        self._index = 0

    def run(self, sigmas: list[float], program: Program) -> None:
        """Evaluate at ``sigmas`` in the next pipeline call, with ``program`` choosing the latents."""
        self.sigmas_to_run, self.program = list(sigmas), program
        next(program)  # to its first yield: it then waits for the first evaluation

    def set_timesteps(self, num_inference_steps=None, device=None, sigmas=None, mu=None, timesteps=None) -> None:
        self.mu = mu
        values = torch.tensor(self.sigmas_to_run, dtype=torch.float32)
        self.timesteps = (values * self.config.num_train_timesteps).to(device)
        self.sigmas = torch.cat([values, torch.zeros(1)])
        self.num_inference_steps = len(values)
        self._index = 0

    @property
    def step_index(self) -> int:
        return self._index

    @property
    def begin_index(self) -> int:
        return 0

    def set_begin_index(self, begin_index: int = 0) -> None:
        pass

    def scale_model_input(self, sample: torch.Tensor, timestep=None) -> torch.Tensor:
        return sample

    def step(self, model_output, timestep, sample, *args, return_dict: bool = True, **kwargs):
        latents = self.program.send((model_output.float(), sample.float()))
        self._index += 1
        latents = sample if latents is None else latents.to(sample.dtype)
        return (latents,) if not return_dict else type("Output", (), {"prev_sample": latents})()


@dataclass
class CalibrationSettings:
    """What :func:`calibrate_plan` searches and on how much data.

    Attributes:
        budget: Base-model evaluations per sample (the cost of the plan; guidance calls not counted twice).
        candidates: Intervals of the candidate time grid (uniform in time before the pipeline's shift).
        max_span: The longest step, in candidate intervals.
        kinds: The step kinds searched, from ``"HPE"``.
        reference_substeps: Heun steps per candidate interval in the teacher's solve.
        samples: Prompts x seeds calibrated on; ``held_out_samples`` more are only evaluated on.
        refine_passes: Passes of the continuous refinement (0: keep the dynamic program's times).
        seed: First noise seed; held-out samples use seeds after the calibration ones.
    """

    budget: int = 8
    candidates: int = 24
    max_span: int = 12
    kinds: str = "HPE"
    reference_substeps: int = 4
    samples: int = 8
    held_out_samples: int = 8
    refine_passes: int = 3
    seed: int = 0

    def __post_init__(self):
        if self.budget < 1:
            raise ValueError(f"budget (base-model evaluations) must be at least 1, got {self.budget}.")
        if not 2 <= self.candidates <= 200 or not 1 <= self.max_span:
            raise ValueError(f"candidates must be 2 to 200 and max_span at least 1, got {self.candidates} and "
                             f"{self.max_span}.")
        if not self.kinds or set(self.kinds) - {HEUN, PSEUDO_CORRECTOR, EULER}:
            raise ValueError(f"kinds must be letters of 'HPE', got {self.kinds!r}.")
        if self.samples < 1 or self.held_out_samples < 0 or self.reference_substeps < 1:
            raise ValueError("samples and reference_substeps must be at least 1, held_out_samples at least 0.")


@dataclass
class CalibrationResult:
    """A calibrated plan: ``plan`` (fixed), ``grid`` (``K + 1`` times before the pipeline's shift, 1 to 0), and the
    figures: relative errors (``||x - x_ref|| / ||x_ref||`` of the final latents) and latent PSNR on the calibration
    and held-out samples, the same for the best uncalibrated plan of the same cost, and the wall time."""

    plan: str
    grid: list[float]
    figures: dict[str, Any] = field(default_factory=dict)

    def scheduler(self, base_scheduler_config: dict, base_model: str | None = None, fingerprint: dict | None = None):
        """A :class:`~flowturbo_diffusers.scheduler.FlowTurboScheduler` with this plan and grid, built from the
        pipeline's own scheduler config, with the calibration recorded for its model card."""
        from .scheduler import FlowTurboScheduler

        calibration = {"base_model": base_model, "base_fingerprint": fingerprint, **self.figures}
        return FlowTurboScheduler.from_config(base_scheduler_config, plan=self.plan, calibrated_grid=self.grid,
                                              calibration=_json_safe(calibration))


@dataclass
class _State:
    latents: torch.Tensor
    velocity: torch.Tensor | None  # the last velocity, which a following P step reuses
    error: float
    path: tuple[tuple[str, int], ...]


class _Sampler:
    """Runs programs and whole FlowTurbo solves in one pipeline, on fixed prompts and noise seeds."""

    def __init__(self, pipe, prompts: list, seeds: list[int], call_kwargs: dict):
        self.pipe, self.prompts, self.seeds, self.call_kwargs = pipe, list(prompts), list(seeds), dict(call_kwargs)
        self.evaluations = 0

    def _call(self, steps: int, **kwargs):
        generators = [torch.Generator(self.pipe._execution_device).manual_seed(seed) for seed in self.seeds]
        key = "class_labels" if isinstance(self.prompts[0], int) else "prompt"
        return self.pipe(**{key: self.prompts}, generator=generators, num_inference_steps=steps,
                         output_type="latent", **{**self.call_kwargs, **kwargs})

    def run(self, sigmas: list[float], program: Program):
        """Run ``program`` with evaluations at ``sigmas``; returns the pipeline's ``mu`` for this call."""
        original = self.pipe.scheduler
        probe = ProbeScheduler(num_train_timesteps=original.config.num_train_timesteps)
        probe.run(sigmas, program)
        self.pipe.scheduler = probe
        try:
            with torch.no_grad():
                self._call(len(sigmas))
        finally:
            self.pipe.scheduler = original
        self.evaluations += len(sigmas)
        return probe.mu

    def solve(self, scheduler, steps: int) -> torch.Tensor:
        """The final latents of a whole solve with ``scheduler`` (float32, CPU)."""
        original = self.pipe.scheduler
        self.pipe.scheduler = scheduler
        try:
            with torch.no_grad():
                output = self._call(steps)
        finally:
            self.pipe.scheduler = original
        self.evaluations += len(scheduler.timesteps)
        return output_tensor(output).float().cpu()


def sigmas_of(times: list[float], scheduler_config: dict, mu: float | None) -> list[float]:
    """The sigmas of ``times`` (from 1 to 0, before the shift) through the pipeline's own shift (static, or dynamic
    with ``mu``), as :class:`FlowTurboScheduler` maps a calibrated grid."""
    from .sigmas import EULER_GRID, compute_sigma_grid, translate_scheduler_config

    config = dict(scheduler_config)
    if config.get("_class_name") != "FlowTurboScheduler":
        translated, _ = translate_scheduler_config(config)
        config = {**_defaults(), **translated}
    config["sigma_schedule"] = EULER_GRID
    if config.get("use_dynamic_shifting") and mu is None:
        raise ValueError("This pipeline shifts its grid dynamically, but no mu was recorded for the call.")
    grid, _ = compute_sigma_grid(config, len(times) - 1, sigmas=list(times[:-1]), mu=mu)
    return [float(value) for value in grid]


def _defaults() -> dict:
    from .scheduler import FlowTurboScheduler

    return {key: value for key, value in FlowTurboScheduler().config.items() if not key.startswith("_")}


def teacher_states(sampler: _Sampler, sigmas: list[float], substeps: int) -> list[torch.Tensor]:
    """Heun's solution at each of ``sigmas`` (``M + 1`` of them, 1 to 0), with ``substeps`` Heun steps per interval
    (uniform in sigma within it) and an Euler step onto 0, from the pipeline's own noise."""
    fine = [sigmas[0]]
    for high, low in zip(sigmas, sigmas[1:]):
        fine += [high + (low - high) * (k + 1) / substeps for k in range(substeps)]
    states: list[torch.Tensor] = []

    def program():
        velocity, latents = yield
        states.append(latents)
        for k in range(len(fine) - 1):
            step_size = fine[k + 1] - fine[k]
            if k == len(fine) - 2:  # onto sigma 0: Euler
                latents = euler_step(latents, velocity, step_size)
                states.append(latents)
                yield latents
                return
            predicted_velocity, _ = yield euler_step(latents, velocity, step_size)
            latents = heun_step(latents, velocity, predicted_velocity, step_size)
            if (k + 1) % substeps == 0:
                states.append(latents)
            velocity, _ = yield latents

    schedule = [fine[0]] + [s for s in fine[1:-1] for _ in range(2)]
    sampler.run(schedule, program())
    return states


def search_plan(sampler: _Sampler, sigmas: list[float], teacher: list[torch.Tensor], settings: CalibrationSettings,
                progress: Callable[[str], None] | None = None) -> tuple[_State, dict[int, dict[int, _State]]]:
    """The dynamic program (module docstring, 2): returns the best final state within the budget and the table."""
    last = len(sigmas) - 1
    scale = [float(state.pow(2).mean()) for state in teacher]

    def error(latents, index):
        return float((latents - teacher[index]).pow(2).mean()) / max(scale[index], 1e-12)

    table: dict[int, dict[int, _State]] = {0: {0: _State(teacher[0], None, 0.0, ())}}

    def offer(cost, index, latents, velocity, kind, source):
        if cost > settings.budget:
            return
        candidate = _State(latents, velocity, error(latents, index), source.path + ((kind, index),))
        best = table.setdefault(cost, {}).get(index)
        if best is None or candidate.error < best.error:
            table[cost][index] = candidate
        finishes = index < last and last - index <= settings.max_span and velocity is not None
        if finishes and PSEUDO_CORRECTOR in settings.kinds:
            # A P step onto sigma 0 makes no evaluation (its corrector would be at 0): it finishes the state at the
            # same cost, from the velocity it carries. Offered here, so that states at the full budget finish too.
            offer(cost, last, euler_step(latents, velocity, sigmas[last] - sigmas[index]), None, PSEUDO_CORRECTOR,
                  candidate)

    for cost in range(settings.budget):
        sources = sorted((index, state) for index, state in table.get(cost, {}).items() if index < last)
        if not sources:
            continue
        if progress:
            progress(f"cost {cost}: {len(sources)} states")
        schedule, plan_of_entries = [sigmas[0]], []
        for index, state in sources:
            schedule.append(sigmas[index])
            plan_of_entries.append(("source", index, None))
            for target in range(index + 1, min(index + settings.max_span, last) + 1):
                if target == last:
                    continue
                if HEUN in settings.kinds:
                    schedule.append(sigmas[target])
                    plan_of_entries.append((HEUN, index, target))
                if PSEUDO_CORRECTOR in settings.kinds and state.velocity is not None:
                    schedule.append(sigmas[target])
                    plan_of_entries.append((PSEUDO_CORRECTOR, index, target))
        states = dict(sources)

        def program():
            yield  # the first evaluation is at the pipeline's own noise: not used
            source_velocity = None
            for kind, index, target in plan_of_entries:
                state = states[index]
                if kind == "source":
                    source_velocity, _ = yield state.latents
                    for end in range(index + 1, min(index + settings.max_span, last) + 1):
                        step = sigmas[end] - sigmas[index]
                        if EULER in settings.kinds or end == last:  # an H step onto 0 is an Euler step
                            offer(cost + 1, end, euler_step(state.latents, source_velocity, step), source_velocity,
                                  EULER, state)
                    continue
                step = sigmas[target] - sigmas[index]
                start_velocity = source_velocity if kind == HEUN else state.velocity
                predicted_velocity, _ = yield euler_step(state.latents, start_velocity, step)
                latents = heun_step(state.latents, start_velocity, predicted_velocity, step)
                offer(cost + (2 if kind == HEUN else 1), target, latents, predicted_velocity, kind, state)
            yield None

        sampler.run(schedule, program())
    finals = [table[cost][last] for cost in table if last in table[cost]]
    if not finals:
        raise ValueError(f"No plan reaches sigma 0 within {settings.budget} evaluations; raise max_span or budget.")
    return min(finals, key=lambda state: state.error), table


def _plan_and_grid(path: tuple[tuple[str, int], ...], times: list[float]) -> tuple[str, list[float]]:
    kinds = [kind for kind, _ in path]
    if kinds[0] == PSEUDO_CORRECTOR:
        kinds[0] = HEUN
    segments, previous = [], None
    for kind in kinds:
        if kind == previous:
            segments[-1][1] += 1
        else:
            segments.append([kind, 1])
        previous = kind
    plan = "".join(f"{kind}{count}" for kind, count in segments)
    return plan, [times[0]] + [times[index] for _, index in path]


def calibrate_plan(
    pipe,
    prompts: list,
    settings: CalibrationSettings | None = None,
    call_kwargs: dict | None = None,
    held_out_prompts: list | None = None,
    progress: bool = True,
) -> CalibrationResult:
    """Calibrate a FlowTurbo plan and grid for ``pipe`` (any diffusers flow pipeline) at ``settings.budget`` base
    evaluations; see the module docstring for the method, and :func:`calibrate_plans` for several budgets at once.

    Args:
        pipe: The pipeline, with its own scheduler (its config defines the shift the grid goes through).
        prompts: Prompts (or class labels) to calibrate on; sample ``i`` is prompt ``i % len(prompts)`` with noise seed
            ``settings.seed + i``.
        settings: What to search (:class:`CalibrationSettings`).
        call_kwargs: The pipeline call arguments, as the user samples (guidance, resolution, text length...).
        held_out_prompts: Prompts for the held-out samples (default: ``prompts``, with other seeds).
        progress: Print what it does.

    Returns:
        A :class:`CalibrationResult`; ``result.scheduler(pipe.scheduler.config)`` is the calibrated scheduler.

    Raises:
        ValueError: for settings it cannot search, before any model evaluation.
    """
    settings = settings or CalibrationSettings()
    return calibrate_plans(pipe, prompts, [settings.budget], settings, call_kwargs, held_out_prompts,
                           progress)[settings.budget]


def calibrate_plans(
    pipe,
    prompts: list,
    budgets: list[int],
    settings: CalibrationSettings | None = None,
    call_kwargs: dict | None = None,
    held_out_prompts: list | None = None,
    progress: bool = True,
) -> dict[int, CalibrationResult]:
    """:func:`calibrate_plan` at each of ``budgets`` (``settings.budget`` is ignored), sharing the teacher's solve and
    one dynamic program at the largest budget, whose table holds the best final state at every smaller cost too; only
    the refinement and the held-out check run per budget. Each result's ``seconds`` is the shared part plus its own;
    ``shared_seconds`` is the shared part."""
    import dataclasses

    from .scheduler import FlowTurboScheduler

    settings = dataclasses.replace(settings or CalibrationSettings(), budget=max(budgets))
    if min(budgets) < 1:
        raise ValueError(f"budgets (base-model evaluations) must be at least 1, got {budgets}.")
    call_kwargs = {k: v for k, v in (call_kwargs or {}).items() if k != "num_inference_steps"}
    say = print if progress else (lambda *_: None)
    started = time.perf_counter()
    own_config = dict(pipe.scheduler.config)
    sample_prompts = [prompts[i % len(prompts)] for i in range(settings.samples)]
    sampler = _Sampler(pipe, sample_prompts, [settings.seed + i for i in range(settings.samples)], call_kwargs)

    mu = sampler.run([1.0], _one_evaluation())  # the pipeline's mu for this resolution
    times = [1.0 - k / settings.candidates for k in range(settings.candidates + 1)]
    sigmas = sigmas_of(times, own_config, mu)
    say(f"Teacher: Heun, {settings.candidates * settings.reference_substeps} steps, on {settings.samples} samples")
    teacher = teacher_states(sampler, sigmas, settings.reference_substeps)
    say(f"Searching plans of at most {settings.budget} evaluations over {settings.candidates} candidate intervals")
    _, table = search_plan(sampler, sigmas, teacher, settings, progress=say if progress else None)
    reference = teacher[-1]
    held_sampler = held_reference = None
    if settings.held_out_samples:
        held = held_out_prompts or prompts
        held_sampler = _Sampler(pipe, [held[i % len(held)] for i in range(settings.held_out_samples)],
                                [settings.seed + settings.samples + i for i in range(settings.held_out_samples)],
                                call_kwargs)
        held_reference = held_sampler.solve(FlowTurboScheduler.from_config(own_config, plan="H*"),
                                            settings.candidates * settings.reference_substeps)
    shared_seconds, shared_evaluations = time.perf_counter() - started, sampler.evaluations
    last = settings.candidates
    results = {}
    for budget in sorted(set(budgets)):
        budget_started, evaluations_before = time.perf_counter(), sampler.evaluations
        finals = [table[cost][last] for cost in table if cost <= budget and last in table[cost]]
        if not finals:
            raise ValueError(f"No plan reaches sigma 0 within {budget} evaluations; raise max_span or the budget.")
        best = min(finals, key=lambda state: state.error)
        plan, grid = _plan_and_grid(best.path, times)
        say(f"Budget {budget}: plan {plan} from the dynamic program, final relative MSE {best.error:.3g}")

        def final_error(grid_times: list[float], plan=plan) -> float:
            scheduler = FlowTurboScheduler.from_config(own_config, plan=plan, calibrated_grid=grid_times)
            return relative_error(sampler.solve(scheduler, len(grid_times) - 1), reference)

        grid, refined_error = refine_grid(grid, final_error, settings.refine_passes)
        figures = {
            "budget": budget,
            "plan_evaluations": Plan.parse(plan).count_evaluations()["base"],
            "samples": settings.samples,
            "reference": f"Heun, {settings.candidates * settings.reference_substeps} steps",
            "calibration_relative_error": refined_error,
            "calibration_psnr_db": _psnr_of_error(sampler, reference, plan, grid, own_config),
        }
        figures.update(_compare_uncalibrated(sampler, reference, own_config, budget, prefix="calibration"))
        held_evaluations = 0
        if held_sampler is not None:
            before = held_sampler.evaluations
            scheduler = FlowTurboScheduler.from_config(own_config, plan=plan, calibrated_grid=grid)
            latents = held_sampler.solve(scheduler, len(grid) - 1)
            figures["held_out_samples"] = settings.held_out_samples
            figures["held_out_relative_error"] = relative_error(latents, held_reference)
            figures["held_out_psnr_db"] = latent_psnr(latents, held_reference)
            figures.update(_compare_uncalibrated(held_sampler, held_reference, own_config, budget,
                                                 prefix="held_out"))
            held_evaluations = held_sampler.evaluations - before
        figures["model_evaluations"] = shared_evaluations + sampler.evaluations - evaluations_before + held_evaluations
        figures["shared_seconds"] = round(shared_seconds, 1)
        figures["seconds"] = round(shared_seconds + time.perf_counter() - budget_started, 1)
        say(f"Budget {budget}: calibrated plan {plan} ({figures['seconds']:.0f} s)")
        results[budget] = CalibrationResult(plan, grid, figures)
    return results


def refine_grid(grid: list[float], objective: Callable[[list[float]], float], passes: int) -> tuple[list[float], float]:
    """Coordinate descent on the interior times of ``grid`` (1 and 0 stay), keeping them strictly decreasing: each
    pass tries moving each time up and down by a step that halves every pass, and keeps what lowers ``objective``."""
    grid = list(grid)
    best = objective(grid)
    gaps = [a - b for a, b in zip(grid, grid[1:])]
    delta = min(gaps) / 2
    for _ in range(passes):
        for index in range(1, len(grid) - 1):
            for direction in (1, -1):
                moved = list(grid)
                moved[index] = grid[index] + direction * delta
                if not grid[index + 1] < moved[index] < grid[index - 1]:
                    continue
                value = objective(moved)
                if value < best:
                    grid, best = moved, value
                    break
        delta /= 2
    return grid, best


def relative_error(latents: torch.Tensor, reference: torch.Tensor) -> float:
    """``||latents - reference|| / ||reference||`` over the whole batch."""
    return float((latents - reference).norm() / reference.norm())


def latent_psnr(latents: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean per-sample latent PSNR in dB, the benchmark's fidelity measure (benchmark.metrics.psnr)."""
    from .benchmark.metrics import psnr

    return float(psnr(latents, reference).mean())


def _psnr_of_error(sampler, reference, plan, grid, own_config) -> float:
    from .scheduler import FlowTurboScheduler

    scheduler = FlowTurboScheduler.from_config(own_config, plan=plan, calibrated_grid=grid)
    return latent_psnr(sampler.solve(scheduler, len(grid) - 1), reference)


def _compare_uncalibrated(sampler, reference, own_config, budget: int, prefix: str) -> dict:
    """The best uncalibrated FlowTurbo plan (on the pipeline's own grid) of at most ``budget`` evaluations."""
    from .scheduler import FlowTurboScheduler

    candidates = {"E*": budget, "H1P*": budget, "H*": (budget + 1) // 2}
    best_name, best_psnr = None, -math.inf
    for plan, steps in candidates.items():
        if steps < Plan.parse(plan).fixed_steps or steps < 1:
            continue
        scheduler = FlowTurboScheduler.from_config(own_config, plan=plan)
        value = latent_psnr(sampler.solve(scheduler, steps), reference)
        if value > best_psnr:
            best_name, best_psnr = f"{plan} at {steps} steps", value
    return {f"{prefix}_best_uncalibrated": best_name, f"{prefix}_best_uncalibrated_psnr_db": best_psnr}


def _one_evaluation():
    yield
    yield None


def _json_safe(value):
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float):
        return round(value, 6)
    return value


__all__ = ["CalibrationResult", "CalibrationSettings", "ProbeScheduler", "calibrate_plan", "calibrate_plans",
           "refine_grid"]
