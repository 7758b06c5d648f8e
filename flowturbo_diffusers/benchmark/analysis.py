"""From measured results to figures: Pareto fronts, the times read off them, the headline savings against Heun
and the other samplers, their timing-noise intervals (a bootstrap over the timing rounds) and the targets they are
checked against. Everything here is computed from the results of one run; :mod:`.markdown` and :mod:`.plots` show
it."""

from __future__ import annotations

import dataclasses
import math

from .samplers import (
    EULER,
    EULER_OSS,
    FLOWTURBO_CALIBRATED,
    FLOWTURBO_FAMILIES,
    FLOWTURBO_HPR,
    HEUN,
    UNCALIBRATED_PLAN_FAMILIES,
)


FIDELITY_LEVELS = (6, 8, 12)  # Heun step counts that define the three fidelity levels
# The targets the benchmark checks (issue 20): time saved against Heun and against the fastest other sampler at each
# fidelity level; calibrated plans' fidelity over the best uncalibrated plan of the same cost, their calibration time,
# and how well they carry over to prompts and seeds they were not calibrated on. Kept from before: the share of a
# pipeline call spent in FlowTurbo's scheduler and hook, and the compiled speed-up on CPU.
TARGET_TIME_SAVED_VS_HEUN = 0.65
TARGET_TIME_SAVED_VS_FASTEST_OTHER = 0.30
TARGET_CALIBRATION_GAIN_DB = 3.0
CALIBRATION_GAIN_BUDGETS = (4, 6, 8)
TARGET_CALIBRATION_SECONDS = 600.0
TARGET_GENERALISATION_DB = 0.5
TARGET_OVERHEAD_SHARE = 0.03
TARGET_COMPILE_SPEEDUP = 1.3
# The timing-noise intervals (:func:`bootstrap_intervals`): their coverage, resamples, and the rounds they need.
CONFIDENCE = 0.95
RESAMPLES = 1000
MIN_ROUNDS = 3
# The headline figures that get an interval.
HEADLINE_SAVINGS = ("flowturbo_time_saved_vs_heun", "flowturbo_time_saved_vs_fastest_other",
                    "perfect_refiner_time_saved_vs_heun")


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points (time, quality) that no other point beats on both; sorted by time, quality increasing."""
    front = []
    for time_, quality in sorted(points):
        if not front or quality > front[-1][1]:
            front.append((time_, quality))
    return front


def time_to_reach(front: list[tuple[float, float]], level: float) -> float | None:
    """Time at which a Pareto curve reaches ``level``, interpolating log-time linearly in quality between measured
    points; the cheapest point's time if it is already above; ``None`` if the curve never gets there."""
    if not front:
        return None
    if level <= front[0][1]:
        return front[0][0]
    for (t0, q0), (t1, q1) in zip(front, front[1:]):
        if q0 < level <= q1:
            fraction = (level - q0) / (q1 - q0)
            return math.exp(math.log(t0) + fraction * (math.log(t1) - math.log(t0)))
    return None


def family_fronts(results, batch_size: int, metric: str = "latent_psnr") -> dict[str, list]:
    """Each sampler family's Pareto front of (seconds per image at ``batch_size``, ``metric``), plus
    ``"FlowTurbo (best plan)"``, the front of all FlowTurbo plans together."""
    fronts: dict[str, list] = {}
    for result in results:
        fronts.setdefault(result.spec.family, []).append((result.seconds_per_image[batch_size], getattr(result, metric)))
    fronts = {family: pareto_front(points) for family, points in fronts.items()}
    flowturbo = [p for family in FLOWTURBO_FAMILIES for p in fronts.get(family, [])]
    fronts["FlowTurbo (best plan)"] = pareto_front(flowturbo)
    return fronts


def perfect_refiner_front(results, batch_size: int) -> list | None:
    """FlowTurbo's Pareto curve if its refiner were perfect: plans with R steps at their measured time but with the
    fidelity of their R steps run as exact Heun steps, or the real refiner's where that is higher (its error can partly
    cancel the steps' discretisation error; a better refiner can keep that), so the curve is never below the real one;
    ``None`` unless every such plan has that fidelity measured."""
    turbo = [r for r in results if r.spec.family in FLOWTURBO_FAMILIES]
    refined = [r for r in turbo if r.spec.family == FLOWTURBO_HPR]
    if not refined or any(r.perfect_refiner_latent_psnr is None for r in refined):
        return None
    best = {id(r): max(r.latent_psnr, r.perfect_refiner_latent_psnr) for r in refined}
    return pareto_front([(r.seconds_per_image[batch_size], best.get(id(r), r.latent_psnr)) for r in turbo])


