"""Tiny video flow pipelines: Wan 2.1 / 2.2, SkyReels V2, HunyuanVideo (1.0 and 1.5), LTX (1 and 2), Mochi,
SanaVideo and Kandinsky 5, built from configs with random weights and in-memory tokenizers (no files, no network).

Every builder seeds each random initialisation, puts every module in ``eval()`` and disables the progress bar. The
scheduler of each case is the class and config the real model ships (not diffusers' test config, which is sometimes
an epsilon config), so that ``FlowTurboScheduler.from_config(pipe.scheduler.config)`` sees what a user's pipe has.
"""

from __future__ import annotations

import torch

from .cases import PipelineCase
from .components import (
    MAX_TEXT_LENGTH,
    byte_vocabulary,
    clip_text_encoder,
    clip_tokenizer,
    diffusers_class,
    finish,
    flow_solver,
    gemma2_encoder,
    gemma_tokenizer,
    prompt_call,
    qwen2_5_vl_encoder,
    qwen2_tokenizer,
    qwen_mrope,
    t5_encoder,
    t5_text,
    text_model,
    wan_components,
    wan_transformer,
    wan_vae,
)

PROMPT = "dance monkey"
NEGATIVE_PROMPT = "blurry"


# --- shared pieces ---------------------------------------------------------------------------------------------


def _image(seed: int, width: int, height: int):
    """A seeded random RGB PIL image."""
    from PIL import Image

    generator = torch.Generator().manual_seed(seed)
    pixels = (torch.rand(height, width, 3, generator=generator) * 255).to(torch.uint8).numpy()
    return Image.fromarray(pixels)


def _video(seed: int, num_frames: int, width: int, height: int) -> list:
    """A seeded list of random RGB PIL frames."""
    return [_image(seed + index, width, height) for index in range(num_frames)]


def _call(guidance_scale: float = 5.0, size: int = 16, num_frames: int = 5, **extra) -> dict:
    """A tiny text-to-video call: the prompt and negative prompt, a ``size`` x ``size`` video of ``num_frames``
    frames, 16 text tokens and ``extra``."""
    return prompt_call(
        PROMPT, size, NEGATIVE_PROMPT, guidance_scale=guidance_scale, num_frames=num_frames, **extra
    )


def _pooled_clip(seed: int) -> dict:
    """The CLIP text encoder of HunyuanVideo and Kandinsky 5 (seeded ``seed``): always pooled over 77 tokens."""
    tokenizer_2 = clip_tokenizer()
    return {"text_encoder_2": clip_text_encoder(tokenizer_2, 8, 0, seed, max_length=77), "tokenizer_2": tokenizer_2}


# --- Wan 2.1 / 2.2, SkyReels V2 ----------------------------------------------------------------------------------


