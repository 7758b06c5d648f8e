"""What fidelity is measured against: final latents from fixed prompts and noise seeds, and the many-step Heun solve
of the same ODE that every sampler's latents are compared with.

The benchmark (``benchmark.sampling``) and the refiner evaluation (``training.evaluation``) both sample with
:func:`sample_latents` and solve the reference with :func:`heun_pipeline`, so their figures are comparable. Both
use FlowTurbo as a user would: ``FlowTurboPipeline.from_pipe(pipe, refiner=False, plan="H*")`` is Heun's method on the
pipeline's own sigma schedule.
"""

from __future__ import annotations

import torch

REFERENCE_PLAN = "H*"


def heun_pipeline(pipe):
    """A FlowTurbo view of ``pipe`` (same modules, no copy) that runs Heun steps only, without a refiner, and without a
    progress bar: called with ``num_inference_steps=n`` it solves the pipeline's ODE with ``n`` Heun steps."""
    from .pipeline import FlowTurboPipeline

    heun = FlowTurboPipeline.from_pipe(pipe, refiner=False, plan=REFERENCE_PLAN)
    heun.set_progress_bar_config(disable=True)
    return heun


@torch.no_grad()
def sample_latents(pipe, prompts: list, seeds: list[int], call_kwargs: dict | None = None,
                   batch_size: int | None = None, desc: str | None = None) -> torch.Tensor:
    """The final latents of ``pipe`` for ``prompts``, prompt ``i`` from the noise of seed ``seeds[i]``, so that any
    sampler run on the same prompts and seeds can be compared with it sample by sample.

    ``prompts`` are strings, or class labels (ints) for class-conditional pipelines such as DiT. The pipeline is
    called once per ``batch_size`` prompts (all at once by default) with ``output_type="latent"`` and
    ``call_kwargs``, with a progress bar over the calls if ``desc`` is given. Returns a float32 CPU tensor
    ``(len(prompts), ...)`` in the pipeline's latent layout (``(N, C, H, W)`` for image pipelines). Raises
    ``ValueError`` unless there are one or more prompts, each with a seed.
    """
    from tqdm.auto import tqdm

    if not prompts or len(prompts) != len(seeds):
        raise ValueError(f"Sampling needs one or more prompts and one noise seed per prompt, got {len(prompts)} "
                         f"prompts and {len(seeds)} seeds.")
    size = batch_size or len(prompts)
    key = "class_labels" if isinstance(prompts[0], int) else "prompt"
    chunks = []
    for start in tqdm(range(0, len(prompts), size), desc=desc, leave=False, disable=desc is None):
        generators = [torch.Generator(pipe._execution_device).manual_seed(seed) for seed in seeds[start:start + size]]
        output = pipe(**{key: list(prompts[start:start + size])}, generator=generators, output_type="latent",
                      **(call_kwargs or {}))
        chunks.append(output_tensor(output).float().cpu())
    return torch.cat(chunks)


def output_tensor(output) -> torch.Tensor:
    """The samples in a diffusers pipeline output: ``.images`` for image pipelines, ``.frames`` for video ones
    (``WanPipelineOutput``, ``HunyuanVideoPipelineOutput``, ...), whatever ``output_type`` made of them.

    Raises ``TypeError`` naming the output's fields if it has neither.
    """
    for field in ("images", "frames"):
        value = getattr(output, field, None)
        if value is not None:
            return value
    raise TypeError(f"{type(output).__name__} has neither `images` nor `frames`; its fields are "
                    f"{list(getattr(output, 'keys', lambda: [])())}.")


def reference_solve(pipe, prompts: list, seeds: list[int], steps: int, call_kwargs: dict | None = None,
                    batch_size: int | None = None, desc: str | None = None) -> torch.Tensor:
    """The ``steps``-step Heun solution of ``pipe``'s ODE for each prompt and noise seed (the other arguments as in
    :func:`sample_latents`): the converged latents that fidelity (latent PSNR, relative error) is measured against."""
    call_kwargs = {**(call_kwargs or {}), "num_inference_steps": steps}
    return sample_latents(heun_pipeline(pipe), prompts, seeds, call_kwargs, batch_size, desc)
