"""Shared pieces of the tiny pipelines: in-memory tokenizers, text encoders, VAEs, transformers, scheduler configs and
call-argument helpers.

Every model is randomly initialised right after ``torch.manual_seed(seed)`` and returned in ``eval()`` mode, so its
weights depend on the seed passed, not on what was built before it.
"""

from __future__ import annotations

import torch

MAX_TEXT_LENGTH = 16

# ---------------------------------------------------------------------------------------------------------------------
# Pipelines and call arguments


def finish(pipe):
    """Put every module of ``pipe`` in eval mode and silence its progress bar."""
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            component.eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def diffusers_class(name: str):
    """The diffusers class called ``name`` (a case's ``pipeline``, a model class)."""
    import diffusers

    return getattr(diffusers, name)


def prompt_call(prompt: str, size: int, negative_prompt: str | None = None, max_sequence_length=MAX_TEXT_LENGTH,
                **extra) -> dict:
    """Arguments of a tiny call: ``prompt`` (with ``negative_prompt`` unless None), a ``size`` x ``size`` output,
    ``max_sequence_length`` (left out when None) and ``extra``."""
    kwargs = {"prompt": prompt, "height": size, "width": size}
    if negative_prompt is not None:
        kwargs["negative_prompt"] = negative_prompt
    if max_sequence_length is not None:
        kwargs["max_sequence_length"] = max_sequence_length
    return {**kwargs, **extra}


def image_tensor(seed: int, size: int = 32, signed: bool = False) -> torch.Tensor:
    """A seeded random RGB image batch ``(1, 3, size, size)`` in [0, 1] (in [-1, 1] when ``signed``)."""
    image = torch.rand((1, 3, size, size), generator=torch.Generator().manual_seed(seed))
    return image * 2 - 1 if signed else image


def mask(size: int = 32) -> torch.Tensor:
    """An inpainting mask ``(1, 1, size, size)``: repaint the right half, keep the left half."""
    repaint = torch.zeros((1, 1, size, size))
    repaint[..., size // 2 :] = 1.0
    return repaint


# ---------------------------------------------------------------------------------------------------------------------
# Tokenizers (byte-level vocabularies without merges, built in memory)


def byte_vocabulary(special: list[str], with_word_ends: bool = False) -> dict[str, int]:
    """``special`` first, then the 256 byte-level pieces (and their ``</w>`` forms with ``with_word_ends``)."""
    from tokenizers.pre_tokenizers import ByteLevel

    alphabet = sorted(ByteLevel.alphabet())
    pieces = list(special) + alphabet + ([c + "</w>" for c in alphabet] if with_word_ends else [])
    return {piece: index for index, piece in enumerate(pieces)}


def clip_tokenizer():
    """A byte-level CLIP tokenizer (no merges) with a 16-token context."""
    from transformers import CLIPTokenizer

    vocab = byte_vocabulary(["<|startoftext|>", "<|endoftext|>"], with_word_ends=True)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=MAX_TEXT_LENGTH)


def t5_tokenizer():
    """A character-level T5 tokenizer (unigram pieces) with a 16-token context."""
    from transformers import T5TokenizerFast

    pieces = ["<pad>", "</s>", "<unk>", "▁"] + [chr(c) for c in range(32, 127)]
    return T5TokenizerFast(vocab=[(p, -1.0) for p in pieces], extra_ids=0, model_max_length=MAX_TEXT_LENGTH)


def gemma_tokenizer(with_spaces: bool = False):
    """A byte-level Gemma tokenizer (no merges) with a 16-token context.

    ``with_spaces`` adds the ``▁`` piece that Gemma turns spaces into (without it every space becomes ``<unk>``).
    """
    from transformers import GemmaTokenizerFast

    vocab = byte_vocabulary(["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"] + (["\u2581"] if with_spaces else []))
    return GemmaTokenizerFast(vocab=vocab, merges=[], model_max_length=MAX_TEXT_LENGTH)