def build_wan(
    pipeline: str = "WanPipeline",
    seed: int = 0,
    *,
    flow_shift: float = 3.0,
    residual_vae: bool = False,
    image_to_video: bool = False,
    two_experts: bool = False,
    transformer_class: str = "WanTransformer3DModel",
    **extra,
):
    """A Wan-like ``pipeline`` (a diffusers class name): UMT5, Wan VAE, UniPC on flow sigmas with ``flow_shift`` and a
    ``transformer_class`` transformer; ``extra`` goes to the pipeline.

    ``residual_vae`` gives it Wan 2.2 TI2V-5B's VAE; ``image_to_video`` Wan 2.1 I2V's CLIP vision image embeddings (the
    transformer reads [latents, 4 mask channels, image latents]); ``two_experts`` a second transformer (Wan 2.2 A14B's
    low-noise expert).
    """
    transformer = {"in_channels": 4 + 4 + 4, "image_dim": 8} if image_to_video else {}
    components = wan_components(seed, flow_shift, residual_vae, model_class=transformer_class, **transformer)
    if image_to_video:
        from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

        torch.manual_seed(seed + 3)
        components["image_encoder"] = CLIPVisionModel(
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
        components["image_processor"] = CLIPImageProcessor(crop_size=4, size=4)
    if two_experts:
        components["transformer_2"] = wan_transformer(seed + 10)
    return finish(diffusers_class(pipeline)(**components, **extra))


# --- HunyuanVideo ------------------------------------------------------------------------------------------------


def llama_tokenizer():
    """A byte-level Llama tokenizer (no merges) with a pad token, as HunyuanVideo pads its prompts to a fixed length."""
    from transformers import LlamaTokenizer

    vocab = byte_vocabulary(["<unk>", "<s>", "</s>", "<pad>"])
    return LlamaTokenizer(
        vocab=vocab, merges=[], pad_token="<pad>", padding_side="right", model_max_length=MAX_TEXT_LENGTH
    )


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
    from transformers import LlamaModel

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
    # HunyuanVideo reads the third-to-last hidden state, so the Llama needs at least 2 layers.
    text_encoder = text_model(
        LlamaModel,
        tokenizer,
        seed + 2,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    pipe = HunyuanVideoPipeline(
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
        vae=_hunyuan_video_vae(seed + 1),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
        **_pooled_clip(seed + 3),
    )
    return finish(pipe)


# --- LTX-Video ---------------------------------------------------------------------------------------------------

# LTX-Video 0.9.0/0.9.1's scheduler (LTX-2 ships it too): resolution-dependent shift (``mu``), shift_terminal 0.1.
LTX_SCHEDULER = {
    "use_dynamic_shifting": True,
    "base_shift": 0.95,
    "max_shift": 2.05,
    "base_image_seq_len": 1024,
    "max_image_seq_len": 4096,
    "shift_terminal": 0.1,
}


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


def build_ltx(pipeline: str = "LTXPipeline", seed: int = 0, scheduler: dict = LTX_SCHEDULER):
    """An LTX-Video ``pipeline`` (a diffusers class name): T5, FlowMatchEuler with ``scheduler``."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    tokenizer, text_encoder = t5_text(seed + 2)
    pipe = diffusers_class(pipeline)(
        scheduler=FlowMatchEulerDiscreteScheduler(**scheduler),
        vae=_ltx_vae(seed + 1),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=_ltx_transformer(seed),
    )
    return finish(pipe)


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
        max_sequence_length=MAX_TEXT_LENGTH,
    )
    torch.manual_seed(seed + 1)
    vae = AutoencoderKLMochi(
        latent_channels=12,
        out_channels=3,
        encoder_block_out_channels=(32, 32, 32, 32),
        decoder_block_out_channels=(32, 32, 32, 32),  # GroupNorm uses 32 groups
        layers_per_block=(1, 1, 1, 1, 1),
    )
    tokenizer, text_encoder = t5_text(seed + 2)
    pipe = MochiPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(invert_sigmas=True),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
    )
    return finish(pipe)


# --- SanaVideo ---------------------------------------------------------------------------------------------------


def build_sana_video(seed: int = 0):
    """SANA-Video 2B 480p: Gemma-2 text encoder, Wan VAE, DPM-Solver with flow sigmas, flow_shift 8."""
    from diffusers import SanaVideoPipeline, SanaVideoTransformer3DModel

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
    pipe = SanaVideoPipeline(
        tokenizer=tokenizer,
        text_encoder=gemma2_encoder(tokenizer, seed + 2),
        vae=wan_vae(seed + 1),
        transformer=transformer,
        scheduler=flow_solver("DPMSolverMultistepScheduler", 8.0),
    )
    return finish(pipe)


# --- HunyuanVideo 1.5 --------------------------------------------------------------------------------------------

QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def qwen_tokenizer():
    """A byte-level Qwen2 tokenizer (no merges) with Qwen's chat markers and a ChatML chat template."""
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tokenizer = qwen2_tokenizer(special, QWEN_CHAT_TEMPLATE, padding_side="right", model_max_length=1024)
    tokenizer.add_tokens(special[1:], special_tokens=True)
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
    from transformers import ByT5Tokenizer, Qwen2_5_VLTextModel

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
    # It reads the third-to-last hidden state: 2 layers at least. head_dim 8 = 2 * sum(mrope_section).
    text_encoder = text_model(
        Qwen2_5_VLTextModel,
        tokenizer,
        seed + 2,
        hidden_size=16,
        intermediate_size=16,
        num_hidden_layers=2,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        rope_parameters=qwen_mrope(),
        bos_token_id=tokenizer.convert_tokens_to_ids("<|im_start|>"),
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
    )
    tokenizer_2 = ByT5Tokenizer()
    pipe = HunyuanVideo15Pipeline(
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0),
        text_encoder_2=t5_encoder(tokenizer_2, 16, seed + 3),
        tokenizer_2=tokenizer_2,
        guider=ClassifierFreeGuidance(guidance_scale=6.0),
    )
    pipe.tokenizer_max_length = MAX_TEXT_LENGTH
    # Every call projects the glyph tokens through a fixed 2048-wide MLP (HunyuanVideo15ByT5TextProjection), the
    # costliest part of the tiny model: keep them few.
    pipe.tokenizer_2_max_length = 4
    pipe.vision_num_semantic_tokens = 4
    pipe.system_message = "Describe the video."
    pipe.prompt_template_encode_start_idx = _chat_prefix_length(tokenizer, pipe.system_message)
    return finish(pipe)


# --- Kandinsky 5 ------------------------------------------------------------------------------------------------


def build_kandinsky5_t2v(seed: int = 0):
    """Kandinsky 5.0 T2V Lite (sft, 5 s): Qwen2.5-VL + CLIP text encoders, HunyuanVideo VAE, FlowMatchEuler shift 5.

    The real ``tokenizer`` is a ``Qwen2VLProcessor``, which cannot be built without torchvision (its video processor
    needs it); the pipeline only ever calls it on text (``images=None, videos=None``) and ``decode``, which a plain
    Qwen2 tokenizer answers the same way, so that is what this case uses. The pipeline's long system-prompt template
    is an instance attribute, shortened here, with ``prompt_template_encode_start_idx`` recomputed to crop it exactly.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler, Kandinsky5T2VPipeline, Kandinsky5Transformer3DModel

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
    text_encoder = qwen2_5_vl_encoder(
        tokenizer,
        seed + 2,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|im_start|>"),
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
    )
    pipe = Kandinsky5T2VPipeline(
        transformer=transformer,
        vae=_hunyuan_video_vae(seed + 1),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        # Kandinsky pools CLIP over a fixed 77-token context.
        **_pooled_clip(seed + 3),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0),
    )
    pipe.prompt_template = "<|im_start|>system\nDescribe the video.<|im_end|>\n<|im_start|>user\n{}<|im_end|>"
    prefix = pipe.prompt_template[: pipe.prompt_template.index("{}")]
    pipe.prompt_template_encode_start_idx = len(tokenizer(prefix, add_special_tokens=False).input_ids)
    return finish(pipe)


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
    pipe = LTX2Pipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**LTX_SCHEDULER),
        vae=vae,
        audio_vae=audio_vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        connectors=connectors,
        transformer=transformer,
        vocoder=vocoder,
    )
    return finish(pipe)


CASES: list[PipelineCase] = [
    PipelineCase(
        pipeline="WanPipeline",
        family="Wan 2.1",
        build=build_wan,  # T2V 1.3B-like: UniPC flow, shift 3 (480p)
        call_kwargs=_call,
        calls_per_evaluation=2,
        notes="Wan 2.1 T2V 1.3B/14B 480p: UniPC flow sigmas, shift 3. CFG runs cond and uncond as two transformer "
        "calls. Calls set_begin_index(0) and reads scheduler.sigmas[i] (cache context).",
    ),
    PipelineCase(
        pipeline="WanImageToVideoPipeline",
        family="Wan 2.1",
        build=lambda: build_wan("WanImageToVideoPipeline", image_to_video=True),
        call_kwargs=lambda: _call(image=_image(0, 16, 16)),
        calls_per_evaluation=2,
        notes="Wan 2.1 I2V 480p: CLIP-vision image embeddings; the transformer sees [latents, 4 mask channels, image "
        "latents]. UniPC flow sigmas, shift 3. No set_begin_index. Needs ftfy (a test dependency).",
    ),
    PipelineCase(
        pipeline="WanVideoToVideoPipeline",
        family="Wan 2.1",
        build=lambda: build_wan("WanVideoToVideoPipeline"),  # runs the T2V 1.3B checkpoint
        call_kwargs=lambda: {
            **{key: value for key, value in _call().items() if key != "num_frames"},
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
        # Shift 3 is what diffusers' conversion script writes for Wan 2.2 T2V (the original Wan repo samples with
        # shift 12). With 4 steps the high-noise transformer takes timesteps 999 and 900, the low-noise
        # transformer_2 750 and 500, so both experts run.
        build=lambda: build_wan(two_experts=True, boundary_ratio=0.875),
        call_kwargs=lambda: _call(guidance_scale=4.0, guidance_scale_2=3.0),
        denoisers=("transformer", "transformer_2"),
        calls_per_evaluation=2,
        notes="Two experts: entries with t >= boundary_ratio * 1000 (875) go to transformer with guidance_scale, the "
        "rest to transformer_2 with guidance_scale_2, entry by entry. UniPC flow sigmas, shift 3.",
    ),
    PipelineCase(
        pipeline="WanPipeline",
        family="Wan 2.2",
        variant="TI2V-5B",
        # TI2V 5B as text-to-video: per-token timesteps (expand_timesteps), 16x VAE, UniPC flow, shift 5.
        build=lambda: build_wan(flow_shift=5.0, residual_vae=True, expand_timesteps=True),
        call_kwargs=lambda: _call(size=32),
        calls_per_evaluation=2,
        notes="expand_timesteps=True: the transformer gets per-token timesteps (batch, tokens), all equal to t for "
        "text-to-video. Wan 2.2 VAE (residual, 2x2 pixel patches, 16x spatial). UniPC flow sigmas, shift 5.",
    ),
    PipelineCase(
        pipeline="SkyReelsV2Pipeline",
        family="SkyReels V2",
        # T2V: a Wan-like transformer, Wan VAE, UMT5; UniPC flow with the documented T2V shift 8.
        build=lambda: build_wan(
            "SkyReelsV2Pipeline", flow_shift=8.0, transformer_class="SkyReelsV2Transformer3DModel"
        ),
        call_kwargs=_call,
        calls_per_evaluation=2,
        notes="UniPC flow sigmas with the documented T2V shift 8 (the conversion script leaves flow_shift at its "
        "default 1.0). Wan-like loop: set_timesteps(N), no set_begin_index. Needs ftfy (a test dependency).",
    ),
    PipelineCase(
        pipeline="HunyuanVideoPipeline",
        family="HunyuanVideo",
        build=build_hunyuan_video,
        call_kwargs=lambda: _call(
            guidance_scale=6.0, true_cfg_scale=2.0, prompt_template={"template": "{}", "crop_start": 0}
        ),
        calls_per_evaluation=2,
        notes="Guidance-distilled (guidance_scale is an embedding input); true CFG (true_cfg_scale > 1 with a "
        "negative prompt) adds a separate uncond call. Passes sigmas=linspace(1, 0, N + 1)[:-1] to set_timesteps, "
        "calls set_begin_index(0). FlowMatchEuler shift 7. The call uses a bare prompt template (no system prompt).",
    ),
    PipelineCase(
        pipeline="LTXPipeline",
        family="LTX-Video",
        build=build_ltx,  # LTX-Video 0.9.0/0.9.1 T2V
        call_kwargs=lambda: _call(guidance_scale=3.0, size=32, num_frames=9),
        notes="Passes sigmas=linspace(1, 1/N, N) and mu (from the latent token count) to set_timesteps; "
        "use_dynamic_shifting with shift_terminal 0.1. Batched CFG. Latents come back packed: (batch, tokens, C).",
    ),
    PipelineCase(
        pipeline="LTXConditionPipeline",
        family="LTX-Video",
        # LTX-Video 0.9.5: plain FlowMatchEuler (no dynamic shifting), as that checkpoint ships.
        build=lambda: build_ltx("LTXConditionPipeline", scheduler={"use_dynamic_shifting": False}),
        call_kwargs=lambda: _call(guidance_scale=3.0, size=32, num_frames=9, image=_image(0, 32, 32)),
        notes="LTX-Video 0.9.5 (FlowMatchEuler, no dynamic shifting), conditioned on a first frame. Passes "
        "timesteps=1000 * linear-quadratic schedule to set_timesteps, reads scheduler.sigmas, and calls "
        "step(-velocity, t, latents, per_token_timesteps=...): with per-token timesteps FlowMatchEuler steps by "
        "dt = sigma - sigma_next (hence the minus) and leaves conditioning tokens (timestep 0) unchanged.",
    ),
    PipelineCase(
        pipeline="MochiPipeline",
        family="Mochi",
        build=build_mochi,
        call_kwargs=lambda: _call(guidance_scale=4.5, num_frames=7),
        notes="Ships FlowMatchEuler with invert_sigmas=True (sigmas run 0 -> 1, the model sees 1000 - t). Passes "
        "sigmas= (linear-quadratic) to set_timesteps, calls set_begin_index(0). Batched CFG.",
    ),
    PipelineCase(
        pipeline="SanaVideoPipeline",
        family="SanaVideo",
        build=build_sana_video,
        # SanaVideo counts frames in `frames`, not `num_frames`.
        call_kwargs=lambda: prompt_call(
            PROMPT,
            32,
            NEGATIVE_PROMPT,
            guidance_scale=6.0,
            frames=5,
            use_resolution_binning=False,
            complex_human_instruction=None,
        ),
        notes="SANA-Video 2B 480p: DPM-Solver flow sigmas, shift 8. Batched CFG. Passes generator= to step() when "
        "step accepts it (and eta= when it accepts eta). No resolution binning, no complex human instruction.",
    ),
    PipelineCase(
        pipeline="HunyuanVideo15Pipeline",
        family="HunyuanVideo 1.5",
        build=build_hunyuan_video15,
        # The quoted text goes to the ByT5 glyph encoder; guidance comes from the pipeline's guider (CFG 6.0).
        call_kwargs=lambda: prompt_call(
            PROMPT + ' holding a sign that says "hi"', 16, NEGATIVE_PROMPT, max_sequence_length=None, num_frames=5
        ),
        calls_per_evaluation=2,
        notes="480p T2V: FlowMatchEuler shift 5; CFG through the ClassifierFreeGuidance guider (6.0), cond and "
        "uncond as two calls, guider.set_state(step=i, num_inference_steps=len(timesteps)). Passes "
        "sigmas=linspace(1, 0, N + 1)[:-1]. Prompt/glyph/image-token lengths and the system message are shrunk.",
    ),
    PipelineCase(
        pipeline="Kandinsky5T2VPipeline",
        family="Kandinsky 5",
        build=build_kandinsky5_t2v,
        call_kwargs=lambda: _call(size=32),
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
        call_kwargs=lambda: _call(
            guidance_scale=3.0,
            size=32,
            audio_guidance_scale=7.0,
            stg_scale=0.0,
            audio_stg_scale=0.0,
            modality_scale=1.0,
            audio_modality_scale=1.0,
            spatio_temporal_guidance_blocks=None,
            frame_rate=25.0,
        ),
        notes="Audio and video together: a deepcopy of the scheduler steps the audio latents. Passes sigmas= and mu "
        "to set_timesteps (both schedulers), set_begin_index(0). Every guidance term is computed on x0 = x - v * "
        "scheduler.sigmas[i] and turned back into v = (x - x0) / scheduler.sigmas[i], which is 0/0 for an evaluation "
        "at the final sigma 0. Batched CFG; STG and modality guidance (defaults) are off here.",
    ),
]
