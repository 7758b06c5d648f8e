"""Train, from scratch on a CPU, a small Flux-style text-to-image pipeline with true classifier-free guidance.

It exists to test FlowTurbo (and above all the default refiner recipe) on a model nobody tuned for: a real
`FluxPipeline` - CLIP for the pooled text vector, a T5 encoder for the text sequence, a `FluxTransformer2DModel`
(double- and single-stream blocks, rotary positions, no guidance embedding) trained with flow matching in Flux's
convention, and Flux's own `FlowMatchEulerDiscreteScheduler` config with dynamic shifting. It samples with true CFG
(``true_cfg_scale=4, negative_prompt=""``: the conditional and unconditional branches are separate transformer calls),
as in the issue that asked for it (issue 21).

The data and the 32x32 -> 16x16x4 autoencoder are the bundled model's (coloured digits, "a red 7 on a blue
background"; see docs/bundled_model.md): only the text side and the transformer are new, so the bundled digit
classifier scores the samples. The text encoders are frozen and randomly initialised, with word-level tokenizers built
in memory: their embeddings tell the prompt words apart, which is all the transformer needs.

The model is not committed; this script regenerates it (seeded, about 30 minutes on one CPU thread)::

    python examples/train_flux_model.py --output-dir flux_digits_model
    python examples/train_flux_model.py --quick          # smoke run in about a minute, into a temporary folder

Then ``examples/refiner_on_new_models.py`` trains a refiner on it with the default recipe and measures it.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_tiny_pipeline import (  # noqa: E402
    count_parameters,
    encode_latents,
    lr_lambda,
    render_pool,
    word_clip_tokenizer,
    write_folder_atomically,
)

from flowturbo_diffusers import bundled  # noqa: E402
from flowturbo_diffusers.bundled import digits  # noqa: E402

TEXT_LENGTH = 10  # CLIP tokens: 7 words + start/end, one spare
CLIP_HIDDEN_SIZE = 32  # Flux's pooled vector is CLIP's pooler output (hidden size, no projection)
T5_WIDTH = 64
MAX_SEQUENCE_LENGTH = 16  # T5 tokens: 7 words + end, padded
TRUE_CFG_SCALE = 4.0
NUM_INFERENCE_STEPS = 28  # Flux's default
# FLUX.1's scheduler config: dynamic shifting, mu from the image sequence length (64 tokens here -> shift 1.6).
SCHEDULER_CONFIG = dict(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                        base_image_seq_len=256, max_image_seq_len=4096)
TRANSFORMER_CONFIG = dict(
    patch_size=1,
    in_channels=16,  # the 4 latent channels packed 2x2, as FluxPipeline does: 8x8 = 64 image tokens
    num_layers=2,  # double-stream blocks
    num_single_layers=4,
    attention_head_dim=32,
    num_attention_heads=4,
    joint_attention_dim=T5_WIDTH,
    pooled_projection_dim=CLIP_HIDDEN_SIZE,
    guidance_embeds=False,  # true CFG, like FLUX.1-schnell-style or Kontext-style models with real negatives
    axes_dims_rope=(8, 12, 12),
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", type=Path, default=None,
                        help="default: ./flux_digits_model (a temporary folder with --quick)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-images", type=int, default=30_000)
    parser.add_argument("--transformer-steps", type=int, default=3_000)
    parser.add_argument("--transformer-batch-size", type=int, default=48)
    parser.add_argument("--transformer-lr", type=float, default=1e-3)
    parser.add_argument("--ema-decay", type=float, default=0.999)
    parser.add_argument("--label-dropout", type=float, default=0.1)
    parser.add_argument("--eval-every", type=int, default=1_000)
    parser.add_argument("--eval-per-digit", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="a few dozen steps, tiny eval, temporary output")
    args = parser.parse_args(argv)
    if args.quick:
        args.train_images, args.transformer_steps, args.transformer_batch_size = 256, 24, 8
        args.eval_per_digit, args.eval_every = 1, 0
        if args.output_dir is None:
            args.output_dir = Path(tempfile.mkdtemp(prefix="flowturbo-quick-")) / "flux_model"
    args.output_dir = args.output_dir or Path("flux_digits_model")
    return args


def word_t5(words: list[str], seed: int):
    """A word-level T5 tokenizer (one token per word, ``</s>`` appended) and a frozen random one-layer T5 encoder."""
    from tokenizers import Tokenizer, processors
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{word: 3 + i for i, word in enumerate(words)}}
    backend = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = WhitespaceSplit()
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>",
                                        unk_token="<unk>", model_max_length=MAX_SEQUENCE_LENGTH)
    torch.manual_seed(seed)
    config = T5Config(vocab_size=len(vocab), d_model=T5_WIDTH, d_kv=16, d_ff=2 * T5_WIDTH, num_layers=1, num_heads=4)
    return T5EncoderModel(config).eval().requires_grad_(False), tokenizer


def clip_text_model(tokenizer, seed: int):
    """A frozen random one-layer `CLIPTextModel` (Flux reads its ``pooler_output``)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    config = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=CLIP_HIDDEN_SIZE, intermediate_size=4 * CLIP_HIDDEN_SIZE,
                            num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=TEXT_LENGTH,
                            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                            pad_token_id=tokenizer.pad_token_id)
    return CLIPTextModel(config).eval().requires_grad_(False)


