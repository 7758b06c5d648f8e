"""The conformance suite's catalogue: one :class:`PipelineCase` per diffusers flow pipeline class, built tiny offline.

Each family module of this package (``flux_qwen.py``, ``video.py``, ``image.py``) defines ``CASES``, a list of
cases; :func:`all_cases` gathers them. A case knows how to build its pipeline from configs (random weights, in-memory
tokenizers, no files, no network) and which arguments make a call tiny, so a test can run any pipeline the same way::

    pipe = case.build()
    output = pipe(**case.call_kwargs(), num_inference_steps=4, generator=torch.Generator().manual_seed(0),
                  output_type=case.output_type)
    latents = case.latents(output)
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

FAMILY_MODULES = ("flux_qwen", "video", "image")


@dataclass(frozen=True)
class PipelineCase:
    """One pipeline class of installed diffusers, built tiny.

    Attributes:
        pipeline: The diffusers class name, e.g. ``"FluxImg2ImgPipeline"``; with ``variant``, the case's id.
        family: The model family, e.g. ``"Flux"``, ``"Wan 2.2"``.
        build: Returns the pipeline: float32, CPU, every module in ``eval()``, progress bar disabled.
        call_kwargs: Returns the arguments of a tiny call (prompt, sizes, frames, input images or videos, guidance,
            ``max_sequence_length``...), everything except ``num_inference_steps``, ``generator`` and ``output_type``.
            Inputs such as images are made fresh (and seeded) on every call.
        variant: Tells apart cases of one class (``"A14B"``, ``"TI2V-5B"``); empty for the plain one.
        denoisers: The pipeline attributes that hold the model called once per scheduler entry (``("transformer",
            "transformer_2")`` for Wan 2.2 A14B's two experts).
        calls_per_evaluation: Denoiser calls per scheduler entry with ``call_kwargs`` (2 when guidance runs the
            conditional and unconditional branches as separate calls).
        output_type: What to pass as ``output_type`` to get latents back.
        notes: Anything a reader of the support table should know (what the case leaves out, quirks).
    """

    pipeline: str
    family: str
    build: Callable[[], Any]
    call_kwargs: Callable[[], dict]
    variant: str = ""
    denoisers: tuple[str, ...] = ("transformer",)
    calls_per_evaluation: int = 1
    output_type: str = "latent"
    notes: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.pipeline}-{self.variant}" if self.variant else self.pipeline

    @staticmethod
    def latents(output) -> torch.Tensor:
        """The latents of a pipeline output called with ``output_type="latent"`` (``images``, ``frames``...)."""
        for name in ("images", "frames", "videos", "image", "latents"):
            value = getattr(output, name, None)
            if value is not None:
                return value if isinstance(value, torch.Tensor) else torch.as_tensor(value)
        if isinstance(output, tuple):
            return output[0]
        raise TypeError(f"Cannot find latents in a {type(output).__name__}.")


def all_cases() -> list[PipelineCase]:
    """Every case of every family module present."""
    cases = []
    for name in FAMILY_MODULES:
        try:
            module = importlib.import_module(f"tiny_pipelines.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"tiny_pipelines.{name}":
                raise
            continue
        cases.extend(module.CASES)
    return cases
