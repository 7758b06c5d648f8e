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

import numpy as np
import torch

from . import (
    MAX_TEXT_LENGTH,
    _autoencoder_kl,
    _byte_vocabulary,
    _t5_encoder,
    clip_text_encoder,
    clip_tokenizer,
    t5_tokenizer,
)
from .cases import PipelineCase

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


def _finish(pipe):
    """Every module in eval() (they are made float32 on the CPU), progress bar off."""
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            component.eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _image(seed: int, size: int = SIZE) -> torch.Tensor:
    """A seeded RGB image batch in [0, 1], shape (1, 3, size, size)."""
    return torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _mask(size: int = SIZE) -> torch.Tensor:
    """A binary mask (1, 1, size, size): repaint the right half."""
    mask = torch.zeros(1, 1, size, size)
    mask[..., size // 2 :] = 1.0
    return mask


def _pil_image(seed: int, size: int = SIZE):
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


# ---------------------------------------------------------------------------------------------------------------------
# Tokenizers and processors (in memory)


def _byte_bpe_tokenizer(special: list[str], **kwargs):
    """A byte-level BPE tokenizer without merges (Mistral's tekken tokenizer is byte-level BPE too)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(vocab=_byte_vocabulary(special), merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, **kwargs)
    tokenizer.add_special_tokens({"additional_special_tokens": special})
    return tokenizer


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
    tokenizer = _byte_bpe_tokenizer(
        special, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>", truncation_side="left"
    )
    tokenizer.chat_template = MISTRAL_CHAT_TEMPLATE
    return tokenizer


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
    from transformers import Qwen2Tokenizer

    tokenizer = Qwen2Tokenizer(vocab=_byte_vocabulary(QWEN_SPECIAL_TOKENS), merges=[], model_max_length=2048)
    tokenizer.add_special_tokens({"additional_special_tokens": QWEN_SPECIAL_TOKENS[1:]})
    tokenizer.chat_template = QWEN3_CHAT_TEMPLATE
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


def _flux_text_components(seed: int) -> dict:
    tokenizer, tokenizer_2 = clip_tokenizer(), t5_tokenizer()
    return {
        "tokenizer": tokenizer,
        "text_encoder": clip_text_encoder(tokenizer, 16, 0, seed),
        "tokenizer_2": tokenizer_2,
        "text_encoder_2": _t5_encoder(tokenizer_2, 16, seed + 1),
    }


def _flux_vae(seed: int):
    return _autoencoder_kl(4, seed, shift_factor=0.1159, scaling_factor=0.3611)


def _flux_transformer(seed: int, in_channels: int = 16, out_channels: int | None = None, guidance_embeds: bool = True):
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(seed)
    return FluxTransformer2DModel(
        patch_size=1,
        in_channels=in_channels,
        out_channels=out_channels,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=16,
        pooled_projection_dim=16,
        guidance_embeds=guidance_embeds,
        axes_dims_rope=(2, 2, 4),
    )


def _flux_components(seed: int, scheduler: dict = FLUX_SCHEDULER, **transformer) -> dict:
    return {
        "transformer": _flux_transformer(seed, **transformer),
        "scheduler": _scheduler(scheduler),
        "vae": _flux_vae(seed + 1),
        **_flux_text_components(seed + 2),
    }


def tiny_flux(seed: int = 0):
    """FLUX.1-dev-like `FluxPipeline` (guidance embedding); the case adds true CFG."""
    from diffusers import FluxPipeline

    return _finish(FluxPipeline(**_flux_components(seed), image_encoder=None, feature_extractor=None))


def tiny_flux_img2img(seed: int = 0):
    from diffusers import FluxImg2ImgPipeline

    return _finish(FluxImg2ImgPipeline(**_flux_components(seed)))


def tiny_flux_inpaint(seed: int = 0):
    """FLUX.1-schnell-like `FluxInpaintPipeline` (no guidance embedding, schnell's scheduler); the case adds CFG."""
    from diffusers import FluxInpaintPipeline

    components = _flux_components(seed, scheduler=FLUX_SCHNELL_SCHEDULER, guidance_embeds=False)
    return _finish(FluxInpaintPipeline(**components))


def tiny_flux_fill(seed: int = 0):
    """FLUX.1-Fill-dev-like: the transformer reads [latents, masked-image latents, mask] (16 + 16 + 4 * 2 * 2)."""
    from diffusers import FluxFillPipeline

    return _finish(FluxFillPipeline(**_flux_components(seed, in_channels=48, out_channels=16)))


def tiny_flux_kontext(seed: int = 0):
    from diffusers import FluxKontextPipeline

    return _finish(FluxKontextPipeline(**_flux_components(seed), image_encoder=None, feature_extractor=None))


def tiny_flux_controlnet(seed: int = 0):
    """InstantX-style `FluxControlNetModel` (no input hint block: the control image is VAE-encoded and packed)."""
    from diffusers import FluxControlNetModel, FluxControlNetPipeline

    torch.manual_seed(seed + 10)
    controlnet = FluxControlNetModel(
        patch_size=1,
        in_channels=16,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=16,
        pooled_projection_dim=16,
        guidance_embeds=True,
        axes_dims_rope=(2, 2, 4),
    )
    return _finish(FluxControlNetPipeline(**_flux_components(seed), controlnet=controlnet))


# ---------------------------------------------------------------------------------------------------------------------
# FLUX.2: Flux2Transformer2DModel, AutoencoderKLFlux2 (latents patchified 2x2, batch-norm statistics); FLUX.2-dev reads
# Mistral-Small-3.1 hidden states, FLUX.2-klein Qwen3 hidden states (each stacks the layers text_encoder_out_layers).

FLUX2_TEXT_LAYERS = (1,)  # hidden states stacked for the transformer (real: (10, 20, 30) / (9, 18, 27))


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


def _flux2_transformer(seed: int, joint_attention_dim: int, guidance_embeds: bool):
    from diffusers import Flux2Transformer2DModel

    torch.manual_seed(seed)
    return Flux2Transformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=joint_attention_dim,
        timestep_guidance_channels=32,
        axes_dims_rope=(2, 2, 2, 2),
        guidance_embeds=guidance_embeds,
    )


def tiny_flux2(seed: int = 0):
    """FLUX.2-dev-like `Flux2Pipeline`: a Mistral3 (Pixtral vision tower) text encoder, guidance embedding."""
    from diffusers import Flux2Pipeline
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration

    tokenizer = mistral_tokenizer()
    hidden = 16
    config = Mistral3Config(
        text_config={
            "model_type": "mistral",
            "vocab_size": len(tokenizer),
            "hidden_size": hidden,
            "intermediate_size": 2 * hidden,
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
    torch.manual_seed(seed + 2)
    text_encoder = Mistral3ForConditionalGeneration(config)
    return _finish(
        Flux2Pipeline(
            transformer=_flux2_transformer(seed, hidden * len(FLUX2_TEXT_LAYERS), guidance_embeds=True),
            scheduler=_scheduler(FLUX_SCHEDULER),
            vae=_flux2_vae(seed + 1),
            text_encoder=text_encoder,
            tokenizer=tokenizer,
        )
    )


def tiny_flux2_klein(seed: int = 0):
    """FLUX.2-klein-base-like `Flux2KleinPipeline` (not distilled: true CFG with an empty negative prompt)."""
    from diffusers import Flux2KleinPipeline
    from transformers import Qwen3Config, Qwen3ForCausalLM

    tokenizer = qwen_tokenizer()
    hidden = 16
    torch.manual_seed(seed + 2)
    text_encoder = Qwen3ForCausalLM(
        Qwen3Config(
            vocab_size=len(tokenizer),
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=8,
            max_position_embeddings=512,
            bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
            eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    return _finish(
        Flux2KleinPipeline(
            transformer=_flux2_transformer(seed, hidden * len(FLUX2_TEXT_LAYERS), guidance_embeds=False),
            scheduler=_scheduler(FLUX_SCHEDULER),
            vae=_flux2_vae(seed + 1),
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            is_distilled=False,
        )
    )


# ---------------------------------------------------------------------------------------------------------------------
# Chroma: T5 only, ChromaTransformer2DModel (Flux-schnell derived, modulation approximator), real CFG


def tiny_chroma(seed: int = 0):
    from diffusers import ChromaPipeline, ChromaTransformer2DModel

    tokenizer = t5_tokenizer()
    torch.manual_seed(seed)
    transformer = ChromaTransformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=16,
        axes_dims_rope=(2, 2, 4),
        approximator_num_channels=16,
        approximator_hidden_dim=16,
        approximator_layers=1,
    )
    return _finish(
        ChromaPipeline(
            transformer=transformer,
            scheduler=_scheduler(FLUX_SCHEDULER),
            vae=_flux_vae(seed + 1),
            text_encoder=_t5_encoder(tokenizer, 16, seed + 2),
            tokenizer=tokenizer,
            image_encoder=None,
            feature_extractor=None,
        )
    )


# ---------------------------------------------------------------------------------------------------------------------
# Qwen-Image: Qwen2.5-VL text encoder (last hidden state), QwenImageTransformer2DModel (patch 2), AutoencoderKLQwenImage


def _qwen_text_encoder(tokenizer, seed: int):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    special = {
        "image_token_id": "<|image_pad|>",
        "video_token_id": "<|video_pad|>",
        "vision_start_token_id": "<|vision_start|>",
        "vision_end_token_id": "<|vision_end|>",
    }
    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in special.items()}
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "max_position_embeddings": 2048,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [1, 1, 2]},
            "bos_token_id": tokenizer.convert_tokens_to_ids("<|endoftext|>"),
            "eos_token_id": tokenizer.convert_tokens_to_ids("<|im_end|>"),
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "depth": 1,
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_heads": 2,
            "out_hidden_size": 16,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 56,
            "fullatt_block_indexes": [0],
        },
        **ids,
    )
    torch.manual_seed(seed)
    return Qwen2_5_VLForConditionalGeneration(config)


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


