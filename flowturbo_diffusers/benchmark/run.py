"""Run the benchmark: every sampler from the same noise and prompts, quality against a converged reference and real
data, cost side by side in one run.

This module loads the model, calibrates the calibrated families' plans and grids (``calibration.py``) and
orchestrates; :mod:`.sampling` generates the samples, :mod:`.timing` times the calls, :mod:`.switch` switches the
samplers on, a :class:`~.scoring.Scorer` scores the images beyond fidelity, and :mod:`.report` writes the outputs.
"""

from __future__ import annotations

import contextlib
import functools
import io
from dataclasses import asdict, dataclass, field

import torch

from . import timing
from .metrics import frechet_distance, kernel_inception_distance, psnr
from .samplers import (
    FLOWTURBO_HPR,
    MAGCACHE,
    SamplerSpec,
    calibrated_samplers,
    default_calibrations,
    default_samplers,
    flowturbo_spec,
)
from .sampling import BenchmarkSamples
from .scoring import Scorer
from .switch import SamplerSwitch, first_line

# Prompts for a model without a scorer (which would choose them), and other ones to calibrate on.
GENERIC_PROMPTS = ("a photo of a cat", "a red car in the rain", "a bowl of fruit", "a mountain lake at dawn")
GENERIC_CALIBRATION_PROMPTS = ("a dog on a beach", "a city street at night", "a vase of flowers", "a snowy forest")
# Seeds of the scorer's prompts and real images: the prompts, the real images of FID/KID (both offset by the settings'
# seed), the real images of the sample grid, the held-out real images of the FID floor, and the calibration prompts.
PROMPT_SEED, REAL_SEED, GRID_REAL_SEED, HELD_OUT_REAL_SEED = 10_000, 20_000, 30_000, 40_000
CALIBRATION_PROMPT_SEED = 50_000
# Calibration's noise seeds start this far after the benchmark's own (which run from seed * 1_000_003 up), so that no
# calibration sample is an evaluation sample.
CALIBRATION_SEED_OFFSET = 900_000


@dataclass
class BenchmarkSettings:
    model: str | None = None  # None: the bundled model
    refiner: str | None = None  # None: the model folder's refiner/
    quality_samples: int = 200
    real_samples: int = 1000
    reference_steps: int = 128
    batch_sizes: tuple[int, ...] = (1, 8)
    repeats: int = 5
    generation_batch: int = 50
    seed: int = 0
    quick: bool = False
    overhead_plan: str = "H1P5"
    drift_window: int = 4  # calls either side that measure the machine's speed drift (timing.remove_drift); 0: off
    call_kwargs: dict = field(default_factory=dict)
    # Budgets (base evaluations) of the calibrated plans and OSS grids; None: samplers.default_calibrations' (4, 6, 8,
    # 12); (): no calibrated families.
    calibration_budgets: tuple[int, ...] | None = None
    end_to_end_steps: int = timing.END_TO_END_STEPS  # the Euler call whose share outside the loop is measured

    def __post_init__(self):
        # Checked here, not when the timing starts: that is after the quality runs, tens of minutes in.
        if self.repeats < 1:
            raise ValueError(f"repeats (--repeats), the timed calls per sampler and batch size, must be at least 1, "
                             f"got {self.repeats}; 3 or more also give timing intervals.")
        if self.drift_window < 0:
            raise ValueError(f"drift_window (--drift-window) must be 0 (keep raw wall times) or more, got "
                             f"{self.drift_window}.")
        if self.end_to_end_steps < 1:
            raise ValueError(f"end_to_end_steps (--end-to-end-steps) must be at least 1, got {self.end_to_end_steps}.")
        if any(budget < 1 for budget in self.calibration_budgets or ()):
            raise ValueError(f"calibration_budgets (--calibration-budgets) are base-model evaluations per image, each "
                             f"at least 1, got {self.calibration_budgets}.")