def headline(results, batch_sizes) -> dict:
    """At the fidelity of Heun with 6, 8 and 12 steps: how much less time FlowTurbo's best plan needs than Heun, and
    than the fastest other sampler at that fidelity (all read off measured Pareto curves). Also, as a bound on what a
    better refiner could do, the time saved against Heun with a perfect refiner (:func:`perfect_refiner_front`)."""
    heun = {r.spec.steps: r for r in results if r.spec.family == HEUN}
    table = {}
    for batch_size in batch_sizes:
        fronts = family_fronts(results, batch_size)
        perfect = perfect_refiner_front(results, batch_size)
        rows = []
        for steps in FIDELITY_LEVELS:
            if steps not in heun:
                continue
            level = heun[steps].latent_psnr
            heun_time = heun[steps].seconds_per_image[batch_size]
            turbo_time = time_to_reach(fronts["FlowTurbo (best plan)"], level)
            others = {family: time_to_reach(front, level) for family, front in fronts.items()
                      if family not in FLOWTURBO_FAMILIES and family != "FlowTurbo (best plan)"}
            reached = {family: t for family, t in others.items() if t is not None}
            fastest = min(reached, key=reached.get) if reached else None
            rows.append({
                "heun_steps": steps,
                "latent_psnr_db": level,
                "heun_seconds": heun_time,
                "flowturbo_seconds": turbo_time,
                "flowturbo_time_saved_vs_heun": None if turbo_time is None else 1 - turbo_time / heun_time,
                "fastest_other": fastest,
                "fastest_other_seconds": reached.get(fastest),
                "flowturbo_time_saved_vs_fastest_other": (
                    None if turbo_time is None or fastest is None else 1 - turbo_time / reached[fastest]
                ),
            })
            if perfect is not None:
                perfect_time = time_to_reach(perfect, level)
                rows[-1]["perfect_refiner_seconds"] = perfect_time
                rows[-1]["perfect_refiner_time_saved_vs_heun"] = (
                    None if perfect_time is None else 1 - perfect_time / heun_time)
        table[batch_size] = rows
    return table


def bootstrap_intervals(rounds: dict, statistic, resamples: int = RESAMPLES, confidence: float = CONFIDENCE,
                        seed: int = 0) -> dict:
    """How far figures computed from median times move with the run's own timing noise: a percentile bootstrap over
    the timing rounds.

    ``rounds`` maps keys to their per-round times, round ``i`` of every key timed in the same interleaved round. Each
    resample draws as many rounds with replacement, the same draw for every key (so a round in which the machine ran
    slow slows every key in it, as it did), takes each key's median over the drawn rounds and calls
    ``statistic(medians)``, which returns a dict of named figures. Returns each figure's central ``confidence``
    interval ``(low, high)``, or ``None`` for a figure that is undefined (``None``) in some resample. Returns ``{}``
    unless every key has the same number of rounds, at least :data:`MIN_ROUNDS`.
    """
    import numpy as np

    lengths = {len(values) for values in rounds.values()}
    if len(lengths) != 1 or (count := lengths.pop()) < MIN_ROUNDS:
        return {}
    keys = list(rounds)
    draws = np.random.default_rng(seed).integers(0, count, size=(resamples, count))
    resampled = np.median(np.asarray([rounds[key] for key in keys], dtype=float)[:, draws], axis=2)  # keys x resamples
    figures: dict = {}
    for column in resampled.T:
        for name, value in statistic(dict(zip(keys, column.tolist()))).items():
            figures.setdefault(name, []).append(value)
    tail = (1 - confidence) / 2
    return {name: None if None in values else tuple(float(q) for q in np.quantile(values, [tail, 1 - tail]))
            for name, values in figures.items()}


