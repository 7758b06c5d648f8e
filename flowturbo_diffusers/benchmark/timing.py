"""Timing for the benchmark: wall time per image of whole pipeline calls, interleaved across samplers, with the
machine's speed drift taken out; FlowTurbo's own overhead with the models replaced by no-ops; compiled against eager.
Which samples the calls generate is :mod:`.sampling`.

Drift: on a shared machine (a cloud VM, a CI runner) the speed of the whole machine wanders over seconds to minutes,
so consecutive calls are slow or fast together. Interleaving the samplers in a new random order every round already
makes the drift hit every sampler alike on average, but with a few rounds it still moves each sampler's median by
several per cent (in an 11-round run of the bundled benchmark, enough to time a plan slower than one with two more
model calls). Because the calls are interleaved,
the drift can be measured from the calls themselves: a call's neighbours in time, each compared with its own
sampler's typical time, show how fast the machine was just then (:func:`remove_drift`).
"""

from __future__ import annotations

import contextlib
import functools
import random
import statistics
import time

import numpy as np
import torch

from .metrics import psnr
from .samplers import EULER, SamplerSpec, flowturbo_spec

NO_OP_HOOK = "flowturbo_benchmark_no_op"

ITERATIONS = 10


def remove_drift(keys: list, seconds: list[float], window: int = 4) -> tuple[list[float], list[float]]:
    """Each call's time with the machine's speed at that moment divided out, and that speed factor.

    ``keys[i]`` names what call ``i`` ran (a sampler and batch size) and ``seconds[i]`` is its wall time, in the order
    the calls ran, which must interleave the keys (a new random order each round). The model is
    ``log seconds = typical(key) + drift(moment) + noise``: alternately, each key's typical time is the median of its
    calls with the drift removed, and the drift at call ``i`` is the median, over the ``window`` calls before and after
    it (not ``i`` itself, so that a call's own noise stays in its time), of how much slower than typical they were.
    The drift is centred on its median, so the corrected times are wall times at the run's median speed.

    ``window=0`` (or too few calls) returns the times unchanged, with factors of 1.
    """
    count = len(seconds)
    if len(keys) != count:
        raise ValueError(f"remove_drift needs one key per call: {len(keys)} keys for {count} times.")
    if window < 0:
        raise ValueError(f"The drift window must be 0 (no correction) or more calls, got {window}.")
    if window == 0 or count < 2 * window + 1 or len(set(keys)) < 2:
        return list(seconds), [1.0] * count
    log_seconds = np.log(np.asarray(seconds, dtype=float))
    index = {key: i for i, key in enumerate(dict.fromkeys(keys))}
    key_of_call = np.asarray([index[key] for key in keys])
    members = [np.flatnonzero(key_of_call == i) for i in range(len(index))]
    neighbours = [np.r_[max(0, i - window):i, i + 1:min(count, i + window + 1)] for i in range(count)]
    drift = np.zeros(count)
    for _ in range(ITERATIONS):
        typical = np.empty(len(index))
        for i, calls in enumerate(members):
            typical[i] = np.median(log_seconds[calls] - drift[calls])
        slower = log_seconds - typical[key_of_call]
        drift = np.asarray([np.median(slower[near]) for near in neighbours])
        drift -= np.median(drift)
    return np.exp(log_seconds - drift).tolist(), np.exp(drift).tolist()


def seconds_per_image(samples, pipe, call_kwargs: dict, batch_size: int) -> float:
    """Wall time per image, in seconds, of one call of ``pipe`` on the first ``batch_size`` of ``samples``
    (a :class:`~.sampling.BenchmarkSamples`): a call that stops at the latents, or, where ``call_kwargs`` name an
    ``output_type``, a whole call that decodes them (:meth:`~.sampling.BenchmarkSamples.decoded_call`)."""
    indices = list(range(batch_size))
    start = time.perf_counter()
    if "output_type" in call_kwargs:
        samples.decoded_call(pipe, call_kwargs, indices)
    else:
        samples.generate(pipe, call_kwargs, indices)
    return (time.perf_counter() - start) / batch_size


