"""Data-based training (the paper's setting): real images encoded by the pipeline's VAE instead of teacher trajectories.

Each image becomes a clean latent ``x0``; at every step it is noised to a random sigma, ``x = (1 - s) x0 + s n``, and
the teacher is asked for its velocity there before the usual refiner target (method.md, training). The conditioning
is taken from a one-step recording of the pipeline on the image's caption, so both guidance branches come along and,
as for data-free training, no pipeline-specific conditioning code is needed. Only the latent encoding depends on the
latent layout, in :func:`encode_images`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..adapters import IMAGE, SEQUENCE, adapter_for
from .trajectories import TeacherCall, record_teacher_calls

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


def load_image_folder(folder: str | Path) -> list[tuple[Path, str]]:
    """``(image path, caption)`` pairs from a folder with ``metadata.jsonl`` (``{"file_name": ..., "text": ...}``
    per line, the Hugging Face imagefolder convention) or, without it, a ``.txt`` caption beside each image."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"Image folder {folder} does not exist.")
    metadata = folder / "metadata.jsonl"
    if metadata.exists():
        rows = [json.loads(line) for line in metadata.read_text().splitlines() if line.strip()]
        pairs = [(folder / row["file_name"], row["text"]) for row in rows]
    else:
        pairs = [(path, path.with_suffix(".txt").read_text().strip()) for path in sorted(folder.iterdir())
                 if path.suffix.lower() in IMAGE_SUFFIXES and path.with_suffix(".txt").exists()]
    if not pairs:
        raise ValueError(
            f"No captioned images in {folder}: add a metadata.jsonl with file_name/text per line, or a .txt caption "
            "next to each image."
        )
    missing = [str(path) for path, _ in pairs if not path.exists()]
    if missing:
        raise FileNotFoundError(f"metadata.jsonl names images that do not exist: {missing[:3]}")
    return pairs


@torch.no_grad()
def encode_images(pipe, images: list, height: int, width: int) -> torch.Tensor:
    """Clean latents of ``images`` in the layout the pipeline's transformer takes (the one layout-specific step)."""
    layout = adapter_for(pipe.transformer).layout
    if layout not in (IMAGE, SEQUENCE):
        raise ValueError(f"Data-based training supports image pipelines; {type(pipe).__name__} has {layout} latents. "
                         "Train it data-free (from prompts) instead.")
    vae = pipe.vae
    pixels = pipe.image_processor.preprocess(images, height=height, width=width)
    pixels = pixels.to(device=vae.device, dtype=vae.dtype)
    encoded = vae.encode(pixels)
    latents = encoded.latent_dist.sample() if hasattr(encoded, "latent_dist") else encoded.latent
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    latents = (latents - shift) * vae.config.scaling_factor
    if layout == SEQUENCE:  # Flux packs 2x2 latent patches into tokens
        batch, channels, h, w = latents.shape
        latents = pipe._pack_latents(latents, batch, channels, h, w)
    return latents


def data_calls(pipe, pairs: list[tuple], call_kwargs: dict, batch_size: int = 4, storage_device="cpu",
               progress: bool = True, denoiser: str = "transformer") -> list[TeacherCall]:
    """One :class:`TeacherCall` per image and guidance branch, holding the clean latent (``velocity`` is ``None``)."""
    from PIL import Image

    height, width = call_kwargs.get("height"), call_kwargs.get("width")
    if not (height and width):
        raise ValueError("Data-based training needs the training resolution: pass height and width.")
    calls = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        images = [Image.open(path).convert("RGB") for path, _ in chunk]
        latents = encode_images(pipe, images, height, width).to(storage_device)
        recorded = record_teacher_calls(pipe, [caption for _, caption in chunk], {**call_kwargs, "num_inference_steps": 1},
                                        batch_size=len(chunk), storage_device=storage_device, progress=False,
                                        denoiser=denoiser)
        for index, call in enumerate(recorded):
            clean = latents[index % len(chunk)]
            if clean.shape != call.sample.shape:
                raise ValueError(f"Encoded images have shape {tuple(clean.shape)} but the pipeline's latents at "
                                 f"{height}x{width} are {tuple(call.sample.shape)}.")
            calls.append(TeacherCall(clean, None, None, call.per_sample, call.shared, call.group))
    return calls