def add_intervals(table: dict, results, batch_sizes, context: dict) -> None:
    """Add timing-noise intervals (:func:`bootstrap_intervals`) next to the figures they belong to:
    ``<figure>_interval`` in the headline rows, ``share_of_call_interval`` in the overhead and ``speedup_interval``
    per compiled batch size. Results without per-round times (an older ``benchmark.json``, or too few rounds) get
    none."""
    rounds = {(i, b): r.round_seconds_per_image.get(b, []) for i, r in enumerate(results) for b in batch_sizes}

    def savings(times):
        timed = [dataclasses.replace(r, seconds_per_image={b: times[i, b] for b in batch_sizes})
                 for i, r in enumerate(results)]
        return {(b, row["heun_steps"], name): row[name] for b, rows in headline(timed, batch_sizes).items()
                for row in rows for name in HEADLINE_SAVINGS if name in row}

    intervals = bootstrap_intervals(rounds, savings)
    for b, rows in table.items():
        for row in rows:
            for name in HEADLINE_SAVINGS:
                if (b, row["heun_steps"], name) in intervals:
                    row[f"{name}_interval"] = intervals[b, row["heun_steps"], name]
    overhead = context.get("overhead") or {}
    if overhead.get("round_seconds"):
        share = bootstrap_intervals(overhead["round_seconds"], lambda t: {
            "share": (t["no-op flowturbo"] - t["no-op euler"]) / t["flowturbo"]})
        if share:
            overhead["share_of_call_interval"] = share["share"]
    for row in (context.get("compile") or {}).get("batches", {}).values():
        if row.get("round_seconds"):
            speedup = bootstrap_intervals(row["round_seconds"], lambda t: {"speedup": t["eager"] / t["compiled"]})
            if speedup:
                row["speedup_interval"] = speedup["speedup"]


def calibration_summary(results, calibrations: list[dict] | None) -> list[dict]:
    """What each of the run's calibrations (``run.Benchmark.calibrate`` records) gave: its plan, grid and time, its
    latent PSNR on the calibration samples and on the benchmark's samples (other prompts and seeds: held out), and,
    the gain over the most faithful uncalibrated point of at most the same measured base evaluations and no refiner
    evaluations: for FlowTurbo plans, any uncalibrated plan (:data:`~.samplers.UNCALIBRATED_PLAN_FAMILIES`: FlowTurbo's
    H/P plans, Euler and Heun, on the pipeline's grid or a fixed one); for OSS grids, Euler on the pipeline's grid."""
    rows = []
    for record in calibrations or []:
        grid, oss = tuple(record["grid"]), record["kinds"] == "E"
        family = EULER_OSS if oss else FLOWTURBO_CALIBRATED
        measured = next((r for r in results if r.spec.family == family and r.spec.grid == grid), None)
        row = {"kinds": record["kinds"], "budget": record["budget"], "plan": record["plan"], "grid": list(grid),
               "seconds": record["seconds"], "shared_seconds": record["figures"].get("shared_seconds", 0.0),
               "calibration_psnr_db": record["figures"].get("calibration_psnr_db"),
               "sampler": measured.spec.name if measured else None,
               "base_evaluations": measured.base_evaluations if measured else None,
               "benchmark_psnr_db": measured.latent_psnr if measured else None}
        if measured is not None:
            families = (EULER,) if oss else UNCALIBRATED_PLAN_FAMILIES
            rivals = [r for r in results if r.spec.family in families and r.refiner_evaluations == 0
                      and r.base_evaluations <= measured.base_evaluations]
            best = max(rivals, key=lambda r: r.latent_psnr, default=None)
            row["best_uncalibrated"] = best.spec.name if best else None
            row["best_uncalibrated_psnr_db"] = best.latent_psnr if best else None
            row["gain_db"] = measured.latent_psnr - best.latent_psnr if best else None
        rows.append(row)
    return rows


def end_to_end_summary(headline_table: dict, end_to_end: dict | None) -> dict:
    """Whole calls, VAE decoding included (``timing.end_to_end``): per batch size, the share of the measured
    ``steps``-step call outside the denoising loop and the speed-up ceiling it sets, and at each fidelity level of the
    headline, Heun's and FlowTurbo's times with decoding added, the time FlowTurbo saves end to end, and the most any
    sampler could save against Heun there (the loop's whole time: Amdahl's law)."""
    if not end_to_end:
        return {}
    table = {}
    for batch_size, measured in end_to_end["batches"].items():
        decode, outside = measured["decode_seconds"], measured["outside_seconds"]
        levels = []
        for row in headline_table.get(batch_size, headline_table.get(str(batch_size), [])):
            heun = row["heun_seconds"] + decode
            turbo = None if row["flowturbo_seconds"] is None else row["flowturbo_seconds"] + decode
            levels.append({"heun_steps": row["heun_steps"], "heun_call_seconds": heun, "flowturbo_call_seconds": turbo,
                           "outside_share_of_heun_call": outside / heun,
                           "time_saved_ceiling": 1 - outside / heun,
                           "flowturbo_time_saved": None if turbo is None else 1 - turbo / heun})
        table[batch_size] = {"outside_share": measured["outside_share"], "speedup_ceiling": measured["speedup_ceiling"],
                             "decode_seconds": decode, "outside_seconds": outside, "levels": levels}
    return table


