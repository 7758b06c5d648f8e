"""Tiny random-weight diffusers flow pipelines, built from configs with in-memory tokenizers (no files, no network).

They run the real pipeline classes (SD3, Flux, Sana, Wan) end to end in milliseconds on a CPU, which is what the test
suite needs. Their images are noise: use the bundled model for anything you want to look at. The builders of the
conformance suite (every flow pipeline family of installed diffusers) are in the modules of this package.
"""

from __future__ import annotations

import torch

SD3, FLUX, SANA, WAN = "sd3", "flux", "sana", "wan"
MAX_TEXT_LENGTH = 16


def _byte_vocabulary(special: list[str], with_word_ends: bool = False) -> dict[str, int]:
    from tokenizers.pre_tokenizers import ByteLevel

    alphabet = sorted(ByteLevel.alphabet())
    pieces = list(special) + alphabet + ([c + "</w>" for c in alphabet] if with_word_ends else [])
    return {piece: index for index, piece in enumerate(pieces)}


def clip_tokenizer():
    """A byte-level CLIP tokenizer (no merges) with a 16-token context."""
    from transformers import CLIPTokenizer

    vocab = _byte_vocabulary(["<|startoftext|>", "<|endoftext|>"], with_word_ends=True)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=MAX_TEXT_LENGTH)


def t5_tokenizer():
    """A character-level T5 tokenizer (unigram pieces) with a 16-token context."""
    from transformers import T5TokenizerFast

    pieces = ["<pad>", "</s>", "<unk>", "▁"] + [chr(c) for c in range(32, 127)]
    return T5TokenizerFast(vocab=[(p, -1.0) for p in pieces], extra_ids=0, model_max_length=MAX_TEXT_LENGTH)


def gemma_tokenizer():
    """A byte-level Gemma tokenizer (no merges) with a 16-token context."""
    from transformers import GemmaTokenizerFast

    vocab = _byte_vocabulary(["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"])
    return GemmaTokenizerFast(vocab=vocab, merges=[], model_max_length=MAX_TEXT_LENGTH)


def clip_text_encoder(
    tokenizer, hidden_size: int, projection_dim: int, seed: int, max_length: int = MAX_TEXT_LENGTH, mlp_ratio: int = 2
):
    """A one-layer CLIP text encoder (with a projection if ``projection_dim``), randomly initialised from ``seed``."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=mlp_ratio * hidden_size,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=max_length,
        projection_dim=projection_dim,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model_class = CLIPTextModelWithProjection if projection_dim else CLIPTextModel
    return model_class(config).eval()


def _t5_encoder(tokenizer, d_model: int, seed: int, umt5: bool = False):
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    torch.manual_seed(seed)
    config_class, model_class = (UMT5Config, UMT5EncoderModel) if umt5 else (T5Config, T5EncoderModel)
    config = config_class(
        vocab_size=len(tokenizer), d_model=d_model, d_kv=8, d_ff=2 * d_model, num_layers=1, num_heads=2
    )
    return model_class(config).eval()


def _autoencoder_kl(latent_channels: int, seed: int, **config):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        latent_channels=latent_channels,
        **config,
    ).eval()


def tiny_sd3_pipeline(seed: int = 0, scheduler_config: dict | None = None):
    """A tiny `StableDiffusion3Pipeline` (2 CLIP encoders and a T5, 16 latent channels, 2x VAE downsampling).

    It has all three text encoders, like the real ones, so that a saved copy loads with plain ``from_pretrained``.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    tokenizer, tokenizer_2 = clip_tokenizer(), clip_tokenizer()
    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=16,
        patch_size=2,
        in_channels=16,
        out_channels=16,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=4,
        joint_attention_dim=32,
        caption_projection_dim=32,
        pooled_projection_dim=32,
        pos_embed_max_size=32,
    ).eval()
    return StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(**(scheduler_config or {"shift": 3.0})),
        vae=_autoencoder_kl(16, seed + 1, shift_factor=0.0609, scaling_factor=1.5035),
        text_encoder=clip_text_encoder(tokenizer, 16, 16, seed + 2),
        tokenizer=tokenizer,
        text_encoder_2=clip_text_encoder(tokenizer_2, 16, 16, seed + 3),
        tokenizer_2=tokenizer_2,
        text_encoder_3=_t5_encoder(t5_tokenizer(), 32, seed + 4),
        tokenizer_3=t5_tokenizer(),
    )