def byte_bpe_tokenizer(special: list[str], chat_template: str | None = None, use_regex: bool = True, **kwargs):
    """A byte-level BPE tokenizer (no merges) such as GLM, Llama, Mistral and Qwen use.

    ``special`` lists the special tokens (their ids come first); ``kwargs`` go to ``PreTrainedTokenizerFast`` (names of
    special tokens such as ``pad_token="<pad>"``, ``model_max_length``...).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(vocab=byte_vocabulary(special), merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=use_regex)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, additional_special_tokens=list(special), **kwargs)
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    return tokenizer


def qwen2_tokenizer(special: list[str], chat_template: str, **kwargs):
    """A byte-level ``Qwen2Tokenizer`` (no merges) with ``special`` tokens first and ``chat_template``."""
    from transformers import Qwen2Tokenizer

    tokenizer = Qwen2Tokenizer(vocab=byte_vocabulary(special), merges=[], **kwargs)
    tokenizer.chat_template = chat_template
    return tokenizer


# ---------------------------------------------------------------------------------------------------------------------
# Text encoders


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


def t5_encoder(tokenizer, d_model: int, seed: int, umt5: bool = False):
    """A one-layer T5 (``umt5``: UMT5) encoder for ``tokenizer``, randomly initialised from ``seed``."""
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    torch.manual_seed(seed)
    config_class, model_class = (UMT5Config, UMT5EncoderModel) if umt5 else (T5Config, T5EncoderModel)
    config = config_class(
        vocab_size=len(tokenizer), d_model=d_model, d_kv=8, d_ff=2 * d_model, num_layers=1, num_heads=2
    )
    return model_class(config).eval()


def t5_text(seed: int, umt5: bool = False) -> tuple:
    """``(tokenizer, text_encoder)``: the T5 tokenizer and a 16-wide T5 (``umt5``: UMT5) encoder seeded ``seed``."""
    tokenizer = t5_tokenizer()
    return tokenizer, t5_encoder(tokenizer, 16, seed, umt5=umt5)


def clip_t5_text(seed: int, t5_d_model: int) -> dict:
    """SD3's text stack: two 16-wide projected CLIP encoders (seeds ``seed``, ``seed + 1``) and a T5 (``seed + 2``)."""
    tokenizer, tokenizer_2, tokenizer_3 = clip_tokenizer(), clip_tokenizer(), t5_tokenizer()
    return {
        "text_encoder": clip_text_encoder(tokenizer, 16, 16, seed),
        "tokenizer": tokenizer,
        "text_encoder_2": clip_text_encoder(tokenizer_2, 16, 16, seed + 1),
        "tokenizer_2": tokenizer_2,
        "text_encoder_3": t5_encoder(tokenizer_3, t5_d_model, seed + 2),
        "tokenizer_3": tokenizer_3,
    }


def text_model(model_class, tokenizer, seed: int, **config):
    """A transformers text model of ``model_class`` (e.g. ``Gemma2Model``) with 2 attention heads, randomly
    initialised from ``seed``; vocabulary size and padding token from ``tokenizer``, the rest of its config from
    ``config``."""
    torch.manual_seed(seed)
    config = {"vocab_size": len(tokenizer), "num_attention_heads": 2, "pad_token_id": tokenizer.pad_token_id, **config}
    return model_class(model_class.config_class(**config)).eval()


def gemma2_encoder(tokenizer, seed: int, num_hidden_layers: int = 1):
    """An 8-wide Gemma-2 text model (Sana's, Lumina 2's text encoder), randomly initialised from ``seed``."""
    from transformers import Gemma2Model

    return text_model(
        Gemma2Model,
        tokenizer,
        seed,
        hidden_size=8,
        intermediate_size=16,
        num_hidden_layers=num_hidden_layers,
        num_key_value_heads=1,
        head_dim=4,
        max_position_embeddings=64,
    )