def build_pipeline(seed: int):
    """The Flux pipeline: the bundled autoencoder, new frozen text encoders, an untrained transformer."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    words = digits.vocabulary()
    tokenizer = word_clip_tokenizer(words, TEXT_LENGTH)
    text_encoder_2, tokenizer_2 = word_t5(words, seed + 3)
    torch.manual_seed(seed + 1)
    pipe = FluxPipeline(
        transformer=FluxTransformer2DModel(**TRANSFORMER_CONFIG),
        scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULER_CONFIG),
        vae=bundled.load_bundled_pipeline().vae,
        text_encoder=clip_text_model(tokenizer, seed + 2),
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def shift_of(pipe, image_tokens: int) -> float:
    """``exp(mu)``: the time shift FluxPipeline applies at this image sequence length (pipeline_flux.calculate_shift)."""
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    c = pipe.scheduler.config
    return float(np.exp(calculate_shift(image_tokens, c.base_image_seq_len, c.max_image_seq_len, c.base_shift,
                                        c.max_shift)))


@torch.no_grad()
def encode_prompts(pipe, prompts: list[str]):
    embeds, pooled, _ = pipe.encode_prompt(prompt=prompts, prompt_2=None, max_sequence_length=MAX_SEQUENCE_LENGTH)
    return embeds, pooled


def train_transformer(pipe, latent_mean, latent_std, prompt_index, text, args, on_eval=None):
    """Flow matching in Flux's convention: ``x = (1 - sigma) x0 + sigma noise`` on packed latents, the model gets
    ``timestep = sigma`` (FluxPipeline passes t / 1000) and predicts ``noise - x0``. Sigmas are logit-normal, shifted
    by the pipeline's own ``exp(mu)`` at 32x32. The last text row is the empty prompt (label dropout, for CFG)."""
    transformer = pipe.transformer
    embeds, pooled = text
    empty = len(embeds) - 1
    latent_size = latent_mean.shape[-1]
    channels = latent_mean.shape[1]
    img_ids = pipe._prepare_latent_image_ids(1, latent_size // 2, latent_size // 2, "cpu", torch.float32)
    txt_ids = torch.zeros(embeds.shape[1], 3)
    shift = shift_of(pipe, img_ids.shape[0])
    transformer.train()
    ema = copy.deepcopy(transformer).eval().requires_grad_(False)
    parameters = list(transformer.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=args.transformer_lr, betas=(0.9, 0.99), weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(args.transformer_steps, 100))
    generator = torch.Generator().manual_seed(args.seed + 30)
    progress = tqdm(range(args.transformer_steps), desc="transformer")
    for step in progress:
        batch = args.transformer_batch_size
        index = torch.randint(0, len(prompt_index), (batch,), generator=generator)
        x0 = latent_mean[index] + latent_std[index] * torch.randn(latent_mean[index].shape, generator=generator)
        x0 = pipe._pack_latents(x0, batch, channels, latent_size, latent_size)
        prompts = prompt_index[index].clone()
        prompts[torch.rand(batch, generator=generator) < args.label_dropout] = empty
        noise = torch.randn(x0.shape, generator=generator)
        sigmas = torch.sigmoid(torch.randn(batch, generator=generator))
        sigmas = shift * sigmas / (1.0 + (shift - 1.0) * sigmas)
        s = sigmas.view(-1, 1, 1)
        velocity = transformer(hidden_states=(1.0 - s) * x0 + s * noise, timestep=sigmas, guidance=None,
                               pooled_projections=pooled[prompts], encoder_hidden_states=embeds[prompts],
                               txt_ids=txt_ids, img_ids=img_ids).sample
        loss = F.mse_loss(velocity, noise - x0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        schedule.step()
        decay = min(args.ema_decay, (1.0 + step) / (10.0 + step))
        with torch.no_grad():
            for ema_parameter, parameter in zip(ema.parameters(), parameters):
                ema_parameter.lerp_(parameter, 1.0 - decay)
        progress.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
        if on_eval is not None and args.eval_every and (step + 1) % args.eval_every == 0 and step + 1 < args.transformer_steps:
            transformer.eval()
            on_eval(step + 1, ema)
            transformer.train()
    return ema


def call_defaults() -> dict:
    return {"height": digits.IMAGE_SIZE, "width": digits.IMAGE_SIZE, "true_cfg_scale": TRUE_CFG_SCALE,
            "negative_prompt": "", "num_inference_steps": NUM_INFERENCE_STEPS,
            "max_sequence_length": MAX_SEQUENCE_LENGTH}


def score(pipe, classifier, per_digit: int, seed: int, steps: int = NUM_INFERENCE_STEPS):
    kwargs = {**call_defaults(), "num_inference_steps": steps}
    return bundled.score_samples(pipe, classifier, per_digit, seed, **kwargs)


@torch.no_grad()
def time_call(pipe, text, batch_size: int, repeats: int) -> float:
    """Median milliseconds of one transformer call at ``batch_size``."""
    embeds, pooled = text
    tokens = (digits.IMAGE_SIZE // 4) ** 2
    inputs = dict(hidden_states=torch.randn(batch_size, tokens, TRANSFORMER_CONFIG["in_channels"]),
                  timestep=torch.full((batch_size,), 0.5), guidance=None,
                  pooled_projections=pooled[:1].expand(batch_size, -1),
                  encoder_hidden_states=embeds[:1].expand(batch_size, -1, -1),
                  txt_ids=torch.zeros(embeds.shape[1], 3),
                  img_ids=pipe._prepare_latent_image_ids(1, 8, 8, "cpu", torch.float32))
    times = []
    for i in range(repeats + 3):
        start = time.perf_counter()
        pipe.transformer(**inputs)
        if i >= 3:
            times.append(time.perf_counter() - start)
    return 1000.0 * float(np.median(times))


CARD = """---
library_name: diffusers
license: apache-2.0
tags: [flowturbo, text-to-image, flux, tiny]
pipeline_tag: text-to-image
---

# flowturbo-diffusers tiny Flux-style coloured-digits pipeline (true CFG)

A small `FluxPipeline` trained from scratch on a CPU by `examples/train_flux_model.py` (seed {seed}) to test samplers
and refiners on a model they were not built around. 32x32 images of coloured digits ("a red 7 on a blue background").

```python
pipe = FluxPipeline.from_pretrained(path)
image = pipe("a red 7 on a blue background", negative_prompt="", true_cfg_scale={cfg:g}, height=32, width=32,
             num_inference_steps={steps}, max_sequence_length={msl}).images[0]
```

- transformer: `FluxTransformer2DModel`, {double} double + {single} single blocks, width {width}, {params:,} parameters;
  trained {tsteps} steps x {batch} ({tseconds:.0f} s on {threads} thread(s)), EMA {ema}, {dropout:.0%} label dropout;
- text: frozen random one-layer CLIP (pooled, width {clip}) and T5 (sequence, width {t5}), word-level tokenizers;
- autoencoder: the bundled model's (16x16x4 latents); scheduler: FLUX.1's config (dynamic shifting).
- {steps}-step Euler samples, true CFG {cfg:g}, {samples} samples: digit {digit:.1%}, background colour {colour:.1%}.
- one transformer call: {b1:.1f} ms at batch 1, {b8:.1f} ms at batch 8 ({threads} thread(s)).
"""


def write_outputs(pipe, report: dict, output_dir: Path) -> Path:
    """Save into a staging sibling, check it reloads and samples, then swap it in (the old folder is replaced whole)."""
    from diffusers import FluxPipeline

    def fill(staging: Path) -> None:
        pipe.save_pretrained(staging, safe_serialization=True)
        (staging / "flowturbo.json").write_text(json.dumps(report, indent=2) + "\n")
        r = report
        (staging / "README.md").write_text(CARD.format(
            seed=r["seed"], cfg=TRUE_CFG_SCALE, steps=NUM_INFERENCE_STEPS, msl=MAX_SEQUENCE_LENGTH,
            double=TRANSFORMER_CONFIG["num_layers"], single=TRANSFORMER_CONFIG["num_single_layers"],
            width=TRANSFORMER_CONFIG["num_attention_heads"] * TRANSFORMER_CONFIG["attention_head_dim"],
            params=r["parameters"]["transformer"], tsteps=r["training"]["transformer_steps"],
            batch=r["training"]["transformer_batch_size"], tseconds=r["wall_time_seconds"]["transformer"],
            threads=r["threads"], ema=r["training"]["ema_decay"], dropout=r["training"]["label_dropout"],
            clip=CLIP_HIDDEN_SIZE, t5=T5_WIDTH, samples=r["sample_accuracy"]["samples"],
            digit=r["sample_accuracy"]["digit_accuracy"], colour=r["sample_accuracy"]["colour_accuracy"],
            b1=r["transformer_call_ms"]["batch_1"], b8=r["transformer_call_ms"]["batch_8"]))
        reloaded = FluxPipeline.from_pretrained(staging)
        reloaded.set_progress_bar_config(disable=True)
        check = reloaded("a red 7 on a blue background", output_type="pt", **{**call_defaults(), "num_inference_steps": 2})
        if not torch.isfinite(check.images).all():
            raise RuntimeError("The saved pipeline does not reload into a working pipeline.")

    return write_folder_atomically(output_dir, fill)


def main(argv=None) -> Path:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    wall, started = {}, time.perf_counter()

    t = time.perf_counter()
    train = render_pool(args.train_images, args.seed + 5, "render training images")
    pipe = build_pipeline(args.seed)
    classifier = bundled.load_bundled_classifier()
    prompts = digits.all_prompts()
    position = {prompt: index for index, prompt in enumerate(prompts)}
    prompt_index = torch.tensor([position[p] for p in train.prompts])
    text = encode_prompts(pipe, prompts + [""])
    vae = pipe.vae
    latent_mean, latent_std = encode_latents(vae, train.images)
    latent_mean = (latent_mean - vae.config.shift_factor) * vae.config.scaling_factor
    latent_std = latent_std * vae.config.scaling_factor
    wall["data"] = round(time.perf_counter() - t, 1)

    def on_eval(step, ema):
        trained = pipe.transformer
        pipe.transformer = ema
        accuracy, colour, _ = score(pipe, classifier, 5, args.seed + 7, steps=20)
        pipe.transformer = trained
        tqdm.write(f"step {step}: EMA digit accuracy {accuracy:.0%}, background {colour:.0%} (50 samples, 20 steps)")

    t = time.perf_counter()
    ema = train_transformer(pipe, latent_mean, latent_std, prompt_index, text, args, on_eval)
    pipe.transformer.load_state_dict(ema.state_dict())
    pipe.transformer.eval().requires_grad_(False)
    wall["transformer"] = round(time.perf_counter() - t, 1)

    t = time.perf_counter()
    digit_accuracy, colour_accuracy, images = score(pipe, classifier, args.eval_per_digit, args.seed + 100_000)
    print(f"{NUM_INFERENCE_STEPS}-step Euler, true CFG {TRUE_CFG_SCALE:g}: digit {digit_accuracy:.1%}, background "
          f"{colour_accuracy:.1%} of {len(images)}")
    repeats = 5 if args.quick else 30
    call_ms = {f"batch_{b}": round(time_call(pipe, text, b, repeats), 2) for b in (1, 8)}
    wall["evaluation"] = round(time.perf_counter() - t, 1)
    wall["total"] = round(time.perf_counter() - started, 1)
    report = {
        "call_defaults": call_defaults(),
        "sample_accuracy": {"digit_accuracy": digit_accuracy, "colour_accuracy": colour_accuracy,
                            "samples": len(images), "sampler": f"FlowMatchEulerDiscreteScheduler, "
                            f"{NUM_INFERENCE_STEPS} steps, true CFG {TRUE_CFG_SCALE:g}"},
        "parameters": {"transformer": count_parameters(pipe.transformer),
                       "text_encoder": count_parameters(pipe.text_encoder),
                       "text_encoder_2": count_parameters(pipe.text_encoder_2)},
        "transformer_call_ms": call_ms,
        "threads": torch.get_num_threads(),
        "wall_time_seconds": wall,
        "training": {"transformer_steps": args.transformer_steps, "transformer_batch_size": args.transformer_batch_size,
                     "transformer_lr": args.transformer_lr, "ema_decay": args.ema_decay,
                     "label_dropout": args.label_dropout, "train_images": args.train_images},
        "seed": args.seed,
        "quick": args.quick,
    }
    output = write_outputs(pipe, report, args.output_dir)
    print(f"wrote {output}; wall time {wall}; one call {call_ms} ms")
    return output


if __name__ == "__main__":
    main()
