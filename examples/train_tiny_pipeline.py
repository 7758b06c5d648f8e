"""Train, from scratch on a CPU, the tiny text-to-image pipeline bundled with flowturbo-diffusers.

The result is a real `StableDiffusion3Pipeline` (two CLIP text encoders, a null T5, an `AutoencoderKL`, an
`SD3Transformer2DModel` trained with flow matching, the `FlowMatchEulerDiscreteScheduler`) for 32x32 images of
coloured digits ("a red 7 on a blue background", see `flowturbo_diffusers.bundled.digits`), plus a digit classifier used to
score samples. It lets the README's commands run offline in seconds and gives the benchmarks a genuine velocity field.

Stages, in order (all on the CPU, seeded, about half an hour on 2 cores):

1. render a pool of training images and a held-out set;
2. build the text side: word-level CLIP tokenizers and two frozen, randomly initialised CLIP text encoders (the prompt
   words get distinct random embeddings, which is all the transformer needs to tell prompts apart), and precompute the
   embeddings of every prompt (and of the empty prompt) once with the pipeline's own ``encode_prompt``;
3. train the digit classifier on the real images;
4. train the autoencoder (32x32x3 -> 16x16x4), then set ``shift_factor``/``scaling_factor`` from the latent statistics;
5. train the transformer with flow matching in the SD3 convention, with label dropout for classifier-free guidance and
   an EMA of its weights;
6. evaluate: classifier accuracy on held-out images, a guidance-scale sweep, and the share of 50-step Euler samples
   that the classifier reads as the prompted digit; time one transformer call;
7. write the pipeline (fp16 weights for the transformer and the autoencoder), the classifier, ``flowturbo.json`` and a
   model card to a temporary folder next to the output, check that it loads and runs, then swap it in.

The output folder is replaced as a whole: anything else in it (e.g. a refiner trained against the previous
transformer) is removed, since it would no longer match.

Usage::

    python examples/train_tiny_pipeline.py               # writes flowturbo_diffusers/bundled/model/
    python examples/train_tiny_pipeline.py --quick       # smoke run in seconds, into a temporary folder
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from flowturbo_diffusers import bundled
from flowturbo_diffusers.bundled import digits
from flowturbo_diffusers.bundled.classifier import DigitClassifier

DEFAULT_OUTPUT_DIR = Path(__file__).resolve().parents[1] / "flowturbo_diffusers" / "bundled_model"

# Text side. Every prompt is 7 words, i.e. 9 tokens with the start and end tokens; 10 leaves room for one more word.
TEXT_LENGTH = 10
CLIP_HIDDEN_SIZE = 32  # per encoder; the two are concatenated to joint_attention_dim = 64
CLIP_PROJECTION_DIM = 32  # per encoder; concatenated to pooled_projection_dim = 64
# Without T5 the SD3 pipeline appends `max_sequence_length` all-zero tokens to the CLIP tokens. They carry no
# information but cost compute and shift attention if their number changes, so the model is trained, and should be
# called, with a fixed small number of them.
MAX_SEQUENCE_LENGTH = 4
# Flow-matching time shift. 16x16x4 latents hold little signal, so noise destroys them early: no extra shift towards
# high noise is needed (SD3's resolution rule would even give a shift below 1 for 32x32 images).
SCHEDULER_SHIFT = 1.0

VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 2,
    up_block_types=("UpDecoderBlock2D",) * 2,
    # One down-sampling: 32x32 images -> 16x16 latents. Two (8x8x4 or 8x8x16) blurred thin strokes: the classifier
    # read only 85-87% of reconstructions correctly, against 98% here.
    block_out_channels=(16, 32),
    layers_per_block=1,
    norm_num_groups=8,
    latent_channels=4,
    sample_size=digits.IMAGE_SIZE,
)
TRANSFORMER_CONFIG = dict(
    sample_size=16,
    # 16x16 latents -> 64 image tokens of 4x4 pixels each. With patch 4 (16 tokens of 8x8 pixels) the colours were
    # right but only 37-42% of the digits were legible after 25 minutes of training: the shapes need the finer grid.
    patch_size=2,
    in_channels=4,
    out_channels=4,
    num_layers=8,  # deep and narrow like the real models: one block is an eighth of a call
    attention_head_dim=32,
    num_attention_heads=4,
    joint_attention_dim=2 * CLIP_HIDDEN_SIZE,
    caption_projection_dim=128,
    pooled_projection_dim=2 * CLIP_PROJECTION_DIM,
    pos_embed_max_size=16,  # in patches: room for up to 64x64 images
    qk_norm="rms_norm",
)
CLASSIFIER_CONFIG = dict(block_out_channels=(32, 64, 128))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", type=Path, default=None, help=f"default: {DEFAULT_OUTPUT_DIR}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-images", type=int, default=40_000, help="size of the rendered training pool")
    parser.add_argument("--heldout-images", type=int, default=2_000, help="held-out images for the classifier")
    parser.add_argument("--classifier-steps", type=int, default=600)
    parser.add_argument("--classifier-batch-size", type=int, default=128)
    parser.add_argument("--vae-steps", type=int, default=1_200)
    parser.add_argument("--vae-batch-size", type=int, default=64)
    parser.add_argument("--transformer-steps", type=int, default=4_000)
    parser.add_argument("--transformer-batch-size", type=int, default=64)
    parser.add_argument("--transformer-lr", type=float, default=1e-3)
    parser.add_argument("--eval-every", type=int, default=1_000,
                        help="print the EMA model's digit accuracy on a few 20-step samples every N transformer steps")
    parser.add_argument("--ema-decay", type=float, default=0.999)
    parser.add_argument("--label-dropout", type=float, default=0.1, help="share of prompts replaced by ''")
    parser.add_argument("--eval-per-digit", type=int, default=20, help="samples per digit for the sample accuracy")
    parser.add_argument("--sweep-per-digit", type=int, default=10, help="samples per digit per sweep point")
    parser.add_argument("--guidance-scales", type=float, nargs="+", default=[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    parser.add_argument("--num-inference-steps", type=int, default=50)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--save-samples", type=Path, default=None, help="also save a PNG grid of evaluation samples")
    parser.add_argument("--quick", action="store_true", help="a few dozen steps each, tiny eval, temporary output")
    args = parser.parse_args(argv)
    if args.quick:
        args.train_images, args.heldout_images = 256, 100
        args.classifier_steps = args.vae_steps = args.transformer_steps = 24
        args.classifier_batch_size = args.vae_batch_size = args.transformer_batch_size = 16
        args.eval_per_digit, args.sweep_per_digit = 1, 1
        args.guidance_scales, args.num_inference_steps = [1.0, 4.0], 4
        if args.output_dir is None:
            args.output_dir = Path(tempfile.mkdtemp(prefix="flowturbo-quick-")) / "bundled_model"
    if args.output_dir is None:
        args.output_dir = DEFAULT_OUTPUT_DIR
    return args


# ----------------------------------------------------------------------------------------------------------- data


def render_pool(n: int, seed: int, description: str) -> digits.DigitBatch:
    """Render ``n`` images in chunks (with a progress bar), deterministic for ``seed``."""
    rng = np.random.default_rng(seed)
    chunks = [digits.render_batch(min(1000, n - start), rng) for start in tqdm(range(0, n, 1000), desc=description)]
    return digits.DigitBatch(
        images=torch.cat([c.images for c in chunks]),
        labels=torch.cat([c.labels for c in chunks]),
        prompts=[p for c in chunks for p in c.prompts],
        foregrounds=[f for c in chunks for f in c.foregrounds],
        backgrounds=[b for c in chunks for b in c.backgrounds],
    )


# ----------------------------------------------------------------------------------------------------- text side


def word_clip_tokenizer(words: list[str], model_max_length: int = TEXT_LENGTH):
    """A byte-level CLIP tokenizer whose merges turn each of ``words`` into a single token.

    Any other text still tokenizes (byte by byte). Built in memory: no vocabulary files, no network.
    """
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTokenizer

    alphabet = sorted(ByteLevel.alphabet())
    pieces = ["<|startoftext|>", "<|endoftext|>"] + alphabet + [c + "</w>" for c in alphabet]
    merges = []
    for word in words:  # merge each word left to right: "r e" -> "re", "re d</w>" -> "red</w>"
        for end in range(2, len(word) + 1):
            merge = (word[: end - 1], word[end - 1] + ("</w>" if end == len(word) else ""))
            if merge not in merges:
                merges.append(merge)
                pieces.append("".join(merge))
    tokenizer = CLIPTokenizer(vocab={p: i for i, p in enumerate(pieces)}, merges=merges, model_max_length=model_max_length)
    split = [w for w in words if len(tokenizer(w, add_special_tokens=False).input_ids) != 1]
    if split:
        raise RuntimeError(f"The merges do not make single tokens of {split}.")
    return tokenizer


def clip_text_encoder(tokenizer, seed: int):
    """A one-layer CLIP text encoder with projection, randomly initialised from ``seed`` (it stays frozen)."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=CLIP_HIDDEN_SIZE,
        intermediate_size=4 * CLIP_HIDDEN_SIZE,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=TEXT_LENGTH,
        projection_dim=CLIP_PROJECTION_DIM,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModelWithProjection(config).eval().requires_grad_(False)