def qwen2_5_vl_encoder(tokenizer, seed: int, vision: dict | None = None, ids: dict | None = None, **text):
    """A Qwen2.5-VL (16-wide text model, one-block vision tower) randomly initialised from ``seed``.

    ``text`` and ``vision`` override entries of the text and vision configs, ``ids`` adds top-level config entries
    (the ids of image and video tokens).
    """
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    text_config = {
        "vocab_size": len(tokenizer),
        "hidden_size": 16,
        "intermediate_size": 16,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "max_position_embeddings": 128,
        "rope_parameters": qwen_mrope(),
        "pad_token_id": tokenizer.pad_token_id,
        **text,
    }
    vision_config = {"depth": 1, "hidden_size": 16, "intermediate_size": 16, "num_heads": 2, "out_hidden_size": 16}
    config = Qwen2_5_VLConfig(text_config=text_config, vision_config={**vision_config, **(vision or {})}, **(ids or {}))
    torch.manual_seed(seed)
    return Qwen2_5_VLForConditionalGeneration(config).eval()


def qwen_mrope() -> dict:
    """Qwen2.5-VL's multimodal rotary embedding for an 8-wide attention head (head_dim = 2 * sum(mrope_section))."""
    return {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [1, 1, 2]}


# ---------------------------------------------------------------------------------------------------------------------
# VAEs

# The FLUX.1 VAE's latent scaling (also the VAE of Lumina 2, Z-Image and HiDream).
FLUX_VAE_SCALING = {"scaling_factor": 0.3611, "shift_factor": 0.1159}


def autoencoder_kl(
    latent_channels: int, seed: int, block_out_channels: tuple = (8, 16), norm_num_groups: int = 4, **config
):
    """A tiny ``AutoencoderKL``, ``2 ** (len(block_out_channels) - 1)`` x downsampling, randomly initialised from
    ``seed``; ``config`` adds to its config (scaling and shift factors...)."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(block_out_channels),
        up_block_types=("UpDecoderBlock2D",) * len(block_out_channels),
        block_out_channels=block_out_channels,
        layers_per_block=1,
        norm_num_groups=norm_num_groups,
        latent_channels=latent_channels,
        **config,
    ).eval()


def flux_vae(seed: int):
    """A FLUX.1-like VAE: 4 latent channels (real: 16), 2x downsampling (real: 8x), seeded ``seed``."""
    return autoencoder_kl(4, seed, **FLUX_VAE_SCALING)


def wan_vae(seed: int, residual: bool = False):
    """A tiny Wan VAE with 4 latent channels: Wan 2.1's (8x spatial, 4x temporal compression), or with ``residual``
    Wan 2.2 TI2V-5B's (residual, 2x2 pixel patches, 16x spatial and 4x temporal compression)."""
    from diffusers import AutoencoderKLWan

    wan22 = dict(in_channels=12, out_channels=12, is_residual=True, patch_size=2, scale_factor_spatial=16,
                 scale_factor_temporal=4)
    torch.manual_seed(seed)
    return AutoencoderKLWan(
        base_dim=3,
        z_dim=4,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        latents_mean=[0.0] * 4,
        latents_std=[1.0] * 4,
        **(wan22 if residual else {}),
    ).eval()


# ---------------------------------------------------------------------------------------------------------------------
# Transformers and schedulers


def sd3_transformer(seed: int, model_class: str = "SD3Transformer2DModel", num_layers: int = 2):
    """The tiny SD3 MMDiT (16 latent channels, patch 2), or an SD3 ControlNet of that shape, seeded ``seed``."""
    torch.manual_seed(seed)
    return diffusers_class(model_class)(
        sample_size=16,
        patch_size=2,
        in_channels=16,
        out_channels=16,
        num_layers=num_layers,
        attention_head_dim=8,
        num_attention_heads=4,
        joint_attention_dim=32,
        caption_projection_dim=32,
        pooled_projection_dim=32,
        pos_embed_max_size=32,
    ).eval()


