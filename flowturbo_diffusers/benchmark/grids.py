"""Fixed sigma grids the benchmark runs samplers on besides the pipeline's own: time-uniform and AYS-style.

Both are sigma grids from 1 (noise) to 0 (data), used as they are: the pipeline's shift is not applied to them (on the
bundled model, whose shift is 1, they are also the times). Calibrated grids are different: they hold times before the
pipeline's shift (``calibration.py``).
"""

from __future__ import annotations

import math


def time_uniform_grid(steps: int) -> tuple[float, ...]:
    """``steps + 1`` sigmas uniform in [1, 0]: ``1, 1 - 1/N, ..., 0``. (The pipelines' own grids are not: diffusers'
    flow-match grid at shift 1 runs ``linspace(1, 1/1000, N)`` and then 0, so its last step is from 0.001 to 0.)"""
    return tuple(1.0 - k / steps for k in range(steps)) + (0.0,)


def ays_style_grid(steps: int) -> tuple[float, ...]:
    """``steps + 1`` flow sigmas at the noise levels of Align Your Steps (Sabour et al., arXiv 2404.14507).

    AYS publishes noise levels optimised for a diffusion model, not a schedule for flow models; diffusers ships them as
    ``AysSchedules`` (Stable Diffusion's 10-step sigmas in the variance-exploding parameterisation, ``x = x0 + sigma *
    noise``). A flow sample ``(1 - s) x0 + s noise`` is that diffusion sample scaled by ``1 - s`` with ``sigma = s /
    (1 - s)``, at the same signal-to-noise ratio, so each level maps to ``s = sigma / (1 + sigma)`` (the map diffusers
    uses for karras sigmas with ``use_flow_sigmas``). Other step counts interpolate the levels log-linearly, as the
    AYS paper does. The first level (sigma 14.6, Stable Diffusion's noisiest) becomes 1: a flow pipeline starts from
    pure noise.
    """
    from diffusers.schedulers import AysSchedules

    levels = [s for s in AysSchedules["StableDiffusionSigmas"] if s > 0]  # 10 levels, noisiest first, then 0
    logs = [math.log(s) for s in levels]
    interpolated = []
    for k in range(steps):
        position = k * (len(levels) - 1) / max(steps - 1, 1)
        low = min(int(position), len(levels) - 2)
        fraction = position - low
        interpolated.append(math.exp(logs[low] + fraction * (logs[low + 1] - logs[low])))
    flow = [s / (1.0 + s) for s in interpolated]
    return (1.0, *flow[1:], 0.0)
