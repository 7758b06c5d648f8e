"""How much each kind of conditioning is worth to a refiner, at the same parameter budget, on the bundled model.

Trains one refiner per conditioning kind with the project's own trainer and the bundled refiner's recipe (data-free,
the pipeline's 28-step Euler trajectories, teacher calls with sigma in (0, 0.6), dt in (0, 0.12), batch 64, learning
rate 5e-4, seed 0) but fewer steps, the same for every variant and the same batches and dt draws (they come from the
seed and the step):

- ``pooled``: pooled text embeddings through adaLN (the default for SD3, and the bundled refiner's kind);
- ``pooled+cross``: the same plus cross-attention to the text tokens (``encoder_hidden_states``);
- ``velocity``: neither; the velocity it refines is all it knows of the prompt.

Each variant's ``hidden_size`` is chosen so that its parameter count is the closest to the ``pooled`` default's (the
bundled refiner's width); the counts are printed and must agree within ``--tolerance``. One prompt in eight is held
out of training (a different colour pair for each digit, so every digit and colour is trained on, but not those
combinations); all figures are on held-out prompts with noise seeds training never used:

1. ``offset_errors_by_sigma``: the refiner's offset against the teacher's velocity change, by noise level (relative
   error: 0 is exact, 1 is no better than no offset), on one 28-step trajectory per held-out prompt;
2. latent PSNR of R plans against a many-step Heun solve from the same prompts and noise, with each refiner, with a
   zero (untrained) refiner, and with the R steps run as Heun steps on the base model (a perfect refiner).

Every refiner runs at offset scale 1, its offsets as trained (none is calibrated). The teacher trajectories are
recorded once and shared by the variants (``record_once``). Sequential and single-process; about 40 minutes on one
CPU thread with the defaults, most of it training:

    OMP_NUM_THREADS=1 python examples/refiner_conditioning.py
    OMP_NUM_THREADS=1 python examples/refiner_conditioning.py --steps 100 --samples 16   # a quick look
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path


from flowturbo_diffusers import VelocityRefiner, bundled
from flowturbo_diffusers.training import trainer, trajectories
from flowturbo_diffusers.benchmark.metrics import psnr
from flowturbo_diffusers.bundled import digits
from flowturbo_diffusers.reference import heun_pipeline, reference_solve, sample_latents
from flowturbo_diffusers.training import train_refiner
from flowturbo_diffusers.training.evaluation import offset_errors_by_sigma, untrained_like

# Each variant: the overrides of VelocityRefiner.for_transformer that give its conditioning on an SD3 base.
VARIANTS = {
    "pooled": {},
    "pooled+cross": {"cross_attention": True},
    "velocity": {"pooled_dim": None, "cross_attention": False},
}
DESCRIPTIONS = {
    "pooled": "pooled text (adaLN)",
    "pooled+cross": "pooled text + cross-attention to text tokens",
    "velocity": "velocity only",
}
HELD_OUT_EVERY = 8
RECORD_STEPS = 28  # the bundled refiner's recording steps; also the held-out trajectories' steps


def record_once() -> None:
    """Record each set of teacher trajectories once: the variants are trained on the same prompts, seeds and call
    arguments (so on the same recorded calls), and evaluated on the same held-out ones, so ``train_refiner`` and
    ``offset_errors_by_sigma`` get the first recording again instead of sampling the pipeline anew (recording is
    deterministic, so the figures are those of separate recordings; this only saves time)."""
    record = trajectories.record_teacher_calls
    cache = {}

    def cached(pipe, prompts, call_kwargs=None, batch_size=4, seed=0, storage_device="cpu", progress=True,
               denoiser="transformer"):
        key = (id(pipe), tuple(prompts), repr(sorted((call_kwargs or {}).items())), batch_size, seed,
               str(storage_device), denoiser)
        if key not in cache:
            cache[key] = record(pipe, prompts, call_kwargs, batch_size, seed, storage_device, progress, denoiser)
        return list(cache[key])

    trajectories.record_teacher_calls = trainer.record_teacher_calls = cached


def held_out_split(prompts: list[str]) -> tuple[list[str], list[str]]:
    """Training and held-out prompts: one in ``HELD_OUT_EVERY`` of each digit's 56 colour pairs, shifted by the digit
    so that no colour pair is held out for every digit."""
    pairs = len(prompts) // 10
    held = [i for i in range(len(prompts)) if (i % pairs + i // pairs) % HELD_OUT_EVERY == 0]
    kept = sorted(set(range(len(prompts))) - set(held))
    return [prompts[i] for i in kept], [prompts[i] for i in held]


def matched_configs(transformer, variants: list[str]) -> dict[str, dict]:
    """Per variant, its refiner overrides with the ``hidden_size`` (a multiple of the head count) whose parameter count
    is the closest to the ``pooled`` default's, and that count."""
    target = VelocityRefiner.count_parameters(VelocityRefiner.config_for_transformer(transformer))
    configs = {}
    for name in variants:
        base = VelocityRefiner.config_for_transformer(transformer, **VARIANTS[name])
        heads = base["num_attention_heads"]
        widths = range(heads * 2, 4 * base["hidden_size"] + 1, heads)
        counts = {w: VelocityRefiner.count_parameters({**base, "hidden_size": w}) for w in widths}
        width = min(counts, key=lambda w: abs(counts[w] - target))
        configs[name] = {"overrides": {**VARIANTS[name], "hidden_size": width}, "parameters": counts[width]}
    return configs


