"""The ``flowturbo`` command: ``generate`` (the main job), ``train-refiner``, ``calibrate-refiner``, ``calibrate``
(a plan and grid for a model) and ``bench``."""

from __future__ import annotations

import argparse
import sys


def _dtype(name: str):
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def add_generate_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="generate a grid with FlowTurbo and with the pipeline's own scheduler, and compare their cost",
        description="Generate images for a few prompts with FlowTurbo and with the pipeline's default scheduler, "
        "print time per image and model evaluations side by side, and write the images as a PNG grid. Runs "
        "offline on the bundled model by default.",
    )
    parser.add_argument("--model", help="diffusers pipeline: local folder or Hub id (default: the bundled model)")
    parser.add_argument("--refiner", help="refiner folder or Hub id; 'none' for none (default: the model's refiner/)")
    parser.add_argument("--plan", help="FlowTurbo plan, e.g. H1P5R3 or H1P* (default: the refiner's recommended plan)")
    parser.add_argument("--steps", type=int, help="FlowTurbo steps for a fill plan such as H1P* (default: 10)")
    parser.add_argument("--baseline-steps", type=int, help="steps for the pipeline's own scheduler")
    parser.add_argument("--prompt", action="append", dest="prompts", help="a prompt (repeat for several)")
    parser.add_argument("--seed", type=int, default=0)
    add_call_arguments(parser)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--output", default="flowturbo_grid.png", help="PNG to write (default: flowturbo_grid.png)")
    add_compile_argument(parser)
    parser.set_defaults(run=run_generate)


def add_call_arguments(parser) -> None:
    """The pipeline call arguments a model needs: ``--pipeline-kwargs`` (any, as JSON) and the usual three flags."""
    parser.add_argument("--pipeline-kwargs", metavar="JSON", default="{}",
                        help="pipeline call arguments as a JSON object, e.g. '{\"max_sequence_length\": 32, "
                        "\"true_cfg_scale\": 4, \"negative_prompt\": \"\"}' (the flags below override its keys)")
    parser.add_argument("--guidance-scale", type=float)
    parser.add_argument("--height", type=int)
    parser.add_argument("--width", type=int)


def call_arguments(args) -> dict:
    """The call arguments of ``add_call_arguments``: ``--pipeline-kwargs`` with the explicit flags on top.

    Raises ``SystemExit`` with a clear message for JSON that is not an object of argument names.
    """
    import json

    try:
        arguments = json.loads(args.pipeline_kwargs)
    except json.JSONDecodeError as error:
        raise SystemExit(f"--pipeline-kwargs is not valid JSON ({error.msg} at character {error.pos}): "
                         f"{args.pipeline_kwargs!r}. Write e.g. '{{\"max_sequence_length\": 32}}'.") from error
    if not isinstance(arguments, dict):
        raise SystemExit(f"--pipeline-kwargs must be a JSON object of pipeline call arguments, got {type(arguments).__name__}: "
                         f"{args.pipeline_kwargs!r}. Write e.g. '{{\"max_sequence_length\": 32}}'.")
    for key in ("guidance_scale", "height", "width"):
        if getattr(args, key, None) is not None:
            arguments[key] = getattr(args, key)
    return arguments


def add_compile_argument(parser) -> None:
    parser.add_argument(
        "--compile", nargs="?", const="default", metavar="MODE",
        help="compile FlowTurbo's step graphs (torch.compile); MODE e.g. reduce-overhead for CUDA graphs on GPU",
    )


def compile_mode(args):
    """``False`` without --compile, ``None`` for torch's default mode, else the mode named."""
    if args.compile is None:
        return False
    return None if args.compile == "default" else args.compile


def run_generate(args) -> int:
    from .generate import DEFAULT_PROMPTS, compare, report, save_grid

    call_kwargs = call_arguments(args)
    prompts = args.prompts or DEFAULT_PROMPTS
    runs = compare(
        model=args.model,
        refiner=args.refiner,
        plan=args.plan,
        steps=args.steps,
        baseline_steps=args.baseline_steps,
        prompts=prompts,
        seed=args.seed,
        device=args.device,
        dtype=_dtype(args.dtype),
        call_kwargs=call_kwargs,
        compile_mode=compile_mode(args),
    )
    print(report(runs))
    print(f"Wrote {save_grid(runs, prompts, args.output)}")
    return 0


