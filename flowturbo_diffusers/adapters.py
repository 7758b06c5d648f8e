"""The one place that knows how each diffusers transformer is called.

A refiner needs, from every transformer call, the latent, the sigma, and whatever conditioning the pipeline passes
(pooled text embeddings, encoder hidden states, Flux's guidance and token positions). Each transformer class names
these differently and lays its latents out differently: SD3 and Sana take ``(B, C, H, W)`` images, Flux packed token
sequences ``(B, L, C)``, Wan ``(B, C, F, H, W)`` videos. A :class:`TransformerAdapter` records those differences as
data; :func:`adapter_for` picks the one for a transformer.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

IMAGE, SEQUENCE, VIDEO = "image", "sequence", "video"


@dataclass
class TransformerCall:
    """The inputs of one transformer call, as the refiner sees them, plus the call itself.

    ``sigma`` has shape ``(B,)``. ``evaluate_base`` runs the real transformer on the original arguments and returns
    its velocity (used by oracle refiners in tests and by the trainer's teacher queries).
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
    """How one transformer class is called: argument names, sigma scale and latent layout."""

    class_name: str
    layout: str
    timestep_per_sigma: float  # the pipeline passes timestep = sigma * timestep_per_sigma
    pooled_argument: str | None = "pooled_projections"
    context_argument: str | None = "encoder_hidden_states"
    guidance_argument: str | None = None
    positions_argument: str | None = None
    pooled_dim_key: str | None = "pooled_projection_dim"
    context_dim_key: str | None = "joint_attention_dim"
    unbatched_arguments: tuple[str, ...] = ()  # tensors shared by the whole batch (Flux's token positions)

    def fingerprint(self, config) -> dict[str, Any]:
        """What a refiner must match in a base transformer: class, layout, channels, patch size, conditioning, and
        ``architecture``, a hash of every public key of the transformer's config (the keys that shape the model, as
        ``register_to_config`` records them), so a base with other depth or width but the same channels differs."""
        patch = config.get("patch_size", 1)
        return {
            "architecture": architecture_hash(config),
            "transformer": self.class_name,
            "layout": self.layout,
            "in_channels": config["in_channels"],
            "out_channels": config.get("out_channels") or config["in_channels"],
            "patch_size": list(patch) if isinstance(patch, (list, tuple)) else [patch],
            "pooled_dim": config.get(self.pooled_dim_key) if self.pooled_dim_key else None,
            "context_dim": config.get(self.context_dim_key) if self.context_dim_key else None,
            "guidance_embeds": bool(config.get("guidance_embeds", False)) and self.guidance_argument is not None,
        }

    def read(self, module: torch.nn.Module, args: tuple, kwargs: dict, original_forward: Callable) -> TransformerCall:
        """Name the arguments of a call to ``module`` and pick out what the refiner needs."""
        arguments = _signature(type(module)).bind_partial(*args, **kwargs).arguments
        timestep = torch.as_tensor(arguments["timestep"])
        sample = arguments["hidden_states"]
        sigma = (timestep.to(torch.float32) / self.timestep_per_sigma).reshape(-1).expand(sample.shape[0])

        def evaluate_base() -> torch.Tensor:
            return velocity_of(original_forward(*args, **kwargs))

        return TransformerCall(
            sample=sample,
            sigma=sigma,
            pooled=arguments.get(self.pooled_argument) if self.pooled_argument else None,
            context=arguments.get(self.context_argument) if self.context_argument else None,
            guidance=arguments.get(self.guidance_argument) if self.guidance_argument else None,
            positions=arguments.get(self.positions_argument) if self.positions_argument else None,
            arguments=arguments,
            evaluate_base=evaluate_base,
        )

    def with_sample(self, arguments: dict[str, Any], sample: torch.Tensor, sigma: torch.Tensor) -> dict[str, Any]:
        """The same call's arguments at another latent and sigma (for teacher queries), returning a tuple."""
        return {**arguments, "hidden_states": sample, "timestep": sigma * self.timestep_per_sigma, "return_dict": False}

    @staticmethod
    def output_like(arguments: dict[str, Any], velocity: torch.Tensor):
        """Wrap ``velocity`` as the transformer would return it (a tuple when ``return_dict=False``)."""
        if not arguments.get("return_dict", True):
            return (velocity,)
        from diffusers.models.modeling_outputs import Transformer2DModelOutput

        return Transformer2DModelOutput(sample=velocity)


ADAPTERS = {
    adapter.class_name: adapter
    for adapter in (
        TransformerAdapter("SD3Transformer2DModel", IMAGE, 1000.0),
        TransformerAdapter(
            "FluxTransformer2DModel",
            SEQUENCE,
            1.0,  # Flux pipelines pass timestep / 1000
            guidance_argument="guidance",
            positions_argument="img_ids",
            unbatched_arguments=("img_ids", "txt_ids"),
        ),
        TransformerAdapter(
            "SanaTransformer2DModel",
            IMAGE,
            1000.0,
            pooled_argument=None,
            guidance_argument="guidance",
            pooled_dim_key=None,
            context_dim_key="caption_channels",
        ),
        TransformerAdapter(
            "WanTransformer3DModel", VIDEO, 1000.0, pooled_argument=None, pooled_dim_key=None, context_dim_key="text_dim"
        ),
    )
}


def adapter_for(transformer: torch.nn.Module | str) -> TransformerAdapter:
    """The adapter for a transformer (or its class name); a clear error for classes FlowTurbo does not know yet."""
    name = transformer if isinstance(transformer, str) else type(transformer).__name__
    for candidate in [name] + ([c.__name__ for c in type(transformer).__mro__] if not isinstance(transformer, str) else []):
        if candidate in ADAPTERS:
            return ADAPTERS[candidate]
    raise ValueError(
        f"FlowTurbo refiners do not support {name} yet; supported transformers: {', '.join(sorted(ADAPTERS))}. "
        "The training-free FlowTurboScheduler (H/P/E plans) works with any flow pipeline."
    )


def architecture_hash(config) -> str:
    """A short, stable hash of a model config's public keys (not ``_name_or_path``, ``_diffusers_version``...)."""
    import hashlib
    import json

    public = {key: value for key, value in dict(config).items() if not key.startswith("_")}
    text = json.dumps(public, sort_keys=True, default=lambda value: list(value) if isinstance(value, tuple) else str(value))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def velocity_of(output) -> torch.Tensor:
    """The velocity tensor in a transformer's output (tuple or ``Transformer2DModelOutput``)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        return output[0]
    return output.sample


_SIGNATURES: dict[type, inspect.Signature] = {}


def _signature(module_class: type) -> inspect.Signature:
    if module_class not in _SIGNATURES:
        signature = inspect.signature(module_class.forward)
        _SIGNATURES[module_class] = signature.replace(parameters=list(signature.parameters.values())[1:])  # no self
    return _SIGNATURES[module_class]
