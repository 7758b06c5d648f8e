"""Run the benchmark: every sampler from the same noise and prompts, quality against a converged reference and real
data, cost side by side in one run."""

from __future__ import annotations

import contextlib
import functools
import io
import statistics
import time
from dataclasses import asdict, dataclass, field

import torch

from .metrics import frechet_distance, kernel_inception_distance, psnr
from .samplers import EULER, FLOWTURBO_HP, FLOWTURBO_HPR, MAGCACHE, SamplerSpec, SamplerSwitch, default_samplers


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

    def __post_init__(self):
        # Checked here, not when the timing starts: that is after the quality runs, tens of minutes in.
        if self.repeats < 1:
            raise ValueError(f"repeats (--repeats), the timed calls per sampler and batch size, must be at least 1, "
                             f"got {self.repeats}; 3 or more also give timing intervals.")
        if self.drift_window < 0:
            raise ValueError(f"drift_window (--drift-window) must be 0 (keep raw wall times) or more, got "
                             f"{self.drift_window}.")


@dataclass
class SamplerResult:
    spec: SamplerSpec
    base_evaluations: int
    refiner_evaluations: int
    seconds_per_image: dict[int, float]
    latent_psnr: float
    # Every timed call's seconds per image, by batch size, in round order (round i of every sampler is one round), so
    # the report can tell how far the medians move with the run's timing noise (report.bootstrap_intervals).
    round_seconds_per_image: dict[int, list[float]] = field(default_factory=dict)
    # The same calls' wall times before the machine's speed drift was divided out (timing.remove_drift).
    raw_round_seconds_per_image: dict[int, list[float]] = field(default_factory=dict)
    pixel_psnr: float | None = None
    fid: float | None = None
    kid: float | None = None
    accuracy: float | None = None
    # Plans with R steps: the latent PSNR with every R step run as an exact Heun step on the base model, which is what
    # a perfect refiner gives (method.md). Not a bound on its own: a learned refiner can do better on a plan, so
    # report.perfect_refiner_front takes the higher of the two, at this plan's own measured time.
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
        return cls(SamplerSpec(spec["family"], spec["steps"], spec["plan"]), **row)


