"""Sampling for the benchmark: every sampler generates the same samples from fixed prompts and noise seeds, split
across processes; latents are decoded to images; the reference solve; and how many model evaluations a call makes.
How long the calls take is :mod:`.timing`."""

from __future__ import annotations

import torch

from ..hooks import count_calls
from ..reference import heun_pipeline, sample_latents
from .metrics import psnr


class BenchmarkSamples:
    """The benchmark's samples of one pipeline: ``prompts[i]`` always from the noise of ``seeds[i]``, whichever
    sampler, process or batch generates it, so that samplers are compared sample by sample.

    ``pipe`` is the base pipeline (its VAE decodes; its transformer is the one whose calls are counted);
    ``call_kwargs`` go to every call (height, width, guidance...); calls take ``generation_batch`` samples at most;
    ``state`` is an ``accelerate`` ``PartialState`` that splits the samples between processes.
    """

    def __init__(self, pipe, prompts: list[str], seeds: list[int], call_kwargs: dict, generation_batch: int, state,
                 progress: bool = True):
        self.pipe = pipe
        self.prompts = prompts
        self.seeds = seeds
        self.call_kwargs = call_kwargs
        self.generation_batch = generation_batch
        self.state = state
        self.progress = progress

    def generate(self, pipe, call_kwargs: dict, indices: list[int], desc: str | None = None) -> torch.Tensor:
        """Latents ``(len(indices), ...)`` (float32, on the CPU) of the samples at ``indices``, from ``pipe`` (the base
        pipeline or one sharing its modules) with ``call_kwargs``; a progress bar over the calls if ``desc`` is
        given."""
        return sample_latents(pipe, [self.prompts[i] for i in indices], [self.seeds[i] for i in indices],
                              {**self.call_kwargs, **call_kwargs}, self.generation_batch,
                              desc if self.progress else None)

    @torch.no_grad()
    def decoded_call(self, pipe, call_kwargs: dict, indices: list[int]) -> None:
        """One call of ``pipe`` on the samples at ``indices`` as a user makes it, decoding the latents to the
        ``output_type`` in ``call_kwargs`` (timing a whole call; the output is dropped)."""
        prompts = [self.prompts[i] for i in indices]
        generators = [torch.Generator(pipe._execution_device).manual_seed(self.seeds[i]) for i in indices]
        key = "class_labels" if isinstance(prompts[0], int) else "prompt"
        pipe(**{key: prompts}, generator=generators, **{**self.call_kwargs, **call_kwargs})

    def generate_all(self, pipe, call_kwargs: dict, desc: str | None = None) -> torch.Tensor:
        """All samples (as :meth:`generate`), split across processes and gathered on every process."""
        from accelerate.utils import gather_object

        indices = list(range(len(self.prompts)))
        with self.state.split_between_processes(indices) as share:
            local = self.generate(pipe, call_kwargs, share, desc) if share else torch.empty(0)
        if self.state.num_processes == 1:
            return local
        parts = gather_object([local])
        return torch.cat([part for part in parts if part.numel()])

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor | None:
        """Images ``(N, 3, H, W)`` in [0, 1] of image-layout latents ``(N, C, h, w)`` (SD3-style pipelines); ``None``
        for other layouts."""
        vae = self.pipe.vae
        if latents.dim() != 4 or not hasattr(vae.config, "scaling_factor"):
            return None
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        images = []
        for chunk in latents.split(64):
            chunk = chunk.to(vae.device, vae.dtype) / vae.config.scaling_factor + shift
            images.append(((vae.decode(chunk).sample.float() + 1) / 2).clamp(0, 1).cpu())
        return torch.cat(images)

    def reference(self, steps: int) -> dict:
        """The ``steps``-step Heun solve of every sample (:func:`~flowturbo_diffusers.reference.heun_pipeline`), and
        how far it is from the solve with half as many steps (its own error, in dB of latent PSNR): ``{"latents",
        "images", "description", "psnr_of_half_steps_solution_db"}``."""
        heun = heun_pipeline(self.pipe)
        solution = self.generate_all(heun, {"num_inference_steps": steps}, f"Reference solve ({steps} Heun steps)")
        half = self.generate_all(heun, {"num_inference_steps": steps // 2},
                                 f"Reference check ({steps // 2} Heun steps)")
        return {
            "latents": solution,
            "images": self.decode(solution),
            "description": f"Heun (FlowTurbo H*), {steps} steps",
            "psnr_of_half_steps_solution_db": float(psnr(half, solution).mean()),
        }

    def count_evaluations(self, pipe, call_kwargs: dict) -> tuple[int, int]:
        """Base-model and refiner evaluations of one single-image call of ``pipe``: a FlowTurbo pipeline's own
        counts, else the calls of the transformer (counted for that call only)."""
        with count_calls(self.pipe.transformer) as counter:
            self.generate(pipe, call_kwargs, [0])
        counts = getattr(pipe, "last_evaluation_counts", None)
        if counts is not None:
            return counts["base"], counts["refiner"]
        return counter.count, 0
