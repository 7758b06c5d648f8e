"""A small CNN that recognises the digit in a coloured-digit image (see `flowturbo_diffusers.bundled.digits`).

It is trained on rendered (real) images by ``examples/train_tiny_pipeline.py`` and shipped with the bundled model. It
measures whether generated samples show the prompted digit, and its penultimate-layer features (`features`) are the
feature extractor for FID/KID on this data, the way Inception-v3 pool features are for natural images.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


class DigitClassifier(ModelMixin, ConfigMixin):
    """VGG-style CNN: two 3x3 conv layers per stage, a 2x down-sampling between stages, global average pooling.

    Saves and loads like any diffusers model (``save_pretrained`` writes ``config.json`` and safetensors weights).

    Args:
        in_channels: channels of the input images.
        block_out_channels: output channels of each stage; the last one is the feature dimension.
        num_classes: number of digits.
    """

    @register_to_config
    def __init__(self, in_channels: int = 3, block_out_channels: tuple[int, ...] = (32, 64, 128), num_classes: int = 10):
        super().__init__()
        layers, channels = [], in_channels
        for index, out_channels in enumerate(block_out_channels):
            if index > 0:
                layers.append(nn.MaxPool2d(2))
            for _ in range(2):
                layers += [nn.Conv2d(channels, out_channels, 3, padding=1), nn.BatchNorm2d(out_channels), nn.ReLU()]
                channels = out_channels
        self.trunk = nn.Sequential(*layers)
        self.head = nn.Linear(channels, num_classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer features ``(N, block_out_channels[-1])`` of images ``(N, 3, H, W)`` in [0, 1]."""
        return self.trunk(images * 2.0 - 1.0).mean(dim=(2, 3))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, num_classes)`` over the digits, for images ``(N, 3, H, W)`` in [0, 1]."""
        return self.head(self.features(images))

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """The most likely digit of each image, evaluated in batches."""
        return torch.cat([self(chunk).argmax(dim=-1) for chunk in images.split(batch_size)])