def time_interleaved(samples, setups: dict, settings, batch_sizes=None, desc: str | None = None,
                     repeats: int | None = None) -> tuple[dict, dict]:
    """Wall time per image of each setup at each batch size in every round, after one warm-up call each, as
    ``(times, raw_times)``, both ``{key: {batch_size: [seconds, ...]}}`` in round order (:func:`medians` gives the
    figures): ``times`` with the machine's speed drift divided out, ``raw_times`` as measured.

    ``setups`` maps a key to a function returning a context manager that yields ``(pipeline, call_kwargs)``; the
    calls generate the first samples of ``samples`` (a :class:`~.sampling.BenchmarkSamples`). The timed calls are
    interleaved: ``repeats`` rounds (default: ``settings.repeats``), each calling every setup once per batch size
    (default: ``settings.batch_sizes``) in a new order seeded by ``settings.seed``. A machine whose speed drifts during
    the run then slows every setup alike on average, and the ratios between setups, which the benchmark's conclusions
    rest on, stay fair; the drift left in each median is then measured from neighbouring calls and divided out
    (:func:`remove_drift`, ``settings.drift_window`` calls either side). Keeping every round lets the report resample
    them to show how much the figures move with the timing noise.
    """
    from tqdm.auto import tqdm

    batch_sizes = tuple(batch_sizes or settings.batch_sizes)
    jobs = [(key, batch_size) for key in setups for batch_size in batch_sizes]
    for key, batch_size in jobs:
        with setups[key]() as (pipe, call_kwargs):
            seconds_per_image(samples, pipe, call_kwargs, batch_size)
    calls, seconds = [], []
    order = random.Random(settings.seed)
    rounds = range(repeats or settings.repeats)
    for _ in tqdm(rounds, desc=desc, leave=False, disable=desc is None or not samples.progress):
        order.shuffle(jobs)
        for key, batch_size in jobs:
            with setups[key]() as (pipe, call_kwargs):
                seconds.append(seconds_per_image(samples, pipe, call_kwargs, batch_size))
            calls.append((key, batch_size))
    corrected, _ = remove_drift(calls, seconds, settings.drift_window)
    times, raw_times = ({key: {batch_size: [] for batch_size in batch_sizes} for key in setups} for _ in range(2))
    for (key, batch_size), value, raw in zip(calls, corrected, seconds):
        times[key][batch_size].append(value)
        raw_times[key][batch_size].append(raw)
    return times, raw_times


def medians(times: dict) -> dict:
    """The median of each list of per-round times in ``times`` (keyed as :func:`time_interleaved` keys them, or one
    level less deep)."""
    return {key: medians(value) if isinstance(value, dict) else statistics.median(value)
            for key, value in times.items()}


def overhead(samples, switch, settings) -> dict:
    """FlowTurbo's scheduler and routing-hook cost, with the models replaced by no-ops: the extra time over Euler at
    the same number of evaluations, as a share of a real FlowTurbo call (plan ``settings.overhead_plan``, batch 1).

    ``switch`` is the benchmark's :class:`~.switch.SamplerSwitch`. The no-op calls are short and their difference
    small, so they are timed for 4x as many interleaved rounds as the samplers (:func:`time_interleaved`).
    """
    from ..plan import Plan

    plan = settings.overhead_plan
    evaluations = Plan.parse(plan).count_evaluations()["base"]
    flowturbo, euler = flowturbo_spec(plan, switch.has_refiner), SamplerSpec(EULER, evaluations)

    @contextlib.contextmanager
    def no_op(spec):
        with no_op_transformer(switch.pipe.transformer), switch.use(spec) as used:
            yield used

    setups = {"flowturbo": functools.partial(switch.use, flowturbo),
              "no-op flowturbo": functools.partial(no_op, flowturbo),
              "no-op euler": functools.partial(no_op, euler)}
    timed, raw_timed = time_interleaved(samples, setups, settings, batch_sizes=(1,), repeats=4 * settings.repeats)
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


END_TO_END_STEPS = 50  # the pipeline call the loop's share is measured on: 50 Euler steps, as issue 20's GPU figure


