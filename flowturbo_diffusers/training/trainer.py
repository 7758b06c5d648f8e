"""Distil a VelocityRefiner from a frozen flow pipeline, data-free, on accelerate (method.md, "The refiner").

Recipe, per training step: take recorded teacher calls ``(x, sigma, v)`` (``trajectories.py``), step each towards the
data by ``dt ~ U[dt_min, dt_max]`` along its own velocity, ``x' = x - dt * v``, ask the teacher for the velocity there
with the same conditioning, and regress ``v + refiner(x', sigma - dt, v, cond)`` onto it.

Runs on one CPU, one GPU, or many processes under ``accelerate launch`` (data parallel; each process records its
share of the prompts and takes its share of the global batch). Checkpoints (accelerate ``save_state``) are written
atomically every ``checkpoint_every`` steps; ``resume=True`` continues exactly where training stopped, because every
random draw of step ``k`` on process ``p`` comes from a generator seeded by ``(seed, p, k)``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..adapters import adapter_for
from ..distributed import has_accelerator
from ..hooks import without_cast_warning
from .trajectories import (
    check_dt_range,
    group_calls,
    query_teacher,
    record_teacher_calls,
    stack_calls,
    step_towards_data,
    timestep_convention,
)

CHECKPOINTS = "checkpoints"
REFINER_FOLDER = "refiner"


@dataclass
class RefinerTrainingConfig:
    """Settings of a refiner training run (the CLI flags of ``flowturbo train-refiner`` map onto these)."""

    output_dir: str
    steps: int = 2000
    batch_size: int = 16  # global: split across processes
    learning_rate: float = 1e-4
    lr_scheduler: str = "constant"  # a diffusers.optimization schedule: constant, cosine, linear, ...
    lr_warmup_steps: int = 0
    dt_range: tuple[float, float] = (0.0, 0.12)
    sigma_range: tuple[float, float] = (0.0, 1.0)  # train on teacher calls with sigma in this range
    mixed_precision: str = "no"
    gradient_accumulation_steps: int = 1
    seed: int = 0
    checkpoint_every: int = 500
    checkpoints_to_keep: int = 2
    ema_decay: float | None = None
    log_every: int = 10
    record_steps: int | None = None  # the pipeline's own step count when recording trajectories
    record_batch_size: int = 4
    call_kwargs: dict[str, Any] = field(default_factory=dict)  # extra pipeline call arguments (guidance, size...)
    refiner_kwargs: dict[str, Any] = field(default_factory=dict)  # overrides for VelocityRefiner.for_transformer
    base_model: str | None = None
    # The pipeline component the refiner replaces, and so the teacher whose calls are recorded: "transformer", or
    # "transformer_2" for the low-noise expert of a two-expert pipeline (Wan 2.2 A14B), which the late R steps reach.
    base_denoiser: str = "transformer"
    eval_plan: str | None = "H1P5R3"
    eval_samples: int = 4
    # The refiner's offset scale is chosen on these plans (None: the eval plan, if any) against a Heun solve, on
    # held-out prompts and seeds (evaluation.calibrate_offset_scale); 0 samples keeps the offset as trained (scale 1).
    calibration_plans: tuple[str, ...] | None = None
    calibration_samples: int = 8
    # The recommended plans are measured on this many more held-out samples (evaluation.recommend_plans): R plans
    # against training-free plans of the same cost; 0 keeps the default recommendation, unmeasured.
    recommendation_samples: int = 8
    report_to_tensorboard: bool = False
    overwrite: bool = False
    resume: bool = False
    push_to_hub: str | None = None
    hub_private: bool | None = None
    license: str | None = None

    # Settings that must not change between a run and its resumption.
    RESUME_KEYS = ("steps", "batch_size", "learning_rate", "lr_scheduler", "lr_warmup_steps", "dt_range", "sigma_range",
                   "seed", "ema_decay", "gradient_accumulation_steps", "record_steps", "call_kwargs", "refiner_kwargs",
                   "base_denoiser")


@dataclass
class TrainingResult:
    refiner: Any
    output_dir: Path
    final_loss: float
    metrics: dict[str, Any]


def validate(config: RefinerTrainingConfig, prompts: list) -> None:
    """Refuse bad settings before any work starts, with what to change."""
    check_dt_range(config.dt_range)
    sigma_min, sigma_max = config.sigma_range
    if not (0 <= sigma_min < sigma_max <= 1):
        raise ValueError(f"The sigma range must satisfy 0 <= min < max <= 1, got {config.sigma_range}.")
    if not prompts:
        raise ValueError("No prompts to record teacher trajectories from: pass a non-empty prompt file or class labels.")
    if config.recommendation_samples < 0:
        raise ValueError(f"recommendation_samples must be 0 (keep the default plans) or more, got "
                         f"{config.recommendation_samples}.")
    if config.calibration_samples < 0:
        raise ValueError(f"calibration_samples must be 0 (no calibration) or more, got {config.calibration_samples}.")
    if calibration_plans(config):
        from .evaluation import check_calibration_plans

        check_calibration_plans(calibration_plans(config))
    if config.steps <= 0 or config.batch_size <= 0:
        raise ValueError(f"steps and batch_size must be positive, got {config.steps} and {config.batch_size}.")
    schedules = _lr_schedules()
    if config.lr_scheduler not in schedules:
        raise ValueError(f"Unknown lr_scheduler {config.lr_scheduler!r}; choose one of {', '.join(schedules)}.")
    if not 0 <= config.lr_warmup_steps < config.steps:
        raise ValueError(f"lr_warmup_steps must be in [0, steps={config.steps}), got {config.lr_warmup_steps}.")
    output = Path(config.output_dir)
    if output.exists() and any(output.iterdir()) and not (config.overwrite or config.resume):
        raise FileExistsError(
            f"The output directory {output} already exists and is not empty. Pass overwrite=True (--overwrite) to "
            "start again there, resume=True (--resume) to continue its training, or choose another directory."
        )


def calibration_plans(config: RefinerTrainingConfig) -> list[str]:
    """The plans the offset scale is calibrated on: ``calibration_plans``, else the eval plan; none (no calibration)
    with ``calibration_samples=0`` or neither."""
    if not config.calibration_samples:
        return []
    return list(config.calibration_plans or ([config.eval_plan] if config.eval_plan else []))


def calibration_summary(calibration: dict) -> dict:
    """What the refiner's card records of a calibration: its plans, samples, reference, and the relative error at
    each scale as the geometric mean over the plans (the figure the scale is chosen by)."""
    return {
        "plans": calibration["plans"],
        "samples": calibration["samples"],
        "reference": calibration["reference"],
        "relative_error_by_scale": {scale: round(math.exp(statistics.fmean(map(math.log, row.values()))), 6)
                                    for scale, row in calibration["errors"].items()},
    }


def read_prompts(path: str | os.PathLike) -> list[str]:
    """Prompts from a text file, one per line (blank lines and ``#`` comments skipped)."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    prompts = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not prompts:
        raise ValueError(f"The prompt file {path} has no prompts (one per line; blank lines and # comments skipped).")
    return prompts


def load_teacher(model, dtype: torch.dtype | None = None, denoiser: str = "transformer"):
    """A pipeline (loaded from a path or Hub id if needed) checked to be a flow pipeline FlowTurbo can refine, whose
    ``denoiser`` component (``transformer``, or ``transformer_2`` for a two-expert pipeline's low-noise expert) is the
    teacher.

    Raises:
        ValueError: if the pipeline has no such component, its class cannot be refined (with the reason), or its
            scheduler is not a flow-matching one.
    """
    from ..scheduler import FlowTurboScheduler

    if isinstance(model, (str, os.PathLike)):
        from diffusers import DiffusionPipeline

        model = DiffusionPipeline.from_pretrained(model, torch_dtype=dtype or torch.float32)
    if getattr(model, denoiser, None) is None:
        raise ValueError(
            f"{type(model).__name__} has no `{denoiser}`: refiners are trained for transformer-based flow pipelines, "
            "to replace their `transformer` (or, with base_denoiser='transformer_2', a two-expert pipeline's "
            "low-noise expert)."
        )
    adapter_for(getattr(model, denoiser))  # raises, with the reason, for classes refiners cannot serve
    try:
        FlowTurboScheduler.from_config(model.scheduler.config)
    except ValueError as error:
        raise ValueError(f"{type(model).__name__} is not a flow-matching pipeline FlowTurbo can drive: {error}") from error
    return model


class _TrainingState:
    """The step counter, saved with every checkpoint (accelerate ``register_for_checkpointing``)."""

    def __init__(self):
        self.step = 0

    def state_dict(self):
        return {"step": self.step}

    def load_state_dict(self, state):
        self.step = int(state["step"])


def _generator(seed: int, process: int, step: int) -> torch.Generator:
    """The random draws of ``step`` on ``process``: a function of the three, so a resumed run draws the same."""
    entropy = np.random.SeedSequence([seed, process, step]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(entropy))


def sample_batch(groups, sizes, batch: int, dt_range, generator: torch.Generator):
    """Pick ``batch`` recorded calls from one group (chosen in proportion to its size) and a ``dt`` for each."""
    group = groups[int(torch.multinomial(sizes, 1, generator=generator))]
    indices = torch.randint(len(group), (batch,), generator=generator)
    dt = dt_range[0] + (dt_range[1] - dt_range[0]) * torch.rand(batch, generator=generator)
    return [group[i] for i in indices.tolist()], dt


def _checkpoints(output: Path) -> list[Path]:
    folder = output / CHECKPOINTS
    return sorted(folder.glob("step-*"), key=lambda p: int(p.name.split("-")[1])) if folder.exists() else []


def train_refiner(
    model,
    prompts: list | None = None,
    prompt_file: str | os.PathLike | None = None,
    class_labels: list | None = None,
    images: str | os.PathLike | None = None,
    config: RefinerTrainingConfig | None = None,
    progress: bool = True,
    **settings,
) -> TrainingResult:
    """Train a refiner for ``model`` (a pipeline, a local folder or a Hub id) and save it to ``output_dir/refiner``.

    Prompts come from ``prompts``, a ``prompt_file`` (one per line) or ``class_labels``. With ``images`` (a folder of
    captioned images, see ``data.py``) training uses real data as in the paper instead of teacher trajectories, and
    needs ``height`` and ``width`` in ``call_kwargs``. ``settings`` are fields of
    :class:`RefinerTrainingConfig` (``output_dir``, ``steps``, ``batch_size``, ``learning_rate``, ``dt_range``,
    ``mixed_precision``, ``seed``, ``resume``, ``push_to_hub``, ...).
    """
    from accelerate import Accelerator
    from diffusers.optimization import get_scheduler
    from tqdm.auto import tqdm

    from ..refiner import VelocityRefiner, model_name

    config = config or RefinerTrainingConfig(**settings)
    pairs = None
    if images is not None:
        from .data import load_image_folder

        pairs = load_image_folder(images)
        prompts = [caption for _, caption in pairs]
    elif prompt_file is not None:
        prompts = read_prompts(prompt_file)
    prompts = list(prompts if prompts is not None else class_labels or [])
    validate(config, prompts)
    output = Path(config.output_dir)
    _forget_previous_accelerator_settings()
    accelerator = Accelerator(
        mixed_precision=config.mixed_precision,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        log_with="tensorboard" if config.report_to_tensorboard else None,
        project_dir=str(output),
        cpu=not has_accelerator(),  # on CPU-only machines this is what makes `accelerate launch` use gloo
    )
    if config.batch_size % accelerator.num_processes:
        raise ValueError(
            f"batch_size {config.batch_size} is the global batch and must divide evenly over "
            f"{accelerator.num_processes} processes."
        )
    if config.resume and not _checkpoints(output):
        raise FileNotFoundError(f"resume=True but {output / CHECKPOINTS} holds no checkpoint to resume from.")
    teacher_dtype = torch.bfloat16 if accelerator.device.type == "cuda" else torch.float32
    pipe = load_teacher(model, teacher_dtype, config.base_denoiser)
    teacher = getattr(pipe, config.base_denoiser)
    base_model = config.base_model or (model if isinstance(model, str) else pipe.config.get("_name_or_path"))
    base_model = model_name(base_model)
    _prepare_output(accelerator, output, config)

    pipe.to(accelerator.device)
    pipe.set_progress_bar_config(disable=True)
    teacher.requires_grad_(False).eval()
    call_kwargs = dict(config.call_kwargs)
    if config.record_steps:
        call_kwargs["num_inference_steps"] = config.record_steps

    # 1. The teacher's trajectories (or the encoded images): each process takes its share of the prompts.
    share = prompts[accelerator.process_index :: accelerator.num_processes] or prompts[:1]
    show = progress and accelerator.is_local_main_process
    if pairs is not None:
        from .data import data_calls

        pair_share = pairs[accelerator.process_index :: accelerator.num_processes] or pairs[:1]
        calls = data_calls(pipe, pair_share, config.call_kwargs, config.record_batch_size, progress=show,
                           denoiser=config.base_denoiser)
    else:
        seeds_offset = config.seed * 100_003
        calls = record_teacher_calls(
            pipe, share, call_kwargs, config.record_batch_size, seeds_offset + accelerator.process_index, progress=show,
            denoiser=config.base_denoiser,
        )
    low, high = config.sigma_range
    calls = [call for call in calls if call.sigma is None or low <= float(call.sigma) <= high]
    if not calls:
        raise ValueError(f"No recorded teacher call of `{config.base_denoiser}` has sigma in {config.sigma_range}; "
                         "widen sigma_range (or record more steps, for an expert the pipeline calls on part of the "
                         "grid only).")
    adapter = timestep_convention(adapter_for(teacher), calls)
    groups = group_calls(calls)
    sizes = torch.tensor([len(group) for group in groups], dtype=torch.float64)

    # 2. The student (initialised from the seed, the same on every process), its optimiser and optionally its EMA.
    torch.manual_seed(config.seed)
    refiner = VelocityRefiner.for_transformer(teacher, base_model=base_model, base_denoiser=config.base_denoiser,
                                              **config.refiner_kwargs)
    with without_cast_warning():
        refiner.to(device=accelerator.device, dtype=torch.float32).train()
    optimizer = torch.optim.AdamW(refiner.parameters(), lr=config.learning_rate, weight_decay=0.0)
    # accelerate steps a prepared schedule once per process at each optimiser step, hence the factor (as in
    # diffusers' training scripts).
    lr_schedule = get_scheduler(config.lr_scheduler, optimizer,
                                num_warmup_steps=config.lr_warmup_steps * accelerator.num_processes,
                                num_training_steps=config.steps * accelerator.num_processes)
    refiner, optimizer, lr_schedule = accelerator.prepare(refiner, optimizer, lr_schedule)
    state = _TrainingState()
    accelerator.register_for_checkpointing(state)
    ema = None
    if config.ema_decay:
        from diffusers.training_utils import EMAModel

        ema = EMAModel(accelerator.unwrap_model(refiner).parameters(), decay=config.ema_decay)
        ema.to(accelerator.device)
        accelerator.register_for_checkpointing(ema)
    if config.resume:
        accelerator.load_state(str(_checkpoints(output)[-1]))
    if accelerator.is_main_process:
        accelerator.init_trackers("flowturbo-refiner") if config.report_to_tensorboard else None

    # 3. Training.
    local_batch = config.batch_size // accelerator.num_processes
    loss_log = output / "loss.csv"
    bar = tqdm(total=config.steps, initial=state.step, desc="Training refiner",
               disable=not (progress and accelerator.is_local_main_process))
    running, last_loss, started = [], float("nan"), time.perf_counter()
    while state.step < config.steps:
        for micro in range(config.gradient_accumulation_steps):
            generator = _generator(config.seed, accelerator.process_index, state.step * 1000 + micro)
            batch, dt = sample_batch(groups, sizes, local_batch, config.dt_range, generator)
            with accelerator.accumulate(refiner):
                loss = _loss(batch, dt, teacher, adapter, refiner, accelerator, teacher_dtype,
                             config.sigma_range, generator)
                accelerator.backward(loss)
                optimizer.step()
                lr_schedule.step()
                optimizer.zero_grad(set_to_none=True)
            running.append(loss.detach())
        state.step += 1
        if ema is not None:
            ema.step(accelerator.unwrap_model(refiner).parameters())
        if state.step % config.log_every == 0 or state.step == config.steps:
            last_loss = accelerator.gather(torch.stack(running).mean()[None]).mean().item()
            running = []
            bar.set_postfix(loss=f"{last_loss:.4g}")
            if accelerator.is_main_process:
                _append_loss(loss_log, state.step, last_loss, time.perf_counter() - started)
                if config.report_to_tensorboard:
                    accelerator.log({"loss": last_loss}, step=state.step)
        bar.update(1)
        if state.step % config.checkpoint_every == 0 or state.step == config.steps:
            _save_checkpoint(accelerator, output, state.step, config.checkpoints_to_keep)
    bar.close()

    # 4. The refiner folder, its figures and run record.
    trained = accelerator.unwrap_model(refiner)
    if ema is not None:
        ema.copy_to(trained.parameters())
    trained.eval().requires_grad_(False)
    checksum = torch.stack([p.detach().double().sum() for p in trained.parameters()]).sum()[None]
    checksums = accelerator.gather(checksum.to(accelerator.device)).tolist()
    metrics: dict[str, Any] = {}
    if accelerator.is_main_process:
        if calibration_plans(config):
            from .evaluation import calibrate_offset_scale

            # Prompts from the end of the list and their own seeds: apart from the evaluation's below.
            count = config.calibration_samples
            calibration_prompts = [prompts[-1 - i % len(prompts)] for i in range(count)]
            seeds = [20_000 + config.seed + i for i in range(count)]
            calibration = calibrate_offset_scale(pipe, trained, calibration_plans(config), calibration_prompts, seeds,
                                                 config.call_kwargs, progress=show)
            metrics["offset_scale"] = calibration["offset_scale"]
            metrics["calibration"] = calibration_summary(calibration)
        if config.eval_plan:
            from .evaluation import refiner_errors

            held_out = [prompts[i % len(prompts)] for i in range(config.eval_samples)]
            seeds = [10_000 + config.seed + i for i in range(config.eval_samples)]
            metrics.update(refiner_errors(pipe, trained, config.eval_plan, held_out, seeds, config.call_kwargs))
        recommendation = None
        if config.recommendation_samples:
            from .evaluation import recommend_plans

            # Prompts from the middle of the list and their own seeds: apart from calibration's and evaluation's.
            count = config.recommendation_samples
            chosen = [prompts[(len(prompts) // 2 + i) % len(prompts)] for i in range(count)]
            recommendation = recommend_plans(pipe, trained, chosen, [30_000 + config.seed + i for i in range(count)],
                                             config.call_kwargs, progress=show)
            trained.register_to_config(recommended_plans=recommendation["recommended_plans"])
            metrics["recommended_plans"] = recommendation["recommended_plans"]
            metrics["refiner_pays"] = recommendation["refiner_pays"]
        info = _training_info(config, base_model, prompts, last_loss, metrics, teacher, from_images=pairs is not None)
        if recommendation is not None:
            info["plan_measurements"] = recommendation
        trained.register_to_config(training_info=info)
        trained.save_pretrained(output / REFINER_FOLDER)
        _write_run_info(output, config, accelerator, local_batch, checksums, last_loss, metrics, len(calls))
        if config.push_to_hub:
            trained.push_to_hub(config.push_to_hub, private=config.hub_private)
    if config.report_to_tensorboard:
        accelerator.end_training()
    accelerator.wait_for_everyone()
    return TrainingResult(trained, output / REFINER_FOLDER, last_loss, metrics)


def _lr_schedules() -> list[str]:
    from diffusers.optimization import SchedulerType

    # piecewise_constant needs step rules of its own; the others need only warm-up and length.
    return [schedule.value for schedule in SchedulerType if schedule.value != "piecewise_constant"]


def _forget_previous_accelerator_settings() -> None:
    """accelerate keeps mixed precision and accumulation settings process-wide; a notebook or test that trains twice
    with other settings needs them cleared (the process group, if any, is kept)."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()


def _loss(batch, dt, transformer, adapter, refiner, accelerator, teacher_dtype, sigma_range, generator):
    sample, velocity, sigma, arguments = stack_calls(batch, accelerator.device, teacher_dtype, adapter)
    if velocity is None:  # data-based: noise the clean latent to a random sigma and ask the teacher there
        low, high = sigma_range
        sigma = (low + (high - low) * torch.rand(len(batch), generator=generator)).to(accelerator.device)
        noise = torch.randn(sample.shape, generator=generator).to(sample)
        mix = sigma.view((-1,) + (1,) * (sample.dim() - 1)).to(sample.dtype)
        sample = (1 - mix) * sample + mix * noise
        velocity = query_teacher(transformer, adapter, arguments, sample, sigma)
    # The step follows the velocity dx/dsigma; the refiner, like R steps, works on the model's output as it is.
    moved, moved_sigma = step_towards_data(sample, adapter.output_sign * velocity, sigma, dt,
                                                adapter.channel_axis)
    target = query_teacher(transformer, adapter, arguments, moved, moved_sigma)
    with accelerator.autocast():
        call = adapter.read(transformer, (), adapter.with_sample(arguments, moved, moved_sigma), None, sigma=moved_sigma)
        offset = refiner(call.sample, velocity, call.sigma, call.pooled, call.context, call.guidance, call.positions)
    return F.mse_loss((velocity.float() + offset.float()), target.float())


def _prepare_output(accelerator, output: Path, config: RefinerTrainingConfig) -> None:
    """Create the output folder (emptied with overwrite) and check a resumed run keeps its settings."""
    settings_file = output / "training_config.json"
    settings = {key: getattr(config, key) for key in RefinerTrainingConfig.RESUME_KEYS}
    settings = _as_json(settings)  # tuples become lists, as they come back from the file
    if accelerator.is_main_process:
        if config.overwrite and output.exists() and not config.resume:
            shutil.rmtree(output)
        output.mkdir(parents=True, exist_ok=True)
        if config.resume and settings_file.exists():
            saved = json.loads(settings_file.read_text())
            # A setting added since the run started (absent from its file) kept its default there.
            defaults = json.loads(json.dumps({key: getattr(RefinerTrainingConfig, key, None) for key in settings}))
            changed = {key: (saved.get(key, defaults[key]), value) for key, value in settings.items()
                       if saved.get(key, defaults[key]) != value}
            if changed:
                raise ValueError(
                    f"Cannot resume {output}: these settings differ from the interrupted run (saved, now): {changed}. "
                    "Resume with the same settings, or start a new run in another directory."
                )
        settings_file.write_text(json.dumps({**settings, "config": _as_json(asdict(config))}, indent=2))
    accelerator.wait_for_everyone()


def _as_json(value):
    """``value`` as JSON gives it back: tuples as lists, and call arguments JSON cannot hold (input images or videos
    as tensors or PIL images) as a description of their type and shape."""

    def describe(item):
        shape = getattr(item, "shape", None) or getattr(item, "size", None)
        return f"<{type(item).__name__} {tuple(shape) if shape is not None else ''}>".replace(" >", ">")

    return json.loads(json.dumps(value, default=describe))


def _save_checkpoint(accelerator, output: Path, step: int, keep: int) -> None:
    """``accelerator.save_state`` into a hidden folder, then renamed into place: never half-written."""
    final = output / CHECKPOINTS / f"step-{step:06d}"
    staging = output / CHECKPOINTS / f".step-{step:06d}.partial"
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
        staging.parent.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(staging))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(staging, final)
        for old in _checkpoints(output)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def _append_loss(path: Path, step: int, loss: float, seconds: float) -> None:
    new = not path.exists()
    with path.open("a", newline="") as handle:
        writer = csv.writer(handle)
        if new:
            writer.writerow(["step", "loss", "seconds"])
        writer.writerow([step, f"{loss:.6g}", f"{seconds:.1f}"])


def _training_info(config, base_model, prompts, final_loss, metrics, teacher, from_images=False) -> dict[str, Any]:
    info = {
        "method": "data-free distillation from the base model's own trajectories (FlowTurbo)",
        "base_model": base_model,
        "base_model_parameters": sum(p.numel() for p in teacher.parameters()),
        "data_source": f"{len(prompts)} {'captioned images' if from_images else 'prompts/labels'}, "
                       f"e.g. {prompts[0]!r}",
        "steps": config.steps,
        "batch_size": config.batch_size,
        "learning_rate": config.learning_rate,
        "lr_scheduler": config.lr_scheduler,
        "lr_warmup_steps": config.lr_warmup_steps,
        "dt_range": list(config.dt_range),
        "sigma_range": list(config.sigma_range),
        "ema_decay": config.ema_decay,
        "final_loss": final_loss,
        "metrics": metrics,
    }
    if config.license:
        info["license"] = config.license
    return info


def _write_run_info(output, config, accelerator, local_batch, checksums, final_loss, metrics, recorded_calls):
    (output / "run_info.json").write_text(json.dumps({
        "num_processes": accelerator.num_processes,
        "per_process_batch_size": local_batch,
        "global_batch_size": local_batch * accelerator.num_processes,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "recorded_teacher_calls_on_main_process": recorded_calls,
        "final_weight_checksums": checksums,
        "final_loss": final_loss,
        "metrics": metrics,
    }, indent=2))
