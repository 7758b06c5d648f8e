"""The bundled demo: a tiny trained text-to-image pipeline shipped with the package, and what scores it.

- ``model/`` holds a `StableDiffusion3Pipeline` for 32x32 images of coloured digits ("a red 7 on a blue background") in
  diffusers layout, its refiner (``model/refiner``), its `classifier/` (:class:`~.classifier.DigitClassifier`), the
  recommended call arguments and measured figures in `flowturbo.json`, and a model card. It is written by
  ``examples/train_tiny_pipeline.py`` and ``examples/train_bundled_refiner.py``.
- :mod:`.digits` renders the procedural training distribution; :mod:`.classifier` is the digit classifier;
  :mod:`.scoring` is the benchmark's scorer for this model (:func:`load_bundled_scorer`).

None of this is needed to use FlowTurbo on another model: it makes the CLI, the examples and the benchmark run offline.

Usage::

    from flowturbo_diffusers.bundled import BUNDLED_CALL_DEFAULTS, load_bundled_pipeline

    pipe = load_bundled_pipeline()
    image = pipe("a red 7 on a blue background", **BUNDLED_CALL_DEFAULTS).images[0]

``BUNDLED_CALL_DEFAULTS`` (height, width, guidance_scale, num_inference_steps for the pipeline's default Euler
scheduler, max_sequence_length) is read from `flowturbo.json` on first access. diffusers and torch are imported only
when a model is loaded, so importing this module is cheap.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

BUNDLED_MODEL_DIR = Path(__file__).resolve().parent / "model"
INFO_FILE = "flowturbo.json"


def bundled_model_path() -> Path:
    """The folder of the bundled pipeline; raises `FileNotFoundError` (saying how to fix it) if it is missing."""
    if not (BUNDLED_MODEL_DIR / "model_index.json").is_file():
        raise FileNotFoundError(
            f"The bundled model is missing from {BUNDLED_MODEL_DIR}. Reinstall flowturbo-diffusers from a complete "
            "source tree (the folder is package data), or rebuild it with `python examples/train_tiny_pipeline.py`."
        )
    return BUNDLED_MODEL_DIR


@lru_cache(maxsize=1)
def bundled_model_info() -> dict:
    """The contents of `flowturbo.json`: recommended call arguments and the figures measured after training."""
    return json.loads((bundled_model_path() / INFO_FILE).read_text())


def load_bundled_pipeline(torch_dtype=None, **kwargs):
    """The bundled `StableDiffusion3Pipeline` (float32 unless ``torch_dtype`` says otherwise), loaded offline.

    ``kwargs`` go to ``StableDiffusion3Pipeline.from_pretrained``.
    """
    import torch
    from diffusers import StableDiffusion3Pipeline

    return StableDiffusion3Pipeline.from_pretrained(
        bundled_model_path(), dtype=torch_dtype or torch.float32, local_files_only=True, **kwargs
    )


def load_bundled_classifier():
    """The bundled `DigitClassifier` (in eval mode): digit logits and FID/KID features for 32x32 digit images."""
    from .classifier import DigitClassifier

    return DigitClassifier.from_pretrained(bundled_model_path() / "classifier").eval()


def load_bundled_scorer():
    """The benchmark's scorer for the bundled model (:class:`~.scoring.DigitScorer` with the bundled classifier):
    digit prompts, rendered real images, FID/KID features and prompt accuracy."""
    from .scoring import DigitScorer

    return DigitScorer(load_bundled_classifier())


def evaluation_prompts(per_digit: int, seed: int) -> tuple[list[str], list[int], list[str]]:
    """``per_digit`` prompts for each digit with random colour pairs: prompts, digits, background colours."""
    import numpy as np

    from . import digits

    rng = np.random.default_rng(seed)
    prompts, labels, backgrounds = [], [], []
    for digit in digits.DIGITS:
        for pair in rng.integers(0, len(digits.COLOUR_PAIRS), size=per_digit):
            fg, bg = digits.COLOUR_PAIRS[pair]
            prompts.append(digits.make_prompt(digit, fg, bg))
            labels.append(digit)
            backgrounds.append(bg)
    return prompts, labels, backgrounds


def generate_images(pipe, prompts: list[str], seed: int, batch_size: int = 50, **call_kwargs):
    """Images in [0, 1] ``(N, 3, H, W)`` (``(N, F, 3, H, W)`` for a video pipeline); sample ``i`` uses the noise of
    seed ``seed + i``."""
    import torch

    from ..reference import output_tensor

    images = []
    with torch.no_grad():
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start : start + batch_size]
            generators = [torch.Generator().manual_seed(seed + start + i) for i in range(len(chunk))]
            output = pipe(prompt=chunk, generator=generators, output_type="pt", **call_kwargs)
            images.append(output_tensor(output))
    return torch.cat(images)


def background_colours(images) -> list[str]:
    """The palette colour nearest to the median colour of each image's 2-pixel border."""
    import torch

    from . import digits

    border = torch.cat([images[..., :2, :].flatten(2), images[..., -2:, :].flatten(2)], dim=-1)
    border = torch.cat([border, images[..., 2:-2, :2].flatten(2), images[..., 2:-2, -2:].flatten(2)], dim=-1)
    median = border.median(dim=-1).values  # (N, 3)
    palette = torch.tensor([digits.COLOURS[c] for c in digits.COLOUR_NAMES], dtype=torch.float32) / 255.0
    return [digits.COLOUR_NAMES[i] for i in torch.cdist(median, palette).argmin(dim=-1)]


def foreground_colours(images, backgrounds: list[str]) -> list[str]:
    """The palette colour (other than the image's ``backgrounds`` entry) nearest to the median of the pixels that
    differ most from that background: the pixels at least half as far from it as the farthest one, i.e. the glyph's
    solid stroke, not its anti-aliased edge. ``images`` ``(N, 3, H, W)`` in [0, 1]."""
    import torch

    from . import digits

    palette = {name: torch.tensor(rgb, dtype=torch.float32) / 255.0 for name, rgb in digits.COLOURS.items()}
    colours = []
    for image, background in zip(images.float(), backgrounds):
        pixels = image.flatten(1).T  # (H*W, 3)
        distance = (pixels - palette[background]).norm(dim=-1)
        median = pixels[distance >= 0.5 * distance.max()].median(dim=0).values
        others = [name for name in digits.COLOUR_NAMES if name != background]
        colours.append(min(others, key=lambda name: (median - palette[name]).norm().item()))
    return colours


def prompt_accuracy(images, prompts: list[str], classifier) -> dict[str, float]:
    """How often samples show what their coloured-digit prompts ask for: ``{"digit", "foreground", "background"}``,
    each the share of images (of frames, for video ``(N, F, 3, H, W)``) with the prompted digit (by ``classifier``),
    glyph colour (:func:`foreground_colours`, against the background colour found in the image) and background colour
    (:func:`background_colours`). ``images`` are ``(N, 3, H, W)`` in [0, 1], one per prompt. Raises ``ValueError`` if
    the counts differ, or for a prompt :func:`~.digits.parse_prompt` cannot read."""
    import numpy as np
    import torch

    from . import digits

    if len(images) != len(prompts):
        raise ValueError(f"Got {len(images)} images for {len(prompts)} prompts: give one image (or video) per prompt.")
    frames = images.shape[1] if images.dim() == 5 else 1
    images = images.flatten(0, 1) if images.dim() == 5 else images
    wanted = [digits.parse_prompt(prompt) for prompt in prompts for _ in range(frames)]
    labels = torch.tensor([digit for digit, _, _ in wanted])
    backgrounds = [bg for _, _, bg in wanted]

    seen_backgrounds = background_colours(images)
    return {
        "digit": (classifier.predict(images) == labels).float().mean().item(),
        "foreground": float(np.mean([a == fg for a, (_, fg, _) in zip(foreground_colours(images, seen_backgrounds),
                                                                      wanted)])),
        "background": float(np.mean([a == b for a, b in zip(seen_backgrounds, backgrounds)])),
    }


def score_samples(pipe, classifier, per_digit: int, seed: int, **call_kwargs):
    """Share of samples the classifier reads as the prompted digit, share with the prompted background colour, and
    the images, for :func:`evaluation_prompts` ``(per_digit, seed)`` (by frame for a video pipeline)."""
    prompts, _, _ = evaluation_prompts(per_digit, seed)
    images = generate_images(pipe, prompts, seed, **call_kwargs)
    scores = prompt_accuracy(images, prompts, classifier)
    return scores["digit"], scores["background"], images


def __getattr__(name: str):
    # BUNDLED_CALL_DEFAULTS is read lazily, so that importing this module never fails or touches the disk.
    if name == "BUNDLED_CALL_DEFAULTS":
        return dict(bundled_model_info()["call_defaults"])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
