"""Tiny video flow pipelines: Wan 2.1 / 2.2, SkyReels V2, HunyuanVideo (1.0 and 1.5), LTX (1 and 2), Mochi,
SanaVideo and Kandinsky 5, built from configs with random weights and in-memory tokenizers (no files, no network).

Every builder seeds each random initialisation, puts every module in ``eval()`` and disables the progress bar. The
scheduler of each case is the class and config the real model ships (not diffusers' test config, which is sometimes
an epsilon config), so that ``FlowTurboScheduler.from_config(pipe.scheduler.config)`` sees what a user's pipe has.
"""

from __future__ import annotations

import torch

from . import _byte_vocabulary, _t5_encoder, clip_text_encoder, clip_tokenizer, t5_tokenizer
from .cases import PipelineCase

PROMPT = "dance monkey"
NEGATIVE_PROMPT = "blurry"
TEXT_LENGTH = 16


# --- shared pieces ---------------------------------------------------------------------------------------------


def _finish(pipe):
    """Put every module of ``pipe`` in eval mode and silence its progress bar."""
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            component.eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _image(seed: int, width: int, height: int):
    """A seeded random RGB PIL image."""
    from PIL import Image

    generator = torch.Generator().manual_seed(seed)
    pixels = (torch.rand(height, width, 3, generator=generator) * 255).to(torch.uint8).numpy()
    return Image.fromarray(pixels)


def _video(seed: int, num_frames: int, width: int, height: int) -> list:
    """A seeded list of random RGB PIL frames."""
    return [_image(seed + index, width, height) for index in range(num_frames)]


def _unipc_flow(flow_shift: float):
    """The scheduler Wan 2.x and SkyReels V2 checkpoints ship: UniPC with flow sigmas and flow prediction."""
    from diffusers import UniPCMultistepScheduler

    return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=flow_shift)


def _umt5(seed: int):
    tokenizer = t5_tokenizer()
    return tokenizer, _t5_encoder(tokenizer, 16, seed, umt5=True)


# --- Wan 2.1 / 2.2 -----------------------------------------------------------------------------------------------


def _wan_transformer(seed: int, in_channels: int = 4, out_channels: int = 4, **config):
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=in_channels,
        out_channels=out_channels,
        text_dim=16,
        freq_dim=16,
        ffn_dim=16,
        num_layers=1,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
        **config,
    ).eval()


def _wan_vae(seed: int, z_dim: int = 4):
    """A tiny Wan 2.1 VAE (8x spatial, 4x temporal compression)."""
    from diffusers import AutoencoderKLWan

    torch.manual_seed(seed)
    return AutoencoderKLWan(
        base_dim=3,
        z_dim=z_dim,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        latents_mean=[0.0] * z_dim,
        latents_std=[1.0] * z_dim,
    ).eval()


def _wan22_vae(seed: int, z_dim: int = 4):
    """A tiny Wan 2.2 (TI2V-5B) VAE: residual, 2x2 pixel patches, 16x spatial and 4x temporal compression."""
    from diffusers import AutoencoderKLWan

    torch.manual_seed(seed)
    return AutoencoderKLWan(
        base_dim=3,
        z_dim=z_dim,
        in_channels=12,
        out_channels=12,
        is_residual=True,
        patch_size=2,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        scale_factor_spatial=16,
        scale_factor_temporal=4,
        latents_mean=[0.0] * z_dim,
        latents_std=[1.0] * z_dim,
    ).eval()


def build_wan(seed: int = 0):
    """Wan 2.1 T2V (1.3B-like): UniPC flow, shift 3 (480p)."""
    from diffusers import WanPipeline

    tokenizer, text_encoder = _umt5(seed + 2)
    pipe = WanPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=_wan_vae(seed + 1),
        scheduler=_unipc_flow(3.0),
        transformer=_wan_transformer(seed),
    )
    return _finish(pipe)


def build_wan_i2v(seed: int = 0):
    """Wan 2.1 I2V 480p: transformer input is [latents, 4 mask channels, image latents]; CLIP vision image embeds."""
    from diffusers import WanImageToVideoPipeline
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    tokenizer, text_encoder = _umt5(seed + 2)
    torch.manual_seed(seed + 3)
    image_encoder = CLIPVisionModel(
        CLIPVisionConfig(
            hidden_size=8,
            intermediate_size=16,
            projection_dim=8,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=4,
            patch_size=2,
        )
    ).eval()
    image_processor = CLIPImageProcessor(crop_size=4, size=4)
    pipe = WanImageToVideoPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=_wan_vae(seed + 1),
        scheduler=_unipc_flow(3.0),
        image_processor=image_processor,
        image_encoder=image_encoder,
        transformer=_wan_transformer(seed, in_channels=4 + 4 + 4, out_channels=4, image_dim=8),
    )
    return _finish(pipe)


