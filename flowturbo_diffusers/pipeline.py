"""FlowTurboPipeline: the user's usual diffusers pipeline class, with FlowTurbo plans and a refiner plugged in.

``FlowTurboPipeline.from_pretrained(base, refiner=..., plan=...)`` reads the base model's pipeline class (as diffusers'
AutoPipeline does) and returns an instance of that class mixed with :class:`FlowTurboPipelineMixin`: the same
``__call__``, components, LoRA and offloading API, plus the FlowTurbo scheduler and refiner routing for each call.
"""

from __future__ import annotations

import inspect
import json
import os
import time
from pathlib import Path

from diffusers.utils import logging

from .hooks import without_cast_warning
from .plan import DEFAULT_PLAN, Plan
from .refiner import VelocityRefiner
from .routing import route_refiner_steps
from .scheduler import FlowTurboScheduler

logger = logging.get_logger(__name__)

REFINER_SUBFOLDER = "refiner"
_MIXED_CLASSES: dict[type, type] = {}


class FlowTurboPipelineMixin:
    """Adds FlowTurbo to a diffusers pipeline class: ``set_plan``, ``load_refiner`` and refiner routing per call.

    After each call, ``last_evaluation_counts`` holds ``{"base": transformer calls, "refiner": refiner calls}``, as the
    pipeline made them: a pipeline that calls the conditional and unconditional branches separately (Flux true CFG,
    Wan, Qwen-Image) makes two calls per evaluation of the plan, so ``H1P5R3`` counts ``{"base": 14, "refiner": 10}``
    there and ``{"base": 7, "refiner": 5}`` in a pipeline that batches them (SD3, Sana).

    If the user replaces the scheduler by another one (``pipe.scheduler = UniPCMultistepScheduler.from_config(...)``),
    calls sample with it as the plain pipeline would, without R steps; ``set_plan`` brings FlowTurbo back.
    """

    refiner: VelocityRefiner | None = None
    last_evaluation_counts: dict[str, int] | None = None
    _compile_options = None  # set by enable_flowturbo_compile

    # ----------------------------------------------------------------------------------------------------------------
    # Configuration
    # ----------------------------------------------------------------------------------------------------------------

    @property
    def plan(self) -> Plan | None:
        """The sampling plan of the FlowTurbo scheduler; ``None`` while the user has another scheduler in place."""
        return self.scheduler.plan if isinstance(self.scheduler, FlowTurboScheduler) else None

    def set_plan(self, plan: str | Plan) -> None:
        """Use ``plan`` from the next call on (the scheduler becomes a FlowTurboScheduler if it is not one)."""
        parsed = Plan.parse(plan)
        self._require_refiner_for(parsed)
        if isinstance(self.scheduler, FlowTurboScheduler):
            self.scheduler.set_plan(parsed)
        else:
            self.scheduler = FlowTurboScheduler.from_config(self.scheduler.config, plan=str(parsed))

    def load_refiner(self, refiner: str | os.PathLike | VelocityRefiner, check_base_model: bool = True,
                     **kwargs) -> VelocityRefiner:
        """Attach a refiner (a ``VelocityRefiner``, a local folder or a Hub repo id; ``kwargs`` go to
        ``from_pretrained``), after checking that it was made for this pipeline's transformer
        (:meth:`VelocityRefiner.check_compatible`; ``check_base_model=False`` for a fine-tune or LoRA variant of the
        refiner's base). It is loaded in the transformer's dtype. If loading or the check fails, the pipeline keeps the
        refiner it had."""
        if not isinstance(refiner, VelocityRefiner):
            kwargs.setdefault("torch_dtype", self.transformer.dtype)
            refiner = VelocityRefiner.from_pretrained(refiner, **kwargs)
        base = refiner.config.base_denoiser
        if getattr(self, base, None) is None:
            raise ValueError(f"This refiner replaces the pipeline component {base!r}, which {type(self).__name__} does "
                             f"not have (its denoisers: {', '.join(name for name, _ in self._denoisers())}).")
        refiner.check_compatible(getattr(self, base), check_base_model=check_base_model)
        self.refiner = refiner.eval().requires_grad_(False)
        if self._compile_options is not None and self._compile_options.refiner:
            from .compile import compile_refiner

            compile_refiner(self.refiner, self._compile_options)
        return refiner

    def unload_refiner(self) -> None:
        """Detach the refiner. Refused, saying what to do, while the plan has R steps: set a training-free plan first
        (``pipe.set_plan("H1P*")``), so that no call finds its R steps without a refiner."""
        if self.plan is not None and self.plan.has_refiner_steps:
            raise ValueError(
                f"The plan '{self.plan}' has refiner (R) steps, which need the refiner. Set a training-free plan first, "
                "e.g. pipe.set_plan('H1P*'), then unload it."
            )
        self.refiner = None

    def _denoisers(self) -> list[tuple[str, object]]:
        """The pipeline's denoising models by component name: ``transformer``, and ``transformer_2`` in two-expert
        pipelines (Wan 2.2 A14B, which calls one or the other by sigma)."""
        return [(name, getattr(self, name)) for name in ("transformer", "transformer_2")
                if getattr(self, name, None) is not None]

    def _require_refiner_for(self, plan: Plan, refiner: VelocityRefiner | None | str = "current") -> None:
        refiner = self.refiner if refiner == "current" else refiner
        if refiner is None and plan.has_refiner_steps:
            raise ValueError(
                f"Plan '{plan}' has refiner (R) steps but no refiner is loaded. Load one with "
                "pipe.load_refiner(repo_or_path) or FlowTurboPipeline.from_pretrained(..., refiner=...), or use a "
                "training-free plan such as 'H1P*'."
            )

    # ----------------------------------------------------------------------------------------------------------------
    # Calling
    # ----------------------------------------------------------------------------------------------------------------

    def __call__(self, *args, **kwargs):
        """The pipeline's own ``__call__``, run with FlowTurbo's plan; R evaluations go to the refiner.

        If the plan has a fixed step count and ``num_inference_steps`` is not given, the plan's count is used.
        """
        plan = self.plan
        if plan is None:  # the user put another scheduler in: sample with it, as the plain pipeline would
            from .hooks import count_calls

            with count_calls(self.transformer) as counter:
                output = super().__call__(*args, **kwargs)
            self.last_evaluation_counts = {"base": counter.count, "refiner": 0}
            return output
        self._require_refiner_for(plan)
        bound = inspect.signature(super().__call__).bind_partial(*args, **kwargs).arguments
        if plan.num_steps is not None and not {"num_inference_steps", "sigmas", "timesteps"} & bound.keys():
            kwargs["num_inference_steps"] = plan.num_steps
        compiled = self._compile_options
        with route_refiner_steps(
            dict(self._denoisers()),
            self.refiner,
            self.scheduler,
            cuda_graphs=compiled is not None and compiled.cuda_graphs,
            on_new_shape=self._note_shape if compiled is not None else None,
        ):
            output = super().__call__(*args, **kwargs)
        self.last_evaluation_counts = dict(self.scheduler.run.counts)
        return output

    def get_timesteps(self, *args, **kwargs):
        """The pipeline's own ``get_timesteps`` (img2img and inpaint ``strength``), mapped onto the plan's steps, so that
        a run starts at the same sigma as with the pipeline's own scheduler, whatever the plan.

        Pipelines count strength in scheduler entries (``timesteps[t_start * order:]``), but FlowTurbo's entries are
        model evaluations. The pipeline's own ``get_timesteps`` is run on the grid (one timestep per step, as its own
        scheduler lists them) to find its start step, and the run is laid out from that step
        (:meth:`FlowTurboScheduler.begin_at_step`). Pipelines with another ``get_timesteps`` signature (LTXCondition
        slices its sigmas before ``set_timesteps``) need nothing and are passed through.
        """
        own = super().get_timesteps
        scheduler = self.scheduler
        parameters = list(inspect.signature(own).parameters)
        if (not isinstance(scheduler, FlowTurboScheduler) or scheduler.sigma_grid is None
                or parameters not in (["num_inference_steps", "strength", "device"],
                                      ["num_inference_steps", "timesteps", "strength", "device"])):
            return own(*args, **kwargs)
        arguments = inspect.signature(own).bind(*args, **kwargs).arguments
        steps = scheduler.num_inference_steps
        arguments["num_inference_steps"] = steps
        grid_timesteps = scheduler.run.grid_timesteps.to(scheduler.timesteps.device)
        if "timesteps" in arguments:
            arguments["timesteps"] = grid_timesteps
        with scheduler.grid_view(grid_timesteps):
            grid_slice, remaining = own(**arguments)
        timesteps = scheduler.begin_at_step(steps - len(grid_slice))
        return timesteps, remaining

    # ----------------------------------------------------------------------------------------------------------------
    # Compilation
    # ----------------------------------------------------------------------------------------------------------------

    def enable_flowturbo_compile(
        self,
        mode: str | None = None,
        backend: str = "inductor",
        transformer: bool = True,
        refiner: bool = True,
        steps: bool | None = None,
        vae: bool = False,
    ) -> dict[str, str]:
        """Compile the plan's step graphs: refiner (fullgraph), scheduler updates, transformer, optionally the VAE
        decoder. ``mode="reduce-overhead"`` runs them as CUDA graphs on GPU. Returns what was compiled and how.

        ``steps=None`` compiles the scheduler's updates where that pays, on CUDA; on CPU a compiled call of such a
        small element-wise function costs more than it saves (``steps=True`` forces it).

        Shapes are static: call :meth:`flowturbo_warmup` with the batch size and resolution you will use to compile
        ahead of time; another shape later compiles once more and is logged. See ``docs/compile.md``.
        """
        from .compile import CompileOptions, compile_pipeline

        if self._compile_options is not None:
            raise RuntimeError("FlowTurbo compilation is already enabled on this pipeline.")
        options = CompileOptions(mode=mode, backend=backend, transformer=transformer, refiner=refiner, steps=steps,
                                 vae=vae)
        compiled = compile_pipeline(self, options)
        self._compile_options = options
        self._compiled_shapes = set()
        logger.info(f"FlowTurbo compiled {compiled} (mode={mode!r}); the first call per shape compiles the graphs.")
        return compiled

    def flowturbo_warmup(self, batch_size: int = 1, height: int | None = None, width: int | None = None,
                         **call_kwargs) -> dict:
        """Run one call at ``batch_size`` x ``height`` x ``width`` so that compilation happens now, not in the first
        real call; returns and logs how long it took."""
        if self._compile_options is None:
            raise RuntimeError("Call enable_flowturbo_compile() before flowturbo_warmup().")
        sizes = {key: value for key, value in (("height", height), ("width", width)) if value is not None}
        output_type = "pil" if self._compile_options.vae else "latent"
        start = time.perf_counter()
        self(prompt=[""] * batch_size, output_type=output_type, **sizes, **call_kwargs)
        seconds = time.perf_counter() - start
        logger.warning(f"FlowTurbo warm-up (compilation) at batch {batch_size}, {sizes or 'default size'}: {seconds:.1f} s.")
        return {"seconds": seconds, "batch_size": batch_size, **sizes, "latent_shapes": sorted(self._compiled_shapes)}

    def _note_shape(self, shape: tuple) -> None:
        """Static-shape graphs compile once per latent shape: say so when a call brings a new one."""
        if shape in self._compiled_shapes:
            return
        if self._compiled_shapes:
            logger.warning(
                f"FlowTurbo: latents of shape {shape} are new to the compiled graphs (compiled for "
                f"{sorted(self._compiled_shapes)}); compiling once more for them, so this call is slower. Warm up "
                "each batch size and resolution you use with pipe.flowturbo_warmup(...)."
            )
        self._compiled_shapes.add(shape)

    # ----------------------------------------------------------------------------------------------------------------
    # Saving
    # ----------------------------------------------------------------------------------------------------------------

    def save_pretrained(self, save_directory: str | os.PathLike, *args, **kwargs) -> None:
        """Save the pipeline (its scheduler now a FlowTurboScheduler with the plan) and the refiner in ``refiner/``."""
        super().save_pretrained(save_directory, *args, **kwargs)
        # Record the base class, so that plain diffusers (DiffusionPipeline.from_pretrained) can load the folder too.
        index_file = Path(save_directory) / "model_index.json"
        index = json.loads(index_file.read_text())
        index["_class_name"] = _base_class(type(self)).__name__
        index_file.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
        if self.refiner is not None:
            self.refiner.save_pretrained(Path(save_directory) / REFINER_SUBFOLDER)


