"""Shared fixtures: tiny offline diffusers pipelines and helpers to count model calls."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# One thread per process: the test models are tiny, so threads only add overhead, and on a 2-core machine two processes
# (accelerate launch tests, a busy machine) with two threads each oversubscribe badly (the conformance suite ran 10x
# slower under load with 2 threads). Set before torch is imported, so that subprocesses inherit it too.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

import pytest
import torch

import tiny_pipelines

pytest_plugins = ["hub_server"]  # the `local_hub` fixture: a local server speaking the Hub API

# Arguments that keep each tiny pipeline tiny (short prompts, no resolution binning, few frames).
CALL_KWARGS = {
    "sd3": dict(height=32, width=32, max_sequence_length=16),
    "flux": dict(height=32, width=32, max_sequence_length=16),
    "sana": dict(height=32, width=32, use_resolution_binning=False, complex_human_instruction=None, max_sequence_length=16),
    "wan": dict(height=32, width=32, num_frames=5, max_sequence_length=16),
}


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


@pytest.fixture
def sd3_pipe():
    pipe = tiny_pipelines.tiny_sd3_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture
def flux_pipe():
    pipe = tiny_pipelines.tiny_flux_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def make_pipe(kind: str, **kwargs):
    pipe = tiny_pipelines.tiny_pipeline(kind, **kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def call(pipe, kind: str, seed: int = 0, **kwargs):
    """Run a tiny pipeline with a fixed seed and return its latents."""
    arguments = dict(CALL_KWARGS[kind], prompt="a red 7 on a blue background", output_type="latent")
    arguments.update(kwargs)
    out = pipe(generator=torch.Generator().manual_seed(seed), **arguments)
    return out.frames if hasattr(out, "frames") else out.images


class CallCounter:
    """Counts forward calls of a module (with a plain torch forward pre-hook)."""

    def __init__(self, module):
        self.count = 0
        self.kwargs = []
        self._handle = module.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        self.count += 1
        self.kwargs.append(kwargs)

    def remove(self):
        self._handle.remove()


def hooks_left(module) -> list[str]:
    """The diffusers hooks and torch forward pre-hooks on ``module`` and its submodules, as ``"module: hook"``: what a
    sampler, counter or tracker left behind."""
    left = []
    for name, submodule in module.named_modules():
        registry = getattr(submodule, "_diffusers_hook", None)
        left += [f"{name}: {hook}" for hook in (registry.hooks if registry is not None else {})]
        left += [f"{name}: forward pre-hook" for _ in submodule._forward_pre_hooks]
    return left
