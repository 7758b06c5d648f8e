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

from . import tiny_sana_pipeline, tiny_sd3_pipeline
from .cases import PipelineCase
from .components import (
    FLUX_VAE_SCALING,
    MAX_TEXT_LENGTH,
    autoencoder_kl,
    byte_bpe_tokenizer,
    clip_t5_text,
    diffusers_class,
    finish,
    flow_solver,
    flux_like_transformer,
    gemma2_encoder,
    gemma_tokenizer,
    image_tensor,
    mask,
    prompt_call,
    qwen2_5_vl_encoder,
    sd3_transformer,
    t5_encoder,
    t5_text,
    text_model,
)

PROMPT = "a red 7 on a blue background"
NEGATIVE_PROMPT = "blurry"
GLYPH_PROMPT = 'a sign that says "7"'  # the quoted word goes through a ByT5 (glyph text) encoder

# CogView4's scheduler (GLM-Image's too): FlowMatchEuler with a linear dynamic shift.
COGVIEW4_SCHEDULER = {
    "use_dynamic_shifting": True,
    "time_shift_type": "linear",
    "base_shift": 0.25,
    "max_shift": 0.75,
    "base_image_seq_len": 256,
    "max_image_seq_len": 4096,
}

# The text models of CogView4 (GLM-4), Z-Image (Qwen3) and HiDream (Llama 3.1): 16 wide, 2 heads of 8 sharing a
# key-value head, and 2 layers, as CogView4 and Z-Image read the last-but-one hidden state.
TEXT_MODEL = {
    "hidden_size": 16,
    "intermediate_size": 16,
    "num_hidden_layers": 2,
    "num_key_value_heads": 1,
    "head_dim": 8,
    "max_position_embeddings": 64,
}


def _call(size: int, guidance_scale: float, negative: bool = True, **extra) -> dict:
    """A tiny call: the prompt (and the negative prompt if ``negative``), a ``size`` x ``size`` image,
    ``guidance_scale``, 16 text tokens and ``extra``."""
    return prompt_call(PROMPT, size, NEGATIVE_PROMPT if negative else None, guidance_scale=guidance_scale, **extra)


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


def _byte_tokenizer(special: list[str], chat_template: str | None = None, **special_tokens):
    """A byte-level BPE tokenizer (no merges) with a 16-token context; ``special_tokens`` names the special tokens."""
    return byte_bpe_tokenizer(special, chat_template, model_max_length=MAX_TEXT_LENGTH, **special_tokens)


def qwen_tokenizer():
    """A byte-level Qwen2/Qwen3-like tokenizer (no merges) with a chat template that accepts ``enable_thinking``."""
    template = (
        "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
        "{% if enable_thinking is defined and not enable_thinking %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
    )
    return _byte_tokenizer(
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"],
        chat_template=template,
        pad_token="<|endoftext|>",
        eos_token="<|im_end|>",
    )


# --- Stable Diffusion 3 ---------------------------------------------------------------------------------------------
# SD3 and SD3.5 ship FlowMatchEulerDiscreteScheduler(shift=3.0), which is what tiny_sd3_pipeline uses.


def build_sd3(pipeline: str = "StableDiffusion3Pipeline", seed: int = 0, **extra):
    """An SD3 ``pipeline`` (a diffusers class name) with the components of `tiny_sd3_pipeline` that it takes."""
    import inspect

    pipeline_class = diffusers_class(pipeline)
    accepted = inspect.signature(pipeline_class.__init__).parameters
    components = {name: value for name, value in tiny_sd3_pipeline(seed).components.items() if name in accepted}
    return finish(pipeline_class(**components, **extra))


def build_sd3_controlnet():
    """SD3 with an SD3 ControlNet (one block) whose zero-initialised layers are randomised."""
    controlnet = sd3_transformer(10, "SD3ControlNetModel", num_layers=1)
    # A fresh SD3 ControlNet has zero-initialised output blocks and control embedding (no effect on the result).
    _randomize_zero_init(controlnet.controlnet_blocks, 11)
    _randomize_zero_init(controlnet.pos_embed_input, 12)
    pipe = build_sd3("StableDiffusion3ControlNetPipeline", controlnet=controlnet)
    _deterministic_encoding(pipe.vae)
    return pipe