@dataclass
class SamplerResult:
    spec: SamplerSpec
    base_evaluations: int
    refiner_evaluations: int
    seconds_per_image: dict[int, float]
    latent_psnr: float
    # Every timed call's seconds per image, by batch size, in round order (round i of every sampler is one round), so
    # the report can tell how far the medians move with the run's timing noise (analysis.bootstrap_intervals).
    round_seconds_per_image: dict[int, list[float]] = field(default_factory=dict)
    # The same calls' wall times before the machine's speed drift was divided out (timing.remove_drift).
    raw_round_seconds_per_image: dict[int, list[float]] = field(default_factory=dict)
    pixel_psnr: float | None = None
    fid: float | None = None
    kid: float | None = None
    accuracy: float | None = None
    # Plans with R steps: the latent PSNR with every R step run as an exact Heun step on the base model, which is what
    # a perfect refiner gives (method.md). Not a bound on its own: a learned refiner can do better on a plan, so
    # analysis.perfect_refiner_front takes the higher of the two, at this plan's own measured time.
    perfect_refiner_latent_psnr: float | None = None
    samples: torch.Tensor | None = field(default=None, repr=False)  # a few decoded samples for the grid

    def to_json(self) -> dict:
        row = asdict(self)
        row.pop("samples")
        row["spec"] = {**asdict(self.spec), "name": self.spec.name}
        row["seconds_per_image"] = {str(k): v for k, v in self.seconds_per_image.items()}
        for name in ("round_seconds_per_image", "raw_round_seconds_per_image"):
            row[name] = {str(k): v for k, v in getattr(self, name).items()}
        return row

    @classmethod
    def from_json(cls, row: dict) -> SamplerResult:
        """The result a ``to_json`` row was made from (without its sample images)."""
        row = dict(row)
        spec = row.pop("spec")
        row["seconds_per_image"] = {int(k): v for k, v in row["seconds_per_image"].items()}
        for name in ("round_seconds_per_image", "raw_round_seconds_per_image"):
            row[name] = {int(k): v for k, v in row.get(name, {}).items()}
        grid = spec.get("grid")
        return cls(SamplerSpec(spec["family"], spec["steps"], spec["plan"], None if grid is None else tuple(grid)),
                   **row)


