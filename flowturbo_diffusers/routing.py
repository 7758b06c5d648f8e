"""Route the R evaluations of a pipeline call to the refiner, with a diffusers hook on the transformer.

The pipeline keeps calling ``pipe.transformer`` once per entry of ``scheduler.timesteps``. For each call the hook asks
the scheduler's :class:`~flowturbo_diffusers.sampling_run.SamplingRun` which plan evaluation it answers and which
guidance branch it belongs to, and only chooses inputs: base-model evaluations run the real forward and their velocity
is handed on per branch; R evaluations are answered by :func:`~flowturbo_diffusers.steps.refiner_evaluation` with the
refiner's offset, per branch, so the pipeline's own guidance combines refined velocities exactly as it combines base
ones (method.md, "Classifier-free guidance").
"""

from __future__ import annotations

import threading
from contextlib import ExitStack, contextmanager

import torch
from diffusers.hooks import ModelHook
from diffusers.hooks.hooks import BaseState, StateManager

from .adapters import adapter_for, velocity_of
from .hooks import cache_context_name, installed_hook, without_cast_warning
from .plan import REFINER
from .steps import refined_velocity, refiner_evaluation

HOOK_NAME = "flowturbo_refiner_routing"


class _NoState(BaseState):
    def reset(self, *args, **kwargs) -> None:
        pass


class RefinerRoutingHook(ModelHook):
    """Answers the scheduler's R evaluations with the refiner; lets every other call through to the transformer.

    Calls made from another thread than the one that installed the hook (another pipeline sharing the transformer,
    served concurrently) pass straight through, uncounted.
    """

    _is_stateful = True

    def __init__(self, refiner, scheduler, adapter, cuda_graphs: bool = False, on_new_shape=None,
                 denoiser: str = "transformer"):
        super().__init__()
        self.refiner = refiner
        self.scheduler = scheduler
        self.adapter = adapter
        self.denoiser = denoiser  # the pipeline component this hook sits on
        self.thread = threading.get_ident()
        # Under CUDA graphs (compile mode "reduce-overhead"): mark each model call as a new step, and copy the
        # velocities held for later steps out of the graphs' output buffers, which the next replay overwrites.
        self.cuda_graphs = cuda_graphs
        self.on_new_shape = on_new_shape
        # diffusers sets the pipeline's cache context ("cond"/"uncond") on every StateManager of a stateful hook.
        self.cache_context = StateManager(_NoState)
        self._refiner_placed = False

    def reset_state(self, module):
        # diffusers resets stateful hooks when a pipeline call ends (maybe_free_model_hooks); the run keeps the counts.
        self._refiner_placed = False
        return module

    def _held(self, velocity: torch.Tensor) -> torch.Tensor:
        return velocity.clone() if self.cuda_graphs else velocity

    def new_forward(self, module, *args, **kwargs):
        if threading.get_ident() != self.thread:
            return self.fn_ref.original_forward(*args, **kwargs)
        run = self.scheduler.run
        evaluation = run.current_evaluation
        branch = run.branch(cache_context_name(self.cache_context))
        if self.on_new_shape is not None:
            sample = kwargs.get("hidden_states", args[0] if args else None)
            if isinstance(sample, (list, tuple)):  # one latent per sample (Z-Image)
                self.on_new_shape((len(sample),) + tuple(sample[0].shape))
            else:
                self.on_new_shape(tuple(sample.shape))
        if self.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        if evaluation is None or evaluation.kind != REFINER or self.refiner is None:
            output = self.fn_ref.original_forward(*args, **kwargs)
            branch.handed_on = self._held(velocity_of(output))
            run.counts["base"] += 1
            return output
        base = self.refiner.config.base_denoiser
        if self.denoiser != base:
            sigma = float(run.sigma_grid[evaluation.sigma_index])
            raise ValueError(
                f"The plan's R step at sigma {sigma:.3g} reaches {self.denoiser!r} in this pipeline, but the refiner "
                f"replaces {base!r} (a two-expert pipeline calls one expert or the other by sigma). Use a plan whose R "
                f"steps all fall where the pipeline calls {base!r}, or a refiner made for {self.denoiser!r}."
            )
        run.answered.add(run.current_index)
        # The run knows the evaluation's exact sigma; the adapter uses it where the class's timesteps do not say it.
        call = self.adapter.read(module, args, kwargs, self.fn_ref.original_forward,
                                 sigma=run.sigma_grid[evaluation.sigma_index])

        def refine(given: torch.Tensor | None) -> torch.Tensor:
            if given is None:
                # No earlier velocity on this branch (a run that starts inside the R block): ask the base model.
                run.counts["base"] += 1
                return call.evaluate_base()
            if not self._refiner_placed:
                _place_like(self.refiner, given)
                self._refiner_placed = True
            run.counts["refiner"] += 1
            return refined_velocity(given, self.refiner.offset(call, given))

        velocity, handed_on, step_velocity = refiner_evaluation(
            evaluation.point, branch.handed_on, branch.step_velocity, refine
        )
        branch.handed_on = handed_on
        branch.step_velocity = None if step_velocity is None else self._held(step_velocity)
        return self.adapter.output(call.arguments, velocity)


def _place_like(module: torch.nn.Module, velocity: torch.Tensor) -> None:
    """Put the refiner on the device and in the dtype the base model computed ``velocity`` in, once per call.

    Read off a base-model output rather than the pipeline (``pipe._execution_device`` and ``transformer.dtype`` walk
    every module: ~12 ms per call on the bundled model), this also follows offloading, which brings the transformer
    to its compute device only for its own forward. Skipped when nothing changes (diffusers warns on every cast).
    """
    parameter = next(module.parameters())
    if parameter.device != velocity.device or parameter.dtype != velocity.dtype:
        with without_cast_warning():
            module.to(device=velocity.device, dtype=velocity.dtype)


@contextmanager
def route_refiner_steps(denoisers: dict[str, torch.nn.Module] | torch.nn.Module, refiner, scheduler,
                        cuda_graphs: bool = False, on_new_shape=None):
    """Within the block, R evaluations of ``scheduler``'s plan go to ``refiner``; yields the hooks. The counts of the
    run are in ``scheduler.run.counts`` afterwards.

    ``denoisers`` maps pipeline component names to the models the pipeline may call for an evaluation (``transformer``,
    and ``transformer_2`` in two-expert pipelines): each gets a hook, so R evaluations are intercepted on whichever
    model the pipeline calls, and one that reaches another expert than the refiner's ``base_denoiser`` raises. The
    hooks are registered on entry and removed on exit (:func:`~flowturbo_diffusers.hooks.installed_hook`), which keeps
    them right when model CPU offloading re-wraps a model at the end of a call.
    """
    if isinstance(denoisers, torch.nn.Module):
        denoisers = {"transformer": denoisers}
    scheduler.refiner_attached = scheduler.refiner_routed = refiner is not None
    try:
        with ExitStack() as stack:
            hooks = []
            for name, module in denoisers.items():
                adapter = adapter_for(module) if refiner is not None and name == refiner.config.base_denoiser else None
                hook = RefinerRoutingHook(refiner, scheduler, adapter, cuda_graphs, on_new_shape, denoiser=name)
                hooks.append(stack.enter_context(installed_hook(module, hook, HOOK_NAME)))
            yield hooks
    finally:
        scheduler.refiner_attached = scheduler.refiner_routed = False