def end_to_end(samples, switch, settings, steps: int = END_TO_END_STEPS) -> dict:
    """How much of a whole pipeline call, VAE decoding included, is spent outside the denoising loop, and the ceiling
    on speed-up that sets (Amdahl's law): no sampler can make a call faster than the part it does not touch.

    Timed interleaved (:func:`time_interleaved`) at each of ``settings.batch_sizes``: a call of the pipeline's own
    scheduler (Euler) at ``steps`` steps that decodes its latents as a user's call does (``"call"``); a call of one
    step with the transformer a no-op, which is what lies outside the loop (``"no-op call"``: text encoding, set-up,
    VAE decoding, and one step's bookkeeping); and that call stopped at the latents (``"no-op latent call"``). Per batch
    size: those times per image, ``decode_seconds`` (the difference of the two no-op calls), ``outside_share`` (the
    no-op call over the real one) and ``speedup_ceiling`` (its inverse). ``switch`` is the benchmark's
    :class:`~.switch.SamplerSwitch`.
    """
    output_type = {"output_type": decoded_output_type(switch.pipe)}

    @contextlib.contextmanager
    def call(no_op: bool, decoded: bool):
        with contextlib.ExitStack() as stack:
            if no_op:
                stack.enter_context(no_op_transformer(switch.pipe.transformer))
            pipe, call_kwargs = stack.enter_context(switch.use(SamplerSpec(EULER, 1 if no_op else steps)))
            yield pipe, {**call_kwargs, **(output_type if decoded else {})}

    setups = {"call": functools.partial(call, False, True), "no-op call": functools.partial(call, True, True),
              "no-op latent call": functools.partial(call, True, False)}
    rounds, raw_rounds = time_interleaved(samples, setups, settings, desc="Timing whole calls")
    times = medians(rounds)
    batches = {}
    for b in settings.batch_sizes:
        whole, outside, latent = (times[key][b] for key in ("call", "no-op call", "no-op latent call"))
        batches[b] = {"call_seconds": whole, "outside_seconds": outside, "outside_latent_seconds": latent,
                      "decode_seconds": outside - latent, "outside_share": outside / whole,
                      "speedup_ceiling": whole / outside,
                      "round_seconds": {key: rounds[key][b] for key in rounds},
                      "raw_round_seconds": {key: raw_rounds[key][b] for key in raw_rounds}}
    return {"sampler": SamplerSpec(EULER, steps).name, "steps": steps, "output_type": output_type["output_type"],
            "batches": batches}


def decoded_output_type(pipe) -> str:
    """The output type of a user's call of ``pipe``: its ``__call__``'s default (``"pil"`` for image pipelines,
    ``"np"`` for most video ones)."""
    import inspect

    parameter = inspect.signature(pipe.__call__).parameters.get("output_type")
    default = None if parameter is None else parameter.default
    return default if isinstance(default, str) and default != "latent" else "pil"


def compile_comparison(samples, switch, settings, plan: str, mode: str | None = None,
                       backend: str = "inductor") -> dict:
    """Eager against compiled time per image for one FlowTurbo plan at each of ``settings.batch_sizes``, with the
    compile (warm-up) time per batch size and the PSNR (dB) between compiled and eager latents of the first samples.

    Eager calls run the same pipeline under ``torch.compiler.set_stance("force_eager")``, so eager and compiled calls
    are timed interleaved in one run (:func:`time_interleaved`). Run last: compiling replaces the shared transformer's
    forward. Raises ``ValueError`` for a plan the benchmark cannot run (:func:`~.samplers.flowturbo_spec`).
    """
    spec = flowturbo_spec(plan, switch.has_refiner)
    agreement_samples = list(range(min(8, len(samples.prompts))))

    @contextlib.contextmanager
    def eager():
        with torch.compiler.set_stance("force_eager"), switch.use(spec) as used:
            yield used

    with switch.use(spec) as (pipe, kwargs):
        eager_latents = samples.generate(pipe, kwargs, agreement_samples)
        compiled_parts = pipe.enable_flowturbo_compile(mode=mode, backend=backend)
        compile_seconds = {}
        for batch_size in settings.batch_sizes:
            start = time.perf_counter()
            samples.generate(pipe, kwargs, list(range(batch_size)))  # compiles for this shape
            compile_seconds[batch_size] = time.perf_counter() - start
        compiled_latents = samples.generate(pipe, kwargs, agreement_samples)
    rounds, raw_rounds = time_interleaved(samples, {"eager": eager, "compiled": functools.partial(switch.use, spec)},
                                          settings, desc="Timing compiled vs eager")
    times = medians(rounds)
    batches = {b: {"eager": times["eager"][b], "compiled": times["compiled"][b], "compile_seconds": compile_seconds[b],
                   "round_seconds": {key: rounds[key][b] for key in rounds},
                   "raw_round_seconds": {key: raw_rounds[key][b] for key in raw_rounds}}
               for b in settings.batch_sizes}
    return {"plan": plan, "mode": mode, "backend": backend, "compiled": compiled_parts, "batches": batches,
            "agreement_psnr_db": float(psnr(compiled_latents, eager_latents).mean())}


@contextlib.contextmanager
def no_op_transformer(transformer):
    """Within the block, ``transformer`` returns zeros at once (a diffusers hook replacing its forward), so that a
    call's time is the pipeline's and the sampler's own."""
    from diffusers.hooks import ModelHook

    from ..adapters import TransformerAdapter
    from ..hooks import installed_hook

    class NoOp(ModelHook):
        def new_forward(self, module, *args, **kwargs):
            sample = kwargs.get("hidden_states", args[0] if args else None)
            return TransformerAdapter.output_like(kwargs, torch.zeros_like(sample))

    with installed_hook(transformer, NoOp(), NO_OP_HOOK):
        yield
