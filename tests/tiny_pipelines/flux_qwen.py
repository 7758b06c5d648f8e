"""Flux, Flux 2, Chroma and Qwen-Image pipelines of installed diffusers, built tiny offline.

Every builder makes the real pipeline class from configs: random weights seeded with ``torch.manual_seed``, tokenizers
and processors built in memory (byte-level vocabularies without merges, chat templates written here), float32 on the
CPU, every module in ``eval()``. Each pipeline gets the scheduler its real checkpoint ships, with the image sequence
lengths of dynamic shifting scaled down by 16 (the tiny images have 64 latent tokens where the real ones have
thousands), so that ``mu`` lands inside the ``[base_image_seq_len, max_image_seq_len]`` range as it does at full size.

Without torchvision (not installed), transformers cannot build a PixtralProcessor at all, nor a Qwen2VLProcessor
without skipping a class check: see :func:`mistral_tokenizer` and :func:`qwen_vl_processor`. Run the cases with
``torch.set_num_threads(1)`` on a busy machine: the models are so small that thread contention dominates otherwise.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import torch

from .cases import PipelineCase
from .components import (
    FLUX_SCHEDULER,
    byte_bpe_tokenizer,
    diffusers_class,
    finish,
    flux_components,
    flux_like_transformer,
    flux_vae,
    image_tensor,
    mask,
    prompt_call,
    qwen2_5_vl_encoder,
    qwen2_tokenizer,
    t5_text,
    text_model,
)

# FLUX.1-schnell's scheduler: no dynamic shifting (the pipelines still pass mu, which it ignores), shift 1.
FLUX_SCHNELL_SCHEDULER = {**FLUX_SCHEDULER, "shift": 1.0, "use_dynamic_shifting": False}
# Qwen/Qwen-Image's scheduler (also Qwen-Image-Edit's), image sequence lengths 256 / 8192 / 16.
QWEN_SCHEDULER = {
    "num_train_timesteps": 1000,
    "shift": 1.0,
    "use_dynamic_shifting": True,
    "base_shift": 0.5,
    "max_shift": 0.9,
    "base_image_seq_len": 16,
    "max_image_seq_len": 512,
    "shift_terminal": 0.02,
    "time_shift_type": "exponential",
}

SIZE = 32  # pixels; the Flux / Qwen VAEs here downsample 2x, and latents are packed 2x2: 8x8 = 64 tokens
PROMPT = "a squirrel eating a burger"
NEGATIVE_PROMPT = "blurry, low quality"


def _scheduler(config: dict):
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(**config)


def _pil_image(seed: int, size: int = SIZE):
    """A seeded random RGB PIL image (pixels from NumPy's generator)."""
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


# ---------------------------------------------------------------------------------------------------------------------
# Tokenizers and processors (in memory)

# Mistral-Small-3.1's chat template, reduced to what FLUX.2 sends: a system message and user turns of text and images.
MISTRAL_CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{%- if message['content'] is string %}{%- set parts = [{'type': 'text', 'text': message['content']}] %}"
    "{%- else %}{%- set parts = message['content'] %}{%- endif %}"
    "{%- if message['role'] == 'system' %}[SYSTEM_PROMPT]"
    "{%- elif message['role'] == 'user' %}[INST]{%- endif %}"
    "{%- for part in parts %}"
    "{%- if part['type'] == 'text' %}{{ part['text'] }}{%- else %}[IMG]{%- endif %}"
    "{%- endfor %}"
    "{%- if message['role'] == 'system' %}[/SYSTEM_PROMPT]"
    "{%- elif message['role'] == 'user' %}[/INST]{%- else %}{{ eos_token }}{%- endif %}"
    "{%- endfor %}"
)


def mistral_tokenizer():
    """A byte-level tokenizer with Mistral's special tokens and chat template, standing in for FLUX.2-dev's processor.

    FLUX.2-dev ships a PixtralProcessor as its ``tokenizer``, but transformers' PixtralProcessor needs torchvision
    (not installed here). The pipeline only calls ``tokenizer.apply_chat_template(...)`` (and, for caption upsampling
    only, ``tokenizer.tokenizer.batch_decode``), which a tokenizer with a chat template answers with the same
    arguments. FLUX.2 truncates ``[SYSTEM_PROMPT]...[INST]prompt[/INST]`` to ``max_sequence_length``; this tokenizer
    truncates on the left so that the prompt (after a 190-character system message) survives a short length.
    """
    special = ["<unk>", "<s>", "</s>", "<pad>", "[INST]", "[/INST]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]"]
    special += ["[IMG]", "[IMG_BREAK]", "[IMG_END]"]
    # Mistral's tekken tokenizer is byte-level BPE too (without the GPT-2 split regex).
    return byte_bpe_tokenizer(
        special,
        MISTRAL_CHAT_TEMPLATE,
        use_regex=False,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        truncation_side="left",
    )


QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<think>",
    "</think>",
]
# Qwen3's chat template, reduced to plain-text turns and the generation prompt (with `enable_thinking`).
QWEN3_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{%- endif %}"
)


def qwen_tokenizer():
    """A byte-level Qwen2 tokenizer (no merges) with Qwen's special tokens and a Qwen3-style chat template."""
    tokenizer = qwen2_tokenizer(QWEN_SPECIAL_TOKENS, QWEN3_CHAT_TEMPLATE, model_max_length=2048)
    tokenizer.add_special_tokens({"additional_special_tokens": QWEN_SPECIAL_TOKENS[1:]})
    return tokenizer



def qwen_vl_processor(tokenizer):
    """A Qwen2VLProcessor whose image processor shrinks any image to at most 56x56 pixels (4 merged vision tokens).

    Without torchvision, transformers cannot resolve the video-processor base class that ``ProcessorMixin.__init__``
    checks ``video_processor`` against (even ``None``); the check is skipped while constructing, then the object is
    given back its real class.
    """
    from transformers import Qwen2VLProcessor

    try:
        from transformers import Qwen2VLImageProcessorPil as Qwen2VLImageProcessor  # no torchvision
    except ImportError:  # pragma: no cover
        from transformers import Qwen2VLImageProcessor

    image_processor = Qwen2VLImageProcessor(min_pixels=28 * 28, max_pixels=56 * 56)

    class _Unchecked(Qwen2VLProcessor):
        def check_argument_for_proper_class(self, argument_name, argument):
            return type(argument)

    processor = _Unchecked(image_processor=image_processor, tokenizer=tokenizer, video_processor=None)
    processor.__class__ = Qwen2VLProcessor
    return processor


# ---------------------------------------------------------------------------------------------------------------------
# Flux (FLUX.1): CLIP + T5, FluxTransformer2DModel, 16-channel latents packed 2x2 (here 4 channels, 2x VAE)


def tiny_flux(pipeline: str = "FluxPipeline", seed: int = 0, controlnet: bool = False, **components):
    """A FLUX.1-dev-like ``pipeline`` (a diffusers class name; guidance embedding, FLUX.1-dev's scheduler).

    ``components`` go to :func:`~tiny_pipelines.components.flux_components` (``scheduler``, transformer config);
    ``controlnet`` adds an InstantX-style `FluxControlNetModel` (no input hint block: the control image is
    VAE-encoded and packed).
    """
    extra = {}
    if controlnet:
        extra["controlnet"] = flux_like_transformer(
            "FluxControlNetModel", seed + 10, pooled_projection_dim=16, guidance_embeds=True
        )
    return finish(diffusers_class(pipeline)(**flux_components(seed, **components), **extra))


# ---------------------------------------------------------------------------------------------------------------------
# FLUX.2: Flux2Transformer2DModel, AutoencoderKLFlux2 (latents patchified 2x2, batch-norm statistics); FLUX.2-dev reads
# Mistral-Small-3.1 hidden states, FLUX.2-klein Qwen3 hidden states (each stacks the layers text_encoder_out_layers).

FLUX2_TEXT_LAYERS = (1,)  # hidden states stacked for the transformer (real: (10, 20, 30) / (9, 18, 27))
FLUX2_TEXT_WIDTH = 16  # hidden size of either text encoder


def _flux2_vae(seed: int):
    from diffusers import AutoencoderKLFlux2

    torch.manual_seed(seed)
    return AutoencoderKLFlux2(
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=SIZE,
    )


