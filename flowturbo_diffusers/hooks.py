"""Installing diffusers hooks on a transformer for the length of a block, and the one place that reads diffusers'
hook internals.

FlowTurbo intercepts transformer calls with diffusers' own hook system (``HookRegistry``, ``ModelHook``), never by
replacing ``pipe.transformer``, so the model's config, LoRA, ``save_pretrained`` and ``cache_context`` stay intact
(``../shared/docs/diffusers-facts.md``, "Hooks, wrappers, offloading"). Every hook we add goes through
:func:`installed_hook`, which removes it again when the block ends, whatever happened to the module meanwhile.

diffusers 0.42 has public API for all of this but two things, which are read here and nowhere else, each in one
function that ``tests/test_diffusers_internals.py`` checks against the installed diffusers, so an upgrade that changes
them fails loudly there rather than silently elsewhere:

- :func:`_unlink_hook`: dropping a hook from a registry whose module forward was re-wrapped after the hook was
  registered (``enable_model_cpu_offload`` re-wraps modules at the end of every pipeline call), which
  ``HookRegistry.remove_hook`` would undo wrongly (``_hook_order``, ``_fn_refs``);
- :func:`remove_cache_hooks`: the names of diffusers' MagCache and Pyramid Attention Broadcast hooks, to remove them
  from a model without ``CacheMixin.disable_cache`` (SD3's transformer).

:func:`without_cast_warning` also depends on a diffusers detail (the logger and text of one warning), so it lives here.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.hooks.hooks import StateManager


@contextmanager
def installed_hook(module: torch.nn.Module, hook: ModelHook, name: str) -> Iterator[ModelHook]:
    """Register ``hook`` on ``module`` under ``name`` for the block, and remove it on exit (an older hook of that name
    is replaced). Yields the hook.

    If something re-wrapped ``module.forward`` while the block ran (model CPU offloading does, at the end of a
    pipeline call), our hook is already out of the forward chain; it is then only dropped from the registry.
    """
    registry = HookRegistry.check_if_exists_or_initialize(module)
    if registry.get_hook(name) is not None:
        registry.remove_hook(name, recurse=False)
    registry.register_hook(hook, name)
    installed_forward = module.forward
    try:
        yield hook
    finally:
        if module.forward is installed_forward:
            registry.remove_hook(name, recurse=False)
        else:
            _unlink_hook(registry, name)


class CallCounter(ModelHook):
    """Counts the forward calls of the module it is installed on (see :func:`count_calls`)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def new_forward(self, module, *args, **kwargs):
        self.count += 1
        return self.fn_ref.original_forward(*args, **kwargs)


@contextmanager
def count_calls(module: torch.nn.Module) -> Iterator[CallCounter]:
    """Count the calls of ``module`` made inside the block: ``with count_calls(pipe.transformer) as counter: ...``,
    then ``counter.count``. The counting hook is removed on exit."""
    with installed_hook(module, CallCounter(), "flowturbo_call_counter") as counter:
        yield counter


def cache_context_name(state: StateManager) -> str | None:
    """The name of the pipeline's current ``cache_context`` (``"cond"``, ``"uncond"``...) as diffusers sets it on a
    stateful hook's ``StateManager``; ``None`` outside any context (SD3 and Sana never set one)."""
    try:
        return state.context.name
    except ValueError:  # diffusers: "No cache context is set."
        return None


def remove_cache_hooks(transformer: torch.nn.Module, config) -> None:
    """Remove the diffusers cache hooks that ``config`` (a ``MagCacheConfig`` or ``PyramidAttentionBroadcastConfig``)
    installed on ``transformer`` and its blocks, for models without ``disable_cache`` (SD3's transformer)."""
    from diffusers.hooks.mag_cache import _MAG_CACHE_BLOCK_HOOK, _MAG_CACHE_LEADER_BLOCK_HOOK
    from diffusers.hooks.pyramid_attention_broadcast import _PYRAMID_ATTENTION_BROADCAST_HOOK

    names = {
        "MagCacheConfig": (_MAG_CACHE_LEADER_BLOCK_HOOK, _MAG_CACHE_BLOCK_HOOK),
        "PyramidAttentionBroadcastConfig": (_PYRAMID_ATTENTION_BROADCAST_HOOK,),
    }
    if type(config).__name__ not in names:
        raise ValueError(f"Cannot remove the hooks of a {type(config).__name__}; known: {', '.join(names)}.")
    registry = HookRegistry.check_if_exists_or_initialize(transformer)
    for name in names[type(config).__name__]:
        registry.remove_hook(name, recurse=True)
    registry.invalidate_child_registries_cache()


def _unlink_hook(registry: HookRegistry, name: str) -> None:
    """Drop hook ``name`` from ``registry``'s bookkeeping without touching the module's current forward.

    ``HookRegistry.remove_hook`` restores the forward the hook wrapped, which is wrong once something else re-wrapped
    the module since; diffusers has no public call for this, so its private lists are edited here (checked by
    ``tests/test_diffusers_internals.py``).
    """
    position = registry._hook_order.index(name)
    del registry.hooks[name]
    registry._hook_order.pop(position)
    registry._fn_refs.pop(position)


class _CastWarningFilter:
    """Drops diffusers' "There are modules in ... that should be kept in float32: [...]" warning, which
    ``ModelMixin.to(dtype=...)`` logs on every cast, for an empty list too (diffusers/models/modeling_utils.py)."""

    @staticmethod
    def filter(record) -> bool:
        return "should be kept in float32" not in record.getMessage()


@contextmanager
def without_cast_warning() -> Iterator[None]:
    """Within the block, casts of our own modules (the refiner has no float32-only modules) and diffusers' own
    same-dtype cast in ``from_pipe`` do not log that warning; elsewhere it is untouched."""
    from diffusers.utils import logging

    logger = logging.get_logger("diffusers.models.modeling_utils")
    logger.addFilter(_CastWarningFilter)
    try:
        yield
    finally:
        logger.removeFilter(_CastWarningFilter)
