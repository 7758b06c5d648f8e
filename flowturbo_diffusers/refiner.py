"""VelocityRefiner: the small learned model that answers FlowTurbo's R steps in place of the base transformer.

Given the latent ``x``, the sigma, the conditioning and the velocity ``v`` of an earlier evaluation, it predicts the
*change* of velocity, so an R evaluation returns ``v + refiner(x, sigma, v, cond)`` (method.md, "R: refiner step").
Architecture as in the paper: ``x`` and ``v`` concatenated on channels and patch-embedded, a DiT block (adaLN-Zero
conditioned on the timestep, pooled text embeddings and, for guidance-distilled models, the guidance scale; optional
cross-attention to the encoder hidden states), and a zero-initialised output layer, so an untrained refiner returns
``v`` unchanged.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import logging
from torch import nn

from .adapters import IMAGE, SEQUENCE, VIDEO, TransformerCall, adapter_for
from .hooks import without_cast_warning
from .steps import refined_velocity

logger = logging.get_logger(__name__)

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
DEFAULT_MAX_PARAMETER_FRACTION = 0.05


class RefinerLoadError(OSError):
    """A refiner checkpoint that cannot be used: missing, corrupt, pickle-only or not a VelocityRefiner."""


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int, context_dim: int | None = None):
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim)
        self.to_kv = nn.Linear(context_dim or dim, 2 * dim)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        batch, tokens, dim = x.shape
        keys, values = self.to_kv(x if context is None else context).chunk(2, dim=-1)

        def split(t):
            return t.reshape(batch, -1, self.heads, dim // self.heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(self.to_q(x)), split(keys), split(values))
        return self.to_out(out.transpose(1, 2).reshape(batch, tokens, dim))


class RefinerBlock(nn.Module):
    """A DiT block with adaLN-Zero modulation and optional cross-attention to the text tokens."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, context_dim: int | None):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attention = _Attention(dim, heads)
        self.cross_attention = _Attention(dim, heads, context_dim) if context_dim else None
        self.norm_cross = nn.LayerNorm(dim, eps=1e-6) if context_dim else None
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        self.modulation = nn.Linear(dim, 6 * dim)
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)

    def forward(self, x: torch.Tensor, conditioning: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(F.silu(conditioning)).chunk(6, dim=-1)
        x = x + gate1[:, None] * self.attention(_modulate(self.norm1(x), shift1, scale1))
        if self.cross_attention is not None and context is not None:
            x = x + self.cross_attention(self.norm_cross(x), context)
        return x + gate2[:, None] * self.mlp(_modulate(self.norm2(x), shift2, scale2))


def sincos_position_embedding(coordinates: torch.Tensor, dim: int) -> torch.Tensor:
    """Fixed sin/cos embedding of token coordinates ``(N, k)``: ``dim // k`` channels per coordinate, zero-padded."""
    count = coordinates.shape[-1]
    per_coordinate = (dim // count) // 2 * 2
    half = per_coordinate // 2
    frequencies = torch.exp(
        -math.log(10000.0) * torch.arange(half, device=coordinates.device, dtype=torch.float32) / max(half, 1)
    )
    angles = coordinates.to(torch.float32)[..., None] * frequencies  # (N, k, half)
    embedding = torch.cat([angles.sin(), angles.cos()], dim=-1).flatten(-2)
    return F.pad(embedding, (0, dim - embedding.shape[-1]))


class VelocityRefiner(ModelMixin, ConfigMixin):
    """Predicts the velocity change for FlowTurbo's R steps; see the module docstring and ``docs/refiner.md``.

    Build one sized for a base model with :meth:`for_transformer`; load one with ``from_pretrained``.

    Args:
        layout (`str`): `"image"` (B, C, H, W), `"sequence"` (B, L, C) packed tokens, or `"video"` (B, C, F, H, W).
        channels_last (`bool`): The latent and velocity have their channels last ((B, H, W, C) or (B, F, H, W, C),
            as Kandinsky 5's videos); they are moved first inside the refiner and back for its output.
        in_channels (`int`): Channels (or token width) of the latent.
        out_channels (`int`, *optional*): Channels of the velocity; defaults to `in_channels`.
        patch_size (`list[int]`): Patch size per spatial axis (one value for images, three for videos, `[1]` for
            sequences).
        hidden_size, num_layers, num_attention_heads, mlp_ratio: Size of the transformer blocks.
        pooled_dim (`int`, *optional*): Width of pooled text embeddings, fed through adaLN.
        context_dim (`int`, *optional*): Width of the encoder hidden states.
        cross_attention (`bool`): Attend to the encoder hidden states (needs `context_dim`).
        guidance_embeds (`bool`): Condition on the guidance scale (guidance-distilled models such as Flux-dev).
        base_model (`str`, *optional*): Name or Hub id of the model this refiner was made for.
        base_denoiser (`str`, defaults to `"transformer"`): The pipeline component whose evaluations it replaces:
            `"transformer_2"` for the low-noise expert of a two-expert pipeline (Wan 2.2 A14B), whose late steps are
            the R steps.
        base_fingerprint (`dict`, *optional*): The base transformer's fingerprint; checked before sampling.
        recommended_plans (`list[str]`): Plans to offer users, best first.
        offset_scale (`float`): Multiplies the predicted offset in R steps (:meth:`refine`). 1 applies it as trained;
            :func:`~flowturbo_diffusers.training.calibrate_offset_scale` chooses a value against a reference solve
            (a learned offset fed its own velocities can over-correct; see docs/refiner.md).
        training_info (`dict`, *optional*): How the refiner was trained and what it measured (for the model card).
    """

    _supports_gradient_checkpointing = False

    @register_to_config
    def __init__(
        self,
        layout: str = IMAGE,
        in_channels: int = 16,
        out_channels: int | None = None,
        patch_size: list[int] | tuple[int, ...] = (2,),
        hidden_size: int = 256,
        num_layers: int = 1,
        num_attention_heads: int = 4,
        mlp_ratio: float = 4.0,
        pooled_dim: int | None = None,
        context_dim: int | None = None,
        cross_attention: bool = False,
        guidance_embeds: bool = False,
        base_model: str | None = None,
        base_denoiser: str = "transformer",
        base_fingerprint: dict | None = None,
        recommended_plans: list[str] | tuple[str, ...] = ("H1P5R3", "H1P*R3"),
        training_info: dict | None = None,
        offset_scale: float = 1.0,
        channels_last: bool = False,
    ):
        super().__init__()
        if not (math.isfinite(offset_scale) and 0 <= offset_scale <= 2):
            raise ValueError(f"offset_scale must be between 0 (no refinement) and 2, got {offset_scale}; 1 applies the "
                             "offset as trained.")
        if layout not in (IMAGE, SEQUENCE, VIDEO):
            raise ValueError(f"layout must be 'image', 'sequence' or 'video', got {layout!r}.")
        if hidden_size % num_attention_heads:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by num_attention_heads {num_attention_heads}.")
        if cross_attention and not context_dim:
            raise ValueError("cross_attention=True needs context_dim (the width of the encoder hidden states).")
        out_channels = out_channels or in_channels
        patch = tuple(patch_size) if layout != SEQUENCE else (1,)
        patch = patch * 2 if layout == IMAGE and len(patch) == 1 else patch
        self.patch = patch
        inputs = in_channels + out_channels
        if layout == IMAGE:
            self.embed = nn.Conv2d(inputs, hidden_size, kernel_size=patch, stride=patch)
        elif layout == VIDEO:
            self.embed = nn.Conv3d(inputs, hidden_size, kernel_size=patch, stride=patch)
        else:
            self.embed = nn.Linear(inputs, hidden_size)
        self.time_proj = Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embed = TimestepEmbedding(256, hidden_size)
        self.pooled_embed = TimestepEmbedding(pooled_dim, hidden_size) if pooled_dim else None
        self.guidance_embed = TimestepEmbedding(256, hidden_size) if guidance_embeds else None
        context_width = context_dim if cross_attention else None
        self.blocks = nn.ModuleList(
            [RefinerBlock(hidden_size, num_attention_heads, mlp_ratio, context_width) for _ in range(num_layers)]
        )
        self.norm_out = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.modulation_out = nn.Linear(hidden_size, 2 * hidden_size)
        self.proj_out = nn.Linear(hidden_size, math.prod(patch) * out_channels)
        for layer in (self.modulation_out, self.proj_out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    # ----------------------------------------------------------------------------------------------------------------
    # Forward
    # ----------------------------------------------------------------------------------------------------------------

    def forward(
        self,
        sample: torch.Tensor,
        velocity: torch.Tensor,
        sigma: torch.Tensor,
        pooled: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
        guidance: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Return the velocity offset (shape of ``velocity``) at ``(sample, sigma)`` given ``velocity``.

        ``sigma`` is in [0, 1] with shape ``(B,)``; ``positions`` are Flux-style token coordinates ``(L, k)`` for the
        sequence layout (token order is used without them).

        Raises:
            ValueError: if ``velocity`` is not shaped like ``sample`` but for its channels (a base whose output is not
                a velocity of the latent cannot be refined).
        """
        channel_axis = -1 if self.config.layout == SEQUENCE or self.config.channels_last else 1
        if (sample.dim() != velocity.dim() or sample.shape[0] != velocity.shape[0]
                or _without(sample.shape, channel_axis) != _without(velocity.shape, channel_axis)):
            raise ValueError(f"The velocity {tuple(velocity.shape)} is not shaped like the latent {tuple(sample.shape)} "
                             "but for its channels: the base model's output is not a velocity of its latent, which a "
                             "refiner cannot refine.")
        if self.config.channels_last and self.config.layout != SEQUENCE:
            sample, velocity = sample.movedim(-1, 1), velocity.movedim(-1, 1)
            return self._offset(sample, velocity, sigma, pooled, context, guidance, positions).movedim(1, -1)
        return self._offset(sample, velocity, sigma, pooled, context, guidance, positions)

    def _offset(self, sample, velocity, sigma, pooled, context, guidance, positions) -> torch.Tensor:
        dtype = self.embed.weight.dtype
        tokens, grid = self._tokens(torch.cat([sample, velocity], dim=-1 if self.config.layout == SEQUENCE else 1).to(dtype))
        coordinates = self._coordinates(grid, positions, tokens)
        tokens = tokens + sincos_position_embedding(coordinates, tokens.shape[-1]).to(dtype)
        conditioning = self.time_embed(self.time_proj(sigma.to(torch.float32) * 1000).to(dtype))
        if self.pooled_embed is not None and pooled is not None:
            conditioning = conditioning + self.pooled_embed(pooled.to(dtype))
        if self.guidance_embed is not None and guidance is not None:
            conditioning = conditioning + self.guidance_embed(self.time_proj(guidance.to(torch.float32) * 1000).to(dtype))
        context = context.to(dtype) if context is not None and self.config.cross_attention else None
        for block in self.blocks:
            tokens = block(tokens, conditioning, context)
        shift, scale = self.modulation_out(F.silu(conditioning)).chunk(2, dim=-1)
        tokens = self.proj_out(_modulate(self.norm_out(tokens), shift, scale))
        return self._untokens(tokens, grid, velocity.shape).to(velocity.dtype)

    def _tokens(self, inputs: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        embedded = self.embed(inputs)
        if self.config.layout == SEQUENCE:
            return embedded, (embedded.shape[1],)
        grid = tuple(embedded.shape[2:])
        return embedded.flatten(2).transpose(1, 2), grid

    def _coordinates(self, grid: tuple[int, ...], positions: torch.Tensor | None, tokens: torch.Tensor) -> torch.Tensor:
        if self.config.layout == SEQUENCE and positions is not None:
            return positions[0] if positions.dim() == 3 else positions
        axes = [torch.arange(n, device=tokens.device, dtype=torch.float32) for n in grid]
        return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(grid))

    def _untokens(self, tokens: torch.Tensor, grid: tuple[int, ...], shape: torch.Size) -> torch.Tensor:
        if self.config.layout == SEQUENCE:
            return tokens
        batch, channels = shape[0], shape[1]
        tokens = tokens.reshape(batch, *grid, *self.patch, channels)
        axes = len(grid)
        # (B, g1..gk, p1..pk, C) -> (B, C, g1, p1, ..., gk, pk)
        order = [0, 2 * axes + 1] + [i for pair in zip(range(1, axes + 1), range(axes + 1, 2 * axes + 1)) for i in pair]
        return tokens.permute(*order).reshape(shape)

    def offset(self, call: TransformerCall, velocity: torch.Tensor) -> torch.Tensor:
        """The offset an R evaluation adds to ``velocity``: ``offset_scale * refiner(x, sigma, velocity, cond)`` at the
        latent, sigma and conditioning of one routed transformer call (shape of ``velocity``)."""
        offset = self(call.sample, velocity, call.sigma, call.pooled, call.context, call.guidance, call.positions)
        scale = self.config.offset_scale
        return offset if scale == 1 else scale * offset

    def refine(self, call: TransformerCall, velocity: torch.Tensor) -> torch.Tensor:
        """The refined velocity ``velocity + offset`` for one routed transformer call (method.md, R step; see
        :meth:`offset` and :func:`~flowturbo_diffusers.steps.refined_velocity`)."""
        return refined_velocity(velocity, self.offset(call, velocity))

    # ----------------------------------------------------------------------------------------------------------------
    # Sizing and compatibility
    # ----------------------------------------------------------------------------------------------------------------

    @classmethod
    def config_for_transformer(
        cls, transformer: torch.nn.Module, max_parameter_fraction: float = DEFAULT_MAX_PARAMETER_FRACTION, **overrides
    ) -> dict[str, Any]:
        """A refiner config for ``transformer``: one block at the base width, narrowed until it has at most
        ``max_parameter_fraction`` of the base's parameters (unless ``hidden_size`` is given). Its layout,
        channels and conditioning come from the class's adapter (:func:`~flowturbo_diffusers.adapters.adapter_for`):
        pooled embeddings through adaLN where the base takes them, cross-attention to the text tokens otherwise, and
        the velocity alone where the base takes neither in a form the refiner can read.

        Raises:
            ValueError: for a transformer class refiners cannot serve, with the reason.
        """
        adapter = adapter_for(transformer)
        config = transformer.config
        fingerprint = adapter.fingerprint(config)
        width, heads = _base_width(config)
        defaults = dict(
            layout=adapter.layout,
            channels_last=adapter.channels_last,
            in_channels=fingerprint["in_channels"],
            out_channels=fingerprint["out_channels"],
            patch_size=fingerprint["patch_size"],
            hidden_size=width,
            num_layers=1,
            num_attention_heads=heads,
            pooled_dim=fingerprint["pooled_dim"],
            context_dim=fingerprint["context_dim"],
            # no pooled text: attend to the text tokens instead (neither: the velocity alone carries the prompt)
            cross_attention=fingerprint["pooled_dim"] is None and fingerprint["context_dim"] is not None,
            guidance_embeds=fingerprint["guidance_embeds"],
            base_model=model_name(config.get("_name_or_path")),
            base_fingerprint=fingerprint,
        )
        defaults.update(overrides)
        if "hidden_size" not in overrides:
            budget = max_parameter_fraction * sum(p.numel() for p in transformer.parameters())
            step = 2 * defaults["num_attention_heads"]
            while defaults["hidden_size"] > 4 * step and cls.count_parameters(defaults) > budget:
                defaults["hidden_size"] = max(4 * step, (int(defaults["hidden_size"] * 0.875) // step) * step)
        return defaults

    @classmethod
    def for_transformer(
        cls, transformer: torch.nn.Module, max_parameter_fraction: float = DEFAULT_MAX_PARAMETER_FRACTION, **overrides
    ) -> VelocityRefiner:
        """A new (zero-initialised) refiner sized for ``transformer``, on its device and dtype."""
        config = cls.config_for_transformer(transformer, max_parameter_fraction, **overrides)
        parameter = next(transformer.parameters())
        refiner = cls(**config)
        with without_cast_warning():
            return refiner.to(device=parameter.device, dtype=parameter.dtype)

    @classmethod
    def count_parameters(cls, config: dict[str, Any]) -> int:
        """Parameters of a refiner with ``config``, counted without allocating weights."""
        with torch.device("meta"):
            return sum(p.numel() for p in cls(**config).parameters())

    def check_compatible(self, transformer: torch.nn.Module, check_base_model: bool = True) -> None:
        """Raise a ``ValueError`` naming every difference if this refiner was not made for ``transformer``.

        The refiner's recorded ``base_fingerprint`` (class, layout, channels, conditioning and the architecture hash
        of the base's config, :meth:`TransformerAdapter.fingerprint`) must match the transformer's. With
        ``check_base_model``, a refiner made for one Hub model is also refused for another Hub model of the same
        architecture (the names are compared when both are Hub ids; a local folder cannot be compared by name): pass
        ``check_base_model=False`` for a fine-tune or a LoRA-loaded variant of the refiner's base, on which it may be
        less accurate.
        """
        expected = self.config.base_fingerprint
        if not expected:
            raise ValueError(
                "This refiner records no base-model fingerprint, so it cannot be checked against the pipeline. Build "
                "refiners with VelocityRefiner.for_transformer(pipe.transformer)."
            )
        actual = adapter_for(transformer).fingerprint(transformer.config)
        if "architecture" not in expected:
            logger.warning("This refiner was saved before refiners recorded their base's architecture; only its "
                           "channels and conditioning are checked. Save it again to record it.")
        differences = [f"{key}: refiner {expected.get(key)!r}, pipeline {actual[key]!r}" for key in actual
                       if key in expected and _normalise(expected.get(key)) != _normalise(actual[key])]
        made_for = self.config.base_model or "another base model"
        if differences:
            raise ValueError(
                f"This refiner was made for {made_for} and does not fit this pipeline's transformer "
                f"({'; '.join(differences)}). Use a refiner trained for this model, or train one with "
                "`flowturbo train-refiner --model <this model>`."
            )
        base = _hub_id(transformer.config.get("_name_or_path"))
        if check_base_model and base and _hub_id(self.config.base_model) and base != self.config.base_model:
            raise ValueError(
                f"This refiner was made for {made_for}, and this pipeline's transformer is {base}, of the same "
                "architecture. If it is a fine-tune or a LoRA-loaded variant of that model, load the refiner anyway "
                "with pipe.load_refiner(..., check_base_model=False) or FlowTurboPipeline.from_pretrained(..., "
                "refiner_kwargs={'check_base_model': False}); otherwise train a refiner for it."
            )

    # ----------------------------------------------------------------------------------------------------------------
    # Saving, loading, Hub
    # ----------------------------------------------------------------------------------------------------------------

    def save_pretrained(self, save_directory: str | os.PathLike, *args, repo_id: str | None = None, **kwargs) -> None:
        """Write ``config.json``, the weights as safetensors and a ``README.md`` model card, atomically.

        The folder is assembled next to ``save_directory`` and moved into place, so an interrupted save never leaves
        a half-written refiner. Pickle serialisation is refused.
        """
        if kwargs.pop("safe_serialization", True) is False:
            raise ValueError("VelocityRefiner weights are saved as safetensors only; drop safe_serialization=False.")
        if kwargs.pop("push_to_hub", False):
            raise ValueError("Use refiner.push_to_hub(repo_id) to upload a refiner.")
        from .model_card import refiner_model_card

        target = Path(save_directory)
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_abandoned_folders(target)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.staging-{os.getpid()}-", dir=target.parent))
        try:
            super().save_pretrained(staging, *args, safe_serialization=True, **kwargs)
            refiner_model_card(self, repo_id=repo_id or f"path/to/{target.name}").save(staging / "README.md")
            _replace_directory(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def push_to_hub(
        self,
        repo_id: str,
        private: bool | None = None,
        token: str | None = None,
        commit_message: str = "Upload FlowTurbo velocity refiner",
        revision: str | None = None,
        create_pr: bool = False,
    ) -> str:
        """Upload the same files ``save_pretrained`` writes (config, safetensors weights, model card)."""
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(Path(folder) / "refiner", repo_id=repo_id)
            return api.upload_folder(
                repo_id=repo_id,
                folder_path=Path(folder) / "refiner",
                commit_message=commit_message,
                revision=revision,
                create_pr=create_pr,
            )

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> VelocityRefiner:
        """Load a refiner from a local folder or a Hub repo (``revision=``, ``subfolder=``, ``local_files_only=``...).

        Weights load from safetensors only, and are refused, with a :class:`RefinerLoadError` that says what to do,
        unless the file holds exactly the refiner's tensors, all floating point and finite: a missing, corrupt or
        pickle-only checkpoint, missing or unexpected tensors (diffusers would leave the missing ones uninitialised on
        the ``meta`` device, or drop the extra ones), integer tensors (diffusers would cast them silently), NaN or inf
        weights, or a folder holding something other than a VelocityRefiner. Nothing is returned half-loaded, so a
        pipeline keeps its refiner when loading another one fails.
        """
        if kwargs.pop("use_safetensors", True) is False:
            raise ValueError("VelocityRefiner loads safetensors weights only; drop use_safetensors=False.")
        if kwargs.pop("output_loading_info", False):
            raise ValueError("VelocityRefiner.from_pretrained checks the loading info itself; drop output_loading_info.")
        where = str(pretrained_model_name_or_path) + (f" (subfolder {kwargs['subfolder']!r})" if kwargs.get("subfolder") else "")
        config = cls._load_refiner_config(pretrained_model_name_or_path, where, kwargs)
        if config.get("_class_name") != cls.__name__:
            raise RefinerLoadError(
                f"{where} holds a {config.get('_class_name') or 'model without _class_name'}, not a VelocityRefiner."
            )
        try:
            refiner, info = super().from_pretrained(pretrained_model_name_or_path, use_safetensors=True,
                                                    output_loading_info=True, **kwargs)
        except Exception as error:  # re-raised with the cause attached and a message that says what to do
            raise RefinerLoadError(_explain_load_error(error, where)) from error
        _check_loaded(refiner, info, _weights_file(pretrained_model_name_or_path, kwargs), where)
        return refiner

    @classmethod
    def _load_refiner_config(cls, path, where: str, kwargs: dict) -> dict:
        config_keys = ("cache_dir", "force_download", "proxies", "local_files_only", "token", "revision", "subfolder")
        try:
            return cls.load_config(path, **{k: kwargs[k] for k in config_keys if k in kwargs})
        except Exception as error:
            raise RefinerLoadError(
                f"Could not read a refiner config.json from {where}: {error}. Pass a folder written by "
                "VelocityRefiner.save_pretrained or a Hub repo made with push_to_hub."
            ) from error


def _base_width(config) -> tuple[int, int]:
    """The base transformer's width and attention heads, from whichever config entries its class uses."""
    heads = config.get("num_attention_heads") or config.get("n_heads")
    if heads and config.get("attention_head_dim"):
        return heads * config["attention_head_dim"], heads
    width = next((config[key] for key in ("hidden_size", "dim", "model_dim", "inner_dim") if config.get(key)), 256)
    heads = heads or max(1, width // 64)
    while width % heads:
        heads -= 1
    return width, heads


def _without(shape: torch.Size, axis: int) -> tuple[int, ...]:
    dims = list(shape)
    del dims[axis]
    return tuple(dims)


FLOAT_DTYPES = {"F16", "BF16", "F32", "F64", "F8_E4M3", "F8_E5M2"}


def _weights_file(path, kwargs: dict) -> Path | None:
    """The safetensors file ``from_pretrained`` just read: in the local folder, or in the Hub cache."""
    folder = Path(str(path)) / (kwargs.get("subfolder") or "")
    if folder.is_dir():
        return folder / WEIGHTS_NAME
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(str(path), WEIGHTS_NAME, subfolder=kwargs.get("subfolder"),
                                    revision=kwargs.get("revision"), cache_dir=kwargs.get("cache_dir"),
                                    token=kwargs.get("token"), local_files_only=True))
    except Exception:  # not in the cache under that name: the checks on the loaded model still run
        return None


def _check_loaded(refiner, info: dict, weights: Path | None, where: str) -> None:
    """Refuse a refiner that did not load whole and clean (see :meth:`VelocityRefiner.from_pretrained`)."""
    problems = []
    for key, what in (("missing_keys", "missing"), ("unexpected_keys", "unexpected"),
                      ("mismatched_keys", "of the wrong shape")):
        if info.get(key):
            names = [name if isinstance(name, str) else name[0] for name in info[key]]
            problems.append(f"tensors {what}: {', '.join(names[:3])}{f' and {len(names) - 3} more' if len(names) > 3 else ''}")
    if weights is not None and weights.is_file():
        from safetensors import safe_open

        with safe_open(str(weights), framework="pt") as file:
            integers = [name for name in file.keys() if file.get_slice(name).get_dtype() not in FLOAT_DTYPES]
        if integers:
            problems.append(f"integer tensors where weights must be floating point ({', '.join(integers[:3])})")
    if not problems:
        broken = [name for name, parameter in refiner.named_parameters()
                  if parameter.device.type == "meta" or not torch.isfinite(parameter).all()]
        if broken:
            problems.append(f"NaN, inf or uninitialised weights ({', '.join(broken[:3])})")
    if problems:
        raise RefinerLoadError(
            f"The weights in {where} do not make a whole VelocityRefiner for its config.json: {'; '.join(problems)}. "
            "The file is damaged or comes from another refiner; save or download the refiner again."
        )


def _explain_load_error(error: Exception, where: str) -> str:
    message = str(error)
    if "safetensors" in message and ("no file named" in message or "does not appear to have" in message):
        return (
            f"{where} has no {WEIGHTS_NAME}. FlowTurbo loads weights from safetensors only (never pickle); if the "
            "folder holds a .bin checkpoint, load it once with torch in a trusted environment and re-save it with "
            "refiner.save_pretrained(...)."
        )
    if any(token in message for token in ("deserializ", "header", "Unable to load weights", "invalid", "corrupt")):
        return f"The weights in {where} are corrupt or truncated ({message}). Save or download the refiner again."
    if "size mismatch" in message or "Cannot load" in message or "shape" in message:
        return f"The weights in {where} do not match its config.json ({message}); the folder mixes two refiners."
    return f"Could not load the refiner from {where}: {message}"


def model_name(name_or_path) -> str | None:
    """A model's name or path as the string a config records (diffusers keeps ``_name_or_path`` as a ``Path`` when a
    model was loaded from one, which JSON cannot hold)."""
    return str(name_or_path) if name_or_path else None


def _hub_id(name) -> str | None:
    """``name`` if it reads as a Hub repo id (``org/model``) and is not a local path, else ``None``."""
    import re

    if not name or not re.fullmatch(r"[\w.-]+/[\w.-]+", str(name)) or Path(str(name)).exists():
        return None
    return str(name)


def _normalise(value):
    return list(value) if isinstance(value, tuple) else value


def _replace_directory(source: Path, target: Path) -> None:
    """Move the complete folder ``source`` to ``target``; an existing ``target`` stays whole until the new one is in
    place.

    On Linux the two folders are swapped in one atomic ``renameat2(RENAME_EXCHANGE)``, so ``target`` holds the old
    refiner or the new one at every instant, even if the process dies. Elsewhere the old folder is renamed aside and
    put back if moving the new one in fails.
    """
    if not target.exists():
        os.replace(source, target)
        return
    if _exchange(source, target):
        shutil.rmtree(source, ignore_errors=True)  # now the old refiner
        return
    retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.retired-{os.getpid()}-", dir=target.parent))
    os.rmdir(retired)
    os.replace(target, retired)
    try:
        os.replace(source, target)
    except BaseException:
        os.replace(retired, target)
        raise
    shutil.rmtree(retired, ignore_errors=True)


def _exchange(first: Path, second: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2`` with ``RENAME_EXCHANGE``); ``False`` where that is unavailable."""
    import ctypes
    import errno

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(code, os.strerror(code), str(first), None, str(second))


def _remove_abandoned_folders(target: Path) -> None:
    """Delete staging and retired folders that interrupted saves of ``target`` left beside it (hidden
    ``.<name>.staging-<pid>-*`` and ``.<name>.retired-<pid>-*``), once the process that made them is gone."""
    if not target.parent.is_dir():
        return
    for folder in target.parent.glob(f".{target.name}.*-*-*"):
        kind, _, rest = folder.name[len(target.name) + 2:].partition("-")
        pid = rest.split("-", 1)[0]
        if kind in ("staging", "retired") and pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True