def _qwen_components(seed: int, **vae) -> dict:
    tokenizer = qwen_tokenizer()
    return {
        "transformer": _qwen_transformer(seed),
        "scheduler": _scheduler(QWEN_SCHEDULER),
        "vae": _qwen_vae(seed + 1, **vae),
        "text_encoder": _qwen_text_encoder(tokenizer, seed + 2),
        "tokenizer": tokenizer,
    }


def tiny_qwenimage(seed: int = 0):
    from diffusers import QwenImagePipeline

    return _finish(QwenImagePipeline(**_qwen_components(seed)))


def tiny_qwenimage_img2img(seed: int = 0):
    from diffusers import QwenImageImg2ImgPipeline

    return _finish(QwenImageImg2ImgPipeline(**_qwen_components(seed)))


def tiny_qwenimage_inpaint(seed: int = 0):
    from diffusers import QwenImageInpaintPipeline

    return _finish(QwenImageInpaintPipeline(**_qwen_components(seed)))


# QwenImageEditPipeline resizes the condition image to about 1024x1024 whatever its size (calculate_dimensions(1024 *
# 1024, ratio)) and VAE-encodes it on every call, so its VAE compresses 64x (16x16 latents, 8x8 packed tokens), is as
# narrow as possible and has no residual blocks. The output is 1024x1024 too (the pipeline's default for a square
# image): 8x8 packed tokens, as many as the other cases, and it is never decoded (output_type="latent").
EDIT_VAE_DOWNSAMPLES = 6
EDIT_SIZE = 1024