def add_train_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "train-refiner",
        help="distil a velocity refiner from a flow pipeline, data-free (runs under accelerate launch too)",
        description="Train a VelocityRefiner for a diffusers flow pipeline from the pipeline's own sampling "
        "trajectories (no data set needed). Writes OUTPUT_DIR/refiner (ready to push), checkpoints, loss.csv. "
        "Multi-GPU or multi-node: run it under `accelerate launch`. See docs/training.md.",
    )
    parser.add_argument("--model", help="diffusers pipeline: local folder or Hub id (default: the bundled model)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompts", help="text file with one prompt per line")
    source.add_argument("--class-labels", nargs="+", help="class labels (ints for class-conditional pipelines)")
    source.add_argument("--images", help="folder of captioned images (metadata.jsonl or .txt captions): train on "
                        "real data as in the paper; needs --height and --width")
    parser.add_argument("--prompt-template", default="{}", help="prompt made from each class label, e.g. 'a photo of a {}'")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--push-to-hub", metavar="REPO", help="upload the refiner to this Hub repo when done")
    parser.add_argument("--private", action="store_true", help="create the Hub repo as private")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=16, help="global batch, split across processes")
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--lr-scheduler", default="constant",
                        help="learning-rate schedule from diffusers.optimization: constant, cosine, linear, ...")
    parser.add_argument("--lr-warmup-steps", type=int, default=0)
    parser.add_argument("--dt-range", type=float, nargs=2, default=(0.0, 0.12), metavar=("MIN", "MAX"))
    parser.add_argument("--sigma-range", type=float, nargs=2, default=(0.0, 1.0), metavar=("MIN", "MAX"))
    parser.add_argument("--mixed-precision", default="no", choices=["no", "fp16", "bf16"])
    parser.add_argument("--gradient-accumulation-steps", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint-every", type=int, default=500)
    parser.add_argument("--ema-decay", type=float, help="keep an EMA of the weights with this decay (e.g. 0.999)")
    parser.add_argument("--record-steps", type=int, help="the pipeline's own step count for the teacher trajectories")
    parser.add_argument("--base-denoiser", default="transformer", metavar="COMPONENT",
                        help="the pipeline component the refiner replaces and learns from: 'transformer', or "
                        "'transformer_2' for the low-noise expert of a two-expert pipeline (Wan 2.2 A14B)")
    add_call_arguments(parser)
    parser.add_argument("--hidden-size", type=int, help="refiner width (default: derived from the base model)")
    parser.add_argument("--eval-plan", default="H1P5R3", help="plan for the quality figures in the model card")
    parser.add_argument("--calibration-plans", nargs="+", metavar="PLAN",
                        help="plans with R steps to choose the refiner's offset scale on (default: the eval plan)")
    parser.add_argument("--calibration-samples", type=int, default=8,
                        help="held-out samples for that choice; 0 keeps the offset as trained (scale 1)")
    parser.add_argument("--recommendation-samples", type=int, default=8,
                        help="held-out samples on which R plans are measured against training-free plans of the same "
                        "cost to choose the recommended plans; 0 keeps the default recommendation, unmeasured")
    parser.add_argument("--tensorboard", action="store_true", help="also log to tensorboard (needs tensorboard)")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in OUTPUT_DIR")
    parser.add_argument("--overwrite", action="store_true", help="start again in an existing OUTPUT_DIR")
    parser.set_defaults(run=run_train)


def run_train(args) -> int:
    from .training import RefinerTrainingConfig, train_refiner

    call_kwargs = call_arguments(args)
    model = args.model
    if model is None:
        from .bundled import BUNDLED_CALL_DEFAULTS, bundled_model_path

        model = str(bundled_model_path())
        call_kwargs = {**{k: v for k, v in BUNDLED_CALL_DEFAULTS.items() if k != "num_inference_steps"}, **call_kwargs}
    labels = None
    if args.class_labels:
        labels = [int(label) if label.isdigit() and args.prompt_template == "{}" else args.prompt_template.format(label)
                  for label in args.class_labels]
    config = RefinerTrainingConfig(
        output_dir=args.output_dir,
        steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        lr_scheduler=args.lr_scheduler,
        lr_warmup_steps=args.lr_warmup_steps,
        dt_range=tuple(args.dt_range),
        sigma_range=tuple(args.sigma_range),
        mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
        ema_decay=args.ema_decay,
        record_steps=args.record_steps,
        call_kwargs=call_kwargs,
        refiner_kwargs={"hidden_size": args.hidden_size} if args.hidden_size else {},
        base_denoiser=args.base_denoiser,
        eval_plan=args.eval_plan or None,
        calibration_plans=tuple(args.calibration_plans) if args.calibration_plans else None,
        calibration_samples=args.calibration_samples,
        recommendation_samples=args.recommendation_samples,
        report_to_tensorboard=args.tensorboard,
        resume=args.resume,
        overwrite=args.overwrite,
        push_to_hub=args.push_to_hub,
        hub_private=args.private or None,
    )
    print(f"Pipeline call arguments for the teacher's trajectories: {call_kwargs or 'the pipeline defaults'} (give the "
          "model's own with --pipeline-kwargs, --height and --width)")
    result = train_refiner(model, prompt_file=args.prompts, class_labels=labels, images=args.images, config=config)
    print(f"Final loss {result.final_loss:.4g}; refiner written to {result.output_dir}")
    if result.metrics:
        print(", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in result.metrics.items()
                        if k not in ("calibration", "recommended_plans", "refiner_pays")))
        print_recommendation(result.refiner.config.training_info.get("plan_measurements"))
    return 0


