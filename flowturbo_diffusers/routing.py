"""Route the R evaluations of a pipeline call to the refiner, with a diffusers hook on the transformer.

The pipeline keeps calling ``pipe.transformer`` once per entry of ``scheduler.timesteps``; the hook asks the scheduler
which plan evaluation the call answers. Base-model evaluations run the real forward and their velocity is kept per
guidance branch; R evaluations return ``v + refiner(x, sigma, v, cond)`` instead (method.md, R step), per branch, so
the pipeline's own guidance combines refined velocities exactly as it combines base ones.

Branches are told apart by the pipeline's ``cache_context`` name (Flux true CFG and Wan use "cond"/"uncond") and by
the order of calls within one evaluation (SD3 skip-layer guidance adds a second call); batched ``[uncond, cond]``
calls carry both branches in the batch dimension.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.hooks.hooks import BaseState, StateManager

from .adapters import adapter_for, velocity_of
from .plan import REFINER

HOOK_NAME = "flowturbo_refiner_routing"


class _NoState(BaseState):
    def reset(self, *args, **kwargs) -> None:
        pass


class RefinerRoutingHook(ModelHook):
    """Answers the scheduler's R evaluations with the refiner; lets every other call through to the transformer."""

    _is_stateful = True

    def __init__(self, refiner, scheduler, adapter, cuda_graphs: bool = False, on_new_shape=None):
        super().__init__()
        self.refiner = refiner
        self.scheduler = scheduler
        self.adapter = adapter
        # Under CUDA graphs (compile mode "reduce-overhead"): mark each model call as a new step, and copy the
        # velocities held for later steps out of the graphs' output buffers, which the next replay overwrites.
        self.cuda_graphs = cuda_graphs
        self.on_new_shape = on_new_shape
        # diffusers sets the pipeline's cache context ("cond"/"uncond") on every StateManager of a stateful hook.
        self.cache_context = StateManager(_NoState)
        self.counts = {"base": 0, "refiner": 0}
        self.reset_state(None)

    def reset_state(self, module):
        # diffusers resets stateful hooks when a pipeline call ends (maybe_free_model_hooks); the counts survive that.
        self.velocities: dict[tuple, torch.Tensor] = {}  # last velocity per branch, handed to the next R step
        self.pending: dict[tuple, torch.Tensor] = {}  # v0 of the current R step per branch
        self._evaluation_index = None
        self._calls_in_evaluation: dict = {}
        self._refiner_placed = False
        return module

    def _branch(self) -> tuple:
        index = self.scheduler.current_evaluation_index
        if index != self._evaluation_index:
            self._evaluation_index, self._calls_in_evaluation = index, {}
        context = self.cache_context._context.name if self.cache_context._context is not None else None
        ordinal = self._calls_in_evaluation.get(context, 0)
        self._calls_in_evaluation[context] = ordinal + 1
        return context, ordinal

    def _held(self, velocity: torch.Tensor) -> torch.Tensor:
        return velocity.clone() if self.cuda_graphs else velocity

    def new_forward(self, module, *args, **kwargs):
        evaluation = self.scheduler.current_evaluation
        branch = self._branch()
        if self.on_new_shape is not None:
            sample = kwargs.get("hidden_states", args[0] if args else None)
            self.on_new_shape(tuple(sample.shape))
        if self.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        if evaluation is None or evaluation.kind != REFINER:
            output = self.fn_ref.original_forward(*args, **kwargs)
            self.velocities[branch] = self._held(velocity_of(output))
            self.counts["base"] += 1
            return output
        call = self.adapter.read(module, args, kwargs, self.fn_ref.original_forward)
        if evaluation.point == "start":
            given = self.velocities.get(branch)
        else:
            given = self.pending.pop(branch, None)
        if given is None:
            # No earlier velocity on this branch (a run that starts inside the R block): ask the base model.
            velocity = call.evaluate_base()
            self.counts["base"] += 1
        else:
            if not self._refiner_placed:
                _place_like(self.refiner, given)
                self._refiner_placed = True
            velocity = self.refiner.refine(call, given)
            self.counts["refiner"] += 1
        if evaluation.point == "start":
            self.pending[branch] = self._held(velocity)
        else:
            self.velocities[branch] = self._held(velocity) if given is None else given  # v_prev := v0 (method.md)
        return self.adapter.output_like(call.arguments, velocity)


def _place_like(module: torch.nn.Module, velocity: torch.Tensor) -> None:
    """Put the refiner on the device and in the dtype the base model computed ``velocity`` in, once per call.

    Read off a base-model output rather than the pipeline (``pipe._execution_device`` and ``transformer.dtype`` walk
    every module: ~12 ms per call on the bundled model), this also follows offloading, which brings the transformer
    to its compute device only for its own forward. Skipped when nothing changes (diffusers warns on every cast).
    """
    parameter = next(module.parameters())
    if parameter.device != velocity.device or parameter.dtype != velocity.dtype:
        module.to(device=velocity.device, dtype=velocity.dtype)


@contextmanager
def route_refiner_steps(transformer: torch.nn.Module, refiner, scheduler, cuda_graphs: bool = False, on_new_shape=None):
    """Within the block, R evaluations of ``scheduler``'s plan go to ``refiner``; yields the hook, whose ``counts``
    tally base-model and refiner evaluations.

    The hook is registered on entry and removed on exit. If model CPU offloading re-wrapped the transformer in the
    meantime (``maybe_free_model_hooks`` does at the end of a call), our hook is already out of the forward chain and
    is only dropped from the registry.
    """
    registry = HookRegistry.check_if_exists_or_initialize(transformer)
    if HOOK_NAME in registry.hooks:
        _remove(registry, transformer, None)
    hook = RefinerRoutingHook(refiner, scheduler, adapter_for(transformer), cuda_graphs, on_new_shape)
    registry.register_hook(hook, HOOK_NAME)
    installed_forward = transformer.forward
    scheduler.refiner_attached = refiner is not None
    try:
        yield hook
    finally:
        scheduler.refiner_attached = False
        _remove(registry, transformer, installed_forward)


def _remove(registry: HookRegistry, transformer: torch.nn.Module, installed_forward) -> None:
    if installed_forward is None or transformer.forward is installed_forward:
        registry.remove_hook(HOOK_NAME, recurse=False)
        return
    position = registry._hook_order.index(HOOK_NAME)
    del registry.hooks[HOOK_NAME]
    registry._hook_order.pop(position)
    registry._fn_refs.pop(position)
