"""Data-free training data: the teacher's own sampling trajectories, recorded call by call through a diffusers hook.

The base pipeline runs on the prompts with its own scheduler; a hook on the teacher (the pipeline's ``transformer``, or
the expert a refiner replaces, such as Wan 2.2 A14B's ``transformer_2``) records every call: the latent, the timestep,
all other arguments (the conditioning, exactly as this pipeline passes it) and the velocity. Because the recorded
arguments are replayed as they are, only with another latent and timestep, the teacher can be queried anywhere near
its trajectories without any per-pipeline code: the adapter (``adapters.py``) knows the names and which arguments
are batched. Batched ``[uncond, cond]`` calls and separate guidance calls are both recorded, so both branches are
covered.

For a transformer class without a fixed timestep-to-sigma map (CogView4 passes the unshifted timestep of a shifted
grid), the pipeline's grid is stepped by Euler through ``FlowTurboScheduler``, whose run knows each call's sigma, and
the map is measured on those calls (:func:`timestep_convention`).
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
    def __init__(self, adapter: TransformerAdapter, storage_device: torch.device, sigma_of_call=None):
        super().__init__()
        self.adapter = adapter
        self.storage_device = storage_device
        self.sigma_of_call = sigma_of_call  # the scheduler run's sigma, for classes without a timestep map
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
        sigma = self.sigma_of_call() if self.sigma_of_call is not None else None
        output = self.fn_ref.original_forward(*args, **kwargs)
        call = self.adapter.read(module, args, kwargs, self.fn_ref.original_forward, sigma=sigma)
        self.calls.extend(split_call(self.adapter, call.arguments, velocity_of(output), call.sigma, self._store))
        return output


def split_call(adapter: TransformerAdapter, arguments: dict, velocity: torch.Tensor, sigma: torch.Tensor, store=None):
    """Split one batched call into per-sample :class:`TeacherCall` records (the adapter says which arguments are
    batched, and along which axis); ``sigma`` has shape ``(B,)``."""
    store = store or (lambda tensor, shared=True: tensor.detach().clone())

    def stored(value):
        if isinstance(value, torch.Tensor):
            return store(value)
        if isinstance(value, (list, tuple)) and any(isinstance(item, torch.Tensor) for item in value):
            return type(value)(store(item) if isinstance(item, torch.Tensor) else item for item in value)
        return value

    sample = store(adapter.sample_of(arguments), shared=False)
    velocity = store(velocity, shared=False)
    batch = sample.shape[0]
    per_sample, shared = {}, {}
    for name, value in arguments.items():
        if name in (adapter.sample_argument, "return_dict"):
            continue
        value = stored(value)
        items = adapter.split_batch(name, value, batch)
        if items is not None:
            per_sample[name] = items
        else:
            shared[name] = value
    sigma = sigma.detach().to(torch.float32).cpu()
    calls = []
    for i in range(batch):
        own = {name: items[i] for name, items in per_sample.items()}
        calls.append(TeacherCall(sample[i], velocity[i], sigma[i], own, shared, _group_key(sample[i], own, shared)))
    return calls


def _group_key(sample: torch.Tensor, per_sample: dict, shared: dict) -> tuple:
    """Calls batch together when the per-sample shapes match and the shared arguments are the same."""

    def describe(value, identity: bool = True):
        if isinstance(value, torch.Tensor):
            return ("tensor", tuple(value.shape), value.dtype, value.device) + ((value.data_ptr(),) if identity else ())
        if isinstance(value, (list, tuple)):
            return tuple(describe(item, identity) for item in value)
        return repr(value)

    return (
        tuple(sample.shape),
        tuple(sorted((name, describe(value, identity=False)) for name, value in per_sample.items())),
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
    denoiser: str = "transformer",
) -> list[TeacherCall]:
    """Run ``pipe`` on ``prompts`` (strings, or class labels for class-conditional pipelines) with its own scheduler
    and return every call it made of its ``denoiser`` component (``"transformer_2"`` for Wan 2.2 A14B's low-noise
    expert), per sample. Prompt ``i`` uses the generator seeded ``seed + i``.

    For a transformer class without a fixed timestep map, the pipeline's own grid is stepped by Euler through
    ``FlowTurboScheduler`` instead (the same steps for Euler pipelines), so that every call's sigma is known.

    Raises:
        ValueError: for a transformer class refiners cannot serve.
    """
    from tqdm.auto import tqdm

    teacher = getattr(pipe, denoiser)
    adapter = adapter_for(teacher)
    device = getattr(pipe, "_execution_device", "cpu")
    own_scheduler, sigma_of_call = pipe.scheduler, None
    if not adapter.knows_timesteps:
        from ..scheduler import FlowTurboScheduler

        pipe.scheduler = FlowTurboScheduler.from_config(own_scheduler.config, plan="E*")

        def sigma_of_call():
            run = pipe.scheduler.run
            return run.sigma_grid[run.current_evaluation.sigma_index]

    recorder = _RecorderHook(adapter, torch.device(storage_device), sigma_of_call)
    try:
        with installed_hook(teacher, recorder, RECORDER_HOOK) as hook:
            bar = tqdm(range(0, len(prompts), batch_size), desc="Recording teacher trajectories", disable=not progress)
            for start in bar:
                batch = list(prompts[start : start + batch_size])
                generators = [torch.Generator(device).manual_seed(seed + start + i) for i in range(len(batch))]
                key = "class_labels" if isinstance(batch[0], int) else "prompt"
                pipe(**{key: batch}, generator=generators, output_type="latent", **(call_kwargs or {}))
    finally:
        pipe.scheduler = own_scheduler
    return hook.calls


def timestep_convention(adapter: TransformerAdapter, calls: list[TeacherCall]) -> TransformerAdapter:
    """``adapter``, with its timestep-to-sigma map measured on recorded ``calls`` if it has no fixed one (the pairs of
    each call's sigma and the timestep it was passed; per-token timesteps are not measurable this way).

    Raises:
        ValueError: if the calls cannot give the map (one noise level only, per-token timesteps, or timesteps that are
            not monotonic in sigma).
    """
    if adapter.knows_timesteps:
        return adapter
    pairs = [(float(call.sigma), call.per_sample.get(adapter.timestep_argument)) for call in calls
             if call.sigma is not None]
    if any(not isinstance(timestep, torch.Tensor) or timestep.numel() != 1 for _, timestep in pairs):
        raise ValueError(f"{adapter.class_name} passes per-token or unbatched timesteps without a fixed map to sigma; "
                         "register an adapter with its timestep convention (register_adapter).")
    return adapter.with_timestep_table([sigma for sigma, _ in pairs], [float(timestep) for _, timestep in pairs])


def group_calls(calls: list[TeacherCall]) -> list[list[TeacherCall]]:
    """Calls grouped so that each group can be stacked into batches (in first-seen order, so runs are reproducible)."""
    groups: dict[tuple, list[TeacherCall]] = defaultdict(list)
    for call in calls:
        groups[call.group].append(call)
    return list(groups.values())


def stack_calls(calls: list[TeacherCall], device, dtype, adapter: TransformerAdapter | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
    """Stack calls of one group into ``(sample, velocity, sigma, arguments)`` on ``device``, in the teacher's dtype
    (``velocity`` and ``sigma`` are ``None`` for data-based calls). ``adapter`` (the teacher's) joins the batched
    arguments along their own axes; without it, every one is stacked on axis 0."""

    def move(value):
        if isinstance(value, torch.Tensor):
            return value.to(device=device, dtype=dtype if value.is_floating_point() else value.dtype)
        if isinstance(value, (list, tuple)):
            return type(value)(move(item) for item in value)
        return value

    sample = move(torch.stack([call.sample for call in calls]))
    recorded = calls[0].velocity is not None  # data-based calls hold a clean latent and no velocity yet
    velocity = move(torch.stack([call.velocity for call in calls])) if recorded else None
    sigma = torch.stack([call.sigma for call in calls]).to(device) if recorded else None
    arguments = {}
    for name in calls[0].per_sample:
        items = [call.per_sample[name] for call in calls]
        arguments[name] = move(adapter.join_batch(name, items) if adapter is not None else torch.stack(items))
    for name, value in calls[0].shared.items():
        arguments[name] = move(value)
    return sample, velocity, sigma, arguments


def check_dt_range(dt_range) -> None:
    """Refuse a range of training-pair steps ``dt`` that is empty or leaves the flow's time."""
    dt_min, dt_max = dt_range
    if not (0 <= dt_min < dt_max < 1):
        raise ValueError(
            f"The dt range must satisfy 0 <= dt_min < dt_max < 1 (a step towards the data within the flow's time), "
            f"got {tuple(dt_range)}. The paper uses (0, 0.12)."
        )


def step_towards_data(sample, velocity, sigma, dt, channel_axis: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Where a training pair asks the teacher again: an Euler step of ``h = -dt`` towards the data, ``x' = x - dt * v``
    at ``sigma - dt``, with ``dt`` (shape ``(B,)``) clipped at ``sigma`` so that no step goes past the data (method.md,
    "The refiner"). ``velocity`` is ``dx/dsigma`` (a model whose output is its negative, ``output_sign=-1``, has it
    negated first).

    A latent with more channels than the velocity (along ``channel_axis``) carries conditioning after its noisy
    channels (image-to-video, fill and control pipelines concatenate them so): only the leading ones move."""
    dt = torch.minimum(dt.to(sigma.device), sigma)
    step_size = -dt.view((-1,) + (1,) * (sample.dim() - 1)).to(sample.dtype)
    noisy = velocity.shape[channel_axis]
    if sample.shape[channel_axis] == noisy:
        return euler_step(sample, velocity, step_size), sigma - dt
    moving, conditioning = sample.split([noisy, sample.shape[channel_axis] - noisy], dim=channel_axis)
    return torch.cat([euler_step(moving, velocity, step_size), conditioning], dim=channel_axis), sigma - dt


@torch.no_grad()
def query_teacher(transformer, adapter: TransformerAdapter, arguments: dict, sample, sigma) -> torch.Tensor:
    """The teacher's output (its velocity, up to ``adapter.output_sign``) at ``(sample, sigma (B,))`` with the recorded
    conditioning ``arguments`` (no gradients)."""
    return velocity_of(transformer(**adapter.with_sample(arguments, sample, sigma)))