def print_recommendation(recommendation: dict | None) -> None:
    """Print what :func:`~flowturbo_diffusers.training.evaluation.recommend_plans` measured and chose."""
    if not recommendation:
        return
    from .model_card import measured_plans_table

    print(measured_plans_table(recommendation))


def add_calibrate_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "calibrate-refiner",
        help="choose a trained refiner's offset scale against a many-step Heun solve, and save the refiner",
        description="Run the given FlowTurbo plans with the refiner's offset scaled by each candidate, keep the "
        "scale whose final latents come closest to a many-step Heun solve from the same noise (mean log relative "
        "error), and save the refiner with it in its config. `flowturbo train-refiner` does this itself; this "
        "command calibrates refiners trained before, or for other plans. See docs/refiner.md.",
    )
    parser.add_argument("--model", help="diffusers pipeline: local folder or Hub id (default: the bundled model)")
    parser.add_argument("--refiner", required=True, help="refiner folder or Hub id")
    parser.add_argument("--output-dir", required=True, help="folder to save the calibrated refiner to")
    parser.add_argument("--plans", nargs="+", default=["H1P5R3"], metavar="PLAN", help="plans with R steps")
    parser.add_argument("--prompts", help="text file with one prompt per line (default: the bundled model's "
                        "prompts, or a few generic ones)")
    parser.add_argument("--samples", type=int, default=16, help="prompts x seeds to calibrate on")
    parser.add_argument("--scales", type=float, nargs="+", metavar="SCALE",
                        help="candidate scales (default 0.2 to 1 in steps of 0.1)")
    parser.add_argument("--reference-steps", type=int, default=100)
    parser.add_argument("--seed", type=int, default=20_000, help="first noise seed")
    parser.add_argument("--recommendation-samples", type=int, default=8,
                        help="more samples (the seeds after the calibration ones) on which R plans are measured "
                        "against training-free plans of the same cost to choose the recommended plans; 0 keeps the "
                        "refiner's recommendation")
    add_call_arguments(parser)
    parser.set_defaults(run=run_calibrate)