def _mistral3_text(seed: int) -> tuple:
    """FLUX.2-dev's text side: the Mistral tokenizer and a Mistral3 (Pixtral vision tower) seeded ``seed``."""
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration

    tokenizer = mistral_tokenizer()
    config = Mistral3Config(
        text_config={
            "model_type": "mistral",
            "vocab_size": len(tokenizer),
            "hidden_size": FLUX2_TEXT_WIDTH,
            "intermediate_size": 2 * FLUX2_TEXT_WIDTH,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "head_dim": 8,
            "max_position_embeddings": 512,
            "sliding_window": None,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "model_type": "pixtral",
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        image_token_index=tokenizer.convert_tokens_to_ids("[IMG]"),
        spatial_merge_size=2,
        vision_feature_layer=-1,
    )
    torch.manual_seed(seed)
    return tokenizer, Mistral3ForConditionalGeneration(config)


def _qwen3_text(seed: int) -> tuple:
    """FLUX.2-klein's text side: the Qwen tokenizer and a Qwen3 causal LM seeded ``seed``."""
    from transformers import Qwen3ForCausalLM

    tokenizer = qwen_tokenizer()
    text_encoder = text_model(
        Qwen3ForCausalLM,
        tokenizer,
        seed,
        hidden_size=FLUX2_TEXT_WIDTH,
        intermediate_size=2 * FLUX2_TEXT_WIDTH,
        num_hidden_layers=1,
        num_key_value_heads=1,
        head_dim=8,
        max_position_embeddings=512,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
    )
    return tokenizer, text_encoder


def tiny_flux2(klein: bool = False, seed: int = 0):
    """FLUX.2-dev-like `Flux2Pipeline` (Mistral3 text encoder, guidance embedding), or with ``klein``
    FLUX.2-klein-base-like `Flux2KleinPipeline` (Qwen3 text encoder; not distilled: true CFG with an empty negative
    prompt)."""
    tokenizer, text_encoder = (_qwen3_text if klein else _mistral3_text)(seed + 2)
    transformer = flux_like_transformer(
        "Flux2Transformer2DModel",
        seed,
        joint_attention_dim=FLUX2_TEXT_WIDTH * len(FLUX2_TEXT_LAYERS),
        timestep_guidance_channels=32,
        axes_dims_rope=(2, 2, 2, 2),
        guidance_embeds=not klein,
    )
    return finish(
        diffusers_class("Flux2KleinPipeline" if klein else "Flux2Pipeline")(
            transformer=transformer,
            scheduler=_scheduler(FLUX_SCHEDULER),
            vae=_flux2_vae(seed + 1),
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            **({"is_distilled": False} if klein else {}),
        )
    )


# ---------------------------------------------------------------------------------------------------------------------
# Chroma: T5 only, ChromaTransformer2DModel (Flux-schnell derived, modulation approximator), real CFG


def tiny_chroma(seed: int = 0):
    from diffusers import ChromaPipeline

    transformer = flux_like_transformer(
        "ChromaTransformer2DModel",
        seed,
        approximator_num_channels=16,
        approximator_hidden_dim=16,
        approximator_layers=1,
    )
    tokenizer, text_encoder = t5_text(seed + 2)
    return finish(
        ChromaPipeline(
            transformer=transformer,
            scheduler=_scheduler(FLUX_SCHEDULER),
            vae=flux_vae(seed + 1),
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            image_encoder=None,
            feature_extractor=None,
        )
    )


# ---------------------------------------------------------------------------------------------------------------------
# Qwen-Image: Qwen2.5-VL text encoder (last hidden state), QwenImageTransformer2DModel (patch 2), AutoencoderKLQwenImage


def _qwen_text_encoder(tokenizer, seed: int):
    """Qwen-Image's Qwen2.5-VL, with its image-token ids and a vision tower that reads 14x14 patches."""
    special = {
        "image_token_id": "<|image_pad|>",
        "video_token_id": "<|video_pad|>",
        "vision_start_token_id": "<|vision_start|>",
        "vision_end_token_id": "<|vision_end|>",
    }
    return qwen2_5_vl_encoder(
        tokenizer,
        seed,
        vision={
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 56,
            "fullatt_block_indexes": [0],
        },
        ids={name: tokenizer.convert_tokens_to_ids(token) for name, token in special.items()},
        intermediate_size=32,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
    )


def _qwen_vae(seed: int, downsamples: int = 1, num_res_blocks: int = 1, base_dim: int = 4):
    """AutoencoderKLQwenImage with 4 latent channels and ``2 ** downsamples`` spatial compression (real: 16, 8x)."""
    from diffusers import AutoencoderKLQwenImage

    torch.manual_seed(seed)
    return AutoencoderKLQwenImage(
        base_dim=base_dim,
        z_dim=4,
        dim_mult=[1] * (downsamples + 1),
        num_res_blocks=num_res_blocks,
        temperal_downsample=[False] * downsamples,
        latents_mean=[0.0] * 4,
        latents_std=[1.0] * 4,
    )


def _qwen_transformer(seed: int):
    from diffusers import QwenImageTransformer2DModel

    torch.manual_seed(seed)
    return QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=16,
        out_channels=4,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=16,
        guidance_embeds=False,
        axes_dims_rope=(2, 2, 4),
    )