def null_t5_encoder():
    """A one-layer T5 whose final norm is zero, and a tokenizer that drops all text: together they produce exactly the
    all-zero tokens SD3 uses without T5.

    They change nothing numerically; they are there because diffusers' ``StableDiffusion3Pipeline.from_pretrained``
    cannot load a folder whose ``text_encoder_3`` is null unless told so, and the bundled folder must load with plain
    ``from_pretrained(path)``. The tokenizer reduces every prompt to the end token, so the pipeline never warns that a
    prompt was truncated to ``max_sequence_length``; it is a generic tokenizers-backed tokenizer because the T5 class
    rebuilds its own normalizer on loading.
    """
    from tokenizers import Regex, Tokenizer, normalizers, processors
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

    backend = Tokenizer(WordLevel({"<pad>": 0, "</s>": 1, "<unk>": 2}, unk_token="<unk>"))
    backend.normalizer = normalizers.Replace(Regex(r"[\s\S]"), "")
    backend.pre_tokenizer = WhitespaceSplit()
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=MAX_SEQUENCE_LENGTH,
    )
    torch.manual_seed(0)
    config = T5Config(vocab_size=3, d_model=2 * CLIP_HIDDEN_SIZE, d_kv=8, d_ff=16, num_layers=1, num_heads=1)
    encoder = T5EncoderModel(config).eval().requires_grad_(False)
    torch.nn.init.zeros_(encoder.encoder.final_layer_norm.weight)
    return encoder, tokenizer


