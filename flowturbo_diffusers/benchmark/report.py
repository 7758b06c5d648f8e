"""Write the benchmark's outputs from measured results: ``benchmark.json`` (results, summary, headline, targets),
``benchmark.md``, ``pareto.png``, ``samples.png`` and, optionally, ``docs/benchmarks.md``. The figures come from
:mod:`.analysis`, the prose from :mod:`.markdown`, the images from :mod:`.plots`; the reports are a function of
``benchmark.json``, so they can be written again without measuring (:func:`rewrite_outputs`)."""

from __future__ import annotations

import json
import platform
from pathlib import Path

from .analysis import FIDELITY_LEVELS, add_intervals, calibration_summary, end_to_end_summary, headline, targets
from .markdown import render_markdown
from .plots import matched_budget_grid, plot_pareto
from .samplers import HEUN


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
    summary["calibration"] = calibration_summary(results, summary["context"].get("calibrations"))
    summary["end_to_end"] = end_to_end_summary(summary["headline"], summary["context"].get("end_to_end"))
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


def environment() -> dict:
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }
