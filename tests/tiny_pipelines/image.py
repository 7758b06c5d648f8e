"""Conformance cases of the image families: SD3 (text-to-image, img2img, inpaint, ControlNet, PAG), Sana, CogView4
(and its Control pipeline), Lumina 2, HiDream-I1, AuraFlow, Bria 3.2, Z-Image, HunyuanImage 2.1 and GLM-Image.

Every pipeline is built from configs with random weights (seeded), in-memory tokenizers and the scheduler class and
config its released model ships with, so that the scheduler sees a realistic config. Sizes are close to the smallest
the pipelines accept: a 4-step call takes a few hundredths of a second on a CPU. Where a pipeline hard-codes a large
size (HiDream's output area, HunyuanImage's prompt padding), the builder lowers the instance attribute that holds it.

Scheduler configs marked "(unverified)" are the published ones as remembered; they could not be checked offline (the
others come from diffusers' conversion scripts or docs).
"""

from __future__ import annotations

import torch

from . import (
    _autoencoder_kl,
    _byte_vocabulary,
    _t5_encoder,
    clip_text_encoder,
    clip_tokenizer,
    t5_tokenizer,
    tiny_sana_pipeline,
    tiny_sd3_pipeline,
)
from .cases import PipelineCase

PROMPT = "a red 7 on a blue background"
NEGATIVE_PROMPT = "blurry"
TEXT_LENGTH = 16


def _finish(pipe):
    """Every module in eval mode, progress bar off."""
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            component.eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _deterministic_encoding(vae):
    """Make ``vae.encode`` return a zero-spread posterior (its sample is its mean).

    Control pipelines encode the control image with ``latent_dist.sample()`` and no generator, i.e. from torch's
    global random state, which would make two calls with the same generator differ.
    """
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    encode = vae.encode

    def encode_deterministically(x, return_dict: bool = True):
        posterior = encode(x, return_dict=False)[0]
        posterior = DiagonalGaussianDistribution(posterior.parameters, deterministic=True)
        if not return_dict:
            return (posterior,)
        from diffusers.models.modeling_outputs import AutoencoderKLOutput

        return AutoencoderKLOutput(latent_dist=posterior)

    vae.encode = encode_deterministically
    return vae


def _randomize_zero_init(module: torch.nn.Module, seed: int, std: float = 0.1):
    """Give a ControlNet's zero-initialised layers random weights, so that the control input changes the result."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            if not parameter.any():
                parameter.normal_(0.0, std)
    return module


def _image(seed: int, size: int = 32, signed: bool = False) -> torch.Tensor:
    """A seeded random RGB image batch ``(1, 3, size, size)`` in [0, 1] (in [-1, 1] when ``signed``)."""
    image = torch.rand((1, 3, size, size), generator=torch.Generator().manual_seed(seed))
    return image * 2 - 1 if signed else image


def _mask(size: int = 32) -> torch.Tensor:
    """An inpainting mask ``(1, 1, size, size)``: repaint the right half, keep the left half."""
    mask = torch.zeros((1, 1, size, size))
    mask[..., size // 2 :] = 1.0
    return mask


def byte_bpe_tokenizer(special: list[str], chat_template: str | None = None, **special_tokens):
    """A byte-level BPE tokenizer (no merges) such as GLM, Llama and Qwen use, built in memory.

    ``special`` lists the special tokens (their ids come first); ``special_tokens`` names them (``pad_token="<pad>"``).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(vocab=_byte_vocabulary(special), merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        model_max_length=TEXT_LENGTH,
        additional_special_tokens=list(special),
        **special_tokens,
    )
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    return tokenizer


def qwen_tokenizer():
    """A byte-level Qwen2/Qwen3-like tokenizer (no merges) with a chat template that accepts ``enable_thinking``."""
    template = (
        "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
        "{% if enable_thinking is defined and not enable_thinking %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
    )
    return byte_bpe_tokenizer(
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"],
        chat_template=template,
        pad_token="<|endoftext|>",
        eos_token="<|im_end|>",
    )


