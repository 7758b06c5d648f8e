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

import numpy as np
from diffusers import UniPCMultistepScheduler
from diffusers.hooks import ModelHook

from ..hooks import installed_hook, remove_cache_hooks
from .samplers import (
    DPM2,
    DPM3,
    EULER,
    EULER_ON_A_GRID,
    FLOWTURBO_FAMILIES,
    HEUN,
    MAGCACHE,
    PAB,
    SHIFTED_GRID_FAMILIES,
    UNIPC,
    UNIPC_OSS,
    SamplerSpec,
)

TIMESTEP_HOOK = "flowturbo_benchmark_timestep"
# A flow-match config's keys that a pipeline reads to compute mu (dynamic shifting), which UniPC and DPM-Solver lack.
DYNAMIC_SHIFT_KEYS = ("base_image_seq_len", "max_image_seq_len", "base_shift", "max_shift")


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


class GridUniPCMultistepScheduler(UniPCMultistepScheduler):
    """diffusers' UniPC with flow sigmas on a fixed grid, whatever the pipeline passes to ``set_timesteps``.

    ``grid_times`` are ``N + 1`` times from 1 to 0 before the pipeline's shift (a calibrated grid). UniPC's own
    ``set_timesteps`` takes custom flow sigmas and shifts them as it shifts its own grid (``flow_shift``, or the
    pipeline's ``mu`` with dynamic shifting; then ``shift_terminal``), which is how FlowTurbo maps a calibrated grid, so
    both run on the same sigmas.
    """

    grid_times: tuple[float, ...] = ()

    def set_timesteps(self, num_inference_steps=None, device=None, sigmas=None, mu=None):
        steps = len(self.grid_times) - 1
        if num_inference_steps is not None and num_inference_steps != steps:
            raise ValueError(f"This UniPC runs a fixed grid of {steps} steps, but {num_inference_steps} were asked "
                             "for.")
        super().set_timesteps(device=device, sigmas=np.asarray(self.grid_times[:-1], dtype=np.float64), mu=mu)