def tiny_qwenimage_edit(seed: int = 0):
    from diffusers import QwenImageEditPipeline

    components = _qwen_components(seed, downsamples=EDIT_VAE_DOWNSAMPLES, num_res_blocks=0, base_dim=2)
    return _finish(QwenImageEditPipeline(**components, processor=qwen_vl_processor(components["tokenizer"])))


# ---------------------------------------------------------------------------------------------------------------------
# Call arguments

_FLUX_TEXT = {"prompt": PROMPT, "height": SIZE, "width": SIZE, "max_sequence_length": MAX_TEXT_LENGTH}
_TRUE_CFG = {"negative_prompt": NEGATIVE_PROMPT, "true_cfg_scale": 2.0}


def _flux_kwargs():
    return {**_FLUX_TEXT, **_TRUE_CFG, "guidance_scale": 3.5}


def _flux_img2img_kwargs():
    return {**_FLUX_TEXT, "image": _image(1), "strength": 0.75, "guidance_scale": 3.5}


def _flux_inpaint_kwargs():
    return {**_FLUX_TEXT, **_TRUE_CFG, "image": _image(1), "mask_image": _mask(), "strength": 0.8}


def _flux_fill_kwargs():
    return {**_FLUX_TEXT, "image": _image(1), "mask_image": _mask(), "guidance_scale": 30.0}