def build_wan_v2v(seed: int = 0):
    """Wan 2.1 V2V (runs the T2V 1.3B checkpoint): UniPC flow, shift 3."""
    from diffusers import WanVideoToVideoPipeline

    tokenizer, text_encoder = _umt5(seed + 2)
    pipe = WanVideoToVideoPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=_wan_vae(seed + 1),
        scheduler=_unipc_flow(3.0),
        transformer=_wan_transformer(seed),
    )
    return _finish(pipe)


def build_wan22_a14b(seed: int = 0):
    """Wan 2.2 T2V A14B: two experts split at boundary_ratio 0.875, UniPC flow, shift 3.

    Shift 3 is what diffusers' conversion script writes for Wan 2.2 T2V (the original Wan repo samples with shift 12).
    With 4 steps the high-noise ``transformer`` takes timesteps 999 and 900, the low-noise ``transformer_2`` 750 and
    500, so both experts run.
    """
    from diffusers import WanPipeline

    tokenizer, text_encoder = _umt5(seed + 2)
    pipe = WanPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=_wan_vae(seed + 1),
        scheduler=_unipc_flow(3.0),
        transformer=_wan_transformer(seed),
        transformer_2=_wan_transformer(seed + 10),
        boundary_ratio=0.875,
    )
    return _finish(pipe)


def build_wan22_ti2v(seed: int = 0):
    """Wan 2.2 TI2V 5B as text-to-video: per-token timesteps (``expand_timesteps``), 16x VAE, UniPC flow, shift 5."""
    from diffusers import WanPipeline

    tokenizer, text_encoder = _umt5(seed + 2)
    pipe = WanPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=_wan22_vae(seed + 1),
        scheduler=_unipc_flow(5.0),
        transformer=_wan_transformer(seed),
        expand_timesteps=True,
    )
    return _finish(pipe)


def _wan_kwargs(**overrides) -> dict:
    kwargs = {
        "prompt": PROMPT,
        "negative_prompt": NEGATIVE_PROMPT,
        "height": 16,
        "width": 16,
        "num_frames": 5,
        "guidance_scale": 5.0,
        "max_sequence_length": TEXT_LENGTH,
    }
    kwargs.update(overrides)
    return kwargs


# --- SkyReels V2 -------------------------------------------------------------------------------------------------


def build_skyreels_v2(seed: int = 0):
    """SkyReels V2 T2V: a Wan-like transformer, Wan VAE, UMT5; UniPC flow with the documented T2V shift 8."""
    from diffusers import SkyReelsV2Pipeline, SkyReelsV2Transformer3DModel

    tokenizer, text_encoder = _umt5(seed + 2)
    torch.manual_seed(seed)
    transformer = SkyReelsV2Transformer3DModel(
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
    )
    pipe = SkyReelsV2Pipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        transformer=transformer,
        vae=_wan_vae(seed + 1),
        scheduler=_unipc_flow(8.0),
    )
    return _finish(pipe)


# --- HunyuanVideo ------------------------------------------------------------------------------------------------


def llama_tokenizer():
    """A byte-level Llama tokenizer (no merges) with a pad token, as HunyuanVideo pads its prompts to a fixed length."""
    from transformers import LlamaTokenizer

    vocab = _byte_vocabulary(["<unk>", "<s>", "</s>", "<pad>"])
    return LlamaTokenizer(vocab=vocab, merges=[], pad_token="<pad>", padding_side="right", model_max_length=TEXT_LENGTH)


