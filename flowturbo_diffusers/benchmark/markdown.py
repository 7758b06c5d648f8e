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


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


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


def calibration_markdown(rows: list[dict], calibrations: list[dict]) -> list[str]:
    """The calibrated plans and OSS grids (:func:`~.analysis.calibration_summary` rows): what each found, how long it
    took, its fidelity on the calibration samples and on the benchmark's (held-out) samples, and its gain over the
    best uncalibrated point of the same cost."""
    if not rows:
        return []
    first = calibrations[0]
    search = first.get("settings", {})
    shared = max(record.get("prompts_shared_with_evaluation", 0) for record in calibrations)
    lines = [
        "## Calibrated plans",
        "",
        f"Each calibrated on {search.get('samples', '?')} samples (prompts and noise seeds from seed "
        f"{first['seeds'][0]} on; "
        + (f"{shared} of the prompts also occur among the evaluation prompts" if shared else
           "none of the prompts is an evaluation prompt")
        + f"), with the benchmark's call arguments and calibration's search ({search.get('candidates', '?')} candidate "
        f"intervals, steps of at most {search.get('max_span', '?')} of them, refinement passes: "
        f"{search.get('refine_passes', '?')}). The benchmark's own samples are their held-out evaluation. Kinds HPE: "
        "a FlowTurbo plan; kinds E: an OSS Euler grid, which UniPC also runs on. Grids are times before the pipeline's "
        "shift. The comparison is the most faithful uncalibrated point with at most as many base evaluations (any H/P "
        "plan, Euler or Heun, on the pipeline's grid or a fixed one, for FlowTurbo; Euler on the pipeline's grid, for "
        "OSS).",
        "",
        "| kinds | budget | plan | grid | calibration time | latent PSNR, calibration samples | latent PSNR, benchmark "
        "samples | best uncalibrated, same cost | gain |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        grid = ", ".join(f"{t:.3f}" for t in row["grid"])
        rival = (f"{row['best_uncalibrated']} ({row['best_uncalibrated_psnr_db']:.2f} dB)"
                 if row.get("best_uncalibrated") else "—")
        figures = (("calibration_psnr_db", ".2f"), ("benchmark_psnr_db", ".2f"), ("gain_db", "+.2f"))
        decibels = [_fmt(row.get(name), spec) + (" dB" if row.get(name) is not None else "") for name, spec in figures]
        lines.append(f"| {row['kinds']} | {row['budget']} | {row['plan']} | {grid} | {_duration(row['seconds'])} | "
                     f"{decibels[0]} | {decibels[1]} | {rival} | {decibels[2]} |")
    lines += ["", f"All calibrations together took {_duration(calibration_wall_seconds(rows))} (the budgets of one kind "
              "share their teacher solve and dynamic program, so each row's time includes that shared part).", ""]
    return lines


def end_to_end_markdown(table: dict, end_to_end: dict | None) -> list[str]:
    """Whole calls, VAE decoding included (:func:`~.analysis.end_to_end_summary`): the share outside the denoising
    loop, the ceiling on speed-up it sets, and the headline's savings end to end."""
    if not table or not end_to_end:
        return []
    lines = ["## End to end", ""]
    for batch_size, row in table.items():
        lines.append(
            f"A whole call ({end_to_end['sampler']}) at batch {batch_size}, decoded to `{end_to_end['output_type']}`, "
            f"takes {_ms(end_to_end['batches'][batch_size]['call_seconds'])} per image; "
            f"{_ms(row['outside_seconds'])} of it ({100 * row['outside_share']:.1f}%) is outside the denoising loop: "
            f"text encoding and set-up, {_ms(row['outside_seconds'] - row['decode_seconds'])}, and VAE decoding, "
            f"{_ms(row['decode_seconds'])}. No sampler can make that call more than "
            f"{row['speedup_ceiling']:.1f}x faster (Amdahl's law).")
        lines.append("")
    lines += [
        "At the headline's fidelity levels, with VAE decoding added to each call (the headline's times stop at the "
        "latents), and the most any sampler could save against Heun there: all of the loop's time.",
        "",
        "| batch | fidelity level | Heun, whole call | FlowTurbo, whole call | time saved end to end "
        "| outside the loop | ceiling on time saved |",
        "|---|---|---|---|---|---|---|",
    ]
    for batch_size, row in table.items():
        for level in row["levels"]:
            lines.append(f"| {batch_size} | Heun, {level['heun_steps']} steps | {_ms(level['heun_call_seconds'])} | "
                         f"{_ms(level['flowturbo_call_seconds'])} | {format_percent(level['flowturbo_time_saved'])} | "
                         f"{100 * level['outside_share_of_heun_call']:.1f}% | "
                         f"{format_percent(level['time_saved_ceiling'])} |")
    return lines + ["", PAPER_SCALE_CONTEXT, ""]


# Issue 20, item 4: what the same share looks like at the scale the paper and our users work at (not measured here).
PAPER_SCALE_CONTEXT = (
    "At paper scale the share outside the loop is smaller still: for Flux (12B) at 1024x1024 on one GPU, about 96% of "
    "a 50-step call is the transformer, the rest text encoding, set-up and VAE decoding (the figure the issue that "
    "asked for this section gives; not measured by this project, which has no GPU). A sampler's saving in model "
    "evaluations then carries almost whole into the call: cutting 50 evaluations to 12 leaves at most 4% + 96% x "
    "12/50 = 27% of the call, a 3.7x end-to-end speed-up where the evaluation count alone would say 4.2x."
)


def notes_markdown(notes: dict | None) -> list[str]:
    """What the run replaced, left out or ran on another grid than the pipeline's own, one line per sampler."""
    if not notes:
        return []
    return ["**Notes on the samplers:**", ""] + [f"- {name}: {note}" for name, note in notes.items()] + [""]


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
        "are read off their measured Pareto curves (interpolated in log time). FlowTurbo's curve is that of all its "
        "plans, calibrated ones included; the other samplers include the OSS-grid baselines.",
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
    lines += notes_markdown(context.get("notes"))
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
    lines += calibration_markdown(summary.get("calibration", []), context.get("calibrations") or [])
    lines += end_to_end_markdown(summary.get("end_to_end"), context.get("end_to_end"))
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
flowturbo bench --model PIPELINE --refiner REFINER # any local or Hub flow pipeline (no FID/accuracy without a scorer)
flowturbo bench --compile --docs docs/benchmarks.md  # add compiled vs eager, and write this page
flowturbo bench --calibration-budgets 4 6           # calibrate at these budgets only (none: --calibration-budgets)
flowturbo bench --num-processes 2                  # split the quality samples over processes (accelerate launch)
flowturbo bench --from-results --docs docs/benchmarks.md  # write the reports again from benchmark.json
```

What is compared:

- **Samplers on the pipeline's own grid**: diffusers' Euler, Heun, DPM-Solver++ (2M, 3M) and UniPC, Euler with the
  PAB and MagCache cache hooks, and FlowTurbo's H/P and H/P/R plans. UniPC and DPM-Solver++ run with flow sigmas on
  the grid the pipeline's own scheduler gives: built from its config where that already is a flow-sigma UniPC or
  DPM-Solver (Sana, Wan), else with its `shift`, or, where the pipeline shifts dynamically (Flux), with
  `use_dynamic_shifting` and its `time_shift_type`, so that they follow the `mu` the pipeline passes for the
  resolution.
- **FlowTurbo calibrated**: plans and grids from `calibrate_plan` (docs/calibration.md: step kinds H, P and E and their
  times, searched by a dynamic program over the model's own many-step solves, then refined), at each of
  `--calibration-budgets` base evaluations (4, 6, 8 and 12 by default), with calibration's default search and the
  benchmark's call arguments. They calibrate on prompts and noise seeds that are not the benchmark's samples (the
  scorer's prompts drawn with another seed, leaving out the evaluation prompts; seeds 900,000 after the evaluation
  seeds), so the benchmark's samples are their held-out evaluation, and the report gives each calibration's time.
- **OSS grids**: Euler grids from the same dynamic program with E steps only (kinds `E`, the method of OSS, Optimal
  Stepsize, arXiv 2503.21774), at the same budgets. Euler runs on them as FlowTurbo's E plan, which is Euler's method
  (its timing includes FlowTurbo's scheduler overhead, below); UniPC runs on the same grid, through its own
  `set_timesteps(sigmas=...)`, which shifts the times as the pipeline's grid is shifted. The grid is Euler's optimum,
  not searched for UniPC. DPM-Solver++ is not run on them: in diffusers 0.42.1 its `set_timesteps` takes no custom
  sigmas, and custom timesteps only without flow sigmas.
- **Fixed grids**, sigmas used as they are (not shifted by the pipeline; the bundled model's shift is 1): a
  time-uniform grid, sigmas `1, 1 - 1/N, ..., 0` (the pipeline's own grid at shift 1 runs `linspace(1, 0.001, N)` and
  then 0), and an AYS-style grid: Align Your Steps' Stable Diffusion noise levels (diffusers' `AysSchedules`) carried to
  flow sigmas at equal signal-to-noise ratio, `s = sigma / (1 + sigma)`, log-linearly interpolated to N steps as the AYS
  paper does, starting from 1. AYS levels were optimised for another model and noise schedule; this is a heuristic
  baseline, not AYS's optimisation run on this model. Euler and FlowTurbo's `H1P*` run on both.
- **Baselines that cannot run** in the pipeline never end the run: diffusers' Heun, whose `set_timesteps` takes no
  custom sigmas (Flux passes them), is replaced by FlowTurbo's `H*`, which is Heun's method on the pipeline's grid
  (docs/scheduler.md); any other is left out. The report's notes say which and why.
- **FlowTurbo (best plan)** in the headline is the Pareto curve of all FlowTurbo plans together (H/P, H/P/R,
  calibrated, and H/P on the fixed grids); the fastest other sampler is read off every other family's curve, the OSS
  baselines included.

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
- **Time**: median wall time per image of whole pipeline calls (prompt encoding included, VAE decoding not: see End to
  end), after a warm-up call. Calls are interleaved: every sampler and batch size is called once per round, in a new
  seeded order, for `--repeats` rounds, so that a machine whose speed drifts slows every sampler alike. Compiled and
  eager calls are interleaved the same way (eager ones under `torch.compiler.set_stance("force_eager")`).
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
- **End to end**: a whole call as a user makes it, VAE decoding to the pipeline's default output included: the
  pipeline's own Euler at `--end-to-end-steps` (50 by default); a one-step call with the transformer a no-op, which
  is what lies outside the denoising loop (text encoders, set-up, VAE decoding, and one step's bookkeeping); and that
  no-op call stopped at the latents (which splits off decoding); timed interleaved for `--repeats` rounds per batch
  size. The share outside the loop sets a ceiling on speed-up (Amdahl's law): no sampler makes the call faster than
  that part. At each fidelity level the
  headline's times get the decoding time added, giving the time FlowTurbo saves end to end and the most any sampler
  could save there. For scale, issue 20 gives about 96% of a 50-step Flux call on a GPU as the transformer's (the
  issue's figure, not measured here): there the loop is nearly the whole call, while on the bundled model on a CPU the
  part outside it is larger.
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
- **Targets** (issue 20, bundled model, CPU, one run): at the fidelity of Heun with 6, 8 and 12 steps, at batch 1 and
  8, at least 65% less time than Heun and at least 30% less than the fastest other sampler (OSS baselines included);
  at 4, 6 and 8 base evaluations, a calibrated plan at least 3 dB of latent PSNR above the best uncalibrated plan of
  at most the same measured base evaluations (any H/P plan, Euler or Heun, on the pipeline's grid or a fixed one);
  each calibration at most 10 minutes; the calibrated plans' latent PSNR on the benchmark's samples within 0.5 dB of
  theirs on the calibration samples (each against its own converged Heun reference). Kept from before: FlowTurbo's
  scheduler and hook overhead at most 3% of a call, and compiled at least 1.3x faster than eager.
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


def calibration_wall_seconds(rows: list[dict]) -> float:
    """The wall time of the calibrations behind ``rows``: each row's ``seconds`` is the part shared by the budgets of
    its kinds (``shared_seconds``, one teacher solve and dynamic program) plus its own, so the shared part counts once
    per kinds."""
    shared = {row["kinds"]: row.get("shared_seconds") or 0.0 for row in rows}
    return sum(shared.values()) + sum(row["seconds"] - (row.get("shared_seconds") or 0.0) for row in rows)
