"""From measured results to conclusions: Pareto curves, the headline savings, a Markdown table, plots, a sample grid
and ``docs/benchmarks.md``. Everything here is computed from the results of one run."""

from __future__ import annotations

import dataclasses
import json
import math
import platform
from pathlib import Path

from .samplers import FLOWTURBO_FAMILIES, FLOWTURBO_HPR, HEUN

FIDELITY_LEVELS = (6, 8, 12)  # Heun step counts that define the three fidelity levels
# The targets the benchmark checks (its issue): time saved against Heun at each fidelity level, the share of a
# pipeline call spent in FlowTurbo's scheduler and hook, and the compiled speed-up on CPU.
TARGET_TIME_SAVED_VS_HEUN = 0.55
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


def targets(summary: dict) -> list[dict]:
    """Each target with the figure measured for it, whether it is met, and (where the run kept its timing rounds) the
    figure's timing-noise interval and whether that interval spans the target, so that another run may call it
    differently; computed from one run's summary."""
    rows = []

    def add(target, measured, met, interval=None, threshold=None, unit=_percent):
        within = interval is not None and interval[0] < threshold < interval[1]
        rows.append({"target": target, "measured": measured, "met": bool(met),
                     "interval": None if interval is None else f"{unit(interval[0])} to {unit(interval[1])}",
                     "within_noise": within})

    for batch_size, levels in summary["headline"].items():
        for row in levels:
            level = f"Heun-{row['heun_steps']} fidelity, batch {batch_size}"
            saved = row["flowturbo_time_saved_vs_heun"]
            add(f"≥ {100 * TARGET_TIME_SAVED_VS_HEUN:.0f}% less time than Heun at {level}", _percent(saved),
                saved is not None and saved >= TARGET_TIME_SAVED_VS_HEUN,
                row.get("flowturbo_time_saved_vs_heun_interval"), TARGET_TIME_SAVED_VS_HEUN)
            versus = row["flowturbo_time_saved_vs_fastest_other"]
            add(f"faster than the fastest other sampler at {level}",
                f"{_percent(versus)} less time than {row['fastest_other'] or '—'}", versus is not None and versus > 0,
                row.get("flowturbo_time_saved_vs_fastest_other_interval"), 0.0)
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


def targets_markdown(rows: list[dict]) -> str:
    with_intervals = any(row.get("interval") for row in rows)
    lines = ["| target | measured | 95% timing interval | met |" if with_intervals else "| target | measured | met |",
             "|---|---|---|---|" if with_intervals else "|---|---|---|"]
    for row in rows:
        met = ("yes" if row["met"] else "**no**") + (" (within noise)" if row.get("within_noise") else "")
        interval = [row.get("interval") or "—"] if with_intervals else []
        lines.append("| " + " | ".join([row["target"], row["measured"], *interval, met]) + " |")
    summary = f"\n\n{sum(row['met'] for row in rows)} of {len(rows)} targets met."
    noisy = sum(bool(row.get("within_noise")) for row in rows)
    if with_intervals:
        summary += (f" {noisy} of the {len(rows)} are within this run's timing noise: their interval spans the target, "
                    "so another run may call them differently." if noisy else
                    " No verdict is within this run's timing noise: every interval lies on one side of its target.")
    return "\n".join(lines) + summary


def _fmt(value, spec: str = ".3g", none: str = "—") -> str:
    if value is None:
        return none
    return format(value, spec)


