"""The benchmark's figures: the Pareto plot of fidelity against time per image, and the grid of samples at a
matched time budget."""

from __future__ import annotations

import math
from pathlib import Path

from .analysis import family_fronts
from .samplers import FLOWTURBO_FAMILIES


def plot_pareto(results, batch_sizes, path: Path, levels: dict | None = None) -> Path:
    """Latent PSNR against time per image, every measured point and each family's Pareto curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(batch_sizes), figsize=(6.5 * len(batch_sizes), 5), squeeze=False)
    families = sorted({r.spec.family for r in results})
    colours = plt.get_cmap("tab20").colors  # up to 20 families, each its own colour
    for axis, batch_size in zip(axes[0], batch_sizes):
        fronts = family_fronts(results, batch_size)
        for index, family in enumerate(families):
            points = [(1000 * r.seconds_per_image[batch_size], r.latent_psnr) for r in results if r.spec.family == family]
            front = [(1000 * t, q) for t, q in fronts[family]]
            # FlowTurbo's families bold; samplers on another grid than the pipeline's (calibrated, OSS, fixed) dashed.
            on_a_grid = any(r.spec.grid is not None for r in results if r.spec.family == family)
            style = dict(linewidth=2.5 if family in FLOWTURBO_FAMILIES else 1.2, linestyle="--" if on_a_grid else "-",
                         color=colours[index % len(colours)])
            line, = axis.plot(*zip(*front), marker="o", markersize=3, label=family, **style)
            axis.scatter(*zip(*points), s=12, color=line.get_color(), alpha=0.5)
        for steps, level in (levels or {}).items():
            axis.axhline(level, color="grey", linestyle=":", linewidth=0.8)
            axis.annotate(f"Heun {steps}", (axis.get_xlim()[0], level), fontsize=7, color="grey")
        axis.set_xscale("log")
        axis.set_xlabel(f"time per image at batch {batch_size} (ms, log scale)")
        axis.set_ylabel("latent PSNR vs reference (dB)")
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=6, ncol=2)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def matched_budget_grid(results, context, path: Path, batch_size: int) -> Path | None:
    """A grid of samples at a matched time budget, written to ``path``: per sampler family the run whose time per
    image at ``batch_size`` is closest to the median FlowTurbo time, under rows of real data and the reference (when
    ``context`` has them). ``None`` when no result kept samples (a model whose latents are not decoded)."""
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
