"""Data-free training data: the teacher's own sampling trajectories, recorded call by call through a diffusers hook.

The base pipeline runs on the prompts with its own scheduler; a hook on the transformer records every call: the
latent, the timestep, all other arguments (the conditioning, exactly as this pipeline passes it) and the velocity.
Because the recorded arguments are replayed as they are, only with another latent and timestep, the teacher can be
queried anywhere near its trajectories without any per-pipeline code: the adapter (``adapters.py``) knows the names.
Batched ``[uncond, cond]`` calls and separate guidance calls are both recorded, so both branches are covered.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers.hooks import ModelHook

from ..adapters import TransformerAdapter, adapter_for, velocity_of
from ..hooks import installed_hook
from ..steps import euler_step

RECORDER_HOOK = "flowturbo_trajectory_recorder"


@dataclass
class TeacherCall:
    """One recorded sample of one transformer call: the model saw ``sample`` at ``sigma`` and returned ``velocity``.

    ``per_sample`` holds this sample's slice of the batched arguments (conditioning); ``shared`` the arguments shared
    by the whole call (token positions, flags). ``group`` keys calls that can be batched together.
    """

    sample: torch.Tensor
    velocity: torch.Tensor | None
    sigma: torch.Tensor | None
    per_sample: dict[str, torch.Tensor]
    shared: dict[str, Any]
    group: tuple = field(default=())


class _RecorderHook(ModelHook):
    def __init__(self, adapter: TransformerAdapter, storage_device: torch.device):
        super().__init__()
        self.adapter = adapter
        self.storage_device = storage_device
        self.calls: list[TeacherCall] = []
        # One stored copy per conditioning tensor (pipelines pass the same prompt embeddings at every step). The
        # original is kept alive alongside, so its id cannot be reused by another tensor while we key on it.
        self._stored: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def _store(self, tensor: torch.Tensor, shared: bool = True) -> torch.Tensor:
        if not shared:
            return tensor.detach().to(self.storage_device, copy=True)
        if id(tensor) not in self._stored:
            self._stored[id(tensor)] = (tensor, tensor.detach().to(self.storage_device, copy=True))
        return self._stored[id(tensor)][1]

    def new_forward(self, module, *args, **kwargs):
        output = self.fn_ref.original_forward(*args, **kwargs)
        call = self.adapter.read(module, args, kwargs, self.fn_ref.original_forward)
        self.calls.extend(split_call(self.adapter, call.arguments, velocity_of(output), call.sigma, self._store))
        return output


def split_call(adapter: TransformerAdapter, arguments: dict, velocity: torch.Tensor, sigma: torch.Tensor, store=None):
    """Split one batched call into per-sample :class:`TeacherCall` records."""
    store = store or (lambda tensor, shared=True: tensor.detach().clone())
    sample = store(arguments["hidden_states"], shared=False)
    velocity = store(velocity, shared=False)
    batch = sample.shape[0]
    per_sample, shared = {}, {}
    for name, value in arguments.items():
        if name in ("hidden_states", "timestep", "return_dict"):
            continue
        batched = (
            isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == batch
            and name not in adapter.unbatched_arguments
        )
        if batched:
            per_sample[name] = store(value)
        else:
            shared[name] = store(value) if isinstance(value, torch.Tensor) else value
    group = _group_key(sample, per_sample, shared)
    sigma = sigma.detach().to(torch.float32).cpu()
    return [
        TeacherCall(sample[i], velocity[i], sigma[i], {k: v[i] for k, v in per_sample.items()}, shared, group)
        for i in range(batch)
    ]


def _group_key(sample: torch.Tensor, per_sample: dict, shared: dict) -> tuple:
    """Calls batch together when per-sample shapes match and shared arguments are the same."""

    def describe(value):
        if isinstance(value, torch.Tensor):
            return ("tensor", tuple(value.shape), value.dtype, value.device, value.data_ptr())
        return repr(value)

    return (
        tuple(sample.shape[1:]),
        tuple(sorted((name, tuple(value.shape[1:])) for name, value in per_sample.items())),
        tuple(sorted((name, describe(value)) for name, value in shared.items())),
    )


def record_teacher_calls(
    pipe,
    prompts: list,
    call_kwargs: dict | None = None,
    batch_size: int = 4,
    seed: int = 0,
    storage_device: str | torch.device = "cpu",
    progress: bool = True,
) -> list[TeacherCall]:
    """Run ``pipe`` on ``prompts`` (strings, or class labels for class-conditional pipelines) with its own scheduler
    and return every transformer call it made, per sample. Prompt ``i`` uses the generator seeded ``seed + i``."""
    from tqdm.auto import tqdm

    adapter = adapter_for(pipe.transformer)
    device = getattr(pipe, "_execution_device", "cpu")
    with installed_hook(pipe.transformer, _RecorderHook(adapter, torch.device(storage_device)), RECORDER_HOOK) as hook:
        bar = tqdm(range(0, len(prompts), batch_size), desc="Recording teacher trajectories", disable=not progress)
        for start in bar:
            batch = list(prompts[start : start + batch_size])
            generators = [torch.Generator(device).manual_seed(seed + start + i) for i in range(len(batch))]
            key = "class_labels" if isinstance(batch[0], int) else "prompt"
            pipe(**{key: batch}, generator=generators, output_type="latent", **(call_kwargs or {}))
    return hook.calls


def group_calls(calls: list[TeacherCall]) -> list[list[TeacherCall]]:
    """Calls grouped so that each group can be stacked into batches (in first-seen order, so runs are reproducible)."""
    groups: dict[tuple, list[TeacherCall]] = defaultdict(list)
    for call in calls:
        groups[call.group].append(call)
    return list(groups.values())


def stack_calls(calls: list[TeacherCall], device, dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
    """Stack calls of one group into ``(sample, velocity, sigma, arguments)`` on ``device``, in the teacher's dtype
    (``velocity`` and ``sigma`` are ``None`` for data-based calls)."""

    def move(tensor):
        return tensor.to(device=device, dtype=dtype if tensor.is_floating_point() else tensor.dtype)

    sample = move(torch.stack([call.sample for call in calls]))
    recorded = calls[0].velocity is not None  # data-based calls hold a clean latent and no velocity yet
    velocity = move(torch.stack([call.velocity for call in calls])) if recorded else None
    sigma = torch.stack([call.sigma for call in calls]).to(device) if recorded else None
    arguments = {name: move(torch.stack([call.per_sample[name] for call in calls])) for name in calls[0].per_sample}
    for name, value in calls[0].shared.items():
        arguments[name] = move(value) if isinstance(value, torch.Tensor) else value
    return sample, velocity, sigma, arguments


def check_dt_range(dt_range) -> None:
    """Refuse a range of training-pair steps ``dt`` that is empty or leaves the flow's time."""
    dt_min, dt_max = dt_range
    if not (0 <= dt_min < dt_max < 1):
        raise ValueError(
            f"The dt range must satisfy 0 <= dt_min < dt_max < 1 (a step towards the data within the flow's time), "
            f"got {tuple(dt_range)}. The paper uses (0, 0.12)."
        )


def step_towards_data(sample, velocity, sigma, dt) -> tuple[torch.Tensor, torch.Tensor]:
    """Where a training pair asks the teacher again: an Euler step of ``h = -dt`` towards the data, ``x' = x - dt * v``
    at ``sigma - dt``, with ``dt`` (shape ``(B,)``) clipped at ``sigma`` so that no step goes past the data (method.md,
    "The refiner")."""
    dt = torch.minimum(dt.to(sigma.device), sigma)
    step_size = -dt.view((-1,) + (1,) * (sample.dim() - 1)).to(sample.dtype)
    return euler_step(sample, velocity, step_size), sigma - dt


@torch.no_grad()
def query_teacher(transformer, adapter: TransformerAdapter, arguments: dict, sample, sigma) -> torch.Tensor:
    """The teacher's velocity at ``(sample, sigma)`` with the recorded conditioning ``arguments`` (no gradients)."""
    return velocity_of(transformer(**adapter.with_sample(arguments, sample, sigma)))