# --- CogView4 -------------------------------------------------------------------------------------------------------
# THUDM/CogView4-6B ships FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, time_shift_type="linear",
# base_shift=0.25, max_shift=0.75, base_image_seq_len=256, max_image_seq_len=4096); its text encoder is GLM-4 (GlmModel,
# last-but-one hidden state) with GLM-4's tiktoken-style byte-level BPE tokenizer.



def glm_tokenizer():
    """A byte-level GLM-4-like tokenizer (no merges); CogView4 pads on the left with ``pad_token_id``."""
    special = ["<|endoftext|>", "[gMASK]", "<sop>"]
    return _byte_tokenizer(special, pad_token="<|endoftext|>", eos_token="<|endoftext|>")


def build_cogview4(control: bool = False):
    """A `CogView4Pipeline`, or with ``control`` a `CogView4ControlPipeline`: GLM-4 text encoder, 16-channel VAE."""
    from diffusers import CogView4Transformer2DModel, FlowMatchEulerDiscreteScheduler
    from transformers import GlmModel

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
    pipe = diffusers_class("CogView4ControlPipeline" if control else "CogView4Pipeline")(
        tokenizer=tokenizer,
        text_encoder=text_model(GlmModel, tokenizer, 2, **TEXT_MODEL, eos_token_id=tokenizer.eos_token_id),
        vae=autoencoder_kl(16, 1, scaling_factor=1.0, shift_factor=0.0),
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(**COGVIEW4_SCHEDULER),
    )
    if control:
        _deterministic_encoding(pipe.vae)
    return finish(pipe)


# --- Lumina 2 -------------------------------------------------------------------------------------------------------
# Alpha-VLLM/Lumina-Image-2.0 ships FlowMatchEulerDiscreteScheduler(shift=6.0) (unverified); its text encoder is Gemma-2
# (last-but-one hidden state), its VAE the 16-channel Flux VAE. The pipeline fixes vae_scale_factor = 8.


def build_lumina2():
    from diffusers import FlowMatchEulerDiscreteScheduler, Lumina2Pipeline, Lumina2Transformer2DModel

    tokenizer = gemma_tokenizer(with_spaces=True)
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
    return finish(
        Lumina2Pipeline(
            transformer=transformer,
            scheduler=FlowMatchEulerDiscreteScheduler(shift=6.0),
            # 8x downsampling (four blocks): the pipeline assumes 8x whatever the VAE.
            vae=autoencoder_kl(16, 1, block_out_channels=(4, 4, 4, 4), norm_num_groups=2, **FLUX_VAE_SCALING),
            text_encoder=gemma2_encoder(tokenizer, 2, num_hidden_layers=2),
            tokenizer=tokenizer,
        )
    )


def lumina2_call_kwargs():
    # cfg_trunc_ratio=1.0 keeps guidance on every evaluation (the model card uses 0.25, which drops the unconditional
    # call for the later entries, counted over entries, not steps).
    return _call(
        32, 4.0, cfg_trunc_ratio=1.0, cfg_normalization=True, system_prompt="", max_sequence_length=2 * MAX_TEXT_LENGTH
    )


# --- AuraFlow -------------------------------------------------------------------------------------------------------
# fal/AuraFlow (v0.1 to v0.3) ships FlowMatchEulerDiscreteScheduler(shift=1.73) (unverified); UMT5 text encoder, SDXL
# VAE.


def build_auraflow():
    from diffusers import AuraFlowPipeline, AuraFlowTransformer2DModel, FlowMatchEulerDiscreteScheduler

    tokenizer, text_encoder = t5_text(2, umt5=True)
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
    return finish(
        AuraFlowPipeline(
            tokenizer=tokenizer,
            text_encoder=text_encoder,
            vae=autoencoder_kl(4, 1, scaling_factor=0.13025),
            transformer=transformer,
            scheduler=FlowMatchEulerDiscreteScheduler(shift=1.73),
        )
    )


