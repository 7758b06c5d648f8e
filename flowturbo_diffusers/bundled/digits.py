"""Procedural "coloured digits" data: the training distribution of the bundled text-to-image model.

Every image is one digit 0-9 in a foreground colour on a plain background of another colour, with a random position,
size, rotation, stroke weight and a small colour jitter, and its prompt reads like ``"a red 7 on a blue background"``.

Why procedural data rather than the scikit-learn digits (the usual offline toy set):

* The scikit-learn digits are 1,797 grey 8x8 images with no captions. The bundled model is a text-to-image pipeline,
  so it needs images of at least 32x32 RGB, with prompts that really change the picture (digit *and* two colours),
  so that classifier-free guidance has something to do.
* A renderer gives an unlimited stream of fresh samples from a known distribution, deterministic for a seed, with
  nothing to download or ship (no data files, no font files: the digits are drawn with Pillow's built-in font).
* Because the class of every image is known, a classifier trained on rendered images measures whether generated
  samples show the prompted digit, and its features serve as the feature extractor for FID/KID.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

IMAGE_SIZE = 32
DIGITS = tuple(range(10))
# A small palette whose colours are pairwise far apart, so every (foreground, background) pair is legible.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "green": (40, 165, 70),
    "blue": (40, 80, 215),
    "yellow": (240, 210, 50),
    "purple": (135, 55, 170),
    "orange": (245, 135, 30),
    "white": (240, 240, 240),
    "black": (25, 25, 25),
}
COLOUR_NAMES = tuple(COLOURS)
COLOUR_PAIRS = tuple((fg, bg) for fg in COLOUR_NAMES for bg in COLOUR_NAMES if fg != bg)

# Variation, in output pixels / degrees (the glyph is drawn at SUPERSAMPLE times the size, then box-filtered down).
SUPERSAMPLE = 4
# Bold, large glyphs with moderate jitter: the tiny 16-token transformer learned thin, strongly rotated glyphs too
# slowly on a CPU budget (37% of samples legible after 25 minutes); colours were never the problem.
GLYPH_HEIGHT = (20.0, 24.0)
MAX_SHIFT = 2.0
MAX_ROTATION = 8.0
STROKE = (0.5, 1.5)
COLOUR_JITTER = 0.05


def make_prompt(digit: int, foreground: str, background: str) -> str:
    """The prompt of a ``digit`` drawn in colour ``foreground`` on colour ``background``."""
    return f"{_article(foreground)} {foreground} {digit} on {_article(background)} {background} background"


def parse_prompt(prompt: str) -> tuple[int, str, str]:
    """``(digit, foreground, background)`` of a prompt made by :func:`make_prompt`; ``ValueError`` for any other."""
    words = prompt.split()
    if (len(words) != 7 or words[3] != "on" or words[6] != "background" or not words[2].isdigit()
            or words[1] not in COLOURS or words[5] not in COLOURS):
        raise ValueError(f"{prompt!r} is not a coloured-digit prompt such as {make_prompt(7, 'red', 'blue')!r}.")
    return int(words[2]), words[1], words[5]


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def all_prompts() -> list[str]:
    """Every prompt of the distribution (10 digits x 56 colour pairs), digit-major."""
    return [make_prompt(digit, fg, bg) for digit in DIGITS for fg, bg in COLOUR_PAIRS]


def vocabulary() -> list[str]:
    """The words the prompts are made of (used to give the bundled tokenizers one token per word)."""
    words = {word for prompt in all_prompts() for word in prompt.split()}
    return sorted(words)


@dataclass
class DigitBatch:
    """Rendered images ``(N, 3, H, W)`` in [0, 1], their digits ``(N,)`` and prompts, and the colours used."""

    images: torch.Tensor
    labels: torch.Tensor
    prompts: list[str]
    foregrounds: list[str]
    backgrounds: list[str]


@lru_cache(maxsize=None)
def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def _glyph_mask(digit: int, rng: np.random.Generator, size: int) -> np.ndarray:
    """An anti-aliased coverage mask in [0, 1] of shape ``(size, size)`` for one randomly placed digit."""
    from PIL import Image, ImageDraw

    big = size * SUPERSAMPLE
    # Pillow's default font has a digit height of about 0.73 em.
    font_size = int(round(rng.uniform(*GLYPH_HEIGHT) / 0.73 * SUPERSAMPLE))
    stroke = int(round(rng.uniform(*STROKE) * SUPERSAMPLE))
    centre = big / 2 + rng.uniform(-MAX_SHIFT, MAX_SHIFT, size=2) * SUPERSAMPLE
    angle = rng.uniform(-MAX_ROTATION, MAX_ROTATION)

    canvas = Image.new("L", (big, big), 0)
    ImageDraw.Draw(canvas).text(
        (big / 2, big / 2), str(digit), fill=255, font=_font(font_size), anchor="mm", stroke_width=stroke, stroke_fill=255
    )
    # Rotate about the centre and move the glyph to its position in one affine warp.
    canvas = canvas.rotate(angle, resample=Image.BICUBIC, translate=tuple(centre - big / 2))
    canvas = canvas.resize((size, size), resample=Image.BOX)
    return np.asarray(canvas, dtype=np.float32) / 255.0


def render(
    digits, foregrounds, backgrounds, rng: np.random.Generator, size: int = IMAGE_SIZE
) -> torch.Tensor:
    """Render one image per (digit, foreground, background) triple, with random placement drawn from ``rng``."""
    images = np.empty((len(digits), 3, size, size), dtype=np.float32)
    for index, (digit, fg, bg) in enumerate(zip(digits, foregrounds, backgrounds)):
        mask = _glyph_mask(int(digit), rng, size)
        fg_rgb = np.asarray(COLOURS[fg], dtype=np.float32) / 255.0 + rng.uniform(-COLOUR_JITTER, COLOUR_JITTER, 3)
        bg_rgb = np.asarray(COLOURS[bg], dtype=np.float32) / 255.0 + rng.uniform(-COLOUR_JITTER, COLOUR_JITTER, 3)
        images[index] = fg_rgb[:, None, None] * mask + bg_rgb[:, None, None] * (1.0 - mask)
    return torch.from_numpy(images).clamp_(0.0, 1.0)


def render_batch(
    n: int, seed: int | np.random.Generator = 0, digits=None, size: int = IMAGE_SIZE
) -> DigitBatch:
    """Render ``n`` random images, deterministic for an integer ``seed`` (or drawing from a numpy ``Generator``).

    Digits are uniform (or taken from ``digits``, a sequence of length ``n``); the colour pair is uniform over the
    56 ordered pairs of distinct palette colours.
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    labels = rng.integers(0, len(DIGITS), size=n) if digits is None else np.asarray(digits, dtype=np.int64)
    if len(labels) != n:
        raise ValueError(f"Got {len(labels)} digits for a batch of {n}.")
    pairs = [COLOUR_PAIRS[i] for i in rng.integers(0, len(COLOUR_PAIRS), size=n)]
    foregrounds, backgrounds = [fg for fg, _ in pairs], [bg for _, bg in pairs]
    images = render(labels, foregrounds, backgrounds, rng, size=size)
    prompts = [make_prompt(int(d), fg, bg) for d, fg, bg in zip(labels, foregrounds, backgrounds)]
    return DigitBatch(images, torch.as_tensor(labels, dtype=torch.long), prompts, foregrounds, backgrounds)


def image_grid(images: torch.Tensor, columns: int = 10):
    """Tile ``(N, 3, H, W)`` images in [0, 1] into one PIL image (for looking at data and samples)."""
    from PIL import Image

    n, _, height, width = images.shape
    rows = -(-n // columns)
    grid = torch.ones(3, rows * (height + 2), columns * (width + 2))
    for index in range(n):
        row, column = divmod(index, columns)
        top, left = row * (height + 2) + 1, column * (width + 2) + 1
        grid[:, top : top + height, left : left + width] = images[index]
    array = (grid.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(array)