def pooled_error(rows: list[dict], low: float, high: float) -> float:
    """The relative error over all pairs with sigma in [low, high) (bins wholly inside), from the per-bin rows."""
    inside = [r for r in rows if r["sigma_min"] >= low and r["sigma_max"] <= high]
    true = sum(r["pairs"] * r["true_offset_rms"] ** 2 for r in inside)
    error = sum(r["pairs"] * (r["relative_error"] * r["true_offset_rms"]) ** 2 for r in inside)
    return math.sqrt(error / true) if true else float("nan")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--steps", type=int, default=600, help="training steps, the same for every variant")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--sigma-range", type=float, nargs=2, default=(0.0, 0.6))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plans", nargs="+", default=["H1P2R2", "H1P5R3", "H1P7R4"])
    parser.add_argument("--samples", type=int, default=70,
                        help="held-out prompts for the offset errors and the plans (at most 70: one in eight)")
    parser.add_argument("--reference-steps", type=int, default=64)
    parser.add_argument("--eval-seed", type=int, default=50_000, help="first held-out noise seed")
    parser.add_argument("--tolerance", type=float, default=0.05, help="largest allowed spread of parameter counts")
    parser.add_argument("--work-dir", type=Path, default=None, help="where the refiners are trained (default: temp)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    record_once()

    info = bundled.bundled_model_info()
    call = {k: v for k, v in info["call_defaults"].items() if k != "num_inference_steps"}
    pipe = bundled.load_bundled_pipeline()
    pipe.set_progress_bar_config(disable=True)
    train_prompts, held_out = held_out_split(digits.all_prompts())
    if not 0 < args.samples <= len(held_out):
        parser.error(f"--samples must be between 1 and {len(held_out)}")
    # The held-out list runs digit by digit (7 each): take one of each digit in turn, so any count spreads over them.
    order = sorted(range(len(held_out)), key=lambda i: (i % 7, i // 7))
    eval_prompts = [held_out[i] for i in order[: args.samples]]
    eval_seeds = [args.eval_seed + i for i in range(args.samples)]
    configs = matched_configs(pipe.transformer, args.variants)
    base_parameters = sum(p.numel() for p in pipe.transformer.parameters())
    counts = [c["parameters"] for c in configs.values()]
    spread = max(counts) / min(counts) - 1
    print(f"{len(train_prompts)} training prompts, {len(eval_prompts)} held-out; parameters per variant: "
          + ", ".join(f"{n} {c['parameters']:,} (width {c['overrides']['hidden_size']})" for n, c in configs.items())
          + f"; spread {spread:.1%}")
    if spread > args.tolerance:
        raise SystemExit(f"The parameter counts differ by {spread:.1%}, more than --tolerance {args.tolerance:.0%}.")

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="refiner-conditioning-"))
    refiners, training = {}, {}
    for name in args.variants:
        begun = time.perf_counter()
        result = train_refiner(
            pipe,
            prompts=train_prompts,
            output_dir=str(work / name.replace("+", "-")),
            overwrite=True,
            steps=args.steps,
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            sigma_range=tuple(args.sigma_range),
            seed=args.seed,
            record_steps=RECORD_STEPS,
            record_batch_size=56,
            call_kwargs=call,
            refiner_kwargs=configs[name]["overrides"],
            eval_plan=None,
            calibration_samples=0,  # offsets as trained (scale 1) for every variant
            recommendation_samples=0,
            checkpoint_every=args.steps,
            progress=False,
        )
        refiner = result.refiner
        assert refiner.num_parameters() == configs[name]["parameters"] and refiner.config.offset_scale == 1
        refiners[name] = refiner
        training[name] = {"seconds": time.perf_counter() - begun, "loss": result.final_loss}
        print(f"trained {name}: final loss {result.final_loss:.4g}, {training[name]['seconds']:.0f} s", flush=True)

    # 1. Offset errors by sigma, on one trajectory per held-out prompt (prompt i from seed eval_seed + i).
    call_record = {**call, "num_inference_steps": RECORD_STEPS}
    by_sigma = {name: offset_errors_by_sigma(pipe, refiner, eval_prompts, args.eval_seed, call_record, progress=False)
                for name, refiner in refiners.items()}
    print(f"offset errors done, {time.perf_counter() - started:.0f} s", flush=True)

    # 2. Plans against a many-step Heun solve from the same prompts and noise.
    reference = reference_solve(pipe, eval_prompts, eval_seeds, args.reference_steps, call)
    turbo = heun_pipeline(pipe)

    def fidelity(plan: str) -> float:
        turbo.set_plan(plan)
        return float(psnr(sample_latents(turbo, eval_prompts, eval_seeds, call), reference).mean())

    fidelities = {}
    for name, refiner in refiners.items():
        turbo.load_refiner(refiner)
        fidelities[name] = {plan: fidelity(plan) for plan in args.plans}
    turbo.load_refiner(untrained_like(next(iter(refiners.values()))))
    fidelities["zero refiner (untrained)"] = {plan: fidelity(plan) for plan in args.plans}
    fidelities["perfect refiner (R steps as Heun steps)"] = {plan: fidelity(plan.replace("R", "H"))
                                                             for plan in args.plans}
    elapsed = time.perf_counter() - started

    print(f"\n{args.steps} training steps per variant (batch {args.batch_size}, {len(train_prompts)} prompts); "
          f"{len(eval_prompts)} held-out prompts and seeds; offset scale 1 (not calibrated); latent PSNR against "
          f"{args.reference_steps}-step Heun; total {elapsed / 60:.1f} min\n")
    plans = " | ".join(f"`{plan}`" for plan in args.plans)
    print(f"| conditioning | width | parameters | final loss | offset error σ < 0.1 | offset error σ 0.1-0.6 | {plans} |")
    print("|---|---|---|---|---|---|" + "---|" * len(args.plans))
    for name in args.variants:
        rows = by_sigma[name]
        cells = " | ".join(f"{fidelities[name][plan]:.2f} dB" for plan in args.plans)
        print(f"| {DESCRIPTIONS[name]} | {configs[name]['overrides']['hidden_size']} | "
              f"{configs[name]['parameters']:,} ({100 * configs[name]['parameters'] / base_parameters:.1f}%) | "
              f"{training[name]['loss']:.4g} | {pooled_error(rows, 0, 0.1):.3f} | {pooled_error(rows, 0.1, 0.6):.3f} | "
              f"{cells} |")
    for name in ("zero refiner (untrained)", "perfect refiner (R steps as Heun steps)"):
        error = "1" if name.startswith("zero") else "0"
        cells = " | ".join(f"{fidelities[name][plan]:.2f} dB" for plan in args.plans)
        print(f"| {name} | | | | {error} | {error} | {cells} |")

    first = by_sigma[args.variants[0]]
    print("\nrelative offset error by sigma (0 exact, 1 no better than no offset):\n")
    print("| sigma | pairs | true offset rms | " + " | ".join(DESCRIPTIONS[n] for n in args.variants) + " |")
    print("|---|---|---|" + "---|" * len(args.variants))
    for index, row in enumerate(first):
        cells = " | ".join(f"{by_sigma[name][index]['relative_error']:.3f}" for name in args.variants)
        print(f"| {row['sigma_min']:g}-{row['sigma_max']:g} | {row['pairs']} | {row['true_offset_rms']:.3f} | {cells} |")
    print("\ntraining seconds: " + ", ".join(f"{n} {t['seconds']:.0f}" for n, t in training.items()))


if __name__ == "__main__":
    main()