def flux_like_transformer(model_class: str, seed: int, **config):
    """A one-double-block, one-single-block Flux-like model (Flux, its ControlNet, FLUX.2, Chroma, Bria) seeded
    ``seed``: 16 packed input channels, 2 heads of 8, 16-wide text; ``config`` adds to or overrides its config."""
    base = {
        "patch_size": 1,
        "in_channels": 16,
        "num_layers": 1,
        "num_single_layers": 1,
        "attention_head_dim": 8,
        "num_attention_heads": 2,
        "joint_attention_dim": 16,
        "axes_dims_rope": (2, 2, 4),
    }
    torch.manual_seed(seed)
    return diffusers_class(model_class)(**{**base, **config}).eval()


def wan_transformer(seed: int, model_class: str = "WanTransformer3DModel", in_channels: int = 4, **config):
    """A one-block Wan transformer (or SkyReels V2's, of the same shape) seeded ``seed``, 4 output channels."""
    torch.manual_seed(seed)
    return diffusers_class(model_class)(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=in_channels,
        out_channels=4,
        text_dim=16,
        freq_dim=16,
        ffn_dim=16,
        num_layers=1,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
        **config,
    ).eval()


def flow_solver(scheduler_class: str, flow_shift: float):
    """A multistep solver (``"UniPCMultistepScheduler"``, ``"DPMSolverMultistepScheduler"``) on flow sigmas,
    predicting flow, as Wan, SkyReels V2, Sana and HiDream ship them."""
    scheduler_class = diffusers_class(scheduler_class)
    return scheduler_class(use_flow_sigmas=True, flow_shift=flow_shift, prediction_type="flow_prediction")


# FLUX.1-dev's scheduler (also shipped by FLUX.2-dev, FLUX.2-klein and Chroma), image sequence lengths 256 / 4096 / 16.
FLUX_SCHEDULER = {
    "num_train_timesteps": 1000,
    "shift": 3.0,
    "use_dynamic_shifting": True,
    "base_shift": 0.5,
    "max_shift": 1.15,
    "base_image_seq_len": 16,
    "max_image_seq_len": 256,
}


def flux_components(seed: int, scheduler: dict = FLUX_SCHEDULER, **transformer) -> dict:
    """FLUX.1's components: Flux transformer (``transformer`` overrides its config; guidance embedding by default)
    seeded ``seed``, FlowMatchEuler with ``scheduler``, 4-channel 2x VAE (``seed + 1``), CLIP (``seed + 2``) and T5
    (``seed + 3``)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    tokenizer, tokenizer_2 = clip_tokenizer(), t5_tokenizer()
    transformer = {"out_channels": None, "pooled_projection_dim": 16, "guidance_embeds": True, **transformer}
    return {
        "transformer": flux_like_transformer("FluxTransformer2DModel", seed, **transformer),
        "scheduler": FlowMatchEulerDiscreteScheduler(**scheduler),
        "vae": flux_vae(seed + 1),
        "tokenizer": tokenizer,
        "text_encoder": clip_text_encoder(tokenizer, 16, 0, seed + 2),
        "tokenizer_2": tokenizer_2,
        "text_encoder_2": t5_encoder(tokenizer_2, 16, seed + 3),
    }


def wan_components(seed: int, flow_shift: float = 3.0, residual_vae: bool = False, **transformer) -> dict:
    """Wan's components: Wan transformer (``transformer`` overrides its config) seeded ``seed``, Wan VAE (``seed + 1``;
    Wan 2.2's with ``residual_vae``), UMT5 (``seed + 2``), UniPC on flow sigmas with ``flow_shift``."""
    tokenizer, text_encoder = t5_text(seed + 2, umt5=True)
    return {
        "tokenizer": tokenizer,
        "text_encoder": text_encoder,
        "vae": wan_vae(seed + 1, residual=residual_vae),
        "scheduler": flow_solver("UniPCMultistepScheduler", flow_shift),
        "transformer": wan_transformer(seed, **transformer),
    }
