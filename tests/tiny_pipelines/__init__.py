"""Tiny random-weight diffusers flow pipelines, built from configs with in-memory tokenizers (no files, no network).

They run the real pipeline classes (SD3, Flux, Sana, Wan) end to end in milliseconds on a CPU, which is what the test
suite needs. Their images are noise: use the bundled model for anything you want to look at. The builders of the
conformance suite (every flow pipeline family of installed diffusers) are in the modules of this package, the pieces
they share in :mod:`tiny_pipelines.components`.
"""

from __future__ import annotations

import torch

from .components import (  # noqa: F401  (clip_*, t5_tokenizer, MAX_TEXT_LENGTH: for tests that build their own)
    FLUX_SCHEDULER,
    MAX_TEXT_LENGTH,
    autoencoder_kl,
    clip_t5_text,
    clip_text_encoder,
    clip_tokenizer,
    flow_solver,
    flux_components,
    gemma2_encoder,
    gemma_tokenizer,
    sd3_transformer,
    t5_tokenizer,
    wan_components,
)

_autoencoder_kl = autoencoder_kl  # the name tests/test_scheduler_pipelines.py uses

SD3, FLUX, SANA, WAN = "sd3", "flux", "sana", "wan"


def tiny_sd3_pipeline(seed: int = 0, scheduler_config: dict | None = None):
    """A tiny `StableDiffusion3Pipeline` (2 CLIP encoders and a T5, 16 latent channels, 2x VAE downsampling).

    It has all three text encoders, like the real ones, so that a saved copy loads with plain ``from_pretrained``.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline

    return StableDiffusion3Pipeline(
        transformer=sd3_transformer(seed),
        scheduler=FlowMatchEulerDiscreteScheduler(**(scheduler_config or {"shift": 3.0})),
        vae=autoencoder_kl(16, seed + 1, shift_factor=0.0609, scaling_factor=1.5035),
        **clip_t5_text(seed + 2, t5_d_model=32),
    )


def tiny_flux_pipeline(seed: int = 0, guidance_embeds: bool = False, scheduler_config: dict | None = None):
    """A tiny `FluxPipeline` (CLIP + T5, packed 2x2 latent tokens); ``guidance_embeds`` makes it Flux-dev-like."""
    from diffusers import FluxPipeline

    # FLUX.1-dev's scheduler with num_train_timesteps left out (its config records it as a default value).
    default_scheduler = {key: value for key, value in FLUX_SCHEDULER.items() if key != "num_train_timesteps"}
    components = flux_components(
        seed, scheduler_config or default_scheduler, out_channels=16, guidance_embeds=guidance_embeds
    )
    return FluxPipeline(**components)


def tiny_sana_pipeline(seed: int = 0):
    """A tiny `SanaPipeline` (Gemma-2 text encoder, DC autoencoder, DPM-Solver with flow sigmas)."""
    from diffusers import AutoencoderDC, SanaPipeline, SanaTransformer2DModel

    tokenizer = gemma_tokenizer()
    torch.manual_seed(seed)
    transformer = SanaTransformer2DModel(
        patch_size=1,
        in_channels=4,
        out_channels=4,
        num_layers=1,
        num_attention_heads=2,
        attention_head_dim=4,
        num_cross_attention_heads=2,
        cross_attention_head_dim=4,
        cross_attention_dim=8,
        caption_channels=8,
        sample_size=32,
    ).eval()
    torch.manual_seed(seed + 1)
    vae = AutoencoderDC(
        in_channels=3,
        latent_channels=4,
        attention_head_dim=2,
        encoder_block_types=("ResBlock", "EfficientViTBlock"),
        decoder_block_types=("ResBlock", "EfficientViTBlock"),
        encoder_block_out_channels=(8, 8),
        decoder_block_out_channels=(8, 8),
        encoder_qkv_multiscales=((), (5,)),
        decoder_qkv_multiscales=((), (5,)),
        encoder_layers_per_block=(1, 1),
        decoder_layers_per_block=[1, 1],
        downsample_block_type="conv",
        upsample_block_type="interpolate",
        decoder_norm_types="rms_norm",
        decoder_act_fns="silu",
        scaling_factor=0.41407,
    ).eval()
    return SanaPipeline(
        tokenizer=tokenizer,
        text_encoder=gemma2_encoder(tokenizer, seed + 2),
        vae=vae,
        transformer=transformer,
        scheduler=flow_solver("DPMSolverMultistepScheduler", 3.0),
    )


def tiny_wan_pipeline(seed: int = 0):
    """A tiny `WanPipeline` for text-to-video (UMT5 text encoder, 3D VAE, UniPC with flow sigmas)."""
    from diffusers import WanPipeline

    return WanPipeline(**wan_components(seed))


BUILDERS = {SD3: tiny_sd3_pipeline, FLUX: tiny_flux_pipeline, SANA: tiny_sana_pipeline, WAN: tiny_wan_pipeline}


def tiny_pipeline(kind: str, **kwargs):
    """Build the tiny pipeline of ``kind`` (one of ``"sd3"``, ``"flux"``, ``"sana"``, ``"wan"``)."""
    if kind not in BUILDERS:
        raise ValueError(f"Unknown tiny pipeline {kind!r}; choose one of {sorted(BUILDERS)}.")
    return BUILDERS[kind](**kwargs)