def _base_class(mixed_class: type) -> type:
    return next(c for c in mixed_class.__mro__ if c is not FlowTurboPipelineMixin and not issubclass(c, FlowTurboPipelineMixin))


def flowturbo_class(pipeline_class: type) -> type:
    """The class mixing :class:`FlowTurboPipelineMixin` into ``pipeline_class`` (created once, then cached)."""
    if issubclass(pipeline_class, FlowTurboPipelineMixin):
        return pipeline_class
    if pipeline_class not in _MIXED_CLASSES:
        _MIXED_CLASSES[pipeline_class] = type(
            f"FlowTurbo{pipeline_class.__name__}",
            (FlowTurboPipelineMixin, pipeline_class),
            {"__module__": __name__, "__doc__": f"{pipeline_class.__name__} with FlowTurbo sampling."},
        )
    return _MIXED_CLASSES[pipeline_class]


class FlowTurboPipeline:
    """Entry point, like diffusers' ``AutoPipelineForText2Image``: it builds the base model's own pipeline class.

    Not instantiable itself; use :meth:`from_pretrained` or :meth:`from_pipe`.
    """

    def __init__(self, *args, **kwargs):
        raise EnvironmentError(
            "FlowTurboPipeline is built with FlowTurboPipeline.from_pretrained(base, refiner=..., plan=...) or "
            "FlowTurboPipeline.from_pipe(pipe, ...)."
        )

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        refiner: str | os.PathLike | VelocityRefiner | None = None,
        plan: str | None = None,
        refiner_kwargs: dict | None = None,
        compile: bool | dict = False,
        **kwargs,
    ):
        """Load ``base`` with its usual pipeline class, swap in FlowTurboScheduler and attach a refiner.

        Args:
            pretrained_model_name_or_path: The base pipeline (Hub id or local folder).
            refiner: A ``VelocityRefiner``, a folder or Hub id; ``None`` uses the base folder's ``refiner/`` subfolder
                if there is one; ``False`` loads none.
            plan: The sampling plan; defaults to the refiner's first recommended plan, or ``"H1P*"`` without one.
            refiner_kwargs: Extra arguments for ``VelocityRefiner.from_pretrained`` (``revision``, ``subfolder``...).
            compile: ``True`` (or a dict of ``enable_flowturbo_compile`` arguments) compiles the step graphs.
            kwargs: Passed to the pipeline's ``from_pretrained`` (``torch_dtype``, ``variant``, ``revision``...).
        """
        from diffusers import DiffusionPipeline

        config = DiffusionPipeline.load_config(
            pretrained_model_name_or_path,
            **{k: kwargs[k] for k in ("cache_dir", "local_files_only", "token", "revision") if k in kwargs},
        )
        pipeline_class = _pipeline_class(config["_class_name"])
        pipe = flowturbo_class(pipeline_class).from_pretrained(pretrained_model_name_or_path, **kwargs)
        if refiner is None:
            refiner = _local_refiner(pretrained_model_name_or_path)
        pipe = _configure(pipe, refiner, plan, refiner_kwargs)
        if compile:
            pipe.enable_flowturbo_compile(**(compile if isinstance(compile, dict) else {}))
        return pipe

    @classmethod
    def from_pipe(cls, pipeline, refiner: str | os.PathLike | VelocityRefiner | None = None, plan: str | None = None,
                  refiner_kwargs: dict | None = None, **kwargs):
        """Wrap an already loaded pipeline: same components (no copy), a FlowTurbo scheduler of its own.

        ``refiner=None`` keeps the pipeline's refiner if it has one, else uses the ``refiner/`` subfolder of the
        folder it was loaded from, if any.
        """
        kwargs.setdefault("dtype", pipeline.dtype)  # diffusers' from_pipe would cast the shared modules to fp32
        with without_cast_warning():  # diffusers' from_pipe casts the shared modules to the dtype they have
            pipe = flowturbo_class(type(pipeline)).from_pipe(pipeline, **kwargs)
        if isinstance(pipeline.scheduler, FlowTurboScheduler):
            # A copy, so that set_plan leaves the original's alone; its plan was chosen, so it is kept. Any other
            # scheduler becomes a new FlowTurboScheduler in set_plan, with the refiner's recommended plan by default.
            pipe.scheduler = FlowTurboScheduler.from_config(pipeline.scheduler.config)
        if refiner is None:
            refiner = getattr(pipeline, "refiner", None) or _local_refiner(pipeline.config.get("_name_or_path"))
        return _configure(pipe, refiner, plan, refiner_kwargs)