def gemma_tokenizer_with_spaces():
    """Like ``tiny_pipelines.gemma_tokenizer`` (byte pieces, no merges), with the ``▁`` piece that Gemma turns spaces
    into (without it every space becomes ``<unk>``)."""
    from transformers import GemmaTokenizerFast

    vocab = _byte_vocabulary(["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "\u2581"])
    return GemmaTokenizerFast(vocab=vocab, merges=[], model_max_length=TEXT_LENGTH)


def _autoencoder_kl_8x(latent_channels: int, seed: int, **config):
    """A tiny AutoencoderKL with 8x downsampling (four blocks), for pipelines that assume 8x whatever the VAE."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(4, 4, 4, 4),
        layers_per_block=1,
        norm_num_groups=2,
        latent_channels=latent_channels,
        **config,
    ).eval()


# --- Stable Diffusion 3 ---------------------------------------------------------------------------------------------
# SD3 and SD3.5 ship FlowMatchEulerDiscreteScheduler(shift=3.0), which is what tiny_sd3_pipeline uses.


def _sd3_components(seed: int = 0) -> dict:
    return dict(tiny_sd3_pipeline(seed).components)


def _sd3(pipeline_class, seed: int = 0, **extra):
    import inspect

    components = _sd3_components(seed)
    accepted = inspect.signature(pipeline_class.__init__).parameters
    components = {name: value for name, value in components.items() if name in accepted}
    return _finish(pipeline_class(**components, **extra))


def build_sd3():
    from diffusers import StableDiffusion3Pipeline

    return _sd3(StableDiffusion3Pipeline)


def build_sd3_img2img():
    from diffusers import StableDiffusion3Img2ImgPipeline

    return _sd3(StableDiffusion3Img2ImgPipeline)


def build_sd3_inpaint():
    from diffusers import StableDiffusion3InpaintPipeline

    # The tiny SD3 VAE has 16 latent channels, like the transformer's input (the pipeline blends latents by the mask).
    return _sd3(StableDiffusion3InpaintPipeline)


def build_sd3_controlnet():
    from diffusers import SD3ControlNetModel, StableDiffusion3ControlNetPipeline

    torch.manual_seed(10)
    controlnet = SD3ControlNetModel(
        sample_size=16,
        patch_size=2,
        in_channels=16,
        out_channels=16,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=4,
        joint_attention_dim=32,
        caption_projection_dim=32,
        pooled_projection_dim=32,
        pos_embed_max_size=32,
    ).eval()
    # A fresh SD3 ControlNet has zero-initialised output blocks and control embedding (no effect on the result).
    _randomize_zero_init(controlnet.controlnet_blocks, 11)
    _randomize_zero_init(controlnet.pos_embed_input, 12)
    pipe = _sd3(StableDiffusion3ControlNetPipeline, controlnet=controlnet)
    _deterministic_encoding(pipe.vae)
    return pipe


def build_sd3_pag():
    from diffusers import StableDiffusion3PAGPipeline

    return _sd3(StableDiffusion3PAGPipeline, pag_applied_layers=["blocks.1"])


def _sd3_call(**extra) -> dict:
    return dict(prompt=PROMPT, height=32, width=32, guidance_scale=5.0, max_sequence_length=TEXT_LENGTH, **extra)


def sd3_call_kwargs():
    return _sd3_call()


def sd3_img2img_call_kwargs():
    return _sd3_call(image=_image(1), strength=1.0)


def sd3_inpaint_call_kwargs():
    return _sd3_call(image=_image(1), mask_image=_mask(), strength=1.0)


def sd3_controlnet_call_kwargs():
    return _sd3_call(control_image=_image(2, signed=True), controlnet_conditioning_scale=0.7)


def sd3_pag_call_kwargs():
    return _sd3_call(pag_scale=3.0)


# --- Sana -----------------------------------------------------------------------------------------------------------
# Sana 1600M 1024px ships DPMSolverMultistepScheduler(use_flow_sigmas=True, flow_shift=3.0,
# prediction_type="flow_prediction"), which is what tiny_sana_pipeline uses.


def build_sana():
    return _finish(tiny_sana_pipeline())


def sana_call_kwargs():
    return dict(
        prompt=PROMPT,
        height=32,
        width=32,
        guidance_scale=4.5,
        use_resolution_binning=False,
        complex_human_instruction=None,
        max_sequence_length=TEXT_LENGTH,
    )


# --- CogView4 -------------------------------------------------------------------------------------------------------
# THUDM/CogView4-6B ships FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, time_shift_type="linear",
# base_shift=0.25, max_shift=0.75, base_image_seq_len=256, max_image_seq_len=4096); its text encoder is GLM-4 (GlmModel,
# last-but-one hidden state) with GLM-4's tiktoken-style byte-level BPE tokenizer.


def glm_tokenizer():
    """A byte-level GLM-4-like tokenizer (no merges); CogView4 pads on the left with ``pad_token_id``."""
    special = ["<|endoftext|>", "[gMASK]", "<sop>"]
    return byte_bpe_tokenizer(special, pad_token="<|endoftext|>", eos_token="<|endoftext|>")


def _cogview4(pipeline_class, control: bool):
    from diffusers import CogView4Transformer2DModel, FlowMatchEulerDiscreteScheduler
    from transformers import GlmConfig, GlmModel

    tokenizer = glm_tokenizer()
    torch.manual_seed(0)
    transformer = CogView4Transformer2DModel(
        patch_size=2,
        in_channels=32 if control else 16,  # the Control model takes the control latents concatenated
        out_channels=16,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        text_embed_dim=16,
        time_embed_dim=8,
        condition_dim=4,
        pos_embed_max_size=16,
        sample_size=16,
        rope_axes_dim=(8, 8),
    )
    torch.manual_seed(2)
    text_encoder = GlmModel(
        GlmConfig(
            vocab_size=len(tokenizer),
            hidden_size=16,
            intermediate_size=16,
            num_hidden_layers=2,  # the pipeline reads hidden_states[-2]
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=8,
            max_position_embeddings=64,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    )
    scheduler = FlowMatchEulerDiscreteScheduler(
        use_dynamic_shifting=True,
        time_shift_type="linear",
        base_shift=0.25,
        max_shift=0.75,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    pipe = pipeline_class(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=_autoencoder_kl(16, 1, scaling_factor=1.0, shift_factor=0.0),
        transformer=transformer,
        scheduler=scheduler,
    )
    if control:
        _deterministic_encoding(pipe.vae)
    return _finish(pipe)


def build_cogview4():
    from diffusers import CogView4Pipeline

    return _cogview4(CogView4Pipeline, control=False)


def build_cogview4_control():
    from diffusers import CogView4ControlPipeline

    return _cogview4(CogView4ControlPipeline, control=True)


def cogview4_call_kwargs():
    return dict(
        prompt=PROMPT, negative_prompt=NEGATIVE_PROMPT, height=16, width=16, guidance_scale=5.0,
        max_sequence_length=TEXT_LENGTH,
    )


def cogview4_control_call_kwargs():
    return dict(cogview4_call_kwargs(), control_image=_image(2, size=16))


# --- Lumina 2 -------------------------------------------------------------------------------------------------------
# Alpha-VLLM/Lumina-Image-2.0 ships FlowMatchEulerDiscreteScheduler(shift=6.0) (unverified); its text encoder is Gemma-2
# (last-but-one hidden state), its VAE the 16-channel Flux VAE. The pipeline fixes vae_scale_factor = 8.


def build_lumina2():
    from diffusers import FlowMatchEulerDiscreteScheduler, Lumina2Pipeline, Lumina2Transformer2DModel
    from transformers import Gemma2Config, Gemma2Model

    tokenizer = gemma_tokenizer_with_spaces()
    torch.manual_seed(0)
    transformer = Lumina2Transformer2DModel(
        sample_size=4,
        patch_size=2,
        in_channels=16,
        hidden_size=16,
        num_layers=1,
        num_refiner_layers=1,
        num_attention_heads=2,
        num_kv_heads=1,
        multiple_of=16,
        axes_dim_rope=(4, 2, 2),
        axes_lens=(64, 32, 32),
        cap_feat_dim=8,
    )
    torch.manual_seed(2)
    text_encoder = Gemma2Model(
        Gemma2Config(
            vocab_size=len(tokenizer),
            hidden_size=8,
            intermediate_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=4,
            max_position_embeddings=64,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    return _finish(
        Lumina2Pipeline(
            transformer=transformer,
            scheduler=FlowMatchEulerDiscreteScheduler(shift=6.0),
            vae=_autoencoder_kl_8x(16, 1, scaling_factor=0.3611, shift_factor=0.1159),
            text_encoder=text_encoder,
            tokenizer=tokenizer,
        )
    )


def lumina2_call_kwargs():
    # cfg_trunc_ratio=1.0 keeps guidance on every evaluation (the model card uses 0.25, which drops the unconditional
    # call for the later entries, counted over entries, not steps).
    return dict(
        prompt=PROMPT, negative_prompt=NEGATIVE_PROMPT, height=32, width=32, guidance_scale=4.0,
        cfg_trunc_ratio=1.0, cfg_normalization=True, system_prompt="", max_sequence_length=2 * TEXT_LENGTH,
    )


# --- AuraFlow -------------------------------------------------------------------------------------------------------
# fal/AuraFlow (v0.1 to v0.3) ships FlowMatchEulerDiscreteScheduler(shift=1.73) (unverified); UMT5 text encoder, SDXL
# VAE.


def build_auraflow():
    from diffusers import AuraFlowPipeline, AuraFlowTransformer2DModel, FlowMatchEulerDiscreteScheduler

    tokenizer = t5_tokenizer()
    torch.manual_seed(0)
    transformer = AuraFlowTransformer2DModel(
        sample_size=8,
        patch_size=2,
        in_channels=4,
        out_channels=4,
        num_mmdit_layers=1,
        num_single_dit_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=16,
        caption_projection_dim=16,
        pos_embed_max_size=64,
    )
    return _finish(
        AuraFlowPipeline(
            tokenizer=tokenizer,
            text_encoder=_t5_encoder(tokenizer, 16, 2, umt5=True),
            vae=_autoencoder_kl(4, 1, scaling_factor=0.13025),
            transformer=transformer,
            scheduler=FlowMatchEulerDiscreteScheduler(shift=1.73),
        )
    )


def auraflow_call_kwargs():
    return dict(
        prompt=PROMPT, negative_prompt=NEGATIVE_PROMPT, height=16, width=16, guidance_scale=3.5,
        max_sequence_length=TEXT_LENGTH,
    )


# --- Bria 3.2 -------------------------------------------------------------------------------------------------------
# briaai/BRIA-3.2 ships a FlowMatchEulerDiscreteScheduler (its config unverified: diffusers' tests use the defaults, as
# here); a Flux-like transformer without pooled embeddings, a T5 text encoder. Its pipeline takes the dynamic-shift
# branch only for a FlowMatchEulerDiscreteScheduler with use_dynamic_shifting, and calls scale_model_input on any
# scheduler that is not exactly that class.


def build_bria():
    from diffusers import AutoencoderKL, BriaPipeline, BriaTransformer2DModel, FlowMatchEulerDiscreteScheduler

    tokenizer = t5_tokenizer()
    torch.manual_seed(0)
    transformer = BriaTransformer2DModel(
        patch_size=1,
        in_channels=16,  # 4 latent channels packed 2x2
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=16,
        pooled_projection_dim=None,
        axes_dims_rope=[0, 4, 4],
    )
    torch.manual_seed(1)
    # One block: Bria takes vae_scale_factor = 2 ** len(block_out_channels) (it counts the 2x2 packing in).
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",),
        up_block_types=("UpDecoderBlock2D",),
        block_out_channels=(8,),
        layers_per_block=1,
        norm_num_groups=4,
        latent_channels=4,
        shift_factor=0.0,
        scaling_factor=0.13025,
    )
    return _finish(
        BriaPipeline(
            transformer=transformer,
            scheduler=FlowMatchEulerDiscreteScheduler(),
            vae=vae,
            text_encoder=_t5_encoder(tokenizer, 16, 2),
            tokenizer=tokenizer,
        )
    )


def bria_call_kwargs():
    return dict(
        prompt=PROMPT, negative_prompt=NEGATIVE_PROMPT, height=16, width=16, guidance_scale=5.0,
        max_sequence_length=TEXT_LENGTH,
    )


# --- Z-Image --------------------------------------------------------------------------------------------------------
# Tongyi-MAI/Z-Image-Turbo ships FlowMatchEulerDiscreteScheduler(shift=3.0) (unverified); Qwen3 text encoder with the
# Qwen chat template (last-but-one hidden state, padding dropped), 16-channel Flux VAE. Turbo runs without guidance; the
# case uses guidance (batched in one call) to cover the pipeline's CFG path.


def build_z_image():
    from diffusers import FlowMatchEulerDiscreteScheduler, ZImagePipeline, ZImageTransformer2DModel
    from transformers import Qwen3Config, Qwen3Model

    tokenizer = qwen_tokenizer()
    torch.manual_seed(0)
    transformer = ZImageTransformer2DModel(
        all_patch_size=(2,),
        all_f_patch_size=(1,),
        in_channels=16,
        dim=32,
        n_layers=1,
        n_refiner_layers=1,
        n_heads=2,
        n_kv_heads=2,
        cap_feat_dim=16,
        axes_dims=[8, 4, 4],
        axes_lens=[64, 16, 16],
    )
    with torch.no_grad():  # created with torch.empty
        transformer.x_pad_token.copy_(torch.randn_like(transformer.x_pad_token))
        transformer.cap_pad_token.copy_(torch.randn_like(transformer.cap_pad_token))
    torch.manual_seed(2)
    text_encoder = Qwen3Model(
        Qwen3Config(
            vocab_size=len(tokenizer),
            hidden_size=16,
            intermediate_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=8,
            max_position_embeddings=64,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    return _finish(
        ZImagePipeline(
            scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
            vae=_autoencoder_kl(16, 1, scaling_factor=0.3611, shift_factor=0.1159),
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            transformer=transformer,
        )
    )


def z_image_call_kwargs():
    return dict(
        prompt=PROMPT, negative_prompt=NEGATIVE_PROMPT, height=16, width=16, guidance_scale=4.0,
        max_sequence_length=TEXT_LENGTH,
    )


# --- HiDream-I1 -----------------------------------------------------------------------------------------------------
# HiDream-ai/HiDream-I1-Full ships UniPCMultistepScheduler(use_flow_sigmas=True, flow_shift=3.0,
# prediction_type="flow_prediction") and runs with guidance; -Dev (guidance-distilled) ships
# FlowMatchEulerDiscreteScheduler(shift=6.0) and runs without (both unverified). Four text encoders: two CLIPs (pooled),
# T5 and Llama 3.1 (every layer's hidden state, stacked). The pipeline rescales any height x width to the area of
# (default_sample_size * vae_scale_factor)^2 (128 * 8 = 1024^2 for the real model), so the case lowers
# default_sample_size to 8 (a 16 x 16 image).


def llama3_tokenizer():
    """A byte-level Llama-3-like tokenizer (no merges) that starts every text with ``<|begin_of_text|>``."""
    from tokenizers import processors

    tokenizer = byte_bpe_tokenizer(
        ["<|begin_of_text|>", "<|end_of_text|>"], bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>"
    )
    bos = tokenizer.bos_token_id
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B",
        special_tokens=[("<|begin_of_text|>", bos)],
    )
    return tokenizer


def _hidream(dev: bool):
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        HiDreamImagePipeline,
        HiDreamImageTransformer2DModel,
        UniPCMultistepScheduler,
    )
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer, tokenizer_2, tokenizer_3 = clip_tokenizer(), clip_tokenizer(), t5_tokenizer()
    tokenizer_4 = llama3_tokenizer()
    torch.manual_seed(0)
    transformer = HiDreamImageTransformer2DModel(
        patch_size=2,
        in_channels=16,
        out_channels=16,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        caption_channels=[16, 16],  # T5, Llama
        text_emb_dim=32,  # the two pooled CLIP embeddings, concatenated
        num_routed_experts=4,
        num_activated_experts=2,
        axes_dims_rope=(4, 2, 2),
        max_resolution=(16, 16),
        llama_layers=(0, 1),
    )
    torch.manual_seed(5)
    text_encoder_4 = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer_4),
            hidden_size=16,
            intermediate_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=8,
            max_position_embeddings=64,
            bos_token_id=tokenizer_4.bos_token_id,
            eos_token_id=tokenizer_4.eos_token_id,
            pad_token_id=tokenizer_4.eos_token_id,
        )
    )
    if dev:
        scheduler = FlowMatchEulerDiscreteScheduler(shift=6.0)
    else:
        scheduler = UniPCMultistepScheduler(use_flow_sigmas=True, flow_shift=3.0, prediction_type="flow_prediction")
    pipe = HiDreamImagePipeline(
        scheduler=scheduler,
        vae=_autoencoder_kl(16, 1, scaling_factor=0.3611, shift_factor=0.1159),
        text_encoder=clip_text_encoder(tokenizer, 16, 16, 2),
        tokenizer=tokenizer,
        text_encoder_2=clip_text_encoder(tokenizer_2, 16, 16, 3),
        tokenizer_2=tokenizer_2,
        text_encoder_3=_t5_encoder(tokenizer_3, 16, 4),
        tokenizer_3=tokenizer_3,
        text_encoder_4=text_encoder_4,
        tokenizer_4=tokenizer_4,
        transformer=transformer,
    )
    pipe.default_sample_size = 8
    return _finish(pipe)


def build_hidream():
    return _hidream(dev=False)


def build_hidream_dev():
    return _hidream(dev=True)


def hidream_call_kwargs():
    return dict(
        prompt=PROMPT, negative_prompt=NEGATIVE_PROMPT, height=16, width=16, guidance_scale=5.0,
        max_sequence_length=TEXT_LENGTH,
    )


def hidream_dev_call_kwargs():
    return dict(prompt=PROMPT, height=16, width=16, guidance_scale=0.0, max_sequence_length=TEXT_LENGTH)


# --- HunyuanImage 2.1 -----------------------------------------------------------------------------------------------
# hunyuanvideo-community/HunyuanImage-2.1-Diffusers ships FlowMatchEulerDiscreteScheduler(shift=5.0) (unverified) and
# guides with AdaptiveProjectedMixGuidance components (`guider`, `ocr_guider`: CFG 3.5, APG from step 5), which run the
# conditional and unconditional branches as separate transformer calls. Text: Qwen2.5-VL (hidden state -3, after a
# system-prompt template whose tokens are dropped) and ByT5 for quoted glyph text. The pipeline pads the Qwen prompt to
# tokenizer_max_length = 1000 tokens and the ByT5 prompt to 128; the case lowers both to 16, and sets the number of
# template tokens to drop to what the byte-level tokenizer makes of the template.


def _qwen2_5_vl_encoder(tokenizer, hidden_size: int, seed: int):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(seed)
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": hidden_size,
            "intermediate_size": hidden_size,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "max_position_embeddings": 128,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [1, 1, 2]},
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "depth": 1, "hidden_size": 16, "intermediate_size": 16, "num_heads": 2, "out_hidden_size": hidden_size
        },
    )
    return Qwen2_5_VLForConditionalGeneration(config).eval()


def build_hunyuan_image():
    from diffusers import (
        AdaptiveProjectedMixGuidance,
        AutoencoderKLHunyuanImage,
        FlowMatchEulerDiscreteScheduler,
        HunyuanImagePipeline,
        HunyuanImageTransformer2DModel,
    )
    from transformers import ByT5Tokenizer

    tokenizer, tokenizer_2 = qwen_tokenizer(), ByT5Tokenizer()
    torch.manual_seed(0)
    transformer = HunyuanImageTransformer2DModel(
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=8,
        num_layers=1,
        num_single_layers=1,
        num_refiner_layers=1,
        patch_size=(1, 1),
        text_embed_dim=16,
        text_embed_2_dim=16,
        rope_axes_dim=(4, 4),
    )
    torch.manual_seed(1)
    vae = AutoencoderKLHunyuanImage(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(32, 32),
        layers_per_block=1,
        spatial_compression_ratio=2,
        sample_size=32,
        scaling_factor=0.75289,
    )

    def guider():
        return AdaptiveProjectedMixGuidance(
            guidance_scale=3.5,
            adaptive_projected_guidance_scale=10.0,
            adaptive_projected_guidance_momentum=-0.5,
            adaptive_projected_guidance_rescale=10.0,
            adaptive_projected_guidance_start_step=5,
        )

    pipe = HunyuanImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0),
        vae=vae,
        text_encoder=_qwen2_5_vl_encoder(tokenizer, 16, 2),
        tokenizer=tokenizer,
        text_encoder_2=_t5_encoder(tokenizer_2, 16, 3),
        tokenizer_2=tokenizer_2,
        transformer=transformer,
        guider=guider(),
        ocr_guider=guider(),
    )
    pipe.tokenizer_max_length = TEXT_LENGTH
    pipe.tokenizer_2_max_length = TEXT_LENGTH
    template_prefix = pipe.prompt_template_encode.split("{}")[0]
    pipe.prompt_template_encode_start_idx = len(tokenizer(template_prefix).input_ids)
    return _finish(pipe)


def hunyuan_image_call_kwargs():
    # The quoted word goes through ByT5 (glyph text), which selects the `ocr_guider`.
    return dict(prompt='a sign that says "7"', negative_prompt=NEGATIVE_PROMPT, height=8, width=8)


# --- GLM-Image ------------------------------------------------------------------------------------------------------
# zai-org/GLM-Image: an autoregressive GLM-Image model (with its processor) first generates prior image tokens, then a
# CogView4-like DiT denoises, conditioned on them and on ByT5-style T5 glyph embeddings of quoted text. The case passes
# `prior_token_ids` (what `generate_prior_tokens` returns), which skips the autoregressive stage, so the processor and
# the vision-language model are left out (None). Scheduler (unverified): FlowMatchEulerDiscreteScheduler with CogView4's
# linear dynamic shift (the pipeline's calculate_shift defaults are CogView4's: base 0.25, max 0.75).


GLM_IMAGE_CODEBOOK = 64


def build_glm_image():
    from diffusers import FlowMatchEulerDiscreteScheduler, GlmImagePipeline, GlmImageTransformer2DModel
    from transformers import ByT5Tokenizer

    tokenizer = ByT5Tokenizer()
    torch.manual_seed(0)
    transformer = GlmImageTransformer2DModel(
        patch_size=2,
        in_channels=16,
        out_channels=16,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        text_embed_dim=16,
        time_embed_dim=16,
        condition_dim=8,
        prior_vq_quantizer_codebook_size=GLM_IMAGE_CODEBOOK,
    )
    scheduler = FlowMatchEulerDiscreteScheduler(
        use_dynamic_shifting=True,
        time_shift_type="linear",
        base_shift=0.25,
        max_shift=0.75,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    return _finish(
        GlmImagePipeline(
            tokenizer=tokenizer,
            processor=None,
            text_encoder=_t5_encoder(tokenizer, 16, 2),
            vision_language_encoder=None,
            vae=_autoencoder_kl(16, 1, latents_mean=[0.0] * 16, latents_std=[1.0] * 16),
            transformer=transformer,
            scheduler=scheduler,
        )
    )


def glm_image_call_kwargs():
    # 16 x 16 pixels -> 8 x 8 latents -> 4 x 4 patches, one prior token each.
    prior = torch.randint(0, GLM_IMAGE_CODEBOOK, (1, 16), generator=torch.Generator().manual_seed(3))
    return dict(
        prompt='a sign that says "7"', height=16, width=16, guidance_scale=1.5, max_sequence_length=TEXT_LENGTH,
        prior_token_ids=prior,
    )


_STRENGTH_NOTE = (
    "Called with strength=1.0 so that every entry runs; with strength s it skips the first int(N*(1-s)) entries "
    "of timesteps (N = len(timesteps), order 1) and calls set_begin_index. "
)

CASES: list[PipelineCase] = [
    PipelineCase(
        "StableDiffusion3Pipeline", "SD3", build_sd3, sd3_call_kwargs,
        notes="set_timesteps(N, sigmas=None); mu only with use_dynamic_shifting. CFG batched.",
    ),
    PipelineCase(
        "StableDiffusion3Img2ImgPipeline", "SD3", build_sd3_img2img, sd3_img2img_call_kwargs,
        notes=_STRENGTH_NOTE + "scale_noise(image latents, timesteps[:1], noise) before the loop.",
    ),
    PipelineCase(
        "StableDiffusion3InpaintPipeline", "SD3", build_sd3_inpaint, sd3_inpaint_call_kwargs,
        notes=_STRENGTH_NOTE + "After each step() but the last, re-noises the known region with "
        "scale_noise(image latents, timesteps[i + 1], noise).",
    ),
    PipelineCase(
        "StableDiffusion3ControlNetPipeline", "SD3", build_sd3_controlnet, sd3_controlnet_call_kwargs,
        notes="ControlNet called before the transformer on every entry (not counted); control_guidance_start/end "
        "windows are fractions of len(timesteps), i.e. of entries. The ControlNet's zero-initialised layers are "
        "randomised and the VAE's control-image encoding made deterministic.",
    ),
    PipelineCase(
        "StableDiffusion3PAGPipeline", "SD3", build_sd3_pag, sd3_pag_call_kwargs,
        notes="CFG and perturbed-attention guidance batched in one call of 3.",
    ),
    PipelineCase(
        "SanaPipeline", "Sana", build_sana, sana_call_kwargs,
        notes="DPMSolverMultistepScheduler with flow sigmas; step() gets generator= (inspected from its "
        "signature); the model gets t * timestep_scale.",
    ),
    PipelineCase(
        "CogView4Pipeline", "CogView4", build_cogview4, cogview4_call_kwargs, calls_per_evaluation=2,
        notes="set_timesteps(timesteps=linspace(1000, 1, N) as ints, sigmas=timesteps / 1000, mu=...) together: the "
        "model sees unshifted timesteps while the sigmas are shifted. Conditional and unconditional are separate "
        "calls. Callbacks get scheduler.sigmas[i].",
    ),
    PipelineCase(
        "CogView4ControlPipeline", "CogView4", build_cogview4_control, cogview4_control_call_kwargs,
        calls_per_evaluation=2,
        notes="As CogView4Pipeline; control latents concatenated to the input channels. The VAE's control-image "
        "encoding is made deterministic.",
    ),
    PipelineCase(
        "Lumina2Pipeline", "Lumina 2", build_lumina2, lumina2_call_kwargs, calls_per_evaluation=2,
        notes="set_timesteps(sigmas=linspace(1, 1/N, N), mu=...) (mu ignored with the static shift); "
        "set_begin_index(0); the model gets 1 - t/1000. cfg_trunc_ratio (1.0 here) is compared with (i + 1) / "
        "len(timesteps). Separate conditional and unconditional calls.",
    ),
    PipelineCase(
        "AuraFlowPipeline", "AuraFlow", build_auraflow, auraflow_call_kwargs,
        notes="set_timesteps(N, sigmas=None); set_begin_index(0); the model gets t / 1000. CFG batched.",
    ),
    PipelineCase(
        "BriaPipeline", "Bria", build_bria, bria_call_kwargs,
        notes="Only an exact FlowMatchEulerDiscreteScheduler with use_dynamic_shifting takes the mu branch; any "
        "other scheduler gets sigmas=get_original_sigmas(N) and, unless its type is exactly "
        "FlowMatchEulerDiscreteScheduler, scheduler.scale_model_input(latents, t) before every call. Output latents "
        "are packed (batch, tokens, channels).",
    ),
    PipelineCase(
        "ZImagePipeline", "Z-Image", build_z_image, z_image_call_kwargs,
        notes="set_timesteps(sigmas=linspace(1, 1/N, N), mu=...) (mu ignored with the static shift); "
        "set_begin_index(0); the model gets (1000 - t) / 1000 and its output is negated. cfg_truncation compares "
        "(1000 - t) / 1000 per entry. CFG batched.",
    ),
    PipelineCase(
        "HiDreamImagePipeline", "HiDream-I1", build_hidream, hidream_call_kwargs,
        notes="HiDream-I1-Full (UniPC with flow sigmas, CFG batched). For a UniPCMultistepScheduler the pipeline "
        "calls set_timesteps(N) itself; any other scheduler gets set_timesteps(N, sigmas=None, "
        "mu=calculate_shift(transformer.max_seq)). default_sample_size lowered to 8 (the pipeline rescales every "
        "size to that area).",
    ),
    PipelineCase(
        "HiDreamImagePipeline", "HiDream-I1", build_hidream_dev, hidream_dev_call_kwargs, variant="Dev",
        notes="HiDream-I1-Dev (FlowMatchEulerDiscreteScheduler, shift 6.0, no guidance); mu passed and ignored "
        "(static shift).",
    ),
    PipelineCase(
        "HunyuanImagePipeline", "HunyuanImage 2.1", build_hunyuan_image, hunyuan_image_call_kwargs,
        calls_per_evaluation=2,
        notes="set_timesteps(sigmas=linspace(1, 0, N + 1)[:-1]); set_begin_index(0). Guidance by the guider "
        "components (separate calls); guider.set_state(step=i, num_inference_steps=len(timesteps)), so APG "
        "(from step 5) counts entries. A meanflow (distilled) transformer would read timesteps[i + 1]. "
        "tokenizer_max_length lowered from 1000 to 16, tokenizer_2_max_length from 128 to 16.",
    ),
    PipelineCase(
        "GlmImagePipeline", "GLM-Image", build_glm_image, glm_image_call_kwargs, calls_per_evaluation=2,
        notes="Called with prior_token_ids, which skips the autoregressive stage (processor and "
        "vision_language_encoder are None). set_timesteps(timesteps=linspace(1000, 1, N + 1)[:-1] as ints, "
        "sigmas=timesteps / 1000, mu=...) together; the model gets t - 1. Separate conditional and unconditional "
        "calls. Callbacks get scheduler.sigmas[i].",
    ),
]
