"""Train a refiner on a coloured-digit model it was not built around, with the default recipe only, and measure it.

For a model folder written by ``examples/train_flux_model.py`` or ``examples/train_wan_model.py`` (or the bundled
model), this

1. trains a refiner exactly as ``flowturbo train-refiner`` does with its defaults, given only the model's call
   arguments (from the folder's ``flowturbo.json``) and all 560 prompts - the recipe is not tuned per model;
2. samples held-out prompts and seeds with training-free plans (``H1P1`` ... ``H1P10``, Heun 6 and 8 steps), with R
   plans (trained refiner, and the same plans with an untrained, zero-offset refiner), and with ``H1P2H3`` (the R
   steps of ``H1P2R3`` run as exact Heun steps: what a perfect refiner would reach);
3. scores each plan: latent PSNR against a 100-step Heun solve from the same noise; the share of images (of frames,
   for video) showing the prompted digit (bundled classifier), glyph colour and background colour; the transformer and
   refiner calls the pipeline made per image (true CFG calls each branch, so counts are doubled there); and the cost
   in transformer calls, refiner calls weighted by their measured cost (timed at batch 1);
4. reads off, for each R plan, the gain over the training-free curve at equal cost, and prints the markdown table
   that docs/training.md ("The default recipe on models it was not built around") shows.

    python examples/refiner_on_new_models.py --model flux_digits_model --work-dir flux_refiner
    python examples/refiner_on_new_models.py --model flux_digits_model --work-dir flux_refiner --skip-training

The results go to ``<work-dir>/evaluation.json`` as well (``--output-name``). ``--sample-kwargs`` measures the same
refiner under other call arguments, e.g. without guidance::

    python examples/refiner_on_new_models.py --model flux_digits_model --work-dir flux_refiner --skip-training \
        --sample-kwargs '{"true_cfg_scale": 1}' --output-name evaluation_cfg1.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from flowturbo_diffusers import VelocityRefiner
from flowturbo_diffusers.benchmark.metrics import psnr
from flowturbo_diffusers.bundled import digits, evaluation_prompts, load_bundled_classifier, prompt_accuracy
from flowturbo_diffusers.reference import heun_pipeline, output_tensor, reference_solve
from flowturbo_diffusers.training import train_refiner
from flowturbo_diffusers.training.evaluation import psnr_at_cost, refiner_call_cost, untrained_like

TRAINING_FREE = tuple(f"H1P{n}" for n in range(1, 11)) + ("H6", "H8")
REFINER_PLANS = ("H1P2R2", "H1P2R3", "H1P3R3", "H1P5R3", "H1P7R3", "H1P9R4")
PERFECT_REFINER = {"H1P2H3": "H1P2R3"}  # the R steps run as exact Heun steps
REFERENCE_STEPS = 100


def load_pipeline(model: Path):
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(model, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def sample(turbo, prompts, seeds, call, batch_size):
    """Images (or videos) in [0, 1] and the final latents of ``turbo`` (captured at the last step's callback), plus
    the pipeline's call counts for one batch (= per image: the batch is one call)."""
    images, latents = [], []
    for start in range(0, len(prompts), batch_size):
        last = {}

        def capture(pipe, step, timestep, tensors):
            last["latents"] = tensors["latents"].float().cpu()
            return tensors

        generators = [torch.Generator().manual_seed(s) for s in seeds[start:start + batch_size]]
        output = turbo(prompt=prompts[start:start + batch_size], generator=generators, output_type="pt",
                       callback_on_step_end=capture, callback_on_step_end_tensor_inputs=["latents"], **call)
        images.append(output_tensor(output).float().cpu())
        latents.append(last["latents"])
    return torch.cat(images), torch.cat(latents), dict(turbo.last_evaluation_counts)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="a folder written by train_flux_model.py / ...")
    parser.add_argument("--work-dir", type=Path, required=True, help="the refiner's output_dir, and evaluation.json")
    parser.add_argument("--skip-training", action="store_true", help="measure the refiner already in --work-dir")
    parser.add_argument("--per-digit", type=int, default=10, help="held-out samples per digit (10 digits)")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--seed", type=int, default=70_000, help="first noise seed of the held-out samples")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--sample-kwargs", type=json.loads, default={},
                        help='JSON call arguments that override the model\'s for the measurement only (not training), '
                        'e.g. \'{"true_cfg_scale": 1}\' to see whether guidance amplifies the refiner\'s errors')
    parser.add_argument("--output-name", default="evaluation.json", help="file name in --work-dir for the results")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 10 training steps on 20 prompts, 1 sample per digit, an 8-step reference")
    args = parser.parse_args(argv)
    quick = dict(steps=10, calibration_samples=2, recommendation_samples=2) if args.quick else {}
    if args.quick:
        args.per_digit = 1
    if args.threads:
        torch.set_num_threads(args.threads)

    info = json.loads((args.model / "flowturbo.json").read_text())
    call = dict(info["call_defaults"])
    pipe = load_pipeline(args.model)
    training = {}
    if not args.skip_training:
        started = time.perf_counter()
        prompts = digits.all_prompts()[:: 28 if args.quick else 1]
        result = train_refiner(pipe, prompts=prompts, output_dir=str(args.work_dir), call_kwargs=call,
                               base_model=str(args.model), overwrite=True, **quick)
        training = {"seconds": round(time.perf_counter() - started, 1), "final_loss": result.final_loss,
                    "metrics": result.metrics}
    refiner = VelocityRefiner.from_pretrained(args.work_dir / "refiner")

    sampling = {k: v for k, v in {**call, **args.sample_kwargs}.items() if k != "num_inference_steps"}
    prompts, _, _ = evaluation_prompts(args.per_digit, args.seed)
    seeds = [args.seed + i for i in range(len(prompts))]
    classifier = load_bundled_classifier()
    cost = refiner_call_cost(pipe, refiner, "H1P5R3", prompts[:1], seeds[:1], sampling)
    reference_steps = 8 if args.quick else REFERENCE_STEPS
    reference = reference_solve(pipe, prompts, seeds, reference_steps, sampling, args.batch_size, desc="reference")
    turbo = heun_pipeline(pipe)
    untrained = untrained_like(refiner)
    rows = []
    plans = [*TRAINING_FREE, *PERFECT_REFINER, *REFINER_PLANS, *(f"{p} zero" for p in REFINER_PLANS)]
    for name in tqdm(plans, desc="plans"):
        plan = name.split()[0]
        wanted = untrained if name.endswith("zero") else refiner
        if turbo.refiner is not wanted:
            turbo.load_refiner(wanted)  # unused by training-free plans
        turbo.set_plan(plan)
        images, latents, counts = sample(turbo, prompts, seeds, sampling, args.batch_size)
        rows.append({"plan": name, "transformer_calls": counts["base"], "refiner_calls": counts["refiner"],
                     "cost": counts["base"] + cost * counts["refiner"],
                     "psnr_db": float(psnr(latents, reference).mean()),
                     **prompt_accuracy(images, prompts, classifier)})
    curve = [(r["cost"], r["psnr_db"]) for r in rows if r["plan"] in TRAINING_FREE and r["plan"].startswith("H1P")]
    for row in rows:
        if row["refiner_calls"]:
            at_cost = psnr_at_cost(curve, row["cost"])
            row["gain_db"] = None if at_cost is None else row["psnr_db"] - at_cost
    report = {"model": str(args.model), "call": call, "sampling": sampling, "refiner_cost": cost, "samples": len(prompts),
              "reference": f"Heun, {reference_steps} steps", "training": training,
              "refiner_parameters": sum(p.numel() for p in refiner.parameters()),
              "transformer_parameters": sum(p.numel() for p in getattr(pipe, refiner.config.base_denoiser).parameters()),
              "offset_scale": refiner.config.offset_scale, "recommended_plans": list(refiner.config.recommended_plans),
              "threads": torch.get_num_threads(), "rows": rows}
    (args.work_dir / args.output_name).write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(markdown(report))


def markdown(report: dict) -> str:
    lines = ["| plan | transformer calls | refiner calls | cost | latent PSNR | gain at equal cost | digit | colour (fg / bg) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        gain = "" if r.get("gain_db") is None else f"{r['gain_db']:+.1f} dB"
        lines.append(f"| {r['plan']} | {r['transformer_calls']} | {r['refiner_calls']} | {r['cost']:.1f} | "
                     f"{r['psnr_db']:.1f} dB | {gain} | {r['digit']:.3f} | {r['foreground']:.2f} / {r['background']:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