def _hunyuan_video_vae(seed: int):
    """A tiny HunyuanVideo VAE (4 latent channels, 8x spatial and 4x temporal compression)."""
    from diffusers import AutoencoderKLHunyuanVideo

    torch.manual_seed(seed)
    return AutoencoderKLHunyuanVideo(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        down_block_types=("HunyuanVideoDownBlock3D",) * 4,
        up_block_types=("HunyuanVideoUpBlock3D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        layers_per_block=1,
        act_fn="silu",
        norm_num_groups=4,
        scaling_factor=0.476986,
        spatial_compression_ratio=8,
        temporal_compression_ratio=4,
        mid_block_add_attention=True,
    )


def build_hunyuan_video(seed: int = 0):
    """HunyuanVideo T2V: guidance-distilled transformer (``guidance_embeds``), Llama + CLIP text encoders, shift 7."""
    from diffusers import FlowMatchEulerDiscreteScheduler, HunyuanVideoPipeline, HunyuanVideoTransformer3DModel
    from transformers import LlamaConfig, LlamaModel

    torch.manual_seed(seed)
    transformer = HunyuanVideoTransformer3DModel(
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=8,
        num_layers=1,
        num_single_layers=1,
        num_refiner_layers=1,
        patch_size=1,
        patch_size_t=1,
        guidance_embeds=True,
        text_embed_dim=16,
        pooled_projection_dim=8,
        rope_axes_dim=(2, 2, 4),
    )
    tokenizer = llama_tokenizer()
    torch.manual_seed(seed + 2)
    # HunyuanVideo reads the third-to-last hidden state, so the Llama needs at least 2 layers.
    text_encoder = LlamaModel(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=64,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    )
    # The pooled CLIP prompt is always tokenized to 77 tokens.
    tokenizer_2 = clip_tokenizer()
    text_encoder_2 = clip_text_encoder(tokenizer_2, 8, 0, seed + 3, max_length=77)
    pipe = HunyuanVideoPipeline(
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
        vae=_hunyuan_video_vae(seed + 1),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
    )
    return _finish(pipe)


# --- LTX-Video ---------------------------------------------------------------------------------------------------


def _ltx_transformer(seed: int):
    from diffusers import LTXVideoTransformer3DModel

    torch.manual_seed(seed)
    return LTXVideoTransformer3DModel(
        in_channels=8,
        out_channels=8,
        patch_size=1,
        patch_size_t=1,
        num_attention_heads=2,
        attention_head_dim=8,
        cross_attention_dim=16,
        num_layers=1,
        caption_channels=16,
    )


def _ltx_vae(seed: int):
    """A tiny LTX VAE: 8 latent channels, 4x spatial and 4x temporal compression."""
    from diffusers import AutoencoderKLLTXVideo

    torch.manual_seed(seed)
    vae = AutoencoderKLLTXVideo(
        in_channels=3,
        out_channels=3,
        latent_channels=8,
        block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, False, False),
        decoder_spatio_temporal_scaling=(True, True, False, False),
        decoder_inject_noise=(False, False, False, False, False),
        upsample_residual=(False, False, False, False),
        upsample_factor=(1, 1, 1, 1),
        timestep_conditioning=False,
        patch_size=1,
        patch_size_t=1,
        encoder_causal=True,
        decoder_causal=False,
    )
    vae.use_framewise_encoding = False
    vae.use_framewise_decoding = False
    return vae


def build_ltx(seed: int = 0):
    """LTX-Video 0.9.0/0.9.1 T2V: T5, resolution-dependent shift (``use_dynamic_shifting``, ``mu``), shift_terminal."""
    from diffusers import FlowMatchEulerDiscreteScheduler, LTXPipeline

    tokenizer = t5_tokenizer()
    scheduler = FlowMatchEulerDiscreteScheduler(
        use_dynamic_shifting=True,
        base_shift=0.95,
        max_shift=2.05,
        base_image_seq_len=1024,
        max_image_seq_len=4096,
        shift_terminal=0.1,
    )
    pipe = LTXPipeline(
        scheduler=scheduler,
        vae=_ltx_vae(seed + 1),
        text_encoder=_t5_encoder(tokenizer, 16, seed + 2),
        tokenizer=tokenizer,
        transformer=_ltx_transformer(seed),
    )
    return _finish(pipe)


def build_ltx_condition(seed: int = 0):
    """LTX-Video 0.9.5 conditioning pipeline: plain FlowMatchEuler (no dynamic shifting), as that checkpoint ships."""
    from diffusers import FlowMatchEulerDiscreteScheduler, LTXConditionPipeline

    tokenizer = t5_tokenizer()
    pipe = LTXConditionPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=False),
        vae=_ltx_vae(seed + 1),
        text_encoder=_t5_encoder(tokenizer, 16, seed + 2),
        tokenizer=tokenizer,
        transformer=_ltx_transformer(seed),
    )
    return _finish(pipe)


# --- Mochi -------------------------------------------------------------------------------------------------------


def build_mochi(seed: int = 0):
    """Mochi 1 preview: T5, FlowMatchEuler with ``invert_sigmas=True`` (what the checkpoint ships)."""
    from diffusers import AutoencoderKLMochi, FlowMatchEulerDiscreteScheduler, MochiPipeline, MochiTransformer3DModel

    torch.manual_seed(seed)
    transformer = MochiTransformer3DModel(
        patch_size=2,
        num_attention_heads=2,
        attention_head_dim=8,
        num_layers=1,
        pooled_projection_dim=16,
        in_channels=12,
        out_channels=None,
        qk_norm="rms_norm",
        text_embed_dim=16,
        time_embed_dim=4,
        activation_fn="swiglu",
        max_sequence_length=TEXT_LENGTH,
    )
    torch.manual_seed(seed + 1)
    vae = AutoencoderKLMochi(
        latent_channels=12,
        out_channels=3,
        encoder_block_out_channels=(32, 32, 32, 32),
        decoder_block_out_channels=(32, 32, 32, 32),  # GroupNorm uses 32 groups
        layers_per_block=(1, 1, 1, 1, 1),
    )
    tokenizer = t5_tokenizer()
    pipe = MochiPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(invert_sigmas=True),
        vae=vae,
        text_encoder=_t5_encoder(tokenizer, 16, seed + 2),
        tokenizer=tokenizer,
        transformer=transformer,
    )
    return _finish(pipe)