class Benchmark:
    """Holds the pipeline, the fixed prompts and noise seeds, the reference solution and the real-data features."""

    def __init__(self, settings: BenchmarkSettings, state=None, progress: bool = True):
        from ..distributed import partial_state

        self.settings = settings
        self.state = state or partial_state()
        self.progress = progress and self.state.is_main_process
        self.pipe, self.call_kwargs, self.refiner, self.classifier = self._load()
        self.switch = SamplerSwitch(self.pipe, self.refiner)
        self.prompts, self.labels = self._prompts(settings.quality_samples)
        self.seeds = [settings.seed * 1_000_003 + i for i in range(settings.quality_samples)]

    # -- setup ---------------------------------------------------------------------------------------------------

    def _load(self):
        from ..generate import load_default_model

        settings = self.settings
        classifier = None
        if settings.model is None:
            pipe, call_kwargs = load_default_model()
            call_kwargs.pop("num_inference_steps", None)
            from ..bundled import bundled_model_path, load_bundled_classifier

            classifier = load_bundled_classifier()
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
        return pipe, call_kwargs, refiner, classifier

    def _prompts(self, count: int) -> tuple[list[str], list[int] | None]:
        if self.classifier is None:
            base = ["a photo of a cat", "a red car in the rain", "a bowl of fruit", "a mountain lake at dawn"]
            return [base[i % len(base)] for i in range(count)], None
        from ..bundled import digits

        batch = digits.render_batch(count, seed=10_000 + self.settings.seed, digits=[i % 10 for i in range(count)])
        return batch.prompts, batch.labels.tolist()

    # -- generation ----------------------------------------------------------------------------------------------

    def generate(self, pipe, call_kwargs, indices, desc: str | None = None) -> torch.Tensor:
        """Latents for the benchmark samples at ``indices`` (prompt i always with noise seed i); a progress bar over
        the chunks if ``desc`` is given."""
        from tqdm.auto import tqdm

        chunks = []
        size = self.settings.generation_batch
        starts = range(0, len(indices), size)
        for start in tqdm(starts, desc=desc, leave=False, disable=desc is None or not self.progress):
            chunk = indices[start : start + size]
            generators = [torch.Generator(self.state.device).manual_seed(self.seeds[i]) for i in chunk]
            out = pipe([self.prompts[i] for i in chunk], generator=generators, output_type="latent",
                       **self.call_kwargs, **call_kwargs)
            chunks.append(out.images.float().cpu())
        return torch.cat(chunks)

    def generate_all(self, pipe, call_kwargs, desc: str | None = None) -> torch.Tensor:
        """All benchmark samples, split across processes and gathered on every process."""
        from accelerate.utils import gather_object

        indices = list(range(len(self.prompts)))
        with self.state.split_between_processes(indices) as share:
            local = self.generate(pipe, call_kwargs, share, desc) if share else torch.empty(0)
        if self.state.num_processes == 1:
            return local
        parts = gather_object([local])
        return torch.cat([part for part in parts if part.numel()])

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor | None:
        """Images in [0, 1] for image-layout latents (SD3-style pipelines); ``None`` for other layouts."""
        vae = self.pipe.vae
        if latents.dim() != 4 or not hasattr(vae.config, "scaling_factor"):
            return None
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        images = []
        for chunk in latents.split(64):
            chunk = chunk.to(vae.device, vae.dtype) / vae.config.scaling_factor + shift
            images.append(((vae.decode(chunk).sample.float() + 1) / 2).clamp(0, 1).cpu())
        return torch.cat(images)

    def evaluations(self, pipe, call_kwargs) -> tuple[int, int]:
        """Base-model and refiner evaluations of one single-image call."""
        counter = {"calls": 0}
        handle = self.pipe.transformer.register_forward_pre_hook(lambda *_: counter.__setitem__("calls", counter["calls"] + 1))
        try:
            self.generate(pipe, call_kwargs, [0])
        finally:
            handle.remove()
        if getattr(pipe, "last_evaluation_counts", None) is not None and pipe is self.switch.turbo:
            return pipe.last_evaluation_counts["base"], pipe.last_evaluation_counts["refiner"]
        return counter["calls"], 0

    def seconds_per_image(self, pipe, call_kwargs, batch_size: int) -> float:
        """Wall time per image of one call at ``batch_size``."""
        start = time.perf_counter()
        self.generate(pipe, call_kwargs, list(range(batch_size)))
        return (time.perf_counter() - start) / batch_size

    def time_interleaved(self, setups: dict, batch_sizes=None, desc: str | None = None,
                         repeats: int | None = None) -> tuple[dict, dict]:
        """Wall time per image of each setup at each batch size in every round, after one warm-up call each, as
        ``(times, raw_times)``, both ``{key: {batch_size: [seconds, ...]}}`` in round order (:func:`medians` gives the
        figures): ``times`` with the machine's speed drift divided out, ``raw_times`` as measured.

        ``setups`` maps a key to a function returning a context manager that yields ``(pipeline, call_kwargs)``. The
        timed calls are interleaved: ``repeats`` rounds (default: the settings'), each calling every setup once per
        batch size in a new (seeded) order. A machine whose speed drifts during the run then slows every setup alike
        on average, and the ratios between setups, which the benchmark's conclusions rest on, stay fair; the drift
        left in each median is then measured from neighbouring calls and divided out
        (:func:`~flowturbo_diffusers.benchmark.timing.remove_drift`, ``settings.drift_window`` calls either side).
        Keeping every round lets the report resample them to show how much the figures move with the timing noise.
        """
        import random

        from tqdm.auto import tqdm

        from .timing import remove_drift

        batch_sizes = tuple(batch_sizes or self.settings.batch_sizes)
        jobs = [(key, batch_size) for key in setups for batch_size in batch_sizes]
        for key, batch_size in jobs:
            with setups[key]() as (pipe, call_kwargs):
                self.generate(pipe, call_kwargs, list(range(batch_size)))
        calls, seconds = [], []
        order = random.Random(self.settings.seed)
        rounds = range(repeats or self.settings.repeats)
        for _ in tqdm(rounds, desc=desc, leave=False, disable=desc is None or not self.progress):
            order.shuffle(jobs)
            for key, batch_size in jobs:
                with setups[key]() as (pipe, call_kwargs):
                    seconds.append(self.seconds_per_image(pipe, call_kwargs, batch_size))
                calls.append((key, batch_size))
        corrected, _ = remove_drift(calls, seconds, self.settings.drift_window)
        times, raw_times = ({key: {batch_size: [] for batch_size in batch_sizes} for key in setups} for _ in range(2))
        for (key, batch_size), value, raw in zip(calls, corrected, seconds):
            times[key][batch_size].append(value)
            raw_times[key][batch_size].append(raw)
        return times, raw_times

    # -- the run -------------------------------------------------------------------------------------------------

    def reference(self) -> dict:
        """A many-step Heun solve, and how far it is from the solve with half as many steps (its own error)."""
        reference_steps = self.settings.reference_steps
        turbo = self.switch.turbo
        turbo.set_plan("H*")
        solution = self.generate_all(turbo, {"num_inference_steps": reference_steps},
                                     f"Reference solve ({reference_steps} Heun steps)")
        half = self.generate_all(turbo, {"num_inference_steps": reference_steps // 2},
                                 f"Reference check ({reference_steps // 2} Heun steps)")
        return {
            "latents": solution,
            "images": self.decode(solution),
            "description": f"Heun (FlowTurbo H*), {reference_steps} steps",
            "psnr_of_half_steps_solution_db": float(psnr(half, solution).mean()),
        }

    def real_features(self):
        if self.classifier is None:
            return None
        from ..bundled import digits

        real = digits.render_batch(self.settings.real_samples, seed=20_000 + self.settings.seed).images
        return self.features(real)

    @torch.no_grad()
    def features(self, images: torch.Tensor):
        return torch.cat([self.classifier.features(chunk) for chunk in images.split(256)]).numpy()

    def measure(self, spec: SamplerSpec, reference: dict, real_features) -> SamplerResult | None:
        """Quality on all processes' share of the samples, then metrics and evaluation counts on the main process;
        other processes return ``None``. Times are added by :meth:`time_samplers`."""
        if spec.family == MAGCACHE:
            self.switch.calibrate_magcache(spec.steps, lambda p, kw: _quietly(self.generate, p, kw, [0]))
        perfect = self.perfect_refiner_latents(spec) if spec.family == FLOWTURBO_HPR else None
        with self.switch.use(spec) as (pipe, call_kwargs):
            latents = self.generate_all(pipe, call_kwargs)
            if not self.state.is_main_process:
                return None
            base, refined = self.evaluations(pipe, call_kwargs)
        result = SamplerResult(spec, base, refined, {}, float(psnr(latents, reference["latents"]).mean()))
        if perfect is not None:
            result.perfect_refiner_latent_psnr = float(psnr(perfect, reference["latents"]).mean())
        images = self.decode(latents)
        if images is not None and reference["images"] is not None:
            result.pixel_psnr = float(psnr(images, reference["images"], peak=1.0).mean())
        if self.classifier is not None and images is not None:
            features = self.features(images)
            result.fid = frechet_distance(features, real_features)
            result.kid = kernel_inception_distance(features, real_features)
            predictions = self.classifier.predict(images)
            result.accuracy = float((predictions == torch.tensor(self.labels)).float().mean())
        result.samples = images[:10] if images is not None else None
        return result

    def perfect_refiner_latents(self, spec: SamplerSpec) -> torch.Tensor:
        """All samples of ``spec``'s plan with its R steps run as Heun steps on the base model: what a perfect refiner
        gives (an oracle refiner, whose offset is the base velocity minus the one it is given, makes R steps exact
        Heun steps; method.md)."""
        with self.switch.use(spec) as (pipe, call_kwargs):
            pipe.set_plan(spec.plan.replace("R", "H"))
            return self.generate_all(pipe, call_kwargs)

    def time_samplers(self, results: list[SamplerResult]) -> None:
        """Fill in every result's time per image, all samplers timed interleaved (see :meth:`time_interleaved`)."""
        setups = {result.spec: functools.partial(self.switch.use, result.spec) for result in results}
        times, raw_times = self.time_interleaved(setups, desc="Timing")
        for result in results:
            result.round_seconds_per_image = times[result.spec]
            result.raw_round_seconds_per_image = raw_times[result.spec]
            result.seconds_per_image = medians(times[result.spec])

    def overhead(self) -> dict:
        """FlowTurbo's scheduler and routing-hook cost, with the models replaced by no-ops: the extra time over
        Euler at the same number of evaluations, as a share of a real FlowTurbo call (batch 1)."""
        from ..plan import Plan

        plan = self.settings.overhead_plan
        evaluations = Plan.parse(plan).count_evaluations()["base"]
        flowturbo, euler = flowturbo_spec(plan, self.refiner is not None), SamplerSpec(EULER, evaluations)

        @contextlib.contextmanager
        def no_op(spec):
            with _no_op_transformer(self.pipe.transformer), self.switch.use(spec) as used:
                yield used

        setups = {"flowturbo": functools.partial(self.switch.use, flowturbo),
                  "no-op flowturbo": functools.partial(no_op, flowturbo),
                  "no-op euler": functools.partial(no_op, euler)}
        # The no-op calls are short and their difference small: time 4x as many rounds as the samplers.
        timed, raw_timed = self.time_interleaved(setups, batch_sizes=(1,), repeats=4 * self.settings.repeats)
        rounds = {key: value[1] for key, value in timed.items()}
        times = medians(rounds)
        extra = times["no-op flowturbo"] - times["no-op euler"]
        return {
            "plan": plan,
            "evaluations": evaluations,
            "flowturbo_call_seconds": times["flowturbo"],
            "no_op_model_call_seconds": {"flowturbo": times["no-op flowturbo"], "euler": times["no-op euler"]},
            "extra_seconds_over_euler": extra,
            "share_of_call": extra / times["flowturbo"],
            "extra_microseconds_per_evaluation": 1e6 * extra / evaluations,
            "round_seconds": rounds,
            "raw_round_seconds": {key: value[1] for key, value in raw_timed.items()},
        }


def compile_comparison(bench: Benchmark, plan: str, mode: str | None = None, backend: str = "inductor") -> dict:
    """Eager against compiled time per image for one FlowTurbo plan, with the compile (warm-up) time per batch size.

    Eager calls run the same pipeline under ``torch.compiler.set_stance("force_eager")``, so eager and compiled calls
    are timed interleaved in one run. Run last: compiling replaces the shared transformer's forward.
    """
    spec = flowturbo_spec(plan, bench.refiner is not None)
    agreement_samples = list(range(min(8, len(bench.prompts))))

    @contextlib.contextmanager
    def eager():
        with torch.compiler.set_stance("force_eager"), bench.switch.use(spec) as used:
            yield used

    with bench.switch.use(spec) as (pipe, kwargs):
        eager_latents = bench.generate(pipe, kwargs, agreement_samples)
        compiled_parts = pipe.enable_flowturbo_compile(mode=mode, backend=backend)
        compile_seconds = {}
        for batch_size in bench.settings.batch_sizes:
            start = time.perf_counter()
            bench.generate(pipe, kwargs, list(range(batch_size)))  # compiles for this shape
            compile_seconds[batch_size] = time.perf_counter() - start
        compiled_latents = bench.generate(pipe, kwargs, agreement_samples)
    rounds, raw_rounds = bench.time_interleaved(
        {"eager": eager, "compiled": functools.partial(bench.switch.use, spec)}, desc="Timing compiled vs eager")
    times = medians(rounds)
    batches = {b: {"eager": times["eager"][b], "compiled": times["compiled"][b], "compile_seconds": compile_seconds[b],
                   "round_seconds": {key: rounds[key][b] for key in rounds},
                   "raw_round_seconds": {key: raw_rounds[key][b] for key in raw_rounds}}
               for b in bench.settings.batch_sizes}
    return {"plan": plan, "mode": mode, "backend": backend, "compiled": compiled_parts, "batches": batches,
            "agreement_psnr_db": float(psnr(compiled_latents, eager_latents).mean())}


def medians(times: dict) -> dict:
    """The median of each list of per-round times in ``times`` (keyed as :meth:`Benchmark.time_interleaved` keys
    them, or one level less deep)."""
    return {key: medians(value) if isinstance(value, dict) else statistics.median(value)
            for key, value in times.items()}


def flowturbo_spec(plan: str, has_refiner: bool) -> SamplerSpec:
    """The benchmark point of a fixed FlowTurbo plan; a clear error if it needs a refiner the benchmark lacks."""
    from ..plan import Plan

    parsed = Plan.parse(plan)
    if parsed.num_steps is None:
        raise ValueError(f"A benchmarked plan (--compile-plan) must have a fixed step count, e.g. 'H1P5R3', not "
                         f"'{plan}'.")
    if parsed.has_refiner_steps and not has_refiner:
        raise ValueError(f"Plan '{plan}' has refiner steps but the benchmark has no refiner; pass --refiner, or a "
                         "plan without R steps such as --compile-plan H1P5.")
    return SamplerSpec(FLOWTURBO_HPR if parsed.has_refiner_steps else FLOWTURBO_HP, parsed.num_steps, str(parsed))


@contextlib.contextmanager
def _no_op_transformer(transformer):
    """The transformer returns zeros at once (a diffusers hook replacing its forward)."""
    from diffusers.hooks import HookRegistry, ModelHook

    from ..adapters import TransformerAdapter

    class NoOp(ModelHook):
        def new_forward(self, module, *args, **kwargs):
            sample = kwargs.get("hidden_states", args[0] if args else None)
            return TransformerAdapter.output_like(kwargs, torch.zeros_like(sample))

    registry = HookRegistry.check_if_exists_or_initialize(transformer)
    registry.register_hook(NoOp(), "flowturbo_benchmark_no_op")
    try:
        yield
    finally:
        registry.remove_hook("flowturbo_benchmark_no_op", recurse=False)


def _quietly(function, *args):
    with contextlib.redirect_stdout(io.StringIO()):
        return function(*args)


def run_benchmark(settings: BenchmarkSettings, samplers: list[SamplerSpec] | None = None, progress: bool = True,
                  compile_plan: str | None = None, compile_mode: str | None = None, compile_backend: str = "inductor",
                  on_results=None):
    """Run every sampler; returns ``(results, context)`` on the main process (``None`` on the others).

    ``compile_plan`` adds the compiled-vs-eager comparison for that plan, measured last. ``on_results(results,
    context)`` is called on the main process before it, so that what was measured is saved even if compiling fails.
    """
    from tqdm.auto import tqdm

    bench = Benchmark(settings, progress=progress)
    if compile_plan:
        flowturbo_spec(compile_plan, bench.refiner is not None)  # a bad plan fails now, not after the whole run
    samplers = samplers or default_samplers(with_refiner=bench.refiner is not None, quick=settings.quick)
    reference = bench.reference()
    real_features = bench.real_features()
    results = []
    for spec in tqdm(samplers, desc="Quality", disable=not bench.progress):
        results.append(bench.measure(spec, reference, real_features))
        bench.state.wait_for_everyone()  # the others wait while the main process computes the metrics
    if not bench.state.is_main_process:
        return None
    bench.time_samplers(results)
    overhead = bench.overhead()
    real_images, real_vs_real_fid = None, None
    if bench.classifier is not None:
        from ..bundled import digits

        real_images = digits.render_batch(10, seed=30_000).images
        other_real = bench.features(digits.render_batch(settings.quality_samples, seed=40_000).images)
        real_vs_real_fid = frechet_distance(other_real, real_features)
    context = {
        "reference": {k: v for k, v in reference.items() if k not in ("latents", "images")},
        "reference_samples": reference["images"][:10] if reference["images"] is not None else None,
        "real_samples": real_images,
        "overhead": overhead,
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
        context["compile"] = compile_comparison(bench, compile_plan, compile_mode, compile_backend)
    return results, context
