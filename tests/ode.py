"""Drive a scheduler over any velocity field ``v(x, sigma)``, the way a diffusers pipeline's denoising loop does.

The tests use it on analytic ODEs (convergence order, equivalence with diffusers' schedulers, runs that start part-way).
"""

from __future__ import annotations

from typing import Callable

import torch

VelocityField = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def integrate(
    scheduler,
    velocity: VelocityField,
    latents: torch.Tensor,
    num_inference_steps: int | None = None,
    sigmas=None,
    begin_index: int | None = None,
) -> tuple[torch.Tensor, int]:
    """Integrate from ``latents`` with ``scheduler``; return the final latents and the number of velocity calls.

    ``velocity(x, sigma)`` gets the scheduler's sigma for each entry of ``timesteps`` (a 0-d tensor).
    ``begin_index`` starts the run part-way, as img2img pipelines do (``latents`` must then be at that sigma).
    """
    scheduler.set_timesteps(num_inference_steps, **({} if sigmas is None else {"sigmas": sigmas}))
    start = 0
    if begin_index is not None:
        scheduler.set_begin_index(begin_index)
        start = begin_index
    calls = 0
    for index in range(start, len(scheduler.timesteps)):
        timestep = scheduler.timesteps[index]
        output = velocity(latents, scheduler.sigmas[index])
        calls += 1
        latents = scheduler.step(output, timestep, latents, return_dict=False)[0]
    return latents, calls