# --- Bria 3.2 -------------------------------------------------------------------------------------------------------
# briaai/BRIA-3.2 ships a FlowMatchEulerDiscreteScheduler (its config unverified: diffusers' tests use the defaults, as
# here); a Flux-like transformer without pooled embeddings, a T5 text encoder. Its pipeline takes the dynamic-shift
# branch only for a FlowMatchEulerDiscreteScheduler with use_dynamic_shifting, and calls scale_model_input on any
# scheduler that is not exactly that class.


def build_bria():
    from diffusers import BriaPipeline, FlowMatchEulerDiscreteScheduler

    tokenizer, text_encoder = t5_text(2)
    transformer = flux_like_transformer(
        "BriaTransformer2DModel",
        0,
        in_channels=16,  # 4 latent channels packed 2x2
        pooled_projection_dim=None,
        axes_dims_rope=[0, 4, 4],
    )
    # One block: Bria takes vae_scale_factor = 2 ** len(block_out_channels) (it counts the 2x2 packing in).
    vae = autoencoder_kl(4, 1, block_out_channels=(8,), shift_factor=0.0, scaling_factor=0.13025)
    return finish(
        BriaPipeline(
            transformer=transformer,
            scheduler=FlowMatchEulerDiscreteScheduler(),
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
        )
    )


# --- Z-Image --------------------------------------------------------------------------------------------------------
# Tongyi-MAI/Z-Image-Turbo ships FlowMatchEulerDiscreteScheduler(shift=3.0) (unverified); Qwen3 text encoder with the
# Qwen chat template (last-but-one hidden state, padding dropped), 16-channel Flux VAE. Turbo runs without guidance; the
# case uses guidance (batched in one call) to cover the pipeline's CFG path.


def build_z_image():
    from diffusers import FlowMatchEulerDiscreteScheduler, ZImagePipeline, ZImageTransformer2DModel
    from transformers import Qwen3Model

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
    return finish(
        ZImagePipeline(
            scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
            vae=autoencoder_kl(16, 1, **FLUX_VAE_SCALING),
            text_encoder=text_model(Qwen3Model, tokenizer, 2, **TEXT_MODEL),
            tokenizer=tokenizer,
            transformer=transformer,
        )
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

    tokenizer = _byte_tokenizer(
        ["<|begin_of_text|>", "<|end_of_text|>"], bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>"
    )
    bos = tokenizer.bos_token_id
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B",
        special_tokens=[("<|begin_of_text|>", bos)],
    )
    return tokenizer


def build_hidream(dev: bool = False):
    """HiDream-I1-Full, or with ``dev`` HiDream-I1-Dev (only the scheduler differs): two CLIPs, T5 and Llama 3.1."""
    from diffusers import FlowMatchEulerDiscreteScheduler, HiDreamImagePipeline, HiDreamImageTransformer2DModel
    from transformers import LlamaForCausalLM

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
    text_encoder_4 = text_model(
        LlamaForCausalLM,
        tokenizer_4,
        5,
        **TEXT_MODEL,
        bos_token_id=tokenizer_4.bos_token_id,
        eos_token_id=tokenizer_4.eos_token_id,
        pad_token_id=tokenizer_4.eos_token_id,
    )
    if dev:
        scheduler = FlowMatchEulerDiscreteScheduler(shift=6.0)
    else:
        scheduler = flow_solver("UniPCMultistepScheduler", 3.0)
    pipe = HiDreamImagePipeline(
        scheduler=scheduler,
        vae=autoencoder_kl(16, 1, **FLUX_VAE_SCALING),
        **clip_t5_text(2, t5_d_model=16),
        text_encoder_4=text_encoder_4,
        tokenizer_4=tokenizer_4,
        transformer=transformer,
    )
    pipe.default_sample_size = 8
    return finish(pipe)