def build_pipeline(seed: int):
    """The pipeline with its final architecture: frozen text encoders, untrained autoencoder and transformer."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    words = digits.vocabulary()
    tokenizer, tokenizer_2 = word_clip_tokenizer(words), word_clip_tokenizer(words)
    torch.manual_seed(seed)
    vae = AutoencoderKL(**VAE_CONFIG)
    torch.manual_seed(seed + 1)
    transformer = SD3Transformer2DModel(**TRANSFORMER_CONFIG)
    text_encoder_3, tokenizer_3 = null_t5_encoder()
    pipe = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=SCHEDULER_SHIFT),
        vae=vae,
        text_encoder=clip_text_encoder(tokenizer, seed + 2),
        tokenizer=tokenizer,
        text_encoder_2=clip_text_encoder(tokenizer_2, seed + 3),
        tokenizer_2=tokenizer_2,
        text_encoder_3=text_encoder_3,
        tokenizer_3=tokenizer_3,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def encode_prompts(pipe, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequence and pooled embeddings of ``prompts``, exactly as the pipeline computes them at inference."""
    embeds, _, pooled, _ = pipe.encode_prompt(
        prompt=prompts,
        prompt_2=None,
        prompt_3=None,
        do_classifier_free_guidance=False,
        max_sequence_length=MAX_SEQUENCE_LENGTH,
    )
    return embeds, pooled


# ---------------------------------------------------------------------------------------------------- training


def lr_lambda(total_steps: int, warmup: int):
    """Linear warm-up, then cosine decay to a tenth of the peak."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.1 + 0.45 * (1.0 + math.cos(math.pi * progress))

    return factor


def train_classifier(train: digits.DigitBatch, args) -> DigitClassifier:
    torch.manual_seed(args.seed + 10)
    model = DigitClassifier(**CLASSIFIER_CONFIG).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(args.classifier_steps, 50))
    generator = torch.Generator().manual_seed(args.seed + 11)
    progress = tqdm(range(args.classifier_steps), desc="classifier")
    for _ in progress:
        index = torch.randint(0, len(train.labels), (args.classifier_batch_size,), generator=generator)
        loss = F.cross_entropy(model(train.images[index]), train.labels[index], label_smoothing=0.05)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        progress.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    return model.eval()


def train_vae(vae, train: digits.DigitBatch, args):
    """Reconstruction (L1 + L2) with a light KL term, on images scaled to [-1, 1] as the pipeline expects."""
    vae.train()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=1e-3, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(args.vae_steps, 50))
    generator = torch.Generator().manual_seed(args.seed + 20)
    progress = tqdm(range(args.vae_steps), desc="autoencoder")
    for _ in progress:
        index = torch.randint(0, len(train.labels), (args.vae_batch_size,), generator=generator)
        images = train.images[index] * 2.0 - 1.0
        posterior = vae.encode(images).latent_dist
        reconstruction = vae.decode(posterior.sample(generator=generator)).sample
        error = reconstruction - images
        reconstruction_loss = error.abs().mean() + error.square().mean()
        kl = posterior.kl().mean() / images[0].numel()
        loss = reconstruction_loss + 1e-4 * kl
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        progress.set_postfix(rec=f"{reconstruction_loss.item():.4f}", kl=f"{kl.item():.3f}", refresh=False)
    return vae.eval().requires_grad_(False)


@torch.no_grad()
def encode_latents(vae, images: torch.Tensor, batch_size: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior means and standard deviations of ``images`` in [0, 1]."""
    means, stds = [], []
    for chunk in tqdm(images.split(batch_size), desc="encode latents"):
        posterior = vae.encode(chunk * 2.0 - 1.0).latent_dist
        means.append(posterior.mean)
        stds.append(posterior.std)
    return torch.cat(means), torch.cat(stds)