def _flux_kontext_kwargs():
    return {
        **_FLUX_TEXT,
        **_TRUE_CFG,
        "image": _pil_image(1),
        "guidance_scale": 2.5,
        "max_area": SIZE * SIZE,
        "_auto_resize": False,
    }


def _flux_controlnet_kwargs():
    return {
        **_FLUX_TEXT,
        "control_image": _image(2),
        "controlnet_conditioning_scale": 0.7,
        "guidance_scale": 3.5,
    }


def _flux2_kwargs():
    """FLUX.2-dev embeds guidance_scale; FLUX.2-klein-base runs CFG when guidance_scale > 1."""
    return {
        "prompt": PROMPT,
        "height": SIZE,
        "width": SIZE,
        "max_sequence_length": 32,
        "text_encoder_out_layers": FLUX2_TEXT_LAYERS,
        "guidance_scale": 4.0,
    }


def _chroma_kwargs():
    return {**_FLUX_TEXT, "negative_prompt": NEGATIVE_PROMPT, "guidance_scale": 3.0}


_QWEN_TEXT = {"prompt": PROMPT, "height": SIZE, "width": SIZE, "max_sequence_length": MAX_TEXT_LENGTH}
_QWEN_CFG = {"negative_prompt": NEGATIVE_PROMPT, "true_cfg_scale": 4.0}


def _qwenimage_kwargs():
    return {**_QWEN_TEXT, **_QWEN_CFG}


def _qwenimage_img2img_kwargs():
    return {**_QWEN_TEXT, "image": _image(1), "strength": 0.75, "true_cfg_scale": 1.0}


def _qwenimage_inpaint_kwargs():
    return {**_QWEN_TEXT, **_QWEN_CFG, "image": _image(1), "mask_image": _mask(), "strength": 0.8}


def _qwenimage_edit_kwargs():
    return {
        **_QWEN_TEXT,
        **_QWEN_CFG,
        "image": _pil_image(1),
        "height": EDIT_SIZE,
        "width": EDIT_SIZE,
    }