# --- HunyuanImage 2.1 -----------------------------------------------------------------------------------------------
# hunyuanvideo-community/HunyuanImage-2.1-Diffusers ships FlowMatchEulerDiscreteScheduler(shift=5.0) (unverified) and
# guides with AdaptiveProjectedMixGuidance components (`guider`, `ocr_guider`: CFG 3.5, APG from step 5), which run the
# conditional and unconditional branches as separate transformer calls. Text: Qwen2.5-VL (hidden state -3, after a
# system-prompt template whose tokens are dropped) and ByT5 for quoted glyph text. The pipeline pads the Qwen prompt to
# tokenizer_max_length = 1000 tokens and the ByT5 prompt to 128; the case lowers both to 16, and sets the number of
# template tokens to drop to what the byte-level tokenizer makes of the template.


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
        text_encoder=qwen2_5_vl_encoder(tokenizer, 2, num_hidden_layers=2),
        tokenizer=tokenizer,
        text_encoder_2=t5_encoder(tokenizer_2, 16, 3),
        tokenizer_2=tokenizer_2,
        transformer=transformer,
        guider=guider(),
        ocr_guider=guider(),
    )
    pipe.tokenizer_max_length = MAX_TEXT_LENGTH
    pipe.tokenizer_2_max_length = MAX_TEXT_LENGTH
    template_prefix = pipe.prompt_template_encode.split("{}")[0]
    pipe.prompt_template_encode_start_idx = len(tokenizer(template_prefix).input_ids)
    return finish(pipe)


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
    return finish(
        GlmImagePipeline(
            tokenizer=tokenizer,
            processor=None,
            text_encoder=t5_encoder(tokenizer, 16, 2),
            vision_language_encoder=None,
            vae=autoencoder_kl(16, 1, latents_mean=[0.0] * 16, latents_std=[1.0] * 16),
            transformer=transformer,
            scheduler=FlowMatchEulerDiscreteScheduler(**COGVIEW4_SCHEDULER),
        )
    )


def glm_image_call_kwargs():
    # 16 x 16 pixels -> 8 x 8 latents -> 4 x 4 patches, one prior token each.
    prior = torch.randint(0, GLM_IMAGE_CODEBOOK, (1, 16), generator=torch.Generator().manual_seed(3))
    return prompt_call(GLYPH_PROMPT, 16, guidance_scale=1.5, prior_token_ids=prior)


_STRENGTH_NOTE = (
    "Called with strength=1.0 so that every entry runs; with strength s it skips the first int(N*(1-s)) entries "
    "of timesteps (N = len(timesteps), order 1) and calls set_begin_index. "
)