def _local_refiner(path) -> Path | bool:
    """The ``refiner/`` subfolder of a local pipeline folder, or ``False`` when there is none."""
    folder = Path(str(path)) / REFINER_SUBFOLDER if path else None
    return folder if folder is not None and (folder / "config.json").is_file() else False


def _pipeline_class(class_name: str) -> type:
    import diffusers

    name = class_name[len("FlowTurbo"):] if class_name.startswith("FlowTurbo") else class_name
    pipeline_class = getattr(diffusers, name, None)
    if pipeline_class is None:
        raise ValueError(f"model_index.json names pipeline class {class_name!r}, which diffusers does not have.")
    return pipeline_class


def _configure(pipe, refiner, plan: str | None, refiner_kwargs: dict | None):
    if refiner is not False and refiner is not None:
        pipe.load_refiner(refiner, **(refiner_kwargs or {}))
    if plan is None:
        saved = pipe.scheduler.config.get("plan") if isinstance(pipe.scheduler, FlowTurboScheduler) else None
        plan = saved or (list(pipe.refiner.config.recommended_plans)[0] if pipe.refiner is not None else DEFAULT_PLAN)
    pipe.set_plan(plan)
    return pipe


__all__ = ["FlowTurboPipeline", "FlowTurboPipelineMixin", "flowturbo_class"]
