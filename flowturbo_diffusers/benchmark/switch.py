"""How each sampler of the benchmark is switched on in a pipeline.

Every sampler runs in the same pipeline object (same modules, same prompts and noise); only the scheduler, the
FlowTurbo plan or a diffusers cache hook changes, and only for the length of a ``with`` block: every hook installed
here is removed again when the block ends.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
from contextlib import contextmanager

from diffusers.hooks import ModelHook

from ..hooks import installed_hook, remove_cache_hooks
from .samplers import DPM2, EULER, FLOWTURBO_FAMILIES, HEUN, MAGCACHE, PAB, UNIPC, SamplerSpec

TIMESTEP_HOOK = "flowturbo_benchmark_timestep"


class TimestepTracker(ModelHook):
    """Remembers the ``timestep`` argument of the latest call of the transformer it is installed on. Pyramid
    Attention Broadcast asks for the current timestep (``current_timestep_callback``) to decide which attention
    outputs it may reuse, and not every pipeline exposes one."""

    def __init__(self, timestep: float = 1000.0):
        super().__init__()
        self.timestep = timestep

    def pre_forward(self, module, *args, **kwargs):
        timestep = kwargs.get("timestep")
        if timestep is not None:
            self.timestep = float(timestep.flatten()[0])
        return args, kwargs


class SamplerSwitch:
    """Puts a pipeline (and its FlowTurbo twin, which shares every module) into the state a sampler needs."""

    def __init__(self, pipe, refiner=None):
        from ..pipeline import FlowTurboPipeline

        self.pipe = pipe
        self.own_scheduler = copy.deepcopy(pipe.scheduler)
        self.turbo = FlowTurboPipeline.from_pipe(pipe, refiner=refiner if refiner is not None else False, plan="H1P*")
        self.turbo.set_progress_bar_config(disable=True)
        self._mag_ratios: dict[int, list[float]] = {}

    @property
    def has_refiner(self) -> bool:
        """Whether FlowTurbo plans with R steps can run."""
        return self.turbo.refiner is not None

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
        """Yield ``(pipeline, call_kwargs)`` set up for ``spec``; the pipeline's own scheduler is put back and any
        cache hook (and PAB's timestep tracker) removed on exit."""
        if spec.family in FLOWTURBO_FAMILIES:
            self.turbo.set_plan(spec.plan)
            yield self.turbo, {"num_inference_steps": spec.steps}
            return
        self.pipe.scheduler = self.scheduler_for(spec.family)
        try:
            with contextlib.ExitStack() as hooks:
                cache = self._cache_config(spec, hooks)
                if cache is not None:
                    hooks.enter_context(cache_enabled(self.pipe.transformer, cache))
                yield self.pipe, {"num_inference_steps": spec.steps}
        finally:
            self.pipe.scheduler = self.own_scheduler

    def _cache_config(self, spec: SamplerSpec, hooks: contextlib.ExitStack):
        """The diffusers cache config of ``spec`` (``None`` for samplers without one); PAB's timestep tracker is
        installed on the transformer until ``hooks`` closes."""
        from diffusers import MagCacheConfig, PyramidAttentionBroadcastConfig

        if spec.family == PAB:
            tracker = hooks.enter_context(installed_hook(self.pipe.transformer, TimestepTracker(), TIMESTEP_HOOK))
            return PyramidAttentionBroadcastConfig(
                spatial_attention_block_skip_range=2,
                spatial_attention_timestep_skip_range=(100, 800),
                current_timestep_callback=lambda: tracker.timestep,
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
        try:
            with cache_enabled(self.pipe.transformer, calibration), contextlib.redirect_stdout(io.StringIO()):
                generate(self.pipe, {"num_inference_steps": steps})  # calibration prints the ratios too
        finally:
            mag_logger.removeHandler(handler)
            mag_logger.setLevel(previous_level)
            mag_logger.propagate = previous_propagate
            self.pipe.scheduler = self.own_scheduler
        if not captured:
            raise RuntimeError("MagCache calibration produced no ratios.")
        self._mag_ratios[steps] = captured[-1]


@contextmanager
def cache_enabled(transformer, config):
    """Apply a diffusers cache hook (a ``MagCacheConfig`` or ``PyramidAttentionBroadcastConfig``) for the block:
    ``enable_cache`` where the model has it (Flux, Wan), else the hook's ``apply_*`` function (SD3's transformer has
    no ``CacheMixin``). diffusers prints while applying MagCache; that is muted."""
    from diffusers.hooks import apply_mag_cache, apply_pyramid_attention_broadcast

    with contextlib.redirect_stdout(io.StringIO()):
        if hasattr(transformer, "enable_cache"):
            transformer.enable_cache(config)
        else:
            apply = {"MagCacheConfig": apply_mag_cache,
                     "PyramidAttentionBroadcastConfig": apply_pyramid_attention_broadcast}
            apply[type(config).__name__](transformer, config)
    try:
        yield
    finally:
        if hasattr(transformer, "disable_cache"):
            transformer.disable_cache()
        else:
            remove_cache_hooks(transformer, config)
