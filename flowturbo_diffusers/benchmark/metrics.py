"""Quality measures: fidelity to the exact ODE solution (PSNR), distribution distance (FID, KID) in a feature space,
and prompt accuracy."""

from __future__ import annotations

import numpy as np
import torch


def psnr(samples: torch.Tensor, reference: torch.Tensor, peak: torch.Tensor | float | None = None) -> torch.Tensor:
    """Per-sample PSNR in dB. ``peak`` defaults to each reference sample's value range (for latents; 1 for pixels)."""
    samples, reference = samples.double().flatten(1), reference.double().flatten(1)
    if peak is None:
        peak = reference.max(dim=1).values - reference.min(dim=1).values
    mse = (samples - reference).pow(2).mean(dim=1).clamp_min(1e-20)
    return 10 * torch.log10(torch.as_tensor(peak, dtype=torch.float64) ** 2 / mse)


def frechet_distance(features: np.ndarray, reference: np.ndarray) -> float:
    """FID between two feature sets (Gaussian fits; ``scipy.linalg.sqrtm`` for the matrix square root)."""
    from scipy import linalg

    mu1, mu2 = features.mean(axis=0), reference.mean(axis=0)
    sigma1, sigma2 = np.cov(features, rowvar=False), np.cov(reference, rowvar=False)
    covmean, _ = linalg.sqrtm(sigma1 @ sigma2, disp=False)
    if not np.isfinite(covmean).all():  # nearly singular product: regularise, as the reference implementation does
        offset = np.eye(sigma1.shape[0]) * 1e-6
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    covmean = covmean.real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def kernel_inception_distance(features: np.ndarray, reference: np.ndarray, subsets: int = 10,
                              subset_size: int = 100, seed: int = 0) -> float:
    """KID: the unbiased MMD^2 with the cubic polynomial kernel ``(x.y / d + 1)^3``, averaged over random subsets."""
    rng = np.random.default_rng(seed)
    size = min(subset_size, len(features), len(reference))
    dimension = features.shape[1]
    estimates = []
    for _ in range(subsets):
        x = features[rng.choice(len(features), size, replace=False)]
        y = reference[rng.choice(len(reference), size, replace=False)]
        kxx, kyy, kxy = ((a @ b.T / dimension + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
        off_diagonal = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (size * (size - 1))
        estimates.append(off_diagonal - 2 * kxy.mean())
    return float(np.mean(estimates))
