"""The samplers the benchmark compares, and how each one is switched on in a pipeline.

Every sampler runs in the same pipeline object (same modules, same prompts and noise); only the scheduler, the
FlowTurbo plan or a diffusers cache hook changes.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
from contextlib import contextmanager
from dataclasses import dataclass

EULER, HEUN, DPM2, DPM3, UNIPC = "Euler", "Heun", "DPM-Solver++(2M)", "DPM-Solver++(3M)", "UniPC"
FLOWTURBO_HP, FLOWTURBO_HPR = "FlowTurbo H/P", "FlowTurbo H/P/R"
PAB, MAGCACHE = "Euler + PAB", "Euler + MagCache"
FLOWTURBO_FAMILIES = (FLOWTURBO_HP, FLOWTURBO_HPR)


@dataclass(frozen=True)
class SamplerSpec:
    """One point of the benchmark: a sampler family at a step count (or a FlowTurbo plan)."""

    family: str
    steps: int
    plan: str | None = None

    @property
    def name(self) -> str:
        return f"{self.family} {self.plan}" if self.plan else f"{self.family}, {self.steps} steps"


def default_samplers(with_refiner: bool, quick: bool = False) -> list[SamplerSpec]:
    """The benchmark's grid of samplers. ``quick`` keeps two points per family (for smoke tests)."""
    steps = {
        EULER: [4, 6, 8, 12, 16, 24, 32],
        HEUN: [3, 4, 6, 8, 12, 16],
        DPM2: [4, 6, 8, 12, 16],
        DPM3: [4, 6, 8, 12, 16],
        UNIPC: [4, 6, 8, 12, 16],
        PAB: [8, 12, 16, 24],
        MAGCACHE: [8, 12, 16, 24],
    }
    hp_plans = ["H1P2", "H1P3", "H1P4", "H1P5", "H1P7", "H1P9", "H1P11", "H1P13", "H2P10", "H2P12"]
    # FlowTurbo's best plan is read off the Pareto curve of all its plans, so the grid is dense where that curve is
    # made: three R steps after 3 to 13 P steps (more R steps lose fidelity above ~40 dB), two after few P steps.
    hpr_plans = ["H1P1R2", "H1P2R2", "H1P2R3", "H1P2R4", "H1P3R2", "H1P3R3", "H1P3R4", "H1P4R2", "H1P4R3", "H1P4R4",
                 "H1P5R3", "H1P6R3", "H1P7R3", "H1P8R3", "H1P9R3", "H1P9R4", "H1P11R3", "H1P11R4", "H1P13R3", "H2P8R4"]
    if quick:
        steps = {family: counts[1:3] for family, counts in steps.items()}
        hp_plans, hpr_plans = hp_plans[1:3], hpr_plans[2:4]
    from ..plan import Plan

    specs = [SamplerSpec(family, n) for family, counts in steps.items() for n in counts]
    specs += [SamplerSpec(FLOWTURBO_HP, Plan.parse(p).num_steps, p) for p in hp_plans]
    if with_refiner:
        specs += [SamplerSpec(FLOWTURBO_HPR, Plan.parse(p).num_steps, p) for p in hpr_plans]
    return specs


