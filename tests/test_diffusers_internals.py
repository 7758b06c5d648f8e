"""The diffusers internals hooks.py relies on (it is the only module that reads them). If a diffusers upgrade changes
them, these tests fail here, naming what changed, instead of hooks going wrong silently elsewhere."""

import torch
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.hooks.hooks import BaseState, StateManager

from flowturbo_diffusers.hooks import (
    _unlink_hook,
    cache_context_name,
    count_calls,
    installed_hook,
    remove_cache_hooks,
)


class _Doubling(ModelHook):
    def new_forward(self, module, *args, **kwargs):
        return 2 * self.fn_ref.original_forward(*args, **kwargs)


class _NoState(BaseState):
    def reset(self, *args, **kwargs):
        pass


def test_hook_registry_keeps_the_private_lists_unlink_hook_edits():
    registry = HookRegistry.check_if_exists_or_initialize(torch.nn.Identity())
    registry.register_hook(_Doubling(), "doubling")
    assert registry._hook_order == ["doubling"], "diffusers renamed or changed HookRegistry._hook_order"
    assert len(registry._fn_refs) == 1, "diffusers renamed or changed HookRegistry._fn_refs"
    _unlink_hook(registry, "doubling")
    assert registry.get_hook("doubling") is None and registry._hook_order == [] and registry._fn_refs == []


def test_a_hook_is_removed_even_if_the_forward_was_rewrapped_meanwhile():
    module = torch.nn.Identity()
    original = module.forward
    with installed_hook(module, _Doubling(), "doubling"):
        assert module(torch.ones(1)).item() == 2
        module.forward = original  # what re-wrapping by offloading amounts to for our hook: out of the chain
    assert HookRegistry.check_if_exists_or_initialize(module).get_hook("doubling") is None
    assert module(torch.ones(1)).item() == 1


def test_installed_hooks_and_counters_are_gone_after_the_block():
    module = torch.nn.Identity()
    with count_calls(module) as counter:
        module(torch.ones(1))
        module(torch.ones(1))
    module(torch.ones(1))
    assert counter.count == 2
    assert HookRegistry.check_if_exists_or_initialize(module).hooks == {}


def test_cache_context_name_reads_the_context_diffusers_sets():
    state = StateManager(_NoState)
    assert cache_context_name(state) is None
    module = torch.nn.Identity()

    class Stateful(ModelHook):
        _is_stateful = True

        def __init__(self):
            super().__init__()
            self.state = state

    from diffusers.hooks.hooks import CacheContext, _set_cache_context

    with installed_hook(module, Stateful(), "stateful"):
        _set_cache_context(module, CacheContext("uncond"))  # what `transformer.cache_context("uncond")` does
        assert cache_context_name(state) == "uncond"
        _set_cache_context(module, None)
    assert cache_context_name(state) is None


def test_cache_hook_names_exist_and_removal_leaves_no_hook(sd3_pipe):
    from diffusers import PyramidAttentionBroadcastConfig
    from diffusers.hooks import apply_pyramid_attention_broadcast

    transformer = sd3_pipe.transformer
    config = PyramidAttentionBroadcastConfig(spatial_attention_block_skip_range=2,
                                             current_timestep_callback=lambda: 500)
    apply_pyramid_attention_broadcast(transformer, config)
    hooked = [m for m in transformer.modules() if getattr(m, "_diffusers_hook", None) and m._diffusers_hook.hooks]
    assert hooked
    remove_cache_hooks(transformer, config)
    assert not [m for m in transformer.modules() if getattr(m, "_diffusers_hook", None) and m._diffusers_hook.hooks]