# QwenImageEditPipeline resizes the condition image to about 1024x1024 whatever its size (calculate_dimensions(1024 *
# 1024, ratio)) and VAE-encodes it on every call, so its VAE compresses 64x (16x16 latents, 8x8 packed tokens), is as
# narrow as possible and has no residual blocks. The output is 1024x1024 too (the pipeline's default for a square
# image): 8x8 packed tokens, as many as the other cases, and it is never decoded (output_type="latent").
EDIT_VAE_DOWNSAMPLES = 6
EDIT_SIZE = 1024


def tiny_qwenimage(pipeline: str = "QwenImagePipeline", seed: int = 0, edit: bool = False):
    """A Qwen-Image ``pipeline`` (a diffusers class name); ``edit`` gives it the Edit pipeline's 64x VAE and a
    Qwen2-VL processor."""
    tokenizer = qwen_tokenizer()
    vae = {"downsamples": EDIT_VAE_DOWNSAMPLES, "num_res_blocks": 0, "base_dim": 2} if edit else {}
    components = {
        "transformer": _qwen_transformer(seed),
        "scheduler": _scheduler(QWEN_SCHEDULER),
        "vae": _qwen_vae(seed + 1, **vae),
        "text_encoder": _qwen_text_encoder(tokenizer, seed + 2),
        "tokenizer": tokenizer,
    }
    if edit:
        components["processor"] = qwen_vl_processor(tokenizer)
    return finish(diffusers_class(pipeline)(**components))


# ---------------------------------------------------------------------------------------------------------------------
# Call arguments

_TRUE_CFG = {"negative_prompt": NEGATIVE_PROMPT, "true_cfg_scale": 2.0}
_QWEN_CFG = {"negative_prompt": NEGATIVE_PROMPT, "true_cfg_scale": 4.0}


def _call(size: int = SIZE, **extra) -> dict:
    """A tiny call: the prompt, a ``size`` x ``size`` image, 16 text tokens and ``extra``."""
    return prompt_call(PROMPT, size, **extra)


def _flux2_call() -> dict:
    """FLUX.2-dev embeds guidance_scale; FLUX.2-klein-base runs CFG when guidance_scale > 1."""
    return _call(max_sequence_length=32, text_encoder_out_layers=FLUX2_TEXT_LAYERS, guidance_scale=4.0)