def targets(summary: dict) -> list[dict]:
    """Each target with the figure measured for it, whether it is met, and (where the run kept its timing rounds) the
    figure's timing-noise interval and whether that interval spans the target, so that another run may call it
    differently; computed from one run's summary. Figures an older ``benchmark.json`` lacks (calibrations) get no
    row."""
    rows = []

    def add(target, measured, met, interval=None, threshold=None, unit=format_percent):
        within = interval is not None and threshold is not None and interval[0] < threshold < interval[1]
        rows.append({"target": target, "measured": measured, "met": bool(met),
                     "interval": None if interval is None else f"{unit(interval[0])} to {unit(interval[1])}",
                     "within_noise": within})

    for batch_size, levels in summary["headline"].items():
        for row in levels:
            level = f"Heun-{row['heun_steps']} fidelity, batch {batch_size}"
            saved = row["flowturbo_time_saved_vs_heun"]
            add(f"≥ {100 * TARGET_TIME_SAVED_VS_HEUN:.0f}% less time than Heun at {level}", format_percent(saved),
                saved is not None and saved >= TARGET_TIME_SAVED_VS_HEUN,
                row.get("flowturbo_time_saved_vs_heun_interval"), TARGET_TIME_SAVED_VS_HEUN)
            versus = row["flowturbo_time_saved_vs_fastest_other"]
            add(f"≥ {100 * TARGET_TIME_SAVED_VS_FASTEST_OTHER:.0f}% less time than the fastest other sampler at "
                f"{level}", f"{format_percent(versus)} less time than {row['fastest_other'] or '—'}",
                versus is not None and versus >= TARGET_TIME_SAVED_VS_FASTEST_OTHER,
                row.get("flowturbo_time_saved_vs_fastest_other_interval"), TARGET_TIME_SAVED_VS_FASTEST_OTHER)
    calibrated = [row for row in summary.get("calibration", []) if row["kinds"] != "E"]
    for budget in CALIBRATION_GAIN_BUDGETS:
        row = next((row for row in calibrated if row["budget"] == budget), None)
        if row is None:
            continue
        gain = row.get("gain_db")
        add(f"calibrated plan ≥ {TARGET_CALIBRATION_GAIN_DB:g} dB latent PSNR over the best uncalibrated plan of the "
            f"same cost, {budget} base evaluations",
            "—" if gain is None else f"{gain:+.2f} dB ({row['plan']} against {row['best_uncalibrated']})",
            gain is not None and gain >= TARGET_CALIBRATION_GAIN_DB)
    if calibrated:
        slowest = max(calibrated, key=lambda row: row["seconds"])
        add(f"each calibration ≤ {TARGET_CALIBRATION_SECONDS / 60:.0f} minutes",
            f"slowest {slowest['seconds'] / 60:.1f} min (budget {slowest['budget']})",
            slowest["seconds"] <= TARGET_CALIBRATION_SECONDS)
        gaps = [(abs(row["benchmark_psnr_db"] - row["calibration_psnr_db"]), row) for row in calibrated
                if row.get("benchmark_psnr_db") is not None and row.get("calibration_psnr_db") is not None]
        if gaps:
            gap, row = max(gaps, key=lambda pair: pair[0])
            add(f"held-out latent PSNR within {TARGET_GENERALISATION_DB:g} dB of the calibration samples'",
                f"largest gap {gap:.2f} dB (budget {row['budget']})", gap <= TARGET_GENERALISATION_DB)
    overhead = summary["context"].get("overhead")
    if overhead:
        share = overhead["share_of_call"]
        add(f"scheduler and hook overhead ≤ {100 * TARGET_OVERHEAD_SHARE:.0f}% of a FlowTurbo call",
            f"{100 * share:.2f}%", share <= TARGET_OVERHEAD_SHARE, overhead.get("share_of_call_interval"),
            TARGET_OVERHEAD_SHARE, lambda x: f"{100 * x:.2f}%")
    compiled = summary["context"].get("compile")
    for batch_size, row in (compiled or {}).get("batches", {}).items():
        speedup = row["eager"] / row["compiled"]
        add(f"compiled ≥ {TARGET_COMPILE_SPEEDUP}x faster than eager, batch {batch_size}", f"{speedup:.2f}x",
            speedup >= TARGET_COMPILE_SPEEDUP, row.get("speedup_interval"), TARGET_COMPILE_SPEEDUP,
            lambda x: f"{x:.2f}x")
    return rows


def format_percent(fraction) -> str:
    """A fraction as the targets and the Markdown write it (``0.591`` -> ``"59.1%"``; ``None`` -> ``"—"``)."""
    return "—" if fraction is None else f"{100 * fraction:.1f}%"