class SamplerSwitch:
    """Puts a pipeline (and its FlowTurbo twin, which shares every module) into the state a sampler needs.

    A diffusers baseline that cannot run in this pipeline is replaced by an equivalent where there is one
    (:meth:`stand_in`: FlowTurbo's ``H*`` for diffusers' Heun); ``notes`` says, per family, what was replaced or how a
    sampler differs from the pipeline's own grid, for the report.
    """

    def __init__(self, pipe, refiner=None):
        from ..pipeline import FlowTurboPipeline

        self.pipe = pipe
        self.own_scheduler = copy.deepcopy(pipe.scheduler)
        self.turbo = FlowTurboPipeline.from_pipe(pipe, refiner=refiner if refiner is not None else False, plan="H1P*")
        self.turbo.set_progress_bar_config(disable=True)
        self.notes: dict[str, str] = {}
        self.stand_ins: dict[str, str] = {}  # family -> the FlowTurbo plan that runs in its place
        self._mag_ratios: dict[int, list[float]] = {}
        self._grid_schedulers: dict[SamplerSpec, object] = {}

    @property
    def has_refiner(self) -> bool:
        """Whether FlowTurbo plans with R steps can run."""
        return self.turbo.refiner is not None

    def runs_on_flowturbo(self, spec: SamplerSpec) -> bool:
        """Whether ``spec`` runs in the FlowTurbo pipeline: FlowTurbo's plans, Euler on another grid (FlowTurbo's E plan
        is Euler's method), and a baseline a FlowTurbo plan stands in for."""
        return spec.family in FLOWTURBO_FAMILIES or spec.family in EULER_ON_A_GRID or spec.family in self.stand_ins

    def scheduler_for(self, spec: SamplerSpec):
        """The diffusers scheduler of a baseline that runs in the pipeline itself. Euler and Heun keep the shift of a
        flow-sigma UniPC or DPM-Solver config (Sana, Wan), whose ``flow_shift`` their ``from_config`` would drop."""
        from diffusers import FlowMatchEulerDiscreteScheduler, FlowMatchHeunDiscreteScheduler

        config = self.own_scheduler.config
        shift = {"shift": config.get("flow_shift", 1.0)} if config.get("use_flow_sigmas") else {}
        if spec.family in (EULER, PAB, MAGCACHE):
            return FlowMatchEulerDiscreteScheduler.from_config(config, **shift)
        if spec.family == HEUN:
            return FlowMatchHeunDiscreteScheduler.from_config(config, **shift)
        if spec.family in (UNIPC, UNIPC_OSS, DPM2, DPM3):
            return self.multistep_scheduler(spec.family, spec.grid)
        raise ValueError(f"No diffusers scheduler for sampler family {spec.family!r}.")

    def multistep_scheduler(self, family: str, grid_times: tuple[float, ...] | None = None):
        """UniPC or DPM-Solver++ with flow sigmas on the grid the pipeline's own scheduler would use: built from the
        pipeline's own config when that already is a flow-sigma UniPC or DPM-Solver (Sana, Wan); from a flow-match
        config, with its shift, or following the pipeline's ``mu`` (``use_dynamic_shifting`` and its
        ``time_shift_type``) where the pipeline shifts dynamically (Flux), since ``from_config`` of a flow-match config
        would leave ``flow_shift`` at 1. ``grid_times``: UniPC on that grid instead
        (:class:`GridUniPCMultistepScheduler`).

        Raises:
            ValueError: for DPM-Solver++ with a linear dynamic time shift, which diffusers 0.42.1 does not implement.
        """
        from diffusers import DPMSolverMultistepScheduler

        config = self.own_scheduler.config
        if config.get("use_flow_sigmas"):
            settings = dict(config)
        else:
            settings = dict(num_train_timesteps=config.get("num_train_timesteps", 1000), use_flow_sigmas=True,
                            prediction_type="flow_prediction")
            if config.get("use_dynamic_shifting"):
                settings.update(use_dynamic_shifting=True, time_shift_type=config.get("time_shift_type", "exponential"))
            else:
                settings["flow_shift"] = config.get("shift", 1.0)
            settings["shift_terminal"] = config.get("shift_terminal")
        if family in (UNIPC, UNIPC_OSS):
            scheduler = (UniPCMultistepScheduler if grid_times is None else GridUniPCMultistepScheduler).from_config(
                settings)
            scheduler.grid_times = tuple(grid_times or ())
        else:
            if settings.get("use_dynamic_shifting") and settings.get("time_shift_type", "exponential") != "exponential":
                raise ValueError("diffusers' DPMSolverMultistepScheduler follows a dynamic shift only with "
                                 "time_shift_type='exponential'; this pipeline shifts with 'linear'.")
            if settings.get("shift_terminal"):
                self.notes[family] = (f"diffusers' DPMSolverMultistepScheduler has no shift_terminal, so it runs "
                                      f"without the pipeline's terminal stretch (shift_terminal="
                                      f"{settings['shift_terminal']}): on a slightly different grid.")
            scheduler = DPMSolverMultistepScheduler.from_config(settings, algorithm_type="dpmsolver++",
                                                                solver_order=2 if family == DPM2 else 3)
        # The pipeline computes mu from its scheduler's config (Flux: calculate_shift(image_seq_len,
        # config.get("base_image_seq_len", 256), ...)); these keys make it the mu its own scheduler gets.
        scheduler.register_to_config(**{key: config[key] for key in DYNAMIC_SHIFT_KEYS if key in config})
        return scheduler

    def flowturbo_scheduler(self, spec: SamplerSpec):
        """The FlowTurbo scheduler of a point on its own grid: a calibrated grid's times go through the pipeline's
        shift (and ``mu``), as ``calibrated_grid`` maps them; a fixed grid's sigmas are used as they are (a config that
        shifts nothing)."""
        from ..scheduler import FlowTurboScheduler

        if spec not in self._grid_schedulers:
            config = self.own_scheduler.config
            unshifted = {} if spec.family in SHIFTED_GRID_FAMILIES else dict(
                shift=1.0, use_dynamic_shifting=False, shift_terminal=None, use_karras_sigmas=False,
                use_exponential_sigmas=False, use_beta_sigmas=False)
            self._grid_schedulers[spec] = FlowTurboScheduler.from_config(
                config, plan=spec.plan, calibrated_grid=list(spec.grid), **unshifted)
        return self._grid_schedulers[spec]

    def stand_in(self, spec: SamplerSpec, error: Exception) -> bool:
        """After ``spec`` failed with ``error`` in this pipeline: run an equivalent instead, if there is one
        (FlowTurbo's ``H*`` is Heun's method on the pipeline's grid, what diffusers' FlowMatchHeunDiscreteScheduler
        computes; docs/scheduler.md), noting why. Returns whether the family now has a stand-in (so that ``spec`` can be
        measured again)."""
        if spec.family != HEUN or HEUN in self.stand_ins:
            return False
        self.stand_ins[HEUN] = "H*"
        self.notes[HEUN] = (f"diffusers' FlowMatchHeunDiscreteScheduler cannot run in {type(self.pipe).__name__} "
                            f"({type(error).__name__}: {first_line(error)}); FlowTurbo's H* stands in for it: Heun's "
                            "method on the pipeline's own grid, which is what that scheduler computes.")
        return True

    @contextmanager
    def use(self, spec: SamplerSpec):
        """Yield ``(pipeline, call_kwargs)`` set up for ``spec``; the pipeline's own scheduler is put back and any
        cache hook (and PAB's timestep tracker) removed on exit."""
        if self.runs_on_flowturbo(spec):
            plan = self.stand_ins.get(spec.family, spec.plan)
            if spec.grid is None:
                self.turbo.set_plan(plan)
                yield self.turbo, {"num_inference_steps": spec.steps}
                return
            own = self.turbo.scheduler
            self.turbo.scheduler = self.flowturbo_scheduler(spec)
            try:
                yield self.turbo, {"num_inference_steps": spec.steps}
            finally:
                self.turbo.scheduler = own
            return
        self.pipe.scheduler = self.scheduler_for(spec)
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
        self.pipe.scheduler = self.scheduler_for(SamplerSpec(EULER, steps))
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


def first_line(error: Exception, limit: int = 200) -> str:
    """The first line of an error's message, cut at ``limit`` characters (for the report's notes)."""
    text = str(error).strip()
    text = text.splitlines()[0] if text else ""
    return text if len(text) <= limit else text[:limit] + "..."