class SamplerSwitch:
    """Puts a pipeline (and its FlowTurbo twin, which shares every module) into the state a sampler needs."""

    def __init__(self, pipe, refiner=None):
        from ..pipeline import FlowTurboPipeline

        self.pipe = pipe
        self.own_scheduler = copy.deepcopy(pipe.scheduler)
        self.turbo = FlowTurboPipeline.from_pipe(pipe, refiner=refiner if refiner is not None else False, plan="H1P*")
        self.turbo.set_progress_bar_config(disable=True)
        self._mag_ratios: dict[int, list[float]] = {}
        self._timestep = {"value": 1000.0}
        pipe.transformer.register_forward_pre_hook(self._track_timestep, with_kwargs=True)

    def _track_timestep(self, module, args, kwargs):
        timestep = kwargs.get("timestep")
        if timestep is not None:
            self._timestep["value"] = float(timestep.flatten()[0])

    def scheduler_for(self, family: str):
        from diffusers import (
            DPMSolverMultistepScheduler,
            FlowMatchEulerDiscreteScheduler,
            FlowMatchHeunDiscreteScheduler,
            UniPCMultistepScheduler,
        )

        config = self.own_scheduler.config
        if family in (EULER, PAB, MAGCACHE):
            return FlowMatchEulerDiscreteScheduler.from_config(config)
        if family == HEUN:
            return FlowMatchHeunDiscreteScheduler.from_config(config)
        # Multistep solvers with flow sigmas, built explicitly: from_config of a flow-match config would leave their
        # flow_shift at 1.0.
        flow = dict(use_flow_sigmas=True, flow_shift=config.get("shift", 1.0), prediction_type="flow_prediction")
        if family == UNIPC:
            return UniPCMultistepScheduler(**flow)
        return DPMSolverMultistepScheduler(solver_order=2 if family == DPM2 else 3, **flow)

    @contextmanager
    def use(self, spec: SamplerSpec):
        """Yield ``(pipeline, call_kwargs)`` set up for ``spec``; undo cache hooks afterwards."""
        if spec.family in FLOWTURBO_FAMILIES:
            self.turbo.set_plan(spec.plan)
            yield self.turbo, {"num_inference_steps": spec.steps}
            return
        self.pipe.scheduler = self.scheduler_for(spec.family)
        cache = self._cache_config(spec)
        if cache is not None:
            enable_cache(self.pipe.transformer, cache)
        try:
            yield self.pipe, {"num_inference_steps": spec.steps}
        finally:
            if cache is not None:
                disable_cache(self.pipe.transformer, cache)
            self.pipe.scheduler = self.own_scheduler

    def _cache_config(self, spec: SamplerSpec):
        from diffusers import MagCacheConfig, PyramidAttentionBroadcastConfig

        if spec.family == PAB:
            return PyramidAttentionBroadcastConfig(
                spatial_attention_block_skip_range=2,
                spatial_attention_timestep_skip_range=(100, 800),
                current_timestep_callback=lambda: self._timestep["value"],
            )
        if spec.family == MAGCACHE:
            return MagCacheConfig(mag_ratios=self._mag_ratios[spec.steps], num_inference_steps=spec.steps)
        return None

    def calibrate_magcache(self, steps: int, generate) -> None:
        """MagCache's magnitude ratios are model- and schedule-specific: measure them once per step count with
        diffusers' calibration mode (``generate(pipe, call_kwargs)`` runs one call)."""
        from diffusers import MagCacheConfig

        if steps in self._mag_ratios:
            return
        captured = []

        class _Capture(logging.Handler):
            def emit(self, record):
                message = record.getMessage()
                if "MagCache Calibration Results:" in message:
                    captured.append([float(x) for x in message.split(":", 1)[1].strip(" []").split(",")])

        handler = _Capture(level=logging.INFO)
        mag_logger = logging.getLogger("diffusers.hooks.mag_cache")
        previous_level, previous_propagate = mag_logger.level, mag_logger.propagate
        mag_logger.addHandler(handler)
        mag_logger.setLevel(logging.INFO)
        mag_logger.propagate = False  # the ratios go to our handler only, not to the console through diffusers'
        self.pipe.scheduler = self.scheduler_for(EULER)
        calibration = MagCacheConfig(calibrate=True, num_inference_steps=steps)
        enable_cache(self.pipe.transformer, calibration)
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # calibration prints the ratios too
                generate(self.pipe, {"num_inference_steps": steps})
        finally:
            disable_cache(self.pipe.transformer, calibration)
            mag_logger.removeHandler(handler)
            mag_logger.setLevel(previous_level)
            mag_logger.propagate = previous_propagate
            self.pipe.scheduler = self.own_scheduler
        if not captured:
            raise RuntimeError("MagCache calibration produced no ratios.")
        self._mag_ratios[steps] = captured[-1]


def enable_cache(transformer, config) -> None:
    """Apply a diffusers cache hook: ``enable_cache`` where the model has it (Flux, Wan), else the hook's ``apply_*``
    function (SD3's transformer has no ``CacheMixin``). diffusers prints while applying MagCache; that is muted."""
    with contextlib.redirect_stdout(io.StringIO()):
        _enable_cache(transformer, config)


def _enable_cache(transformer, config) -> None:
    if hasattr(transformer, "enable_cache"):
        transformer.enable_cache(config)
        return
    from diffusers.hooks import apply_mag_cache, apply_pyramid_attention_broadcast

    apply = {"MagCacheConfig": apply_mag_cache, "PyramidAttentionBroadcastConfig": apply_pyramid_attention_broadcast}
    apply[type(config).__name__](transformer, config)


def disable_cache(transformer, config) -> None:
    if hasattr(transformer, "disable_cache"):
        transformer.disable_cache()
        return
    from diffusers.hooks import HookRegistry
    from diffusers.hooks.mag_cache import _MAG_CACHE_BLOCK_HOOK, _MAG_CACHE_LEADER_BLOCK_HOOK
    from diffusers.hooks.pyramid_attention_broadcast import _PYRAMID_ATTENTION_BROADCAST_HOOK

    registry = HookRegistry.check_if_exists_or_initialize(transformer)
    names = {"MagCacheConfig": (_MAG_CACHE_LEADER_BLOCK_HOOK, _MAG_CACHE_BLOCK_HOOK),
             "PyramidAttentionBroadcastConfig": (_PYRAMID_ATTENTION_BROADCAST_HOOK,)}
    for name in names[type(config).__name__]:
        registry.remove_hook(name, recurse=True)
    registry.invalidate_child_registries_cache()