def sample_sigmas(n: int, generator: torch.Generator, shift: float = SCHEDULER_SHIFT) -> torch.Tensor:
    """Logit-normal(0, 1) noise levels (as in SD3 training), shifted like the pipeline's scheduler."""
    sigmas = torch.sigmoid(torch.randn(n, generator=generator))
    return shift * sigmas / (1.0 + (shift - 1.0) * sigmas)


def train_transformer(transformer, latent_mean, latent_std, prompt_index, text, args, on_eval=None):
    """Flow matching: ``x = (1 - sigma) * x0 + sigma * noise``, the model predicts ``noise - x0`` at ``t = 1000 sigma``.

    ``latent_mean``/``latent_std`` are the (already normalised) posterior statistics of the training images, a fresh
    latent is drawn from the posterior for every use. ``text`` holds the sequence and pooled embeddings of all prompts;
    its last row is the empty prompt, which replaces ``args.label_dropout`` of the prompts (for CFG).
    ``on_eval(step, ema)`` is called every ``args.eval_every`` steps, to follow progress. Returns the EMA copy.
    """
    embeds, pooled = text
    empty = len(embeds) - 1
    transformer.train()
    ema = copy.deepcopy(transformer).eval().requires_grad_(False)
    parameters = [p for p in transformer.parameters() if p.requires_grad]
    ema_parameters = [p for p in ema.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=args.transformer_lr, betas=(0.9, 0.99), weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(args.transformer_steps, 100))
    generator = torch.Generator().manual_seed(args.seed + 30)
    progress = tqdm(range(args.transformer_steps), desc="transformer")
    for step in progress:
        batch = args.transformer_batch_size
        index = torch.randint(0, len(prompt_index), (batch,), generator=generator)
        x0 = latent_mean[index] + latent_std[index] * torch.randn(latent_mean[index].shape, generator=generator)
        prompts = prompt_index[index].clone()
        prompts[torch.rand(batch, generator=generator) < args.label_dropout] = empty
        noise = torch.randn(x0.shape, generator=generator)
        sigmas = sample_sigmas(batch, generator)
        s = sigmas.view(-1, 1, 1, 1)
        velocity = transformer(
            hidden_states=(1.0 - s) * x0 + s * noise,
            timestep=sigmas * 1000.0,
            encoder_hidden_states=embeds[prompts],
            pooled_projections=pooled[prompts],
        ).sample
        loss = F.mse_loss(velocity, noise - x0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        schedule.step()
        decay = min(args.ema_decay, (1.0 + step) / (10.0 + step))
        with torch.no_grad():
            for ema_parameter, parameter in zip(ema_parameters, parameters):
                ema_parameter.lerp_(parameter, 1.0 - decay)
        progress.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
        if on_eval is not None and args.eval_every and (step + 1) % args.eval_every == 0 and step + 1 < args.transformer_steps:
            transformer.eval()
            on_eval(step + 1, ema)
            transformer.train()
    return ema


# -------------------------------------------------------------------------------------------------- evaluation


def score_samples(pipe, classifier, per_digit: int, seed: int, guidance_scale: float, steps: int):
    """Digit accuracy (by the classifier) and background-colour accuracy of samples, plus the images."""
    return bundled.score_samples(pipe, classifier, per_digit, seed, guidance_scale=guidance_scale,
                                 num_inference_steps=steps, height=digits.IMAGE_SIZE, width=digits.IMAGE_SIZE,
                                 max_sequence_length=MAX_SEQUENCE_LENGTH)


@torch.no_grad()
def time_transformer_call(transformer, text, batch_size: int, repeats: int) -> float:
    """Median wall time in milliseconds of one transformer call on a batch of ``batch_size``."""
    embeds, pooled = text
    size = TRANSFORMER_CONFIG["sample_size"]
    inputs = dict(
        hidden_states=torch.randn(batch_size, TRANSFORMER_CONFIG["in_channels"], size, size),
        timestep=torch.full((batch_size,), 500.0),
        encoder_hidden_states=embeds[:1].expand(batch_size, -1, -1),
        pooled_projections=pooled[:1].expand(batch_size, -1),
    )
    for _ in range(3):
        transformer(**inputs)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        transformer(**inputs)
        times.append(time.perf_counter() - start)
    return 1000.0 * float(np.median(times))


def count_parameters(module) -> int:
    return sum(p.numel() for p in module.parameters())


# ------------------------------------------------------------------------------------------------------- output


MODEL_CARD = """---
library_name: diffusers
license: apache-2.0
tags:
- flowturbo
- text-to-image
- stable-diffusion-3
- tiny
pipeline_tag: text-to-image
---

# flowturbo-diffusers tiny coloured-digits SD3 pipeline

A tiny, genuinely trained `StableDiffusion3Pipeline` that ships inside flowturbo-diffusers so that its examples run offline in seconds on a CPU and its benchmarks
measure a real velocity field. It draws 32x32 images of a digit in one colour on a background of another colour, from
prompts such as `"a red 7 on a blue background"`. It is a test fixture and a demo, not a general image model.

```python
from flowturbo_diffusers.bundled import BUNDLED_CALL_DEFAULTS, load_bundled_pipeline

pipe = load_bundled_pipeline()
image = pipe("a red 7 on a blue background", **BUNDLED_CALL_DEFAULTS).images[0]
```

or with diffusers alone:

```python
from diffusers import StableDiffusion3Pipeline

pipe = StableDiffusion3Pipeline.from_pretrained("path/to/bundled_model")
image = pipe("a red 7 on a blue background", height=32, width=32, guidance_scale={guidance_scale},
             num_inference_steps={num_inference_steps}, max_sequence_length={max_sequence_length}).images[0]
```

Always pass `max_sequence_length={max_sequence_length}`: the (null) T5 appends that many all-zero tokens to the text,
and the model was trained with exactly {max_sequence_length} (the default, 256, is slow and out of distribution).

## Data

Procedurally rendered (`flowturbo_diffusers.bundled.digits`): a digit 0-9 drawn with Pillow's built-in font, glyph height
{glyph_low:g}-{glyph_high:g} px, shifted by up to {shift:g} px, rotated by up to {rotation:g} degrees, stroke widened by
{stroke_low:g}-{stroke:g} px, in a foreground colour on a plain background colour (8-colour palette, foreground != background:
{pairs} pairs, so {n_prompts} distinct prompts), each colour jittered by up to {jitter:g} per channel. The training pool is
{train_images:,} images (seed {seed}); the classifier is tested on {heldout_images:,} other images.

## Architecture

| component | what | parameters |
|---|---|---|
| `transformer` | `SD3Transformer2DModel`: {num_layers} joint blocks, width {width} ({heads} heads x {head_dim}), patch {patch}, QK RMS-norm | {transformer_params:,} |
| `vae` | `AutoencoderKL` 32x32x3 -> 16x16x4 (blocks {vae_blocks}), `scaling_factor` {scaling_factor:.4f}, `shift_factor` {shift_factor:.4f} | {vae_params:,} |
| `text_encoder`, `text_encoder_2` | one-layer `CLIPTextModelWithProjection` (width {clip_width}, projection {clip_projection}), frozen random weights, word-level tokenizers of {text_length} tokens | {text_params:,} each |
| `text_encoder_3` | a null one-layer `T5EncoderModel` (final norm zero): outputs the zeros SD3 uses without T5, present only so plain `from_pretrained` loads the folder | {t5_params:,} |
| `scheduler` | `FlowMatchEulerDiscreteScheduler(shift={scheduler_shift:g})` | |
| `classifier/` | `flowturbo_diffusers.bundled.classifier.DigitClassifier`, a small CNN (not part of the pipeline) | {classifier_params:,} |

The image sequence is {image_tokens} tokens, the text sequence {text_tokens} tokens ({text_length} CLIP + {max_sequence_length} zero).
The transformer and autoencoder weights are stored in float16 and load in float32 by default.

## Training

From scratch with `examples/train_tiny_pipeline.py --seed {seed}` on a {threads}-thread CPU:

| stage | steps x batch | wall time |
|---|---|---|
| render data | {train_images:,} + {heldout_images:,} images | {t_data:.0f} s |
| classifier | {classifier_steps} x {classifier_batch} | {t_classifier:.0f} s |
| autoencoder (L1 + L2 + 1e-4 KL) | {vae_steps} x {vae_batch} | {t_vae:.0f} s |
| transformer (flow matching, logit-normal sigmas, {label_dropout:.0%} label dropout, EMA {ema_decay}) | {transformer_steps} x {transformer_batch} | {t_transformer:.0f} s |
| evaluation | | {t_evaluation:.0f} s |
| total | | {t_total:.0f} s ({t_total_min:.1f} min) |

The text encoders are not trained: their random embeddings already tell the prompt words apart, and the transformer
learns to read them. The prompt embeddings were computed once with the pipeline's `encode_prompt`.

## Results

- Classifier accuracy on {heldout_images:,} held-out rendered images: **{classifier_accuracy:.2%}**.
- Samples from the pipeline's own Euler sampler, {num_inference_steps} steps, guidance scale {guidance_scale:g}, {eval_samples}
  samples ({eval_per_digit} per digit, random colour pairs, fixed seeds): **{sample_accuracy:.1%}** show the prompted
  digit (by the classifier), {colour_accuracy:.1%} have the prompted background colour.
- Guidance-scale sweep ({sweep_samples} other samples each, {num_inference_steps} steps), digit / background accuracy:
{sweep_table}
- One transformer call on this CPU ({threads} threads): {time_b1:.1f} ms at batch 1, {time_b8:.1f} ms at batch 8.
"""


def write_model_card(folder: Path, report: dict) -> None:
    d = report
    sweep = "\n".join(
        f"  - {float(g):g}: {s['digit_accuracy']:.1%} / {s['colour_accuracy']:.1%}" for g, s in d["guidance_sweep"].items()
    )
    card = MODEL_CARD.format(
        guidance_scale=d["call_defaults"]["guidance_scale"],
        num_inference_steps=d["call_defaults"]["num_inference_steps"],
        max_sequence_length=MAX_SEQUENCE_LENGTH,
        glyph_low=digits.GLYPH_HEIGHT[0],
        glyph_high=digits.GLYPH_HEIGHT[1],
        shift=digits.MAX_SHIFT,
        rotation=digits.MAX_ROTATION,
        stroke_low=digits.STROKE[0],
        stroke=digits.STROKE[1],
        jitter=digits.COLOUR_JITTER,
        pairs=len(digits.COLOUR_PAIRS),
        n_prompts=len(digits.all_prompts()),
        train_images=d["data"]["train_images"],
        heldout_images=d["data"]["heldout_images"],
        seed=d["seed"],
        num_layers=TRANSFORMER_CONFIG["num_layers"],
        width=TRANSFORMER_CONFIG["num_attention_heads"] * TRANSFORMER_CONFIG["attention_head_dim"],
        heads=TRANSFORMER_CONFIG["num_attention_heads"],
        head_dim=TRANSFORMER_CONFIG["attention_head_dim"],
        patch=TRANSFORMER_CONFIG["patch_size"],
        image_tokens=(TRANSFORMER_CONFIG["sample_size"] // TRANSFORMER_CONFIG["patch_size"]) ** 2,
        transformer_params=d["parameters"]["transformer"],
        vae_blocks=VAE_CONFIG["block_out_channels"],
        scaling_factor=d["latents"]["scaling_factor"],
        shift_factor=d["latents"]["shift_factor"],
        vae_params=d["parameters"]["vae"],
        clip_width=CLIP_HIDDEN_SIZE,
        clip_projection=CLIP_PROJECTION_DIM,
        text_length=TEXT_LENGTH,
        text_params=d["parameters"]["text_encoder"],
        t5_params=d["parameters"]["text_encoder_3"],
        scheduler_shift=SCHEDULER_SHIFT,
        classifier_params=d["parameters"]["classifier"],
        text_tokens=TEXT_LENGTH + MAX_SEQUENCE_LENGTH,
        threads=d["threads"],
        classifier_steps=d["training"]["classifier_steps"],
        classifier_batch=d["training"]["classifier_batch_size"],
        vae_steps=d["training"]["vae_steps"],
        vae_batch=d["training"]["vae_batch_size"],
        transformer_steps=d["training"]["transformer_steps"],
        transformer_batch=d["training"]["transformer_batch_size"],
        label_dropout=d["training"]["label_dropout"],
        ema_decay=d["training"]["ema_decay"],
        t_data=d["wall_time_seconds"]["data"],
        t_classifier=d["wall_time_seconds"]["classifier"],
        t_vae=d["wall_time_seconds"]["vae"],
        t_transformer=d["wall_time_seconds"]["transformer"],
        t_evaluation=d["wall_time_seconds"]["evaluation"],
        t_total=d["wall_time_seconds"]["total"],
        t_total_min=d["wall_time_seconds"]["total"] / 60.0,
        classifier_accuracy=d["classifier_accuracy"],
        eval_samples=d["sample_accuracy"]["samples"],
        eval_per_digit=d["sample_accuracy"]["samples"] // len(digits.DIGITS),
        sample_accuracy=d["sample_accuracy"]["digit_accuracy"],
        colour_accuracy=d["sample_accuracy"]["colour_accuracy"],
        sweep_samples=d["guidance_sweep_samples"],
        sweep_table=sweep,
        time_b1=d["transformer_call_ms"]["batch_1"],
        time_b8=d["transformer_call_ms"]["batch_8"],
    )
    (folder / "README.md").write_text(card)


def folder_size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def write_folder_atomically(output_dir: Path, fill) -> Path:
    """Call ``fill(staging)`` to write and check a model in a temporary sibling of ``output_dir``, then swap it in
    whole (the old folder is removed only once the new one is in place). On any error the staging folder is deleted
    and ``output_dir`` is left as it was."""
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}-", dir=output_dir.parent))
    try:
        fill(staging)
        if output_dir.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}-old-", dir=output_dir.parent))
            output_dir.rename(retired / output_dir.name)
            staging.rename(output_dir)
            shutil.rmtree(retired)
        else:
            staging.rename(output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output_dir


def write_outputs(pipe, classifier, report: dict, output_dir: Path) -> Path:
    """Save everything into a temporary sibling of ``output_dir``, check it loads and runs, then swap it in."""
    from diffusers import StableDiffusion3Pipeline

    def fill(staging: Path) -> None:
        # fp16 storage halves the size; from_pretrained loads the weights back into float32.
        pipe.transformer.to(torch.float16)
        pipe.vae.to(torch.float16)
        pipe.save_pretrained(staging, safe_serialization=True)
        pipe.transformer.to(torch.float32)
        pipe.vae.to(torch.float32)
        classifier.save_pretrained(staging / "classifier", safe_serialization=True)
        (staging / "flowturbo.json").write_text(json.dumps(report, indent=2) + "\n")
        write_model_card(staging, report)

        reloaded = StableDiffusion3Pipeline.from_pretrained(staging)
        reloaded.set_progress_bar_config(disable=True)
        check = reloaded(
            "a red 7 on a blue background",
            num_inference_steps=2,
            height=digits.IMAGE_SIZE,
            width=digits.IMAGE_SIZE,
            max_sequence_length=MAX_SEQUENCE_LENGTH,
            output_type="pt",
        ).images
        if reloaded.transformer.dtype != torch.float32 or not torch.isfinite(check).all():
            raise RuntimeError("The saved pipeline does not reload into a working float32 pipeline.")
        DigitClassifier.from_pretrained(staging / "classifier")

    return write_folder_atomically(output_dir, fill)


# --------------------------------------------------------------------------------------------------------- main


def main(argv=None) -> Path:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    wall = {}
    started = time.perf_counter()

    def lap(name: str, since: float) -> float:
        now = time.perf_counter()
        wall[name] = round(now - since, 1)
        return now

    t = time.perf_counter()
    train = render_pool(args.train_images, args.seed, "render training images")
    heldout = render_pool(args.heldout_images, args.seed + 1, "render held-out images")
    pipe = build_pipeline(args.seed)
    prompts = digits.all_prompts()
    position = {prompt: index for index, prompt in enumerate(prompts)}
    prompt_index = torch.tensor([position[p] for p in train.prompts])
    text = encode_prompts(pipe, prompts + [""])
    t = lap("data", t)

    classifier = train_classifier(train, args)
    classifier_accuracy = (classifier.predict(heldout.images) == heldout.labels).float().mean().item()
    print(f"classifier accuracy on {len(heldout.labels)} held-out images: {classifier_accuracy:.2%}")
    t = lap("classifier", t)

    vae = train_vae(pipe.vae, train, args)
    latent_mean, latent_std = encode_latents(vae, train.images)
    shift_factor = latent_mean.mean().item()
    scaling_factor = 1.0 / (latent_mean - shift_factor).square().add(latent_std.square()).mean().sqrt().item()
    vae.register_to_config(shift_factor=shift_factor, scaling_factor=scaling_factor)
    latent_mean = (latent_mean - shift_factor) * scaling_factor
    latent_std = latent_std * scaling_factor
    with torch.no_grad():
        reconstruction = vae.decode(vae.encode(heldout.images * 2 - 1).latent_dist.mean).sample
    reconstruction = (reconstruction / 2 + 0.5).clamp(0, 1)
    reconstruction_mse = (reconstruction - heldout.images).square().mean().item()
    reconstruction_accuracy = (classifier.predict(reconstruction) == heldout.labels).float().mean().item()
    print(f"autoencoder: held-out MSE {reconstruction_mse:.5f}, classifier accuracy on reconstructions "
          f"{reconstruction_accuracy:.2%}, shift_factor {shift_factor:.4f}, scaling_factor {scaling_factor:.4f}")
    t = lap("vae", t)

    def on_eval(step, ema):
        trained = pipe.transformer
        pipe.transformer = ema
        accuracy, _, _ = score_samples(pipe, classifier, 5, args.seed + 7, 4.0, 20)
        pipe.transformer = trained
        tqdm.write(f"step {step}: EMA digit accuracy {accuracy:.0%} (50 samples, 20 Euler steps, guidance 4)")

    ema = train_transformer(pipe.transformer, latent_mean, latent_std, prompt_index, text, args, on_eval)
    pipe.transformer.load_state_dict(ema.state_dict())
    pipe.transformer.eval().requires_grad_(False)
    t = lap("transformer", t)

    sweep = {}
    for index, scale in enumerate(args.guidance_scales):
        digit_accuracy, colour_accuracy, _ = score_samples(
            pipe, classifier, args.sweep_per_digit, args.seed + 1000 * (index + 1), scale, args.num_inference_steps
        )
        sweep[f"{scale:g}"] = {"digit_accuracy": digit_accuracy, "colour_accuracy": colour_accuracy}
        print(f"guidance {scale:g}: digit accuracy {digit_accuracy:.1%}, background colour {colour_accuracy:.1%}")
    # The smallest scale within a point of the best: strong guidance costs diversity for little accuracy.
    best = max(s["digit_accuracy"] for s in sweep.values())
    guidance_scale = min(float(g) for g, s in sweep.items() if s["digit_accuracy"] >= best - 0.01)
    digit_accuracy, colour_accuracy, images = score_samples(
        pipe, classifier, args.eval_per_digit, args.seed + 100_000, guidance_scale, args.num_inference_steps
    )
    print(f"recommended guidance {guidance_scale:g}: {args.num_inference_steps}-step Euler samples show the prompted "
          f"digit in {digit_accuracy:.1%} of {len(images)} (background colour {colour_accuracy:.1%})")
    repeats = 5 if args.quick else 50
    call_ms = {f"batch_{b}": round(time_transformer_call(pipe.transformer, text, b, repeats), 2) for b in (1, 8)}
    print(f"one transformer call: {call_ms}")
    lap("evaluation", t)
    wall["total"] = round(time.perf_counter() - started, 1)

    report = {
        "call_defaults": {
            "height": digits.IMAGE_SIZE,
            "width": digits.IMAGE_SIZE,
            "guidance_scale": guidance_scale,
            "num_inference_steps": args.num_inference_steps,
            "max_sequence_length": MAX_SEQUENCE_LENGTH,
        },
        "classifier_accuracy": classifier_accuracy,
        "classifier_heldout": {"images": args.heldout_images, "seed": args.seed + 1},
        "sample_accuracy": {
            "digit_accuracy": digit_accuracy,
            "colour_accuracy": colour_accuracy,
            "samples": len(images),
            "guidance_scale": guidance_scale,
            "num_inference_steps": args.num_inference_steps,
            "sampler": "FlowMatchEulerDiscreteScheduler",
        },
        "guidance_sweep": sweep,
        "guidance_sweep_samples": args.sweep_per_digit * len(digits.DIGITS),
        "autoencoder": {"heldout_mse": reconstruction_mse, "classifier_accuracy_on_reconstructions": reconstruction_accuracy},
        "latents": {"shift_factor": shift_factor, "scaling_factor": scaling_factor},
        "parameters": {
            "transformer": count_parameters(pipe.transformer),
            "transformer_block": count_parameters(pipe.transformer.transformer_blocks[0]),
            "vae": count_parameters(pipe.vae),
            "text_encoder": count_parameters(pipe.text_encoder),
            "text_encoder_2": count_parameters(pipe.text_encoder_2),
            "text_encoder_3": count_parameters(pipe.text_encoder_3),
            "classifier": count_parameters(classifier),
        },
        "transformer_call_ms": call_ms,
        "threads": torch.get_num_threads(),
        "wall_time_seconds": wall,
        "training": {
            "classifier_steps": args.classifier_steps,
            "classifier_batch_size": args.classifier_batch_size,
            "vae_steps": args.vae_steps,
            "vae_batch_size": args.vae_batch_size,
            "transformer_steps": args.transformer_steps,
            "transformer_batch_size": args.transformer_batch_size,
            "transformer_lr": args.transformer_lr,
            "ema_decay": args.ema_decay,
            "label_dropout": args.label_dropout,
            "scheduler_shift": SCHEDULER_SHIFT,
        },
        "data": {"train_images": args.train_images, "heldout_images": args.heldout_images},
        "seed": args.seed,
        "quick": args.quick,
    }
    if args.save_samples:
        digits.image_grid(images[:: max(1, len(images) // 100)], columns=10).save(args.save_samples)
    output_dir = write_outputs(pipe, classifier, report, args.output_dir)
    print(f"wrote {output_dir} ({folder_size(output_dir) / 1e6:.2f} MB); wall time {wall}")
    return output_dir


if __name__ == "__main__":
    main()