# --- SanaVideo ---------------------------------------------------------------------------------------------------


def build_sana_video(seed: int = 0):
    """SANA-Video 2B 480p: Gemma-2 text encoder, Wan VAE, DPM-Solver with flow sigmas, flow_shift 8."""
    from diffusers import DPMSolverMultistepScheduler, SanaVideoPipeline, SanaVideoTransformer3DModel
    from transformers import Gemma2Config, Gemma2Model

    from . import gemma_tokenizer

    torch.manual_seed(seed)
    transformer = SanaVideoTransformer3DModel(
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=8,
        num_layers=1,
        num_cross_attention_heads=2,
        cross_attention_head_dim=8,
        cross_attention_dim=16,
        caption_channels=8,
        mlp_ratio=2.0,
        sample_size=8,
        patch_size=(1, 2, 2),
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    )
    tokenizer = gemma_tokenizer()
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
    )
    scheduler = DPMSolverMultistepScheduler(flow_shift=8.0, use_flow_sigmas=True, prediction_type="flow_prediction")
    pipe = SanaVideoPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=_wan_vae(seed + 1),
        transformer=transformer,
        scheduler=scheduler,
    )
    return _finish(pipe)


# --- HunyuanVideo 1.5 --------------------------------------------------------------------------------------------

QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def qwen_tokenizer():
    """A byte-level Qwen2 tokenizer (no merges) with Qwen's chat markers and a ChatML chat template."""
    from transformers import Qwen2Tokenizer

    vocab = _byte_vocabulary(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=[], padding_side="right", model_max_length=1024)
    tokenizer.add_tokens(["<|im_start|>", "<|im_end|>"], special_tokens=True)
    tokenizer.chat_template = QWEN_CHAT_TEMPLATE
    return tokenizer


def _chat_prefix_length(tokenizer, system_message: str) -> int:
    """Tokens before the user's text in the chat template: what a pipeline's ``crop_start`` cuts off."""
    sentinel = "\x00"
    conversation = [{"role": "system", "content": system_message}, {"role": "user", "content": sentinel}]
    text = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    return len(tokenizer(text[: text.index(sentinel)], add_special_tokens=False).input_ids)


def build_hunyuan_video15(seed: int = 0):
    """HunyuanVideo 1.5 480p T2V: Qwen2.5-VL text model + ByT5 glyph encoder, CFG through a guider (6.0), shift 5.

    The real pipeline pads prompts to 1000 Qwen tokens after a long system message (a 108-token template prefix),
    glyph texts to 256 ByT5 tokens and adds 729 (zero) image tokens; those are instance attributes, shrunk here to
    keep the call tiny, and ``prompt_template_encode_start_idx`` is recomputed for the byte-level tokenizer so the
    crop still removes exactly the template prefix.
    """
    from diffusers import (
        AutoencoderKLHunyuanVideo15,
        FlowMatchEulerDiscreteScheduler,
        HunyuanVideo15Pipeline,
        HunyuanVideo15Transformer3DModel,
    )
    from diffusers.guiders import ClassifierFreeGuidance
    from transformers import ByT5Tokenizer, Qwen2_5_VLTextConfig, Qwen2_5_VLTextModel, T5Config, T5EncoderModel

    torch.manual_seed(seed)
    transformer = HunyuanVideo15Transformer3DModel(
        in_channels=4 + 4 + 1,  # latents, condition latents, condition mask
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=8,
        num_layers=1,
        num_refiner_layers=1,
        mlp_ratio=2.0,
        patch_size=1,
        patch_size_t=1,
        text_embed_dim=16,
        text_embed_2_dim=16,
        image_embed_dim=8,
        rope_axes_dim=(2, 2, 4),
        target_size=16,
        task_type="t2v",
    )
    torch.manual_seed(seed + 1)
    vae = AutoencoderKLHunyuanVideo15(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(16, 16),
        layers_per_block=1,
        spatial_compression_ratio=4,
        temporal_compression_ratio=2,
        downsample_match_channel=False,
        upsample_match_channel=False,
    )
    tokenizer = qwen_tokenizer()
    torch.manual_seed(seed + 2)
    # It reads the third-to-last hidden state: 2 layers at least. head_dim 8 = 2 * sum(mrope_section).
    text_encoder = Qwen2_5_VLTextModel(
        Qwen2_5_VLTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=16,
            intermediate_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=1024,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [1, 1, 2]},
            bos_token_id=tokenizer.convert_tokens_to_ids("<|im_start|>"),
            eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    tokenizer_2 = ByT5Tokenizer()
    torch.manual_seed(seed + 3)
    text_encoder_2 = T5EncoderModel(
        T5Config(vocab_size=len(tokenizer_2), d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2)
    )
    pipe = HunyuanVideo15Pipeline(
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0),
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
        guider=ClassifierFreeGuidance(guidance_scale=6.0),
    )
    pipe.tokenizer_max_length = TEXT_LENGTH
    # Every call projects the glyph tokens through a fixed 2048-wide MLP (HunyuanVideo15ByT5TextProjection), the
    # costliest part of the tiny model: keep them few.
    pipe.tokenizer_2_max_length = 4
    pipe.vision_num_semantic_tokens = 4
    pipe.system_message = "Describe the video."
    pipe.prompt_template_encode_start_idx = _chat_prefix_length(tokenizer, pipe.system_message)
    return _finish(pipe)