def tiny_flux_pipeline(seed: int = 0, guidance_embeds: bool = False, scheduler_config: dict | None = None):
    """A tiny `FluxPipeline` (CLIP + T5, packed 2x2 latent tokens); ``guidance_embeds`` makes it Flux-dev-like."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    tokenizer, tokenizer_2 = clip_tokenizer(), t5_tokenizer()
    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,
        out_channels=16,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=16,
        pooled_projection_dim=16,
        guidance_embeds=guidance_embeds,
        axes_dims_rope=(2, 2, 4),
    ).eval()
    default_scheduler = {
        "shift": 3.0,
        "use_dynamic_shifting": True,
        "base_shift": 0.5,
        "max_shift": 1.15,
        "base_image_seq_len": 16,
        "max_image_seq_len": 256,
    }
    return FluxPipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(**(scheduler_config or default_scheduler)),
        vae=_autoencoder_kl(4, seed + 1, shift_factor=0.1159, scaling_factor=0.3611),
        text_encoder=clip_text_encoder(tokenizer, 16, 0, seed + 2),
        tokenizer=tokenizer,
        text_encoder_2=_t5_encoder(tokenizer_2, 16, seed + 3),
        tokenizer_2=tokenizer_2,
    )


def tiny_sana_pipeline(seed: int = 0):
    """A tiny `SanaPipeline` (Gemma-2 text encoder, DC autoencoder, DPM-Solver with flow sigmas)."""
    from diffusers import AutoencoderDC, DPMSolverMultistepScheduler, SanaPipeline, SanaTransformer2DModel
    from transformers import Gemma2Config, Gemma2Model

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
    torch.manual_seed(seed + 2)
    text_encoder = Gemma2Model(
        Gemma2Config(
            vocab_size=len(tokenizer),
            hidden_size=8,
            intermediate_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=4,
            max_position_embeddings=64,
            pad_token_id=tokenizer.pad_token_id,
        )
    ).eval()
    scheduler = DPMSolverMultistepScheduler(use_flow_sigmas=True, flow_shift=3.0, prediction_type="flow_prediction")
    return SanaPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer, scheduler=scheduler)


def tiny_wan_pipeline(seed: int = 0):
    """A tiny `WanPipeline` for text-to-video (UMT5 text encoder, 3D VAE, UniPC with flow sigmas)."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel

    tokenizer = t5_tokenizer()
    torch.manual_seed(seed)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        out_channels=4,
        text_dim=16,
        freq_dim=16,
        ffn_dim=16,
        num_layers=1,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    ).eval()
    torch.manual_seed(seed + 1)
    vae = AutoencoderKLWan(
        base_dim=3,
        z_dim=4,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        latents_mean=[0.0] * 4,
        latents_std=[1.0] * 4,
    ).eval()
    scheduler = UniPCMultistepScheduler(use_flow_sigmas=True, flow_shift=3.0, prediction_type="flow_prediction")
    return WanPipeline(
        tokenizer=tokenizer,
        text_encoder=_t5_encoder(tokenizer, 16, seed + 2, umt5=True),
        vae=vae,
        transformer=transformer,
        scheduler=scheduler,
    )


BUILDERS = {SD3: tiny_sd3_pipeline, FLUX: tiny_flux_pipeline, SANA: tiny_sana_pipeline, WAN: tiny_wan_pipeline}


def tiny_pipeline(kind: str, **kwargs):
    """Build the tiny pipeline of ``kind`` (one of ``"sd3"``, ``"flux"``, ``"sana"``, ``"wan"``)."""
    if kind not in BUILDERS:
        raise ValueError(f"Unknown tiny pipeline {kind!r}; choose one of {sorted(BUILDERS)}.")
    return BUILDERS[kind](**kwargs)