def run_calibrate(args) -> int:
    from .refiner import VelocityRefiner
    from .training.evaluation import (
        DEFAULT_OFFSET_SCALES,
        calibrate_offset_scale,
        check_calibration_plans,
        recommend_plans,
    )

    check_calibration_plans(args.plans)
    if args.samples < 1 or args.recommendation_samples < 0:
        raise SystemExit(f"--samples must be at least 1 and --recommendation-samples at least 0, got {args.samples} "
                         f"and {args.recommendation_samples}.")
    pipe, call_kwargs, prompts = _pipeline_and_prompts(args)
    refiner = VelocityRefiner.from_pretrained(args.refiner)
    refiner.check_compatible(pipe.transformer)
    chosen = [prompts[i % len(prompts)] for i in range(args.samples)]
    figures = calibrate_offset_scale(pipe, refiner, args.plans, chosen, [args.seed + i for i in range(args.samples)],
                                     call_kwargs, args.reference_steps, tuple(args.scales or DEFAULT_OFFSET_SCALES))
    for scale, row in figures["errors"].items():
        errors = ", ".join(f"{plan} {error:.4f}" for plan, error in row.items())
        chosen = "  <- chosen" if scale == figures["offset_scale"] else ""
        print(f"offset scale {scale:g}: relative error {errors}{chosen}")
    if args.recommendation_samples:
        first = args.seed + args.samples
        chosen = [prompts[(args.samples + i) % len(prompts)] for i in range(args.recommendation_samples)]
        recommendation = recommend_plans(pipe, refiner, chosen, [first + i for i in range(args.recommendation_samples)],
                                         call_kwargs, args.reference_steps)
        refiner.register_to_config(recommended_plans=recommendation["recommended_plans"], training_info={
            **(refiner.config.training_info or {}), "plan_measurements": recommendation})
        print_recommendation(recommendation)
    refiner.save_pretrained(args.output_dir)
    print(f"Saved the refiner with offset_scale {figures['offset_scale']:g} to {args.output_dir}")
    return 0


