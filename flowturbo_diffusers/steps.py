"""The update formulas of FlowTurbo's steps, as small pure functions over tensors (method.md, diffusers convention).

Sampling integrates ``dx/dsigma = v(x, sigma)`` from noise (sigma = 1) to data (sigma = 0) over a grid with step
``h = sigma_next - sigma`` (negative). Every step kind is built from two updates:

- :func:`euler_update`: ``x~ = x + h * v0``, the Euler step, which is also the predictor of H, P and R steps;
- :func:`heun_correction`: ``x_next = x + h/2 * (v0 + v1)``, written from the predicted point as
  ``x~ + h/2 * (v1 - v0)`` because the scheduler holds the predicted point, not ``x``.

An H step is ``euler_update`` with ``v0 = v(x, sigma)`` then ``heun_correction`` with ``v1 = v(x~, sigma_next)``. A P
step is the same with ``v0`` taken from the previous step's last velocity. An R step is an H step whose two
velocities come from the refiner. ``h`` is a 0-d tensor so that compiled graphs do not specialise on its value.
"""

from __future__ import annotations

import torch


def euler_update(sample: torch.Tensor, velocity: torch.Tensor, step_size: torch.Tensor) -> torch.Tensor:
    """``x + h * v``: the Euler step, and the predicted point of H, P and R steps."""
    return sample + step_size * velocity


def heun_correction(
    predicted: torch.Tensor, velocity: torch.Tensor, predicted_velocity: torch.Tensor, step_size: torch.Tensor
) -> torch.Tensor:
    """The trapezoidal (Heun) update ``x + h/2 (v0 + v1)``, given the predicted point ``x~ = x + h v0``."""
    return predicted + 0.5 * step_size * (predicted_velocity - velocity)


def correct_then_predict(
    predicted: torch.Tensor,
    velocity: torch.Tensor,
    predicted_velocity: torch.Tensor,
    step_size: torch.Tensor,
    next_step_size: torch.Tensor,
) -> torch.Tensor:
    """A Heun correction followed by the next P step's prediction with the reused velocity ``v1``: the whole update a
    pseudo-corrector chain makes per evaluation, as one function (one fused kernel when compiled)."""
    return euler_update(heun_correction(predicted, velocity, predicted_velocity, step_size), predicted_velocity, next_step_size)


def euler_then_predict(
    sample: torch.Tensor, velocity: torch.Tensor, step_size: torch.Tensor, next_step_size: torch.Tensor
) -> torch.Tensor:
    """An Euler step followed by the next P step's prediction with the same velocity."""
    return euler_update(euler_update(sample, velocity, step_size), velocity, next_step_size)


# The updates a scheduler step can make, by name; the scheduler swaps in compiled versions (see compile.py).
UPDATES = {
    "predict": euler_update,
    "correct": heun_correction,
    "correct_then_predict": correct_then_predict,
    "euler_then_predict": euler_then_predict,
}
