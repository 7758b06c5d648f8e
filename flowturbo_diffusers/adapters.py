"""The one place that knows how each diffusers transformer is called.

A refiner needs, from every transformer call, the latent, the sigma, and whatever conditioning the pipeline passes
(pooled text embeddings, encoder hidden states, guidance and token positions). Each transformer class names these
differently, maps sigma to its ``timestep`` differently (SD3 takes ``1000 * sigma``, Flux ``sigma``, Lumina 2 and
Z-Image ``1 - sigma``, Mochi ``1000 * (1 - sigma)``) and lays its latents out differently: ``(B, C, H, W)`` images,
packed token sequences ``(B, L, C)``, ``(B, C, F, H, W)`` videos, channels-last videos (Kandinsky 5) or one tensor
per sample (Z-Image). A :class:`TransformerAdapter` records those differences as a few lines of data per class
(:data:`ADAPTERS`); :func:`adapter_for` picks the one for a transformer, and infers one for a class it does not know
(:func:`infer_adapter`). :func:`register_adapter` adds a class.

Per-token timesteps (Wan 2.2 TI2V-5B's ``expand_timesteps``, LTX-Video conditioning) are read as one sigma per
sample: the largest token sigma, the noise level of the generated tokens (conditioning tokens are cleaner).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Union

import torch

IMAGE, SEQUENCE, VIDEO = "image", "sequence", "video"
RANKS = {SEQUENCE: 3, IMAGE: 4, VIDEO: 5}  # rank of the latent tensor (stacked, for per-sample lists) per layout

ConfigKey = Union[str, tuple[str, int]]  # a config entry, or (entry, index) for an entry that is a list


@dataclass
class TransformerCall:
    """The inputs of one transformer call, as the refiner sees them, plus the call itself.

    ``sample`` is the latent as one tensor (per-sample lists stacked); ``sigma`` has shape ``(B,)``: the call's
    sigma, the largest token sigma when the call passes per-token timesteps. ``evaluate_base`` runs the real
    transformer on the original arguments and returns its output as one tensor (used by oracle refiners in tests).
    """

    sample: torch.Tensor
    sigma: torch.Tensor
    pooled: torch.Tensor | None = None
    context: torch.Tensor | None = None
    guidance: torch.Tensor | None = None
    positions: torch.Tensor | None = None
    arguments: dict[str, Any] = field(default_factory=dict)
    evaluate_base: Callable[[], torch.Tensor] | None = None


@dataclass(frozen=True)
class TransformerAdapter:
    """How one transformer class is called, as data.

    Attributes:
        class_name: The transformer class.
        layout: ``"image"`` ``(B, C, H, W)``, ``"sequence"`` ``(B, L, C)`` or ``"video"`` ``(B, C, F, H, W)`` (the
            layout after stacking per-sample lists and moving channels first).
        timestep_per_sigma, timestep_at_zero_sigma: The pipeline passes ``timestep = timestep_at_zero_sigma +
            timestep_per_sigma * sigma``. ``timestep_per_sigma=None``: no fixed map (CogView4 passes the unshifted
            timestep of a shifted grid); the sigma then comes from the scheduler's run, or from ``timestep_table``.
        timestep_table: ``(sigmas, timesteps)`` pairs measured on the pipeline's own calls, interpolated linearly
            when there is no fixed map (:meth:`with_timestep_table`).
        sample_argument, timestep_argument: Names of the latent and timestep arguments of ``forward``.
        pooled_argument, pooled_dim_key: Pooled text embeddings (fed through adaLN) and the config entry of their
            width.
        context_argument, context_dim_key: Sequence text embeddings (cross-attention) and their width's entry.
        guidance_argument, guidance_per_scale: The distilled-guidance argument; the pipeline passes
            ``guidance_scale * guidance_per_scale``.
        positions_argument: Token coordinates ``(L, k)`` or ``(B, L, k)`` of a sequence layout (Flux's ``img_ids``).
        unbatched_arguments: Tensors shared by the batch even when their first size equals the batch size.
        batch_axes: ``(argument, axis)`` for tensors batched on another axis than 0 (HiDream's Llama states).
        per_sample_lists: Arguments passed as a list with one entry per sample (Z-Image's latents).
        batched_lists: Arguments passed as a list of batched tensors (ControlNet residuals).
        channels_last: The latent has its channels last (Kandinsky 5 videos ``(B, F, H, W, C)``).
        output_sign: ``+1`` if the output is the velocity ``dx/dsigma``, ``-1`` if it is its negative (the pipeline
            negates it, or the scheduler inverts sigmas).
        in_channels_key, out_channels_key: Config entries of the latent's and the output's channels.
        out_channels_per_patch: The output's token width is ``out_channels`` times the patch area (Qwen-Image).
        refused: Why refiners cannot serve this class (``adapter_for`` raises it), or ``None``.
        inferred: Made by :func:`infer_adapter` rather than written down.
    """

    class_name: str
    layout: str
    timestep_per_sigma: float | None
    timestep_at_zero_sigma: float = 0.0
    timestep_table: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    sample_argument: str = "hidden_states"
    timestep_argument: str = "timestep"
    pooled_argument: str | None = None
    pooled_dim_key: ConfigKey | None = None
    context_argument: str | None = "encoder_hidden_states"
    context_dim_key: ConfigKey | None = None
    guidance_argument: str | None = None
    guidance_per_scale: float = 1.0
    positions_argument: str | None = None
    unbatched_arguments: tuple[str, ...] = ()
    batch_axes: tuple[tuple[str, int], ...] = ()
    per_sample_lists: tuple[str, ...] = ()
    batched_lists: tuple[str, ...] = ()
    channels_last: bool = False
    output_sign: float = 1.0
    in_channels_key: str = "in_channels"
    out_channels_key: str = "out_channels"
    out_channels_per_patch: bool = False
    refused: str | None = None
    inferred: bool = False

    # ----------------------------------------------------------------------------------------------------------------
    # What a refiner is built from
    # ----------------------------------------------------------------------------------------------------------------

    def fingerprint(self, config) -> dict[str, Any]:
        """What a refiner must match in a base transformer: class, layout, channels, patch size, conditioning, and
        ``architecture``, a hash of every public key of the transformer's config (the keys that shape the model, as
        ``register_to_config`` records them), so a base with other depth or width but the same channels differs."""
        patch = self.patch_size(config)
        in_channels = config[self.in_channels_key]
        out_channels = config.get(self.out_channels_key) or in_channels
        if self.out_channels_per_patch and config.get(self.out_channels_key):
            out_channels *= _patch_area(config)
        return {
            "architecture": architecture_hash(config),
            "transformer": self.class_name,
            "layout": self.layout,
            "in_channels": in_channels,
            "out_channels": out_channels,
            "patch_size": patch,
            "pooled_dim": _config_value(config, self.pooled_dim_key) if self.pooled_argument else None,
            "context_dim": _config_value(config, self.context_dim_key) if self.context_argument else None,
            "guidance_embeds": bool(config.get("guidance_embeds", False)) and self.guidance_argument is not None,
        }

    def patch_size(self, config) -> list[int]:
        """The base's patch size per latent axis: one value for images (``[2]``), three for videos (``[1, 2, 2]``),
        as the config gives it for sequences (their refiner works on whole tokens)."""
        spatial = config.get("patch_size", config.get("all_patch_size", 1))
        spatial = list(spatial) if isinstance(spatial, (list, tuple)) else [spatial]
        if self.layout != VIDEO or len(spatial) == 3:
            return spatial
        temporal = config.get("patch_size_t", config.get("all_f_patch_size", 1))
        temporal = temporal[0] if isinstance(temporal, (list, tuple)) else temporal
        return [temporal or 1, spatial[0], spatial[-1]]

    # ----------------------------------------------------------------------------------------------------------------
    # Timesteps and sigmas
    # ----------------------------------------------------------------------------------------------------------------

    @property
    def channel_axis(self) -> int:
        """The axis of the latent's channels: last for token sequences and channels-last latents, else 1."""
        return -1 if self.layout == SEQUENCE or self.channels_last else 1

    @property
    def knows_timesteps(self) -> bool:
        """Whether timesteps can be mapped to sigmas and back without the scheduler's run."""
        return self.timestep_per_sigma is not None or self.timestep_table is not None

    def sigma_of(self, timestep: torch.Tensor) -> torch.Tensor:
        """Sigmas (float32, the shape of ``timestep``) of the timesteps a pipeline passes.

        Raises:
            ValueError: when the class has no timestep convention and no table (:attr:`knows_timesteps`).
        """
        timestep = timestep.to(torch.float32)
        if self.timestep_per_sigma is not None:
            return (timestep - self.timestep_at_zero_sigma) / self.timestep_per_sigma
        if self.timestep_table is not None:
            sigmas, timesteps = self.timestep_table
            return _interpolate(timestep, timesteps, sigmas)
        raise ValueError(self._unknown_convention())

    def timestep_of(self, sigma: torch.Tensor) -> torch.Tensor:
        """The timesteps (float32) a pipeline would pass at ``sigma``; the inverse of :meth:`sigma_of`.

        Raises:
            ValueError: when the class has no timestep convention and no table.
        """
        sigma = sigma.to(torch.float32)
        if self.timestep_per_sigma is not None:
            return self.timestep_at_zero_sigma + self.timestep_per_sigma * sigma
        if self.timestep_table is not None:
            sigmas, timesteps = self.timestep_table
            return _interpolate(sigma, sigmas, timesteps)
        raise ValueError(self._unknown_convention())

    def with_timestep_table(self, sigmas, timesteps) -> TransformerAdapter:
        """This adapter with a timestep convention measured on a pipeline's own calls: ``timesteps[i]`` was passed at
        ``sigmas[i]``; in between and beyond, the map is interpolated linearly (exact for the usual affine maps).

        Raises:
            ValueError: for fewer than two distinct sigmas, or timesteps that are not monotonic in sigma.
        """
        pairs = sorted({round(float(s), 7): float(t) for s, t in zip(sigmas, timesteps)}.items())
        if len(pairs) < 2:
            raise ValueError(f"{self.class_name}'s timestep convention is measured on the pipeline's calls, which need "
                             "two noise levels at least: record more than one step (record_steps >= 2).")
        values = [t for _, t in pairs]
        steps = [b - a for a, b in zip(values, values[1:])]
        if not (all(step > 0 for step in steps) or all(step < 0 for step in steps)):
            raise ValueError(f"{self.class_name}'s timesteps are not monotonic in sigma on the pipeline's calls "
                             f"({pairs}); register an adapter with its convention (register_adapter).")
        return replace(self, timestep_table=(tuple(s for s, _ in pairs), tuple(values)))

    def _unknown_convention(self) -> str:
        return (f"{self.class_name} passes timesteps that FlowTurbo cannot map to sigmas on its own (no fixed map for "
                "this class); inside a FlowTurbo pipeline the sigma comes from the scheduler's run. Elsewhere, measure "
                "the map on the pipeline's calls (TransformerAdapter.with_timestep_table), as training does.")

    # ----------------------------------------------------------------------------------------------------------------
    # Reading and replaying calls
    # ----------------------------------------------------------------------------------------------------------------

    def sample_of(self, arguments: dict[str, Any]) -> torch.Tensor:
        """The latent of a call's named arguments as one tensor (a per-sample list is stacked)."""
        sample = arguments[self.sample_argument]
        return torch.stack(list(sample)) if isinstance(sample, (list, tuple)) else sample

    def read(self, module: torch.nn.Module, args: tuple, kwargs: dict, original_forward: Callable | None,
             sigma: float | torch.Tensor | None = None) -> TransformerCall:
        """Name the arguments of a call to ``module`` and pick out what the refiner needs.

        ``sigma`` is the call's sigma where the caller knows it (the scheduler's run); it is used when the class has
        no timestep convention. Otherwise the sigma is read from the timestep: per sample, the largest token sigma.

        Raises:
            ValueError: if the latent's rank does not fit the layout, the timestep's batch does not fit the latent's,
                or the sigma cannot be known.
        """
        arguments = _signature(type(module)).bind_partial(*args, **kwargs).arguments
        sample = self.sample_of(arguments)
        if sample.dim() != RANKS[self.layout]:
            raise ValueError(
                f"{self.class_name} was called with a latent of shape {tuple(sample.shape)}, which does not fit the "
                f"{self.layout!r} layout ({RANKS[self.layout]} dimensions){' inferred for it' if self.inferred else ''}."
                " Register an adapter for the class with its layout (flowturbo_diffusers.adapters.register_adapter)."
            )
        batch = sample.shape[0]
        timestep = arguments.get(self.timestep_argument)
        if self.knows_timesteps and timestep is not None:
            token_sigma = self.sigma_of(torch.as_tensor(timestep, device=sample.device))
            per_sample = token_sigma.reshape(token_sigma.shape[0] if token_sigma.dim() else 1, -1).amax(dim=1)
            if per_sample.shape[0] not in (1, batch):
                raise ValueError(f"{self.class_name} was called with {self.timestep_argument} of shape "
                                 f"{tuple(token_sigma.shape)} for a batch of {batch}; expected (B,) or (B, tokens).")
            call_sigma = per_sample.expand(batch)
        elif sigma is not None:
            call_sigma = torch.as_tensor(sigma, dtype=torch.float32, device=sample.device).reshape(-1).expand(batch)
        else:
            raise ValueError(self._unknown_convention())
        guidance = arguments.get(self.guidance_argument) if self.guidance_argument else None
        if isinstance(guidance, torch.Tensor) and self.guidance_per_scale != 1:
            guidance = guidance / self.guidance_per_scale

        def evaluate_base() -> torch.Tensor:
            return velocity_of(original_forward(*args, **kwargs))

        return TransformerCall(
            sample=sample,
            sigma=call_sigma,
            pooled=arguments.get(self.pooled_argument) if self.pooled_argument else None,
            context=arguments.get(self.context_argument) if self.context_argument else None,
            guidance=guidance,
            positions=arguments.get(self.positions_argument) if self.positions_argument else None,
            arguments=arguments,
            evaluate_base=evaluate_base,
        )

    def with_sample(self, arguments: dict[str, Any], sample: torch.Tensor, sigma: torch.Tensor) -> dict[str, Any]:
        """The same call's arguments at another latent and sigma ``(B,)`` (for teacher queries), returning a tuple.

        Per-token timesteps keep their tokens' own sigmas where these are lower (conditioning tokens), and are set to
        ``sigma`` elsewhere.

        Raises:
            ValueError: when the class has no timestep convention and no table.
        """
        sigma = sigma.to(torch.float32)
        recorded = arguments.get(self.timestep_argument)
        if isinstance(recorded, torch.Tensor) and recorded.dim() >= 2:
            ceiling = sigma.to(recorded.device).view(-1, *([1] * (recorded.dim() - 1)))
            timestep = self.timestep_of(torch.minimum(self.sigma_of(recorded), ceiling))
        else:
            timestep = self.timestep_of(sigma)
        value = list(sample.unbind(0)) if self.sample_argument in self.per_sample_lists else sample
        return {**arguments, self.sample_argument: value, self.timestep_argument: timestep, "return_dict": False}

    def output(self, arguments: dict[str, Any], velocity: torch.Tensor):
        """``velocity`` (one tensor) as the transformer would return it for a call with ``arguments``."""
        if self.sample_argument in self.per_sample_lists:
            samples = list(velocity.unbind(0))
            if not arguments.get("return_dict", True):
                return (samples,)
            from diffusers.models.modeling_outputs import Transformer2DModelOutput

            return Transformer2DModelOutput(sample=samples)
        return self.output_like(arguments, velocity)

    @staticmethod
    def output_like(arguments: dict[str, Any], velocity: torch.Tensor):
        """Wrap ``velocity`` as a transformer with one latent tensor would return it (a tuple when
        ``return_dict=False``)."""
        if not arguments.get("return_dict", True):
            return (velocity,)
        from diffusers.models.modeling_outputs import Transformer2DModelOutput

        return Transformer2DModelOutput(sample=velocity)

    # ----------------------------------------------------------------------------------------------------------------
    # Batches (recording and replaying a teacher's calls per sample)
    # ----------------------------------------------------------------------------------------------------------------

    def split_batch(self, name: str, value: Any, batch: int) -> list | None:
        """The per-sample items of argument ``name`` in a call of ``batch`` samples, or ``None`` if the value is
        shared by the whole batch (flags, shared token positions, per-token tables)."""
        if name in self.per_sample_lists:
            return list(value) if isinstance(value, (list, tuple)) and len(value) == batch else None
        if name in self.batched_lists:
            if isinstance(value, (list, tuple)) and value and all(
                    isinstance(item, torch.Tensor) and item.shape[:1] == (batch,) for item in value):
                return [[item[index] for item in value] for index in range(batch)]
            return None
        if not isinstance(value, torch.Tensor) or name in self.unbatched_arguments:
            return None
        axis = dict(self.batch_axes).get(name, 0)
        if value.dim() > axis and value.shape[axis] == batch:
            return list(value.unbind(axis))
        return None

    def join_batch(self, name: str, items: list) -> Any:
        """The argument ``name`` for a batch made of per-sample ``items`` (the inverse of :meth:`split_batch`)."""
        if name in self.per_sample_lists:
            return list(items)
        if name in self.batched_lists:
            return [torch.stack([item[index] for item in items]) for index in range(len(items[0]))]
        return torch.stack(items, dim=dict(self.batch_axes).get(name, 0))


def _interpolate(x: torch.Tensor, xs: tuple[float, ...], ys: tuple[float, ...]) -> torch.Tensor:
    """Piecewise-linear ``y(x)`` through the points ``(xs, ys)`` (``xs`` increasing), extended linearly beyond."""
    if xs[0] > xs[-1]:
        xs, ys = xs[::-1], ys[::-1]
    knots = torch.tensor(xs, dtype=torch.float64, device=x.device)
    values = torch.tensor(ys, dtype=torch.float64, device=x.device)
    upper = torch.searchsorted(knots, x.double().contiguous()).clamp(1, len(xs) - 1)
    x0, x1, y0, y1 = knots[upper - 1], knots[upper], values[upper - 1], values[upper]
    return (y0 + (x.double() - x0) * (y1 - y0) / (x1 - x0)).to(torch.float32)


def _config_value(config, key: ConfigKey | None):
    if key is None:
        return None
    name, index = (key, None) if isinstance(key, str) else key
    value = config.get(name)
    return value[index] if index is not None and value is not None else value


def _patch_area(config) -> int:
    patch = config.get("patch_size", 1)
    return patch * patch if isinstance(patch, int) else int(torch.tensor(patch).prod())


# ---------------------------------------------------------------------------------------------------------------------
# The classes of the conformance suite (tests/tiny_pipelines), read off how their pipelines call them in diffusers 0.42.
# timestep_per_sigma=None: the pipeline passes an unshifted timestep with a shifted grid (no fixed map).
# ---------------------------------------------------------------------------------------------------------------------

_JOINT, _TEXT, _CAPTION = "joint_attention_dim", "text_embed_dim", "caption_channels"
_FLUX_IDS = dict(positions_argument="img_ids", unbatched_arguments=("img_ids", "txt_ids"))

ADAPTERS: dict[str, TransformerAdapter] = {
    adapter.class_name: adapter
    for adapter in (
        # Images (B, C, H, W)
        TransformerAdapter("SD3Transformer2DModel", IMAGE, 1000.0, pooled_argument="pooled_projections",
                           pooled_dim_key="pooled_projection_dim", context_dim_key=_JOINT,
                           batched_lists=("block_controlnet_hidden_states",)),
        TransformerAdapter("SanaTransformer2DModel", IMAGE, 1000.0, context_dim_key=_CAPTION, guidance_argument="guidance"),
        TransformerAdapter("AuraFlowTransformer2DModel", IMAGE, 1.0, context_dim_key=_JOINT),
        TransformerAdapter("CogView4Transformer2DModel", IMAGE, None, context_dim_key=_TEXT),
        TransformerAdapter("GlmImageTransformer2DModel", IMAGE, None, context_dim_key=_TEXT),
        TransformerAdapter("Lumina2Transformer2DModel", IMAGE, -1.0, 1.0, context_dim_key="cap_feat_dim", output_sign=-1.0),
        TransformerAdapter("HiDreamImageTransformer2DModel", IMAGE, 1000.0, timestep_argument="timesteps",
                           pooled_argument="pooled_embeds", pooled_dim_key="text_emb_dim",
                           context_argument="encoder_hidden_states_t5", context_dim_key=(_CAPTION, 0),
                           batch_axes=(("encoder_hidden_states_llama3", 1),), output_sign=-1.0),
        TransformerAdapter("HunyuanImageTransformer2DModel", IMAGE, 1000.0, context_dim_key=_TEXT,
                           guidance_argument="guidance", guidance_per_scale=1000.0),
        # Packed token sequences (B, L, C)
        TransformerAdapter("FluxTransformer2DModel", SEQUENCE, 1.0, pooled_argument="pooled_projections",
                           pooled_dim_key="pooled_projection_dim", context_dim_key=_JOINT, guidance_argument="guidance",
                           batched_lists=("controlnet_block_samples", "controlnet_single_block_samples"), **_FLUX_IDS),
        TransformerAdapter("Flux2Transformer2DModel", SEQUENCE, 1.0, context_dim_key=_JOINT, guidance_argument="guidance",
                           positions_argument="img_ids"),
        TransformerAdapter("ChromaTransformer2DModel", SEQUENCE, 1.0, context_dim_key=_JOINT, **_FLUX_IDS),
        TransformerAdapter("BriaTransformer2DModel", SEQUENCE, 1000.0, context_dim_key=_JOINT, **_FLUX_IDS),
        TransformerAdapter("QwenImageTransformer2DModel", SEQUENCE, 1.0, context_dim_key=_JOINT,
                           guidance_argument="guidance", per_sample_lists=("img_shapes",), out_channels_per_patch=True),
        TransformerAdapter("LTXVideoTransformer3DModel", SEQUENCE, 1000.0, context_dim_key=_CAPTION),
        # Videos (B, C, F, H, W)
        TransformerAdapter("WanTransformer3DModel", VIDEO, 1000.0, context_dim_key="text_dim"),
        TransformerAdapter("SkyReelsV2Transformer3DModel", VIDEO, 1000.0, context_dim_key="text_dim"),
        TransformerAdapter("HunyuanVideoTransformer3DModel", VIDEO, 1000.0, pooled_argument="pooled_projections",
                           pooled_dim_key="pooled_projection_dim", context_dim_key=_TEXT, guidance_argument="guidance",
                           guidance_per_scale=1000.0),
        TransformerAdapter("HunyuanVideo15Transformer3DModel", VIDEO, 1000.0, context_dim_key=_TEXT),
        TransformerAdapter("MochiTransformer3DModel", VIDEO, -1000.0, 1000.0, context_dim_key=_TEXT, output_sign=-1.0),
        TransformerAdapter("SanaVideoTransformer3DModel", VIDEO, 1000.0, context_dim_key=_CAPTION),
        TransformerAdapter("Kandinsky5Transformer3DModel", VIDEO, 1000.0, pooled_argument="pooled_projections",
                           pooled_dim_key="in_text_dim2", context_dim_key="in_text_dim", channels_last=True,
                           unbatched_arguments=("text_rope_pos",), in_channels_key="in_visual_dim",
                           out_channels_key="out_visual_dim"),
        # Z-Image: one (C, 1, H, W) tensor per sample, caption features of each prompt's own length (not stackable, so
        # the refiner conditions on the velocity only).
        TransformerAdapter("ZImageTransformer2DModel", VIDEO, -1.0, 1.0, sample_argument="x", timestep_argument="t",
                           context_argument=None, per_sample_lists=("x", "cap_feats"), output_sign=-1.0),
        TransformerAdapter(
            "LTX2VideoTransformer3DModel", SEQUENCE, 1000.0, context_dim_key=_CAPTION,
            refused="its transformer returns an audio velocity with the video one (the audio latents are denoised in "
                    "the same calls), and a refiner predicts the video velocity only: R steps would still need the "
                    "transformer for the audio",
        ),
    )
}


def register_adapter(adapter: TransformerAdapter) -> TransformerAdapter:
    """Teach FlowTurbo how a transformer class is called (replacing what it knew or inferred of that class)."""
    ADAPTERS[adapter.class_name] = adapter
    return adapter


def adapter_for(transformer: torch.nn.Module | str) -> TransformerAdapter:
    """The adapter for a transformer (or its class name): the recorded one for its class or a base class, else one
    inferred from its ``forward`` and config (:func:`infer_adapter`).

    Raises:
        ValueError: for a class refiners cannot serve, with the reason.
    """
    name = transformer if isinstance(transformer, str) else type(transformer).__name__
    candidates = [name] if isinstance(transformer, str) else [c.__name__ for c in type(transformer).__mro__]
    adapter = next((ADAPTERS[candidate] for candidate in candidates if candidate in ADAPTERS), None)
    if adapter is None:
        if isinstance(transformer, str):
            raise ValueError(f"FlowTurbo refiners do not support {name} yet: pass the transformer itself to infer how "
                             f"it is called, or register an adapter for it. Known: {', '.join(sorted(ADAPTERS))}.")
        adapter = infer_adapter(transformer)
    if adapter.refused:
        raise ValueError(f"FlowTurbo refiners do not support {name}: {adapter.refused}. The training-free "
                         "FlowTurboScheduler (H/P/E plans) works with it.")
    return adapter


SAMPLE_ARGUMENTS = ("hidden_states", "x", "sample", "latents")
TIMESTEP_ARGUMENTS = ("timestep", "timesteps", "t")
POOLED_ARGUMENTS = {"pooled_projections": "pooled_projection_dim", "pooled_embeds": "text_emb_dim"}
CONTEXT_DIM_KEYS = ("joint_attention_dim", "text_dim", "text_embed_dim", "caption_channels", "cap_feat_dim",
                    "context_dim", "encoder_hid_dim")


def infer_adapter(transformer: torch.nn.Module) -> TransformerAdapter:
    """An adapter for a transformer class FlowTurbo has no record of, inferred from its ``forward`` and config.

    - layout: video for 3D models (``3D`` in the class name, a three-axis ``patch_size`` or a ``patch_size_t``),
      packed tokens when ``forward`` takes ``img_ids`` or ``img_shapes``, else images; checked against the rank of the
      latent at every call;
    - conditioning: pooled embeddings (``pooled_projections``, ``pooled_embeds``), ``encoder_hidden_states``,
      ``guidance`` and ``img_ids`` where ``forward`` takes them and the config gives their width; without any, the
      refiner conditions on the latent, the sigma and the velocity only (the velocity already carries the prompt);
    - sigma: from the scheduler's run while sampling, and from the pipeline's own calls when training (no fixed
      timestep map is assumed).

    Raises:
        ValueError: if the module is not a diffusers model with a config, or its ``forward`` takes no latent or no
            timestep argument.
    """
    name = type(transformer).__name__
    config = getattr(transformer, "config", None)
    parameters = _signature(type(transformer)).parameters
    sample = next((argument for argument in SAMPLE_ARGUMENTS if argument in parameters), None)
    timestep = next((argument for argument in TIMESTEP_ARGUMENTS if argument in parameters), None)
    if config is None or not hasattr(config, "get") or sample is None or timestep is None:
        missing = ("diffusers config" if config is None or not hasattr(config, "get") else
                   f"latent argument ({', '.join(SAMPLE_ARGUMENTS)})" if sample is None else
                   f"timestep argument ({', '.join(TIMESTEP_ARGUMENTS)})")
        raise ValueError(f"FlowTurbo refiners do not support {name} yet: it has no {missing}, so it is not a flow "
                         "transformer FlowTurbo can read. Register an adapter for it (register_adapter).")
    patch = config.get("patch_size")
    if "3D" in name or (isinstance(patch, (list, tuple)) and len(patch) == 3) or config.get("patch_size_t"):
        layout = VIDEO
    elif "img_ids" in parameters or "img_shapes" in parameters:
        layout = SEQUENCE
    else:
        layout = IMAGE
    pooled = next((argument for argument in POOLED_ARGUMENTS
                   if argument in parameters and isinstance(config.get(POOLED_ARGUMENTS[argument]), int)), None)
    context_key = next((key for key in CONTEXT_DIM_KEYS if isinstance(config.get(key), int)), None)
    context = "encoder_hidden_states" if "encoder_hidden_states" in parameters and context_key else None
    return TransformerAdapter(
        name, layout, None, sample_argument=sample, timestep_argument=timestep,
        pooled_argument=pooled, pooled_dim_key=POOLED_ARGUMENTS.get(pooled),
        context_argument=context, context_dim_key=context_key if context else None,
        guidance_argument="guidance" if "guidance" in parameters else None,
        positions_argument="img_ids" if layout == SEQUENCE and "img_ids" in parameters else None,
        inferred=True,
    )


def architecture_hash(config) -> str:
    """A short, stable hash of a model config's public keys (not ``_name_or_path``, ``_diffusers_version``...)."""
    import hashlib
    import json

    public = {key: value for key, value in dict(config).items() if not key.startswith("_")}
    text = json.dumps(public, sort_keys=True, default=lambda value: list(value) if isinstance(value, tuple) else str(value))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def velocity_of(output) -> torch.Tensor:
    """The output tensor of a transformer call (tuple or ``Transformer2DModelOutput``; a per-sample list, as Z-Image
    returns, is stacked)."""
    if isinstance(output, torch.Tensor):
        return output
    first = output[0] if isinstance(output, (tuple, list)) else output.sample
    return torch.stack(list(first)) if isinstance(first, (list, tuple)) else first


_SIGNATURES: dict[type, inspect.Signature] = {}


def _signature(module_class: type) -> inspect.Signature:
    if module_class not in _SIGNATURES:
        signature = inspect.signature(module_class.forward)
        _SIGNATURES[module_class] = signature.replace(parameters=list(signature.parameters.values())[1:])  # no self
    return _SIGNATURES[module_class]
