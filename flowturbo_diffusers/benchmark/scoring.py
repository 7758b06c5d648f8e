"""Quality scoring beyond fidelity: what the benchmark needs from a model-specific scorer to report FID, KID and
prompt accuracy.

Fidelity (latent and pixel PSNR against the reference solve) needs nothing but the pipeline. Distribution distances
and prompt accuracy need to know the model's data: real images, a feature space, and whether an image shows what its
prompt asked for. A :class:`Scorer` supplies these. The bundled model comes with one
(:class:`flowturbo_diffusers.bundled.scoring.DigitScorer`, the benchmark's default for it); for another model pass your
own to ``run_benchmark(..., scorer=...)``, or none, and the benchmark reports fidelity and cost only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, Sequence, runtime_checkable

if TYPE_CHECKING:
    import numpy as np
    import torch


@runtime_checkable
class Scorer(Protocol):
    """What the benchmark asks of a model's scorer. Implement these four methods (subclassing is optional).

    Images are float tensors ``(N, 3, H, W)`` with values in [0, 1], as the benchmark decodes them from the sampled
    latents (the same height and width as the pipeline's output). Every method must be deterministic for its
    arguments: the benchmark's figures are compared across samplers and runs.
    """

    def prompts(self, count: int, seed: int) -> tuple[list[str], Sequence | None]:
        """``count`` prompts to sample, and for each the label :meth:`accuracy` checks an image against (for the
        bundled model: the digit the prompt asks for), or ``None`` for no labels. ``seed`` chooses the prompts."""

    def real_images(self, count: int, seed: int) -> torch.Tensor:
        """``count`` real images ``(count, 3, H, W)`` in [0, 1] from the model's data distribution, chosen by
        ``seed``: the reference set of FID and KID, and the "real data" row of the sample grid."""

    def features(self, images: torch.Tensor) -> np.ndarray:
        """Feature vectors ``(N, D)`` (float, any fixed ``D``) of images ``(N, 3, H, W)`` in [0, 1], the space FID and
        KID are measured in (Inception-v3 pool features for natural images)."""

    def accuracy(self, images: torch.Tensor, labels: Sequence) -> float | None:
        """The share (0 to 1) of ``images`` ``(N, 3, H, W)`` that show what their prompts asked for, given the
        prompts' ``labels`` from :meth:`prompts` (``N`` of them); ``None`` if this scorer cannot tell."""