CASES: list[PipelineCase] = [
    PipelineCase(
        "FluxPipeline",
        "Flux",
        tiny_flux,
        lambda: _call(**_TRUE_CFG, guidance_scale=3.5),
        calls_per_evaluation=2,
        notes="FLUX.1-dev-like (guidance embedding) with true CFG (negative prompt, true_cfg_scale=2).",
    ),
    PipelineCase(
        "FluxImg2ImgPipeline",
        "Flux",
        partial(tiny_flux, "FluxImg2ImgPipeline"),
        lambda: _call(image=image_tensor(1), strength=0.75, guidance_scale=3.5),
        notes="strength=0.75: the pipeline slices timesteps and calls set_begin_index.",
        extra={"strength": 0.75},
    ),
    PipelineCase(
        "FluxInpaintPipeline",
        "Flux",
        # FLUX.1-schnell-like: no guidance embedding, schnell's scheduler.
        partial(tiny_flux, "FluxInpaintPipeline", scheduler=FLUX_SCHNELL_SCHEDULER, guidance_embeds=False),
        lambda: _call(**_TRUE_CFG, image=image_tensor(1), mask_image=mask(), strength=0.8),
        calls_per_evaluation=2,
        notes="FLUX.1-schnell-like (no guidance embedding; scheduler without dynamic shifting, shift 1) with true "
        "CFG; strength=0.8; re-noises the known region with scale_noise after every step.",
        extra={"strength": 0.8},
    ),
    PipelineCase(
        "FluxFillPipeline",
        "Flux",
        # FLUX.1-Fill-dev-like: the transformer reads [latents, masked-image latents, mask] (16 + 16 + 4 * 2 * 2).
        partial(tiny_flux, "FluxFillPipeline", in_channels=48, out_channels=16),
        lambda: _call(image=image_tensor(1), mask_image=mask(), guidance_scale=30.0),
        notes="FLUX.1-Fill-dev-like (guidance_scale=30, no CFG); strength 1.0 (default): scale_noise at sigma 1.",
        extra={"strength": 1.0},
    ),
    PipelineCase(
        "FluxKontextPipeline",
        "Flux",
        partial(tiny_flux, "FluxKontextPipeline"),
        lambda: _call(
            **_TRUE_CFG, image=_pil_image(1), guidance_scale=2.5, max_area=SIZE * SIZE, _auto_resize=False
        ),
        calls_per_evaluation=2,
        notes="FLUX.1-Kontext-dev-like with true CFG; a 32x32 condition image (max_area=32*32, _auto_resize=False).",
    ),
    PipelineCase(
        "FluxControlNetPipeline",
        "Flux",
        partial(tiny_flux, "FluxControlNetPipeline", controlnet=True),
        lambda: _call(control_image=image_tensor(2), controlnet_conditioning_scale=0.7, guidance_scale=3.5),
        notes="InstantX-style ControlNet, called once before every transformer call; control_guidance_start/end "
        "are fractions of len(timesteps).",
        extra={"also_called": ("controlnet",)},
    ),
    PipelineCase(
        "Flux2Pipeline",
        "Flux 2",
        tiny_flux2,
        _flux2_call,
        notes="FLUX.2-dev-like (guidance embedding, no CFG); mu from compute_empirical_mu(image_seq_len, "
        "num_inference_steps), not from the scheduler config.",
    ),
    PipelineCase(
        "Flux2KleinPipeline",
        "Flux 2",
        partial(tiny_flux2, klein=True),
        _flux2_call,
        calls_per_evaluation=2,
        notes="FLUX.2-klein-base-like (is_distilled=False): CFG with an empty negative prompt at guidance_scale=4; "
        "mu from compute_empirical_mu.",
    ),
    PipelineCase(
        "ChromaPipeline",
        "Chroma",
        tiny_chroma,
        lambda: _call(negative_prompt=NEGATIVE_PROMPT, guidance_scale=3.0),
        calls_per_evaluation=2,
        notes="Real CFG (negative prompt, guidance_scale=3) as two transformer calls.",
    ),
    PipelineCase(
        "QwenImagePipeline",
        "Qwen-Image",
        tiny_qwenimage,
        lambda: _call(**_QWEN_CFG),
        calls_per_evaluation=2,
        notes="True CFG (negative prompt, true_cfg_scale=4); scheduler with shift_terminal=0.02.",
    ),
    PipelineCase(
        "QwenImageImg2ImgPipeline",
        "Qwen-Image",
        partial(tiny_qwenimage, "QwenImageImg2ImgPipeline"),
        lambda: _call(image=image_tensor(1), strength=0.75, true_cfg_scale=1.0),
        notes="No CFG; strength=0.75: the pipeline slices timesteps and calls set_begin_index.",
        extra={"strength": 0.75},
    ),
    PipelineCase(
        "QwenImageInpaintPipeline",
        "Qwen-Image",
        partial(tiny_qwenimage, "QwenImageInpaintPipeline"),
        lambda: _call(**_QWEN_CFG, image=image_tensor(1), mask_image=mask(), strength=0.8),
        calls_per_evaluation=2,
        notes="True CFG; strength=0.8; re-noises the known region with scale_noise after every step.",
        extra={"strength": 0.8},
    ),
    PipelineCase(
        "QwenImageEditPipeline",
        "Qwen-Image",
        partial(tiny_qwenimage, "QwenImageEditPipeline", edit=True),
        lambda: _call(EDIT_SIZE, **_QWEN_CFG, image=_pil_image(1)),
        calls_per_evaluation=2,
        notes="True CFG. The pipeline always resizes the condition image to ~1024x1024 and VAE-encodes it on every "
        "call, so this case is slower than the others (the VAE's first convolution over 1 MP dominates, ~1 s on a "
        "CPU); 64x VAE, 1024x1024 output = 8x8 tokens.",
    ),
]
