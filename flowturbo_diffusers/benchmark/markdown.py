"""The benchmark's Markdown: the headline and targets tables, the perfect-refiner bound, the measured limits, the
compiled-vs-eager table, the table of all results and the method section (``RUNNING_IT``), put together into
``benchmark.md`` and ``docs/benchmarks.md`` by :func:`render_markdown`. It only formats: every figure comes from
:mod:`.analysis` via the run's summary."""

from __future__ import annotations

from .analysis import format_percent
from .samplers import FLOWTURBO_HPR


def targets_markdown(rows: list[dict]) -> str:
    """The targets table (rows from :func:`~.analysis.targets`), with a line saying how many are met and how many
    verdicts are within the run's timing noise."""
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
    """Every measured sampler with its evaluations, time per image per batch size and quality figures."""
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


def _saving(row: dict, name: str) -> str:
    """A headline saving, with its timing-noise interval if the row has one."""
    interval = row.get(f"{name}_interval")
    text = format_percent(row.get(name))
    return text if interval is None else f"{text} ({100 * interval[0]:.1f} to {100 * interval[1]:.1f})"


def headline_markdown(table: dict) -> str:
    """The headline table per batch size (:func:`~.analysis.headline` rows): time saved at each fidelity level."""
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
                 f"now {format_percent(rows[steps]['flowturbo_time_saved_vs_heun'])}" if steps in rows else "—"
                 for steps in levels]
        lines.append(f"| {batch_size} | " + " | ".join(cells) + " |")
    return lines + [""]


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
    """The whole report page from a run's summary (as ``benchmark.json`` holds it) and results; ``plot`` and ``grid``
    are the image paths to link."""
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
flowturbo bench --model PIPELINE --refiner REFINER # any local or Hub pipeline (no FID/accuracy without a scorer)
flowturbo bench --compile --docs docs/benchmarks.md  # add compiled vs eager, and write this page
flowturbo bench --num-processes 2                  # split the quality samples over processes (accelerate launch)
flowturbo bench --from-results --docs docs/benchmarks.md  # write the reports again from benchmark.json
```

What each figure is:

- **Fidelity**: PSNR of each sample's final latents (and decoded pixels) against the reference solve from the same
  noise and prompt, averaged over the samples. Latent PSNR uses each reference latent's value range as the peak.
- **FID / KID**: in the feature space of the model's scorer (for the bundled model, the penultimate layer of its digit
  classifier), samples against held-out real images; the FID floor above is real images against real images with as
  many samples.
- **Accuracy**: the share of samples the scorer reads as what their prompt asked for (for the bundled model, the
  classifier reads the prompted digit).
- **Scorer**: FID, KID and accuracy need to know the model's data, so they come from a scorer
  (`flowturbo_diffusers.benchmark.scoring.Scorer`: prompts with labels, real images, image features, prompt
  accuracy). The bundled model's (`flowturbo_diffusers.bundled.scoring.DigitScorer`) is its default; for another
  model pass one to `run_benchmark(settings, scorer=...)`, or the benchmark reports fidelity and cost only.
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
    """The compiled-vs-eager table per batch size, with the agreement of compiled and eager latents."""
    lines = ["| batch | eager ms/img | compiled ms/img | speed-up | compile time (s) |", "|---|---|---|---|---|"]
    for batch, row in compile_results["batches"].items():
        lines.append(f"| {batch} | {1000 * row['eager']:.2f} | {1000 * row['compiled']:.2f} | "
                     f"{row['eager'] / row['compiled']:.2f}x | {row['compile_seconds']:.1f} |")
    lines.append(f"\nPlan {compile_results['plan']}, mode {compile_results['mode']!r}; compiled and eager latents "
                 f"agree to {compile_results['agreement_psnr_db']:.1f} dB PSNR.")
    return "\n".join(lines)