class Benchmark:
    """The loaded benchmark: the pipeline and its FlowTurbo twin (``switch``), the refiner, the scorer, and the fixed
    samples every sampler generates (``samples``: prompts, noise seeds, generation, the reference solve).

    ``scorer`` scores images beyond fidelity (:class:`~.scoring.Scorer`): by default the bundled model's
    (:func:`~flowturbo_diffusers.bundled.load_bundled_scorer`) when ``settings.model`` is ``None``, and none for
    another model, which then gets fidelity and cost only (no FID, KID or prompt accuracy).
    """

    def __init__(self, settings: BenchmarkSettings, state=None, progress: bool = True, scorer: Scorer | None = None):
        from ..distributed import partial_state

        self.settings = settings
        self.state = state or partial_state()
        self.progress = progress and self.state.is_main_process
        self.pipe, call_kwargs, self.refiner, self.scorer = self._load(scorer)
        self.switch = SamplerSwitch(self.pipe, self.refiner)
        self.skipped: dict[str, str] = {}  # baselines and calibrations left out, and why
        count = settings.quality_samples
        if self.scorer is None:
            prompts, self.labels = [GENERIC_PROMPTS[i % len(GENERIC_PROMPTS)] for i in range(count)], None
        else:
            prompts, self.labels = self.scorer.prompts(count, PROMPT_SEED + settings.seed)
        seeds = [settings.seed * 1_000_003 + i for i in range(count)]
        self.samples = BenchmarkSamples(self.pipe, list(prompts), seeds, call_kwargs, settings.generation_batch,
                                        self.state, self.progress)

    def _load(self, scorer: Scorer | None):
        from ..generate import load_default_model

        settings = self.settings
        if settings.model is None:
            pipe, call_kwargs = load_default_model()
            call_kwargs.pop("num_inference_steps", None)
            from ..bundled import bundled_model_path, load_bundled_scorer

            scorer = scorer if scorer is not None else load_bundled_scorer()
            refiner_path = settings.refiner or bundled_model_path() / "refiner"
        else:
            from diffusers import DiffusionPipeline

            pipe, call_kwargs = DiffusionPipeline.from_pretrained(settings.model), {}
            refiner_path = settings.refiner
        call_kwargs.update(settings.call_kwargs)
        pipe.to(self.state.device)
        pipe.set_progress_bar_config(disable=True)
        refiner = None
        if refiner_path and str(refiner_path) != "none":
            from ..refiner import VelocityRefiner

            try:
                refiner = VelocityRefiner.from_pretrained(refiner_path)
            except Exception:
                if settings.refiner:  # asked for explicitly: a failure is an error
                    raise
        return pipe, call_kwargs, refiner, scorer

    def reference(self) -> dict:
        """The reference solve of every sample (``settings.reference_steps`` Heun steps) and its own error
        (:meth:`.sampling.BenchmarkSamples.reference`)."""
        return self.samples.reference(self.settings.reference_steps)

    def real_features(self):
        """The scorer's features ``(settings.real_samples, D)`` of real images, FID and KID's reference set; ``None``
        without a scorer."""
        if self.scorer is None:
            return None
        return self.scorer.features(self.scorer.real_images(self.settings.real_samples, REAL_SEED + self.settings.seed))

    def measure(self, spec: SamplerSpec, reference: dict, real_features) -> SamplerResult | None:
        """Quality on all processes' share of the samples, then metrics and evaluation counts on the main process;
        other processes return ``None``. Times are added by :meth:`time_samplers`."""
        samples = self.samples
        if spec.family == MAGCACHE:
            self.switch.calibrate_magcache(spec.steps, lambda p, kw: _quietly(samples.generate, p, kw, [0]))
        perfect = self.perfect_refiner_latents(spec) if spec.family == FLOWTURBO_HPR else None
        with self.switch.use(spec) as (pipe, call_kwargs):
            latents = samples.generate_all(pipe, call_kwargs)
            if not self.state.is_main_process:
                return None
            base, refined = samples.count_evaluations(pipe, call_kwargs)
        result = SamplerResult(spec, base, refined, {}, float(psnr(latents, reference["latents"]).mean()))
        if perfect is not None:
            result.perfect_refiner_latent_psnr = float(psnr(perfect, reference["latents"]).mean())
        images = samples.decode(latents)
        if images is not None and reference["images"] is not None:
            result.pixel_psnr = float(psnr(images, reference["images"], peak=1.0).mean())
        if self.scorer is not None and images is not None:
            features = self.scorer.features(images)
            result.fid = frechet_distance(features, real_features)
            result.kid = kernel_inception_distance(features, real_features)
            if self.labels is not None:
                result.accuracy = self.scorer.accuracy(images, self.labels)
        result.samples = images[:10] if images is not None else None
        return result

    def measure_all(self, samplers: list[SamplerSpec], reference: dict, real_features) -> list[SamplerResult] | None:
        """:meth:`measure` every sampler in turn, all processes together: the results on the main process, ``None``
        on the others.

        A baseline that fails in this pipeline never ends the run: an equivalent stands in for it where there is one
        (:meth:`.switch.SamplerSwitch.stand_in`), else it is left out, and :attr:`notes` says which and why. A
        FlowTurbo plan that fails raises.
        """
        from tqdm.auto import tqdm

        results = []
        for spec in tqdm(samplers, desc="Quality", disable=not self.progress):
            try:
                results.append(self.measure(spec, reference, real_features))
            except Exception as error:
                if self.switch.runs_on_flowturbo(spec):
                    raise
                if self.switch.stand_in(spec, error):
                    results.append(self.measure(spec, reference, real_features))
                else:
                    reason = f"{type(error).__name__}: {first_line(error)}"
                    self.skipped[spec.name] = f"left out: it fails in this pipeline ({reason})"
            self.state.wait_for_everyone()  # the others wait while the main process computes the metrics
        return [r for r in results if r is not None] if self.state.is_main_process else None

    @property
    def notes(self) -> dict[str, str]:
        """What the report says about samplers that were replaced, left out or run on another grid than the
        pipeline's own, by sampler family or name."""
        return {**self.switch.notes, **self.skipped}

    def calibration_prompts(self, count: int) -> tuple[list, int]:
        """``count`` prompts to calibrate on, and how many of them are also evaluation prompts: the scorer's prompts
        drawn with another seed, leaving out the benchmark's own while there are others (the bundled model has 560),
        or, without a scorer, :data:`GENERIC_CALIBRATION_PROMPTS`."""
        if self.scorer is None:
            prompts = [GENERIC_CALIBRATION_PROMPTS[i % len(GENERIC_CALIBRATION_PROMPTS)] for i in range(count)]
        else:
            drawn, _ = self.scorer.prompts(8 * count, CALIBRATION_PROMPT_SEED + self.settings.seed)
            evaluated = set(self.samples.prompts)
            fresh = [p for p in dict.fromkeys(drawn) if p not in evaluated]
            prompts = (fresh + [p for p in drawn if p not in fresh])[:count]
        return prompts, sum(p in set(self.samples.prompts) for p in prompts)

    def calibrate(self, requests: list) -> list[dict]:
        """Run each calibration of ``requests`` (``calibration.CalibrationSettings``;
        :func:`.samplers.default_calibrations`), shared between the processes, with the benchmark's call arguments, on
        prompts and noise seeds that are not the benchmark's samples. Every process gets the records, in the order of
        ``requests``: ``kinds``, ``budget``, ``plan``, ``grid`` (times before the pipeline's shift), ``seconds``, the
        calibration ``seeds`` and ``prompts_shared_with_evaluation``, the ``settings`` and calibration's ``figures``.
        A calibration that fails is noted and left out."""
        import dataclasses

        from tqdm.auto import tqdm

        from ..calibration import calibrate_plans

        seed = self.settings.seed * 1_000_003 + CALIBRATION_SEED_OFFSET
        # Requests that differ only in budget share one teacher solve and one dynamic program (calibrate_plans).
        groups: dict = {}
        for index, request in enumerate(requests):
            key = repr({**dataclasses.asdict(request), "budget": None})
            groups.setdefault(key, []).append(index)
        records = []
        with self.state.split_between_processes(list(groups.values())) as share:
            for indices in tqdm(share, desc="Calibrating", disable=not self.progress):
                request = dataclasses.replace(requests[indices[0]], seed=seed)
                budgets = [requests[index].budget for index in indices]
                prompts, shared = self.calibration_prompts(request.samples)
                try:
                    results = calibrate_plans(self.pipe, prompts, budgets, request, self.samples.call_kwargs,
                                              progress=False)
                    failure = None
                except Exception as error:
                    results, failure = {}, f"{type(error).__name__}: {first_line(error)}"
                for index, budget in zip(indices, budgets):
                    record = {"index": index, "kinds": request.kinds, "budget": budget}
                    if failure:
                        record["failed"] = failure
                    else:
                        result = results[budget]
                        record.update(plan=result.plan, grid=[float(t) for t in result.grid],
                                      seconds=result.figures["seconds"], seeds=[seed, seed + request.samples - 1],
                                      prompts_shared_with_evaluation=shared,
                                      settings=dataclasses.asdict(dataclasses.replace(request, budget=budget)),
                                      figures=result.figures)
                    records.append(record)
        if self.state.num_processes > 1:
            from accelerate.utils import gather_object

            records = gather_object(records)
        calibrated = []
        for record in sorted(records, key=lambda record: record["index"]):
            del record["index"]
            if "failed" in record:
                self.skipped[f"calibration {record['kinds']}, budget {record['budget']}"] = (
                    f"failed ({record['failed']}); left out")
            else:
                calibrated.append(record)
        return calibrated

    def perfect_refiner_latents(self, spec: SamplerSpec) -> torch.Tensor:
        """All samples of ``spec``'s plan with its R steps run as Heun steps on the base model: what a perfect refiner
        gives (an oracle refiner, whose offset is the base velocity minus the one it is given, makes R steps exact
        Heun steps; method.md)."""
        with self.switch.use(spec) as (pipe, call_kwargs):
            pipe.set_plan(spec.plan.replace("R", "H"))
            return self.samples.generate_all(pipe, call_kwargs)

    def time_samplers(self, results: list[SamplerResult]) -> None:
        """Fill in every result's time per image, all samplers timed interleaved (:func:`.timing.time_interleaved`)."""
        setups = {result.spec: functools.partial(self.switch.use, result.spec) for result in results}
        times, raw_times = timing.time_interleaved(self.samples, setups, self.settings, desc="Timing")
        for result in results:
            result.round_seconds_per_image = times[result.spec]
            result.raw_round_seconds_per_image = raw_times[result.spec]
            result.seconds_per_image = timing.medians(times[result.spec])

    def overhead(self) -> dict:
        """FlowTurbo's scheduler and routing-hook cost with no-op models (:func:`.timing.overhead`)."""
        return timing.overhead(self.samples, self.switch, self.settings)

    def end_to_end(self) -> dict:
        """The share of a whole call (VAE decoding included) outside the denoising loop, and the speed-up ceiling it
        sets (:func:`.timing.end_to_end`)."""
        return timing.end_to_end(self.samples, self.switch, self.settings, self.settings.end_to_end_steps)

    def compile_comparison(self, plan: str, mode: str | None = None, backend: str = "inductor") -> dict:
        """Eager against compiled time per image for one FlowTurbo plan (:func:`.timing.compile_comparison`). Run
        last: compiling replaces the shared transformer's forward."""
        return timing.compile_comparison(self.samples, self.switch, self.settings, plan, mode, backend)