def add_plan_calibration_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "calibrate",
        help="find the plan and sigma grid closest to the model's own many-step solve at a cost, as a scheduler",
        description="Search FlowTurbo plans (H, P, E steps) and sigma grids for one model at a budget of base-model "
        "evaluations, data-free: a dynamic program over the model's own Heun solves of a few prompts and seeds, "
        "then a refinement of the times. Writes OUTPUT_DIR/scheduler (a FlowTurboScheduler config with a model card; "
        "load it with FlowTurboScheduler.from_pretrained(OUTPUT_DIR, subfolder='scheduler')) and calibration.json. "
        "See docs/calibration.md.",
    )
    parser.add_argument("--model", help="diffusers pipeline: local folder or Hub id (default: the bundled model)")
    parser.add_argument("--budget", type=int, required=True, help="base-model evaluations per image")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--prompts", help="text file with one prompt per line (default: the bundled model's prompts, "
                        "or a few generic ones)")
    parser.add_argument("--samples", type=int, default=8, help="prompts x seeds calibrated on")
    parser.add_argument("--held-out-samples", type=int, default=8, help="other seeds, only evaluated on")
    parser.add_argument("--candidates", type=int, default=24, help="intervals of the candidate time grid")
    parser.add_argument("--max-span", type=int, default=12, help="the longest step, in candidate intervals")
    parser.add_argument("--kinds", default="HPE", help="step kinds to search, from HPE (E alone: an Euler grid)")
    parser.add_argument("--refine-passes", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--push-to-hub", metavar="REPO", help="upload the scheduler folder to this Hub repo")
    add_call_arguments(parser)
    parser.set_defaults(run=run_plan_calibration)


def run_plan_calibration(args) -> int:
    import json
    from pathlib import Path

    from .adapters import architecture_hash
    from .calibration import CalibrationSettings, calibrate_plan

    settings = CalibrationSettings(budget=args.budget, candidates=args.candidates, max_span=args.max_span,
                                   kinds=args.kinds, samples=args.samples, held_out_samples=args.held_out_samples,
                                   refine_passes=args.refine_passes, seed=args.seed)
    pipe, call_kwargs, prompts = _pipeline_and_prompts(args)
    result = calibrate_plan(pipe, prompts, settings, call_kwargs)
    base_model = args.model or "flowturbo-diffusers/bundled-tiny-digits-sd3"
    scheduler = result.scheduler(pipe.scheduler.config, base_model=base_model,
                                 fingerprint={"transformer": type(pipe.transformer).__name__,
                                              "architecture": architecture_hash(pipe.transformer.config)})
    output = Path(args.output_dir)
    scheduler.save_pretrained(output / "scheduler")
    (output / "calibration.json").write_text(json.dumps({"plan": result.plan, "grid": result.grid,
                                                         "figures": result.figures}, indent=2) + "\n")
    figures = result.figures
    print(f"Plan {result.plan} ({figures['plan_evaluations']} evaluations), grid "
          f"{', '.join(f'{value:.3f}' for value in result.grid)}")
    for prefix in ("calibration", "held_out"):
        if f"{prefix}_psnr_db" in figures:
            print(f"{prefix.replace('_', '-')} samples: {figures[f'{prefix}_psnr_db']:.2f} dB latent PSNR; best "
                  f"uncalibrated ({figures[f'{prefix}_best_uncalibrated']}): "
                  f"{figures[f'{prefix}_best_uncalibrated_psnr_db']:.2f} dB")
    print(f"Wrote {output / 'scheduler'} in {figures['seconds']:.0f} s")
    if args.push_to_hub:
        scheduler.push_to_hub(args.push_to_hub, subfolder="scheduler")
    return 0


def _pipeline_and_prompts(args):
    """The pipeline (``--model`` or the bundled one), its call arguments and the prompts to use."""
    from .training import read_prompts

    call_kwargs = call_arguments(args)
    if args.model is None:
        from .bundled import digits
        from .bundled import BUNDLED_CALL_DEFAULTS, load_bundled_pipeline

        pipe = load_bundled_pipeline()
        call_kwargs = {**{k: v for k, v in BUNDLED_CALL_DEFAULTS.items() if k != "num_inference_steps"}, **call_kwargs}
        prompts = digits.all_prompts()
    else:
        from diffusers import DiffusionPipeline

        pipe = DiffusionPipeline.from_pretrained(args.model)
        prompts = ["a photo of a cat", "a red car in the rain", "a bowl of fruit", "a mountain lake at dawn"]
    if args.prompts:
        prompts = read_prompts(args.prompts)
    pipe.set_progress_bar_config(disable=True)
    return pipe, call_kwargs, prompts


def add_bench_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="benchmark FlowTurbo (calibrated plans included) against Euler, Heun, DPM-Solver++, UniPC, OSS, "
        "time-uniform and AYS-style grids and cache hooks (quality vs latency)",
        description="Run every sampler from the same noise and prompts; measure fidelity to a converged reference "
        "(latent and pixel PSNR), FID/KID and prompt accuracy (with a scorer: the bundled model's classifier), time "
        "per image and model evaluations, and the share of a whole call (VAE decoding included) outside the denoising "
        "loop; write JSON, Markdown, a Pareto plot and a sample grid. FlowTurbo plans and OSS Euler grids are "
        "calibrated first, on prompts and seeds that are not the benchmark's samples. Any diffusers flow pipeline "
        "runs: a baseline that cannot run in it is replaced by an equivalent (FlowTurbo's H* for Heun) or left out, "
        "with a note in the report. Default model: the bundled one. See docs/benchmarks.md.",
    )
    parser.add_argument("--model", help="diffusers flow pipeline: local folder or Hub id (default: the bundled model)")
    parser.add_argument("--refiner", help="refiner folder or Hub id (default: the model's refiner/); 'none' for none")
    parser.add_argument("--output-dir", default="benchmark-results")
    parser.add_argument("--docs", metavar="PATH", help="also write the report there (e.g. docs/benchmarks.md)")
    parser.add_argument("--quality-samples", type=int, default=200)
    parser.add_argument("--real-samples", type=int, default=1000)
    parser.add_argument("--reference-steps", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per sampler and batch size (median)")
    parser.add_argument("--drift-window", type=int, default=4,
                        help="timed calls either side that measure the machine's speed drift, which is then divided "
                        "out of each call's time; 0 keeps raw wall times (raw times are in benchmark.json either way)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true",
                        help="two points per sampler family, one on fixed grids, one small calibration (a smoke test)")
    parser.add_argument("--calibration-budgets", type=int, nargs="*", metavar="EVALUATIONS",
                        help="base evaluations of the calibrated FlowTurbo plans and OSS Euler grids (default: 4 6 8 "
                        "12; each takes minutes on a CPU); give none to skip calibration")
    parser.add_argument("--end-to-end-steps", type=int, default=50,
                        help="steps of the whole Euler call (VAE decoding included) whose share outside the denoising "
                        "loop is measured")
    parser.add_argument("--compile-plan", default="H1P5R3", help="plan for the compiled-vs-eager comparison")
    add_compile_argument(parser)
    add_call_arguments(parser)
    parser.add_argument("--num-processes", type=int, default=1,
                        help="split generation over this many processes (relaunches under accelerate launch)")
    parser.add_argument("--from-results", action="store_true",
                        help="measure nothing: write the reports (and --docs) again from OUTPUT_DIR/benchmark.json")
    parser.set_defaults(run=run_bench)


def run_bench(args) -> int:
    import os
    from pathlib import Path

    from .benchmark.report import rewrite_outputs, write_outputs

    docs = Path(args.docs) if args.docs else None
    if args.from_results:
        _print_bench_summary(rewrite_outputs(Path(args.output_dir), docs), args)
        return 0
    if args.num_processes > 1 and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return _relaunch_with_accelerate(args.num_processes, args.argv)
    from .benchmark.run import BenchmarkSettings, run_benchmark

    settings = BenchmarkSettings(
        model=args.model, refiner=args.refiner, quality_samples=args.quality_samples, real_samples=args.real_samples,
        reference_steps=args.reference_steps, batch_sizes=tuple(args.batch_sizes), repeats=args.repeats,
        seed=args.seed, quick=args.quick, drift_window=args.drift_window, call_kwargs=call_arguments(args),
        calibration_budgets=None if args.calibration_budgets is None else tuple(args.calibration_budgets),
        end_to_end_steps=args.end_to_end_steps,
    )
    mode = compile_mode(args)
    command = "flowturbo " + " ".join(args.argv)

    def write(results, context):
        return write_outputs(results, context, Path(args.output_dir), docs, command)

    outcome = run_benchmark(settings, compile_plan=args.compile_plan if mode is not False else None,
                            compile_mode=mode or None, on_results=write)
    if outcome is None:  # not the main process
        return 0
    _print_bench_summary(write(*outcome), args)
    return 0


def _print_bench_summary(summary: dict, args) -> None:
    from .benchmark.markdown import headline_markdown

    print(headline_markdown(summary["headline"]))
    for target in summary["targets"]:
        interval = target.get("interval")
        noise = ""
        if interval:
            noise = f" (95% timing interval {interval}{', within noise' if target['within_noise'] else ''})"
        print(f"[{'met' if target['met'] else 'MISSED'}] {target['target']}: {target['measured']}{noise}")
    print(f"Wrote {args.output_dir}/benchmark.json, benchmark.md, pareto.png, samples.png"
          + (f" and {args.docs}" if args.docs else ""))


def _relaunch_with_accelerate(processes: int, arguments: list[str]) -> int:
    """Run this same command under ``accelerate launch`` with ``processes`` processes (gloo on CPU)."""
    import subprocess

    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m",
               "flowturbo_diffusers.cli", *arguments]
    return subprocess.call(command)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flowturbo", description="FlowTurbo sampling for diffusers flow pipelines.")
    subparsers = parser.add_subparsers(title="commands")
    add_generate_parser(subparsers)
    add_train_parser(subparsers)
    add_calibrate_parser(subparsers)
    add_plan_calibration_parser(subparsers)
    add_bench_parser(subparsers)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    if not hasattr(args, "run"):
        parser.print_help()
        return 1
    _quiet_libraries()
    return args.run(args)


def _quiet_libraries() -> None:
    """Keep the command's output to its own report: diffusers and transformers log per-call notices otherwise."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()


if __name__ == "__main__":
    sys.exit(main())