CASES: list[PipelineCase] = [
    PipelineCase(
        "StableDiffusion3Pipeline", "SD3", build_sd3, lambda: _call(32, 5.0, negative=False),
        notes="set_timesteps(N, sigmas=None); mu only with use_dynamic_shifting. CFG batched.",
    ),
    PipelineCase(
        "StableDiffusion3Img2ImgPipeline", "SD3", lambda: build_sd3("StableDiffusion3Img2ImgPipeline"),
        lambda: _call(32, 5.0, negative=False, image=image_tensor(1), strength=1.0),
        notes=_STRENGTH_NOTE + "scale_noise(image latents, timesteps[:1], noise) before the loop.",
    ),
    PipelineCase(
        # The tiny SD3 VAE has 16 latent channels, like the transformer's input (the pipeline blends latents by the
        # mask).
        "StableDiffusion3InpaintPipeline", "SD3", lambda: build_sd3("StableDiffusion3InpaintPipeline"),
        lambda: _call(32, 5.0, negative=False, image=image_tensor(1), mask_image=mask(), strength=1.0),
        notes=_STRENGTH_NOTE + "After each step() but the last, re-noises the known region with "
        "scale_noise(image latents, timesteps[i + 1], noise).",
    ),
    PipelineCase(
        "StableDiffusion3ControlNetPipeline", "SD3", build_sd3_controlnet,
        lambda: _call(
            32, 5.0, negative=False, control_image=image_tensor(2, signed=True), controlnet_conditioning_scale=0.7
        ),
        notes="ControlNet called before the transformer on every entry (not counted); control_guidance_start/end "
        "windows are fractions of len(timesteps), i.e. of entries. The ControlNet's zero-initialised layers are "
        "randomised and the VAE's control-image encoding made deterministic.",
    ),
    PipelineCase(
        "StableDiffusion3PAGPipeline", "SD3",
        lambda: build_sd3("StableDiffusion3PAGPipeline", pag_applied_layers=["blocks.1"]),
        lambda: _call(32, 5.0, negative=False, pag_scale=3.0),
        notes="CFG and perturbed-attention guidance batched in one call of 3.",
    ),
    PipelineCase(
        # Sana 1600M 1024px ships DPMSolverMultistepScheduler(use_flow_sigmas=True, flow_shift=3.0,
        # prediction_type="flow_prediction"), which is what tiny_sana_pipeline uses.
        "SanaPipeline", "Sana", lambda: finish(tiny_sana_pipeline()),
        lambda: _call(32, 4.5, negative=False, use_resolution_binning=False, complex_human_instruction=None),
        notes="DPMSolverMultistepScheduler with flow sigmas; step() gets generator= (inspected from its "
        "signature); the model gets t * timestep_scale.",
    ),
    PipelineCase(
        "CogView4Pipeline", "CogView4", build_cogview4, lambda: _call(16, 5.0), calls_per_evaluation=2,
        notes="set_timesteps(timesteps=linspace(1000, 1, N) as ints, sigmas=timesteps / 1000, mu=...) together: the "
        "model sees unshifted timesteps while the sigmas are shifted. Conditional and unconditional are separate "
        "calls. Callbacks get scheduler.sigmas[i].",
    ),
    PipelineCase(
        "CogView4ControlPipeline", "CogView4", lambda: build_cogview4(control=True),
        lambda: _call(16, 5.0, control_image=image_tensor(2, size=16)),
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
        "AuraFlowPipeline", "AuraFlow", build_auraflow, lambda: _call(16, 3.5),
        notes="set_timesteps(N, sigmas=None); set_begin_index(0); the model gets t / 1000. CFG batched.",
    ),
    PipelineCase(
        "BriaPipeline", "Bria", build_bria, lambda: _call(16, 5.0),
        notes="Only an exact FlowMatchEulerDiscreteScheduler with use_dynamic_shifting takes the mu branch; any "
        "other scheduler gets sigmas=get_original_sigmas(N) and, unless its type is exactly "
        "FlowMatchEulerDiscreteScheduler, scheduler.scale_model_input(latents, t) before every call. Output latents "
        "are packed (batch, tokens, channels).",
    ),
    PipelineCase(
        "ZImagePipeline", "Z-Image", build_z_image, lambda: _call(16, 4.0),
        notes="set_timesteps(sigmas=linspace(1, 1/N, N), mu=...) (mu ignored with the static shift); "
        "set_begin_index(0); the model gets (1000 - t) / 1000 and its output is negated. cfg_truncation compares "
        "(1000 - t) / 1000 per entry. CFG batched.",
    ),
    PipelineCase(
        "HiDreamImagePipeline", "HiDream-I1", build_hidream, lambda: _call(16, 5.0),
        notes="HiDream-I1-Full (UniPC with flow sigmas, CFG batched). For a UniPCMultistepScheduler the pipeline "
        "calls set_timesteps(N) itself; any other scheduler gets set_timesteps(N, sigmas=None, "
        "mu=calculate_shift(transformer.max_seq)). default_sample_size lowered to 8 (the pipeline rescales every "
        "size to that area).",
    ),
    PipelineCase(
        "HiDreamImagePipeline", "HiDream-I1", lambda: build_hidream(dev=True),
        lambda: _call(16, 0.0, negative=False), variant="Dev",
        notes="HiDream-I1-Dev (FlowMatchEulerDiscreteScheduler, shift 6.0, no guidance); mu passed and ignored "
        "(static shift).",
    ),
    PipelineCase(
        "HunyuanImagePipeline", "HunyuanImage 2.1", build_hunyuan_image,
        # The glyph text selects the `ocr_guider`.
        lambda: prompt_call(GLYPH_PROMPT, 8, NEGATIVE_PROMPT, max_sequence_length=None),
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