def _quietly(function, *args):
    with contextlib.redirect_stdout(io.StringIO()):
        return function(*args)


def run_benchmark(settings: BenchmarkSettings, samplers: list[SamplerSpec] | None = None, progress: bool = True,
                  compile_plan: str | None = None, compile_mode: str | None = None, compile_backend: str = "inductor",
                  on_results=None, scorer: Scorer | None = None, calibrations: list | None = None):
    """Run every sampler; returns ``(results, context)`` on the main process (``None`` on the others).

    ``samplers`` default to :func:`.samplers.default_samplers`; the calibrated families' points are added from
    ``calibrations`` (``calibration.CalibrationSettings``; default: :func:`.samplers.default_calibrations` with the
    settings' budgets when ``samplers`` is the default, none otherwise). ``scorer`` scores the samples beyond fidelity
    (FID, KID, prompt accuracy; see :class:`Benchmark` for the default). ``compile_plan`` adds the compiled-vs-eager
    comparison for that plan, measured last. ``on_results(results, context)`` is called on the main process before it,
    so that what was measured is saved even if compiling fails.
    """
    bench = Benchmark(settings, progress=progress, scorer=scorer)
    if compile_plan:
        flowturbo_spec(compile_plan, bench.refiner is not None)  # a bad plan fails now, not after the whole run
    if calibrations is None and samplers is None and settings.calibration_budgets != ():
        calibrations = default_calibrations(settings.calibration_budgets, quick=settings.quick)
    samplers = samplers or default_samplers(with_refiner=bench.refiner is not None, quick=settings.quick)
    calibrated = bench.calibrate(calibrations or [])
    samplers = list(samplers) + calibrated_samplers(calibrated)
    reference = bench.reference()
    real_features = bench.real_features()
    results = bench.measure_all(samplers, reference, real_features)
    if results is None:  # not the main process
        return None
    bench.time_samplers(results)
    overhead = bench.overhead()
    end_to_end = bench.end_to_end()
    real_images, real_vs_real_fid = None, None
    if bench.scorer is not None:
        real_images = bench.scorer.real_images(10, GRID_REAL_SEED)
        held_out = bench.scorer.features(bench.scorer.real_images(settings.quality_samples, HELD_OUT_REAL_SEED))
        real_vs_real_fid = frechet_distance(held_out, real_features)
    context = {
        "reference": {k: v for k, v in reference.items() if k not in ("latents", "images")},
        "reference_samples": reference["images"][:10] if reference["images"] is not None else None,
        "real_samples": real_images,
        "overhead": overhead,
        "end_to_end": end_to_end,
        "calibrations": calibrated,
        "notes": bench.notes,
        "pipeline": type(bench.pipe).__name__,
        "settings": asdict(settings),
        "refiner_parameters": bench.refiner.num_parameters() if bench.refiner is not None else None,
        "refiner_offset_scale": bench.refiner.config.offset_scale if bench.refiner is not None else None,
        "base_parameters": sum(p.numel() for p in bench.pipe.transformer.parameters()),
        "num_processes": bench.state.num_processes,
        "has_refiner": bench.refiner is not None,
        "real_vs_real_fid": real_vs_real_fid,  # the floor: FID of real images with as many samples
    }
    if on_results is not None:
        on_results(results, context)
    if compile_plan:
        context["compile"] = bench.compile_comparison(compile_plan, compile_mode, compile_backend)
    return results, context