def markdown_table(results, batch_sizes) -> str:
    columns = ["sampler", "base evals", "refiner evals"] + [f"ms/img @{b}" for b in batch_sizes]
    columns += ["latent PSNR", "perfect-refiner latent PSNR", "pixel PSNR", "FID", "KID", "accuracy"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in sorted(results, key=lambda r: (r.spec.family, r.seconds_per_image[batch_sizes[0]])):
        cells = [r.spec.name, str(r.base_evaluations), str(r.refiner_evaluations)]
        cells += [f"{1000 * r.seconds_per_image[b]:.1f}" for b in batch_sizes]
        cells += [f"{r.latent_psnr:.2f}", _fmt(r.perfect_refiner_latent_psnr, ".2f"), _fmt(r.pixel_psnr, ".2f"),
                  _fmt(r.fid, ".2f"), _fmt(r.kid, ".4f"),
                  _fmt(None if r.accuracy is None else 100 * r.accuracy, ".1f")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _ms(seconds) -> str:
    return "not reached" if seconds is None else f"{1000 * seconds:.1f} ms"


def _percent(fraction) -> str:
    return "—" if fraction is None else f"{100 * fraction:.1f}%"


def _saving(row: dict, name: str) -> str:
    """A headline saving, with its timing-noise interval if the row has one."""
    interval = row.get(f"{name}_interval")
    text = _percent(row.get(name))
    return text if interval is None else f"{text} ({100 * interval[0]:.1f} to {100 * interval[1]:.1f})"


def headline_markdown(table: dict) -> str:
    lines = []
    for batch_size, rows in table.items():
        lines.append(f"Batch {batch_size}:\n")
        lines.append("| fidelity level | latent PSNR | Heun | FlowTurbo (best plan) | time saved vs Heun | fastest other "
                     "sampler | time saved vs it |")
        lines.append("|---|---|---|---|---|---|---|")
        for row in rows:
            lines.append(
                f"| Heun, {row['heun_steps']} steps | {row['latent_psnr_db']:.2f} dB | {_ms(row['heun_seconds'])} | "
                f"{_ms(row['flowturbo_seconds'])} | {_saving(row, 'flowturbo_time_saved_vs_heun')} | "
                f"{row['fastest_other'] or '—'} ({_ms(row['fastest_other_seconds'])}) | "
                f"{_saving(row, 'flowturbo_time_saved_vs_fastest_other')} |"
            )
        lines.append("")
    return "\n".join(lines)


def perfect_refiner_markdown(table: dict) -> list[str]:
    """The time saved against Heun if the refiner were perfect, per batch size and level (a bound, not a target),
    next to the time saved now."""
    bounded = {batch_size: {row["heun_steps"]: row for row in rows if "perfect_refiner_seconds" in row}
               for batch_size, rows in table.items()}
    bounded = {batch_size: rows for batch_size, rows in bounded.items() if rows}
    if not bounded:
        return []
    levels = list(dict.fromkeys(steps for rows in bounded.values() for steps in rows))
    lines = [
        "**With a perfect refiner** (a bound on what a better refiner can do): each plan with R steps at its measured "
        "time, with the fidelity it reaches when its R steps run as exact Heun steps on the base model, which is what "
        "a refiner with no error gives (or its real fidelity, where that is higher). Time saved against Heun:",
        "",
        "| batch | " + " | ".join(f"Heun-{steps} fidelity" for steps in levels) + " |",
        "|---|" + "---|" * len(levels),
    ]
    for batch_size, rows in bounded.items():
        cells = [f"{_saving(rows[steps], 'perfect_refiner_time_saved_vs_heun')}; "
                 f"now {_percent(rows[steps]['flowturbo_time_saved_vs_heun'])}" if steps in rows else "—"
                 for steps in levels]
        lines.append(f"| {batch_size} | " + " | ".join(cells) + " |")
    return lines + [""]


def plot_pareto(results, batch_sizes, path: Path, levels: dict | None = None) -> Path:
    """Latent PSNR against time per image, every measured point and each family's Pareto curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(batch_sizes), figsize=(6.5 * len(batch_sizes), 5), squeeze=False)
    families = sorted({r.spec.family for r in results})
    for axis, batch_size in zip(axes[0], batch_sizes):
        fronts = family_fronts(results, batch_size)
        for family in families:
            points = [(1000 * r.seconds_per_image[batch_size], r.latent_psnr) for r in results if r.spec.family == family]
            front = [(1000 * t, q) for t, q in fronts[family]]
            style = dict(linewidth=2.5 if family in FLOWTURBO_FAMILIES else 1.2)
            line, = axis.plot(*zip(*front), marker="o", label=family, **style)
            axis.scatter(*zip(*points), s=12, color=line.get_color(), alpha=0.5)
        for steps, level in (levels or {}).items():
            axis.axhline(level, color="grey", linestyle=":", linewidth=0.8)
            axis.annotate(f"Heun {steps}", (axis.get_xlim()[0], level), fontsize=7, color="grey")
        axis.set_xscale("log")
        axis.set_xlabel(f"time per image at batch {batch_size} (ms, log scale)")
        axis.set_ylabel("latent PSNR vs reference (dB)")
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def write_outputs(results, context, output_dir: Path, docs_path: Path | None = None, command: str = "") -> dict:
    """Write benchmark.json, benchmark.md, pareto.png, samples.png (and docs/benchmarks.md); return the summary."""
    output_dir.mkdir(parents=True, exist_ok=True)
    batch_sizes = list(context["settings"]["batch_sizes"])
    summary = {
        "command": command,
        "environment": environment(),
        "context": {k: v for k, v in context.items() if k not in ("reference_samples", "real_samples")},
        "results": [r.to_json() for r in results],
    }
    grid = matched_budget_grid(results, context, output_dir / "samples.png", batch_sizes[-1])
    return _write_reports(summary, results, batch_sizes, output_dir, grid, docs_path)


def rewrite_outputs(output_dir: Path, docs_path: Path | None = None) -> dict:
    """Write the reports again from ``output_dir/benchmark.json`` (after a change to the report, without measuring
    again); the sample grid of the run is kept."""
    from .run import SamplerResult

    summary = json.loads((output_dir / "benchmark.json").read_text())
    results = [SamplerResult.from_json(row) for row in summary["results"]]
    batch_sizes = [int(b) for b in summary["context"]["settings"]["batch_sizes"]]
    grid = output_dir / "samples.png"
    return _write_reports(summary, results, batch_sizes, output_dir, grid if grid.exists() else None, docs_path)


def _write_reports(summary, results, batch_sizes, output_dir: Path, grid: Path | None, docs_path: Path | None) -> dict:
    summary["headline"] = headline(results, batch_sizes)
    add_intervals(summary["headline"], results, batch_sizes, summary["context"])
    summary = json.loads(json.dumps(summary, default=str))  # as benchmark.json holds it: rewrites render the same
    summary["targets"] = targets(summary)
    (output_dir / "benchmark.json").write_text(json.dumps(summary, indent=2))
    heun = {r.spec.steps: r.latent_psnr for r in results if r.spec.family == HEUN and r.spec.steps in FIDELITY_LEVELS}
    plot = plot_pareto(results, batch_sizes, output_dir / "pareto.png", heun)
    markdown = render_markdown(summary, results, batch_sizes, plot.name, grid.name if grid else None)
    (output_dir / "benchmark.md").write_text(markdown)
    if docs_path is not None:
        images = docs_path.parent / "images"
        images.mkdir(parents=True, exist_ok=True)
        (images / "benchmark_pareto.png").write_bytes(plot.read_bytes())
        if grid:
            (images / "benchmark_samples.png").write_bytes(grid.read_bytes())
        docs_path.write_text(render_markdown(summary, results, batch_sizes, "images/benchmark_pareto.png",
                                             "images/benchmark_samples.png" if grid else None))
    return summary


def matched_budget_grid(results, context, path: Path, batch_size: int) -> Path | None:
    import statistics

    from ..images import image_grid

    with_samples = [r for r in results if r.samples is not None]
    if not with_samples:
        return None
    turbo = [r.seconds_per_image[batch_size] for r in with_samples if r.spec.family in FLOWTURBO_FAMILIES]
    budget = statistics.median(turbo) if turbo else statistics.median(r.seconds_per_image[batch_size] for r in with_samples)
    rows, labels = [], []
    for label, images in (("real data", context.get("real_samples")), ("reference", context.get("reference_samples"))):
        if images is not None:
            rows.append(_pil(images))
            labels.append(label)
    for family in sorted({r.spec.family for r in with_samples}):
        candidates = [r for r in with_samples if r.spec.family == family]
        chosen = min(candidates, key=lambda r: abs(math.log(r.seconds_per_image[batch_size] / budget)))
        rows.append(_pil(chosen.samples))
        labels.append(f"{chosen.spec.name} ({1000 * chosen.seconds_per_image[batch_size]:.1f} ms)")
    grid = image_grid(rows, row_labels=labels, scale=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    return path


def _pil(images):
    from PIL import Image

    array = (images.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(a) for a in array]


def environment() -> dict:
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def limits_markdown(results, overhead: dict) -> list[str]:
    """Two measured limits on the time FlowTurbo can save here: the part of a call no sampler saves, and the
    fidelity above which only plans without refiner steps reach."""
    lines = []
    if overhead:
        fixed = overhead["no_op_model_call_seconds"]["euler"]
        lines += [
            f"Outside the model, a call at batch 1 takes {1000 * fixed:.1f} ms (the Euler call with the no-op model: "
            f"prompt encoding and set-up), {100 * fixed / overhead['flowturbo_call_seconds']:.0f}% of the real "
            f"{overhead['plan']} call. It is the same for every sampler, so at batch 1 the time saved is smaller "
            "than the share of model evaluations saved.",
            "",
        ]
    refined = [r for r in results if r.spec.family == FLOWTURBO_HPR]
    if refined:
        best = max(refined, key=lambda r: r.latent_psnr)
        lines += [
            f"The most faithful plan with refiner steps measured here reaches {best.latent_psnr:.2f} dB "
            f"({best.spec.plan}); FlowTurbo reaches fidelity levels above that with H/P plans only, where refiner "
            "steps save nothing.",
            "",
        ]
    return lines


def render_markdown(summary: dict, results, batch_sizes, plot: str, grid: str | None) -> str:
    context = summary["context"]
    reference = context["reference"]
    overhead = context.get("overhead") or {}
    lines = [
        "# Benchmark",
        "",
        "Generated by the benchmark script; rerun it to regenerate this page (ratios come from one run):",
        "",
        f"```bash\n{summary['command']}\n```",
        "",
        f"Environment: {summary['environment']}. Settings: {context['settings']}.",
        "",
        "## Headline",
        "",
        "Fidelity is the latent PSNR of the final latents against the exact ODE solution from the same noise and "
        "prompt. Each fidelity level is Heun's at 6, 8 and 12 steps; the times for FlowTurbo and the other samplers "
        "are read off their measured Pareto curves (interpolated in log time).",
        "",
        headline_markdown(summary["headline"]),
        f"Reference: {reference['description']}; it is converged: the solve with half as many steps is within "
        f"{reference['psnr_of_half_steps_solution_db']:.1f} dB PSNR of it.",
        "",
        "## Targets",
        "",
        targets_markdown(summary["targets"]),
        "",
    ]
    if overhead:
        lines += [
            f"Overhead of FlowTurbo's scheduler and routing hook (plan {overhead['plan']}, no-op model, batch 1): "
            f"{1e6 * overhead['extra_seconds_over_euler']:.0f} µs per call over Euler at the same "
            f"{overhead['evaluations']} evaluations ({overhead['extra_microseconds_per_evaluation']:.1f} µs per "
            f"evaluation), {100 * overhead['share_of_call']:.2f}% of a real FlowTurbo call.",
            "",
        ]
    lines += limits_markdown(results, overhead)
    lines += perfect_refiner_markdown(summary["headline"])
    if context.get("refiner_parameters"):
        scale = context.get("refiner_offset_scale")
        scale_text = (f" Its offsets are scaled by {scale:g} (its `offset_scale`: "
                      "docs/refiner.md, \"Offset scale\").") if scale not in (None, 1) else ""
        lines += [f"Refiner: {context['refiner_parameters']:,} parameters, "
                  f"{100 * context['refiner_parameters'] / context['base_parameters']:.1f}% of the base transformer "
                  f"({context['base_parameters']:,}).{scale_text}", ""]
    if context.get("real_vs_real_fid") is not None:
        lines += [f"FID floor (held-out real images against real images, same sample count): "
                  f"{context['real_vs_real_fid']:.2f}.", ""]
    if context.get("compile"):
        lines += ["## Compiled vs eager", "", compile_markdown(context["compile"]), ""]
    lines += ["## Quality against latency", "", f"![Pareto curves]({plot})", ""]
    if grid:
        lines += ["## Samples at a matched budget", "", f"![Samples]({grid})", ""]
    lines += ["## All results", "", markdown_table(results, batch_sizes), "", RUNNING_IT]
    return "\n".join(lines)


RUNNING_IT = """## Running it

```bash
flowturbo bench                                    # the bundled model, its refiner and classifier, on this machine
flowturbo bench --model PIPELINE --refiner REFINER # any local or Hub pipeline (no FID/accuracy without a classifier)
flowturbo bench --compile --docs docs/benchmarks.md  # add compiled vs eager, and write this page
flowturbo bench --num-processes 2                  # split the quality samples over processes (accelerate launch)
flowturbo bench --from-results --docs docs/benchmarks.md  # write the reports again from benchmark.json
```

What each figure is:

- **Fidelity**: PSNR of each sample's final latents (and decoded pixels) against the reference solve from the same
  noise and prompt, averaged over the samples. Latent PSNR uses each reference latent's value range as the peak.
- **FID / KID**: in the feature space of the bundled digit classifier, samples against held-out real images; the FID
  floor above is real images against real images with as many samples.
- **Accuracy**: the share of samples the classifier reads as the prompted digit.
- **Time**: median wall time per image of whole pipeline calls (prompt encoding included, VAE decoding not), after a
  warm-up call. Calls are interleaved: every sampler and batch size is called once per round, in a new seeded order,
  for `--repeats` rounds, so that a machine whose speed drifts slows every sampler alike. Compiled and eager calls are
  interleaved the same way (eager ones under `torch.compiler.set_stance("force_eager")`).
- **Drift correction**: on a shared machine the speed wanders over tens of seconds, enough to move a median by
  several per cent in a few rounds. Because the calls are interleaved, the calls themselves measure it: the speed at
  each call is the median, over the `--drift-window` calls before and after it (4 by default; not the call itself),
  of how much slower than their own sampler's median those calls were. Each call's time is divided by it, so the
  figures are wall times at the run's median speed (`drift_window` in the settings above; 0 turns this off). The raw
  wall times are kept in `benchmark.json` (`raw_round_seconds_per_image`, `raw_round_seconds`).
- **Timing intervals**: in brackets after each saving, and in the targets table, the central 95% range of that
  figure over 1000 bootstrap resamples of the run's (drift-corrected) timing rounds. Each resample draws `--repeats`
  rounds with replacement, the same rounds for every sampler (they were timed together), and reads every figure off
  the medians of the drawn rounds. It shows how far a figure moves with this run's timing noise: a verdict whose
  interval spans its target could go the other way in another run, which more `--repeats` narrow. It does not cover a
  different machine, the uncertainty of the drift estimate itself (held fixed while resampling), or quality figures
  (those come from fixed seeds and do not vary between runs).
- **Overhead**: the same FlowTurbo call and an Euler call with as many evaluations, both with the transformer
  replaced by a no-op (a hook returning zeros), interleaved for 4x `--repeats` rounds; the difference of their median
  times, as a share of the real FlowTurbo call's median. A figure near zero, or below it, is within timing noise.
- **Perfect-refiner bound**: each plan with R steps is also run with its R steps as Heun steps on the base model,
  which is what a refiner with no error gives (an oracle refiner makes R steps exact Heun steps, method.md). Placed
  at the R plan's own measured time, these points give FlowTurbo's Pareto curve with a perfect refiner, and the time
  saved against Heun read off it. Where the real refiner beats exact Heun steps on a plan (it can: its error can
  partly cancel the H and P steps' own discretisation error, compare the two PSNR columns below), the curve keeps the
  real fidelity, so it is never below the real curve. It bounds what a refiner with no error would save; it is not a
  target.
- **Read-offs**: the time a sampler family needs for a fidelity level is read off its Pareto curve (the measured
  points no other point of the family beats on both time and fidelity), interpolating log-time linearly between the
  two points around the level; a family that never reaches the level gets no time.
"""


def compile_markdown(compile_results: dict) -> str:
    lines = ["| batch | eager ms/img | compiled ms/img | speed-up | compile time (s) |", "|---|---|---|---|---|"]
    for batch, row in compile_results["batches"].items():
        lines.append(f"| {batch} | {1000 * row['eager']:.2f} | {1000 * row['compiled']:.2f} | "
                     f"{row['eager'] / row['compiled']:.2f}x | {row['compile_seconds']:.1f} |")
    lines.append(f"\nPlan {compile_results['plan']}, mode {compile_results['mode']!r}; compiled and eager latents "
                 f"agree to {compile_results['agreement_psnr_db']:.1f} dB PSNR.")
    return "\n".join(lines)