CASES: list[PipelineCase] = [
    PipelineCase(
        "FluxPipeline",
        "Flux",
        tiny_flux,
        _flux_kwargs,
        calls_per_evaluation=2,
        notes="FLUX.1-dev-like (guidance embedding) with true CFG (negative prompt, true_cfg_scale=2).",
    ),
    PipelineCase(
        "FluxImg2ImgPipeline",
        "Flux",
        tiny_flux_img2img,
        _flux_img2img_kwargs,
        notes="strength=0.75: the pipeline slices timesteps and calls set_begin_index.",
        extra={"strength": 0.75},
    ),
    PipelineCase(
        "FluxInpaintPipeline",
        "Flux",
        tiny_flux_inpaint,
        _flux_inpaint_kwargs,
        calls_per_evaluation=2,
        notes="FLUX.1-schnell-like (no guidance embedding; scheduler without dynamic shifting, shift 1) with true "
        "CFG; strength=0.8; re-noises the known region with scale_noise after every step.",
        extra={"strength": 0.8},
    ),
    PipelineCase(
        "FluxFillPipeline",
        "Flux",
        tiny_flux_fill,
        _flux_fill_kwargs,
        notes="FLUX.1-Fill-dev-like (guidance_scale=30, no CFG); strength 1.0 (default): scale_noise at sigma 1.",
        extra={"strength": 1.0},
    ),
    PipelineCase(
        "FluxKontextPipeline",
        "Flux",
        tiny_flux_kontext,
        _flux_kontext_kwargs,
        calls_per_evaluation=2,
        notes="FLUX.1-Kontext-dev-like with true CFG; a 32x32 condition image (max_area=32*32, _auto_resize=False).",
    ),
    PipelineCase(
        "FluxControlNetPipeline",
        "Flux",
        tiny_flux_controlnet,
        _flux_controlnet_kwargs,
        notes="InstantX-style ControlNet, called once before every transformer call; control_guidance_start/end "
        "are fractions of len(timesteps).",
        extra={"also_called": ("controlnet",)},
    ),
    PipelineCase(
        "Flux2Pipeline",
        "Flux 2",
        tiny_flux2,
        _flux2_kwargs,
        notes="FLUX.2-dev-like (guidance embedding, no CFG); mu from compute_empirical_mu(image_seq_len, "
        "num_inference_steps), not from the scheduler config.",
    ),
    PipelineCase(
        "Flux2KleinPipeline",
        "Flux 2",
        tiny_flux2_klein,
        _flux2_kwargs,
        calls_per_evaluation=2,
        notes="FLUX.2-klein-base-like (is_distilled=False): CFG with an empty negative prompt at guidance_scale=4; "
        "mu from compute_empirical_mu.",
    ),
    PipelineCase(
        "ChromaPipeline",
        "Chroma",
        tiny_chroma,
        _chroma_kwargs,
        calls_per_evaluation=2,
        notes="Real CFG (negative prompt, guidance_scale=3) as two transformer calls.",
    ),
    PipelineCase(
        "QwenImagePipeline",
        "Qwen-Image",
        tiny_qwenimage,
        _qwenimage_kwargs,
        calls_per_evaluation=2,
        notes="True CFG (negative prompt, true_cfg_scale=4); scheduler with shift_terminal=0.02.",
    ),
    PipelineCase(
        "QwenImageImg2ImgPipeline",
        "Qwen-Image",
        tiny_qwenimage_img2img,
        _qwenimage_img2img_kwargs,
        notes="No CFG; strength=0.75: the pipeline slices timesteps and calls set_begin_index.",
        extra={"strength": 0.75},
    ),
    PipelineCase(
        "QwenImageInpaintPipeline",
        "Qwen-Image",
        tiny_qwenimage_inpaint,
        _qwenimage_inpaint_kwargs,
        calls_per_evaluation=2,
        notes="True CFG; strength=0.8; re-noises the known region with scale_noise after every step.",
        extra={"strength": 0.8},
    ),
    PipelineCase(
        "QwenImageEditPipeline",
        "Qwen-Image",
        tiny_qwenimage_edit,
        _qwenimage_edit_kwargs,
        calls_per_evaluation=2,
        notes="True CFG. The pipeline always resizes the condition image to ~1024x1024 and VAE-encodes it on every "
        "call, so this case is slower than the others (the VAE's first convolution over 1 MP dominates, ~1 s on a "
        "CPU); 64x VAE, 1024x1024 output = 8x8 tokens.",
    ),
]