# --- Kandinsky 5 ------------------------------------------------------------------------------------------------


def build_kandinsky5_t2v(seed: int = 0):
    """Kandinsky 5.0 T2V Lite (sft, 5 s): Qwen2.5-VL + CLIP text encoders, HunyuanVideo VAE, FlowMatchEuler shift 5.

    The real ``tokenizer`` is a ``Qwen2VLProcessor``, which cannot be built without torchvision (its video processor
    needs it); the pipeline only ever calls it on text (``images=None, videos=None``) and ``decode``, which a plain
    Qwen2 tokenizer answers the same way, so that is what this case uses. The pipeline's long system-prompt template
    is an instance attribute, shortened here, with ``prompt_template_encode_start_idx`` recomputed to crop it exactly.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler, Kandinsky5T2VPipeline, Kandinsky5Transformer3DModel
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(seed)
    transformer = Kandinsky5Transformer3DModel(
        in_visual_dim=4,
        in_text_dim=16,
        in_text_dim2=8,
        time_dim=16,
        out_visual_dim=4,
        patch_size=(1, 2, 2),
        model_dim=16,
        ff_dim=32,
        num_text_blocks=1,
        num_visual_blocks=1,
        axes_dims=(2, 2, 4),
        visual_cond=False,
        attention_type="regular",
    )
    tokenizer = qwen_tokenizer()
    torch.manual_seed(seed + 2)
    text_encoder = Qwen2_5_VLForConditionalGeneration(
        Qwen2_5_VLConfig(
            text_config={
                "vocab_size": len(tokenizer),
                "hidden_size": 16,
                "intermediate_size": 16,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "num_key_value_heads": 2,
                "max_position_embeddings": 1024,
                "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [1, 1, 2]},
                "bos_token_id": tokenizer.convert_tokens_to_ids("<|im_start|>"),
                "eos_token_id": tokenizer.convert_tokens_to_ids("<|im_end|>"),
                "pad_token_id": tokenizer.pad_token_id,
            },
            vision_config={
                "depth": 1,
                "hidden_size": 16,
                "intermediate_size": 16,
                "num_heads": 2,
                "out_hidden_size": 16,
            },
        )
    )
    tokenizer_2 = clip_tokenizer()
    pipe = Kandinsky5T2VPipeline(
        transformer=transformer,
        vae=_hunyuan_video_vae(seed + 1),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        # Kandinsky pools CLIP over a fixed 77-token context.
        text_encoder_2=clip_text_encoder(tokenizer_2, 8, 0, seed + 3, max_length=77),
        tokenizer_2=tokenizer_2,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0),
    )
    pipe.prompt_template = "<|im_start|>system\nDescribe the video.<|im_end|>\n<|im_start|>user\n{}<|im_end|>"
    prefix = pipe.prompt_template[: pipe.prompt_template.index("{}")]
    pipe.prompt_template_encode_start_idx = len(tokenizer(prefix, add_special_tokens=False).input_ids)
    return _finish(pipe)


# --- LTX-2 ------------------------------------------------------------------------------------------------------


def build_ltx2(seed: int = 0):
    """LTX-2 text-to-audio+video: Gemma-3 text encoder, text connectors, a joint video/audio transformer, video and
    audio VAEs and a vocoder, FlowMatchEuler with resolution-dependent shift (``mu``) and shift_terminal 0.1.

    Audio is generated alongside the video whatever the call asks; it is kept as small as the models allow (2 latent
    channels, 8 mel bins, a 5-frame clip at 25 fps gives 5 audio latent frames).
    """
    from diffusers import (
        AutoencoderKLLTX2Audio,
        AutoencoderKLLTX2Video,
        FlowMatchEulerDiscreteScheduler,
        LTX2Pipeline,
        LTX2VideoTransformer3DModel,
    )
    from diffusers.pipelines.ltx2 import LTX2TextConnectors
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3TextConfig, SiglipVisionConfig

    from . import gemma_tokenizer

    tokenizer = gemma_tokenizer()
    text_layers, text_dim = 1, 16
    torch.manual_seed(seed + 2)
    text_encoder = Gemma3ForConditionalGeneration(
        Gemma3Config(
            text_config=Gemma3TextConfig(
                vocab_size=len(tokenizer),
                hidden_size=text_dim,
                intermediate_size=16,
                num_hidden_layers=text_layers,
                num_attention_heads=2,
                num_key_value_heads=1,
                head_dim=8,
                max_position_embeddings=64,
                sliding_window=16,
                pad_token_id=tokenizer.pad_token_id,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
            ),
            vision_config=SiglipVisionConfig(
                hidden_size=8,
                intermediate_size=16,
                num_hidden_layers=1,
                num_attention_heads=2,
                image_size=8,
                patch_size=4,
            ),
            mm_tokens_per_image=4,
        )
    )
    torch.manual_seed(seed)
    transformer = LTX2VideoTransformer3DModel(
        in_channels=4,
        out_channels=4,
        patch_size=1,
        patch_size_t=1,
        num_attention_heads=2,
        attention_head_dim=8,
        cross_attention_dim=16,
        audio_in_channels=4,  # 2 latent channels x 2 latent mel bins
        audio_out_channels=4,
        audio_num_attention_heads=2,
        audio_attention_head_dim=4,
        audio_cross_attention_dim=8,
        num_layers=1,
        qk_norm="rms_norm_across_heads",
        caption_channels=text_dim,
        rope_double_precision=False,
        rope_type="split",
    )
    torch.manual_seed(seed + 3)
    connectors = LTX2TextConnectors(
        caption_channels=text_dim,
        text_proj_in_factor=text_layers + 1,  # every hidden state of the text encoder, embeddings included
        video_connector_num_attention_heads=2,
        video_connector_attention_head_dim=8,
        video_connector_num_layers=1,
        video_connector_num_learnable_registers=None,
        audio_connector_num_attention_heads=2,
        audio_connector_attention_head_dim=8,
        audio_connector_num_layers=1,
        audio_connector_num_learnable_registers=None,
        connector_rope_base_seq_len=32,
        rope_theta=10000.0,
        rope_double_precision=False,
        causal_temporal_positioning=False,
        rope_type="split",
    )
    torch.manual_seed(seed + 1)
    vae = AutoencoderKLLTX2Video(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(8,),
        decoder_block_out_channels=(8,),
        layers_per_block=(1,),
        decoder_layers_per_block=(1, 1),
        spatio_temporal_scaling=(True,),
        decoder_spatio_temporal_scaling=(True,),
        decoder_inject_noise=(False, False),
        downsample_type=("spatiotemporal",),
        upsample_type=("spatiotemporal",),
        upsample_residual=(False,),
        upsample_factor=(1,),
        timestep_conditioning=False,
        patch_size=4,  # as the real VAE: 4x4 pixel patches, here x2 by one downsampling block = 8x spatial
        patch_size_t=1,
        encoder_causal=True,
        decoder_causal=False,
    )
    vae.use_framewise_encoding = False
    vae.use_framewise_decoding = False
    torch.manual_seed(seed + 4)
    audio_vae = AutoencoderKLLTX2Audio(
        base_channels=4,
        output_channels=2,
        ch_mult=(1,),
        num_res_blocks=1,
        attn_resolutions=None,
        in_channels=2,
        resolution=32,
        latent_channels=2,
        norm_type="pixel",
        causality_axis="height",
        dropout=0.0,
        mid_block_add_attention=False,
        sample_rate=16000,
        mel_hop_length=160,
        is_causal=True,
        mel_bins=8,
    )
    torch.manual_seed(seed + 5)
    vocoder = LTX2Vocoder(
        in_channels=audio_vae.config.output_channels * audio_vae.config.mel_bins,
        hidden_channels=8,
        out_channels=2,
        upsample_kernel_sizes=[4],
        upsample_factors=[2],
        resnet_kernel_sizes=[3],
        resnet_dilations=[[1]],
        leaky_relu_negative_slope=0.1,
        output_sampling_rate=16000,
    )
    scheduler = FlowMatchEulerDiscreteScheduler(
        use_dynamic_shifting=True,
        base_shift=0.95,
        max_shift=2.05,
        base_image_seq_len=1024,
        max_image_seq_len=4096,
        shift_terminal=0.1,
    )
    pipe = LTX2Pipeline(
        scheduler=scheduler,
        vae=vae,
        audio_vae=audio_vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        connectors=connectors,
        transformer=transformer,
        vocoder=vocoder,
    )
    return _finish(pipe)


CASES: list[PipelineCase] = [
    PipelineCase(
        pipeline="WanPipeline",
        family="Wan 2.1",
        build=build_wan,
        call_kwargs=_wan_kwargs,
        calls_per_evaluation=2,
        notes="Wan 2.1 T2V 1.3B/14B 480p: UniPC flow sigmas, shift 3. CFG runs cond and uncond as two transformer "
        "calls. Calls set_begin_index(0) and reads scheduler.sigmas[i] (cache context).",
    ),
    PipelineCase(
        pipeline="WanImageToVideoPipeline",
        family="Wan 2.1",
        build=build_wan_i2v,
        call_kwargs=lambda: _wan_kwargs(image=_image(0, 16, 16)),
        calls_per_evaluation=2,
        notes="Wan 2.1 I2V 480p: CLIP-vision image embeddings; the transformer sees [latents, 4 mask channels, image "
        "latents]. UniPC flow sigmas, shift 3. No set_begin_index. Needs ftfy (a test dependency).",
    ),
    PipelineCase(
        pipeline="WanVideoToVideoPipeline",
        family="Wan 2.1",
        build=build_wan_v2v,
        call_kwargs=lambda: {
            **{key: value for key, value in _wan_kwargs().items() if key != "num_frames"},
            "video": _video(0, 5, 16, 16),
            "strength": 0.8,
        },
        calls_per_evaluation=2,
        notes="Runs the Wan 2.1 T2V checkpoint (UniPC flow, shift 3). strength=0.8 keeps the last int(N * 0.8) "
        "entries: it slices scheduler.timesteps by t_start * scheduler.order without set_begin_index, and noises the "
        "input video with scheduler.add_noise, or scale_noise(init, timesteps[:1], noise) when there is no add_noise. "
        "Needs ftfy (a no-op stands in when it is missing).",
    ),
    PipelineCase(
        pipeline="WanPipeline",
        family="Wan 2.2",
        variant="A14B",
        build=build_wan22_a14b,
        call_kwargs=lambda: _wan_kwargs(guidance_scale=4.0, guidance_scale_2=3.0),
        denoisers=("transformer", "transformer_2"),
        calls_per_evaluation=2,
        notes="Two experts: entries with t >= boundary_ratio * 1000 (875) go to transformer with guidance_scale, the "
        "rest to transformer_2 with guidance_scale_2, entry by entry. UniPC flow sigmas, shift 3.",
    ),
    PipelineCase(
        pipeline="WanPipeline",
        family="Wan 2.2",
        variant="TI2V-5B",
        build=build_wan22_ti2v,
        call_kwargs=lambda: _wan_kwargs(height=32, width=32),
        calls_per_evaluation=2,
        notes="expand_timesteps=True: the transformer gets per-token timesteps (batch, tokens), all equal to t for "
        "text-to-video. Wan 2.2 VAE (residual, 2x2 pixel patches, 16x spatial). UniPC flow sigmas, shift 5.",
    ),
    PipelineCase(
        pipeline="SkyReelsV2Pipeline",
        family="SkyReels V2",
        build=build_skyreels_v2,
        call_kwargs=_wan_kwargs,
        calls_per_evaluation=2,
        notes="UniPC flow sigmas with the documented T2V shift 8 (the conversion script leaves flow_shift at its "
        "default 1.0). Wan-like loop: set_timesteps(N), no set_begin_index. Needs ftfy (a test dependency).",
    ),
    PipelineCase(
        pipeline="HunyuanVideoPipeline",
        family="HunyuanVideo",
        build=build_hunyuan_video,
        call_kwargs=lambda: {
            "prompt": PROMPT,
            "negative_prompt": NEGATIVE_PROMPT,
            "true_cfg_scale": 2.0,
            "guidance_scale": 6.0,
            "prompt_template": {"template": "{}", "crop_start": 0},
            "height": 16,
            "width": 16,
            "num_frames": 5,
            "max_sequence_length": TEXT_LENGTH,
        },
        calls_per_evaluation=2,
        notes="Guidance-distilled (guidance_scale is an embedding input); true CFG (true_cfg_scale > 1 with a "
        "negative prompt) adds a separate uncond call. Passes sigmas=linspace(1, 0, N + 1)[:-1] to set_timesteps, "
        "calls set_begin_index(0). FlowMatchEuler shift 7. The call uses a bare prompt template (no system prompt).",
    ),
    PipelineCase(
        pipeline="LTXPipeline",
        family="LTX-Video",
        build=build_ltx,
        call_kwargs=lambda: {
            "prompt": PROMPT,
            "negative_prompt": NEGATIVE_PROMPT,
            "guidance_scale": 3.0,
            "height": 32,
            "width": 32,
            "num_frames": 9,
            "max_sequence_length": TEXT_LENGTH,
        },
        notes="Passes sigmas=linspace(1, 1/N, N) and mu (from the latent token count) to set_timesteps; "
        "use_dynamic_shifting with shift_terminal 0.1. Batched CFG. Latents come back packed: (batch, tokens, C).",
    ),
    PipelineCase(
        pipeline="LTXConditionPipeline",
        family="LTX-Video",
        build=build_ltx_condition,
        call_kwargs=lambda: {
            "image": _image(0, 32, 32),
            "prompt": PROMPT,
            "negative_prompt": NEGATIVE_PROMPT,
            "guidance_scale": 3.0,
            "height": 32,
            "width": 32,
            "num_frames": 9,
            "max_sequence_length": TEXT_LENGTH,
        },
        notes="LTX-Video 0.9.5 (FlowMatchEuler, no dynamic shifting), conditioned on a first frame. Passes "
        "timesteps=1000 * linear-quadratic schedule to set_timesteps, reads scheduler.sigmas, and calls "
        "step(-velocity, t, latents, per_token_timesteps=...): with per-token timesteps FlowMatchEuler steps by "
        "dt = sigma - sigma_next (hence the minus) and leaves conditioning tokens (timestep 0) unchanged.",
    ),
    PipelineCase(
        pipeline="MochiPipeline",
        family="Mochi",
        build=build_mochi,
        call_kwargs=lambda: {
            "prompt": PROMPT,
            "negative_prompt": NEGATIVE_PROMPT,
            "guidance_scale": 4.5,
            "height": 16,
            "width": 16,
            "num_frames": 7,
            "max_sequence_length": TEXT_LENGTH,
        },
        notes="Ships FlowMatchEuler with invert_sigmas=True (sigmas run 0 -> 1, the model sees 1000 - t). Passes "
        "sigmas= (linear-quadratic) to set_timesteps, calls set_begin_index(0). Batched CFG.",
    ),
    PipelineCase(
        pipeline="SanaVideoPipeline",
        family="SanaVideo",
        build=build_sana_video,
        call_kwargs=lambda: {
            "prompt": PROMPT,
            "negative_prompt": NEGATIVE_PROMPT,
            "guidance_scale": 6.0,
            "height": 32,
            "width": 32,
            "frames": 5,
            "max_sequence_length": TEXT_LENGTH,
            "use_resolution_binning": False,
            "complex_human_instruction": None,
        },
        notes="SANA-Video 2B 480p: DPM-Solver flow sigmas, shift 8. Batched CFG. Passes generator= to step() when "
        "step accepts it (and eta= when it accepts eta). No resolution binning, no complex human instruction.",
    ),
    PipelineCase(
        pipeline="HunyuanVideo15Pipeline",
        family="HunyuanVideo 1.5",
        build=build_hunyuan_video15,
        # The quoted text goes to the ByT5 glyph encoder; guidance comes from the pipeline's guider (CFG 6.0).
        call_kwargs=lambda: {
            "prompt": PROMPT + ' holding a sign that says "hi"',
            "negative_prompt": NEGATIVE_PROMPT,
            "height": 16,
            "width": 16,
            "num_frames": 5,
        },
        calls_per_evaluation=2,
        notes="480p T2V: FlowMatchEuler shift 5; CFG through the ClassifierFreeGuidance guider (6.0), cond and "
        "uncond as two calls, guider.set_state(step=i, num_inference_steps=len(timesteps)). Passes "
        "sigmas=linspace(1, 0, N + 1)[:-1]. Prompt/glyph/image-token lengths and the system message are shrunk.",
    ),
    PipelineCase(
        pipeline="Kandinsky5T2VPipeline",
        family="Kandinsky 5",
        build=build_kandinsky5_t2v,
        call_kwargs=lambda: {
            "prompt": PROMPT,
            "negative_prompt": NEGATIVE_PROMPT,
            "guidance_scale": 5.0,
            "height": 32,
            "width": 32,
            "num_frames": 5,
            "max_sequence_length": TEXT_LENGTH,
        },
        calls_per_evaluation=2,
        notes="T2V Lite sft 5s: FlowMatchEuler shift 5; CFG as two calls. Channels-last latents (B, F, H, W, C); "
        "writes step()'s result into latents[..., :C] in place. The tokenizer is a plain Qwen2 tokenizer, not a "
        "Qwen2VLProcessor (which needs torchvision); the system-prompt template is shortened.",
    ),
    PipelineCase(
        pipeline="LTX2Pipeline",
        family="LTX-2",
        build=build_ltx2,
        # Batched CFG only: spatio-temporal (STG) and modality-isolation guidance, on by default, each add a
        # transformer call per evaluation and their default STG block (28) does not exist in the 1-layer model.
        call_kwargs=lambda: {
            "prompt": PROMPT,
            "negative_prompt": NEGATIVE_PROMPT,
            "guidance_scale": 3.0,
            "audio_guidance_scale": 7.0,
            "stg_scale": 0.0,
            "audio_stg_scale": 0.0,
            "modality_scale": 1.0,
            "audio_modality_scale": 1.0,
            "spatio_temporal_guidance_blocks": None,
            "height": 32,
            "width": 32,
            "num_frames": 5,
            "frame_rate": 25.0,
            "max_sequence_length": TEXT_LENGTH,
        },
        notes="Audio and video together: a deepcopy of the scheduler steps the audio latents. Passes sigmas= and mu "
        "to set_timesteps (both schedulers), set_begin_index(0). Every guidance term is computed on x0 = x - v * "
        "scheduler.sigmas[i] and turned back into v = (x - x0) / scheduler.sigmas[i], which is 0/0 for an evaluation "
        "at the final sigma 0. Batched CFG; STG and modality guidance (defaults) are off here.",
    ),
]
