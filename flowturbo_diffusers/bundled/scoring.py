"""The bundled model's scorer for the benchmark: digit prompts, rendered real images and the bundled
:class:`~.classifier.DigitClassifier` (features for FID/KID, digits for prompt accuracy)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..benchmark.scoring import Scorer
from . import digits


class DigitScorer(Scorer):
    """Scores samples of the bundled coloured-digit model (:class:`~flowturbo_diffusers.benchmark.scoring.Scorer`).

    Prompts ask for the digits 0-9 in turn, each with a random colour pair; real images are rendered by
    :mod:`.digits`; features are the classifier's penultimate layer (``(N, 128)`` for the bundled classifier), and an
    image is accurate when the classifier reads the prompted digit in it.
    """

    def __init__(self, classifier, batch_size: int = 256):
        self.classifier = classifier
        self.batch_size = batch_size

    def prompts(self, count: int, seed: int) -> tuple[list[str], list[int]]:
        batch = digits.render_batch(count, seed=seed, digits=[i % len(digits.DIGITS) for i in range(count)])
        return batch.prompts, batch.labels.tolist()

    def real_images(self, count: int, seed: int) -> torch.Tensor:
        return digits.render_batch(count, seed=seed).images

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> np.ndarray:
        return torch.cat([self.classifier.features(chunk) for chunk in images.split(self.batch_size)]).numpy()

    def accuracy(self, images: torch.Tensor, labels: Sequence[int]) -> float:
        predictions = self.classifier.predict(images, batch_size=self.batch_size)
        return float((predictions == torch.tensor(list(labels))).float().mean())
