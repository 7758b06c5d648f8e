"""FlowTurbo's step kinds as small pure functions over tensors, to be read next to method.md ("The three kinds of step").

Sampling integrates ``dx/dsigma = v(x, sigma)`` from noise (sigma = 1) to data (sigma = 0) over a grid, with step
``h = sigma_{i+1} - sigma_i`` (negative)::

    E (Euler)             x_{i+1} = x_i + h v(x_i, s_i)
    H (Heun)              v0 = v(x_i, s_i);  x~ = x_i + h v0;  v1 = v(x~, s_{i+1});  x_{i+1} = x_i + h/2 (v0 + v1)
    P (pseudo-corrector)  as H, but v0 is the previous step's v1 (no evaluation)
    R (refiner)           v0 = v_prev + r(x_i, s_i, v_prev);  x~ = x_i + h v0;  v1 = v0 + r(x~, s_{i+1}, v0);
                          x_{i+1} = x_i + h/2 (v0 + v1);  v_prev := v0

A diffusers pipeline calls the model once per evaluation and the scheduler after each, so every step is split at its
evaluations. Each line above is one function here, and nothing else in the package writes these formulas:

- :func:`euler_step` is ``x + h v``: the E step, and the predicted point ``x~`` of H, P and R steps;
- :func:`heun_step` is ``x_i + h/2 (v0 + v1)``;
- :func:`step_start` undoes the prediction (``x_i = x~ - h v0``): the scheduler reads ``x_i`` back from the predicted
  point the pipeline hands it, so that edits a pipeline makes between calls (inpainting re-noises the known region)
  carry into the step;
- :func:`refined_velocity` is ``v + r``, and :func:`refiner_evaluation` says which velocity each R evaluation refines
  and which one the step hands on (``v_prev := v0``).

The ``UPDATES`` are the scheduler's per-evaluation updates built from them (fused where an evaluation ends one step
and predicts the next), which sample-aware compilation compiles (compile.py). ``h`` is a 0-d tensor so that compiled
graphs do not specialise on its value.
"""

from __future__ import annotations

from typing import Callable, Literal

import torch


def euler_step(sample: torch.Tensor, velocity: torch.Tensor, step_size: torch.Tensor) -> torch.Tensor:
    """``x + h * v``: the Euler step, and the predicted point ``x~`` of H, P and R steps.

    Args:
        sample: ``x`` at ``sigma``, any shape.
        velocity: ``v = dx/dsigma`` at ``(x, sigma)``, shape of ``sample``.
        step_size: ``h = sigma_next - sigma`` (negative when sampling), a 0-d tensor or one broadcastable to ``sample``
            (per-token step sizes).
    """
    return sample + step_size * velocity


def heun_step(
    sample: torch.Tensor, velocity: torch.Tensor, predicted_velocity: torch.Tensor, step_size: torch.Tensor
) -> torch.Tensor:
    """The trapezoidal (Heun) update ``x_{i+1} = x_i + h/2 (v0 + v1)`` of H, P and R steps (method.md).

    ``velocity`` is ``v0`` (at the start point, or reused or refined), ``predicted_velocity`` is ``v1`` at the
    predicted point ``x~ = x_i + h v0``; shapes as in :func:`euler_step`.
    """
    return sample + 0.5 * step_size * (velocity + predicted_velocity)


def step_start(predicted: torch.Tensor, velocity: torch.Tensor, step_size: torch.Tensor) -> torch.Tensor:
    """The start point ``x_i = x~ - h v0`` of a step, read back from its predicted point ``x~ = x_i + h v0``."""
    return predicted - step_size * velocity


def refined_velocity(velocity: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """An R evaluation's velocity, ``v + r``: the velocity the refiner was given plus its offset (method.md)."""
    return velocity + offset.to(velocity.dtype)


def refiner_evaluation(
    point: Literal["start", "predicted"],
    handed_on: torch.Tensor | None,
    step_velocity: torch.Tensor | None,
    refine: Callable[[torch.Tensor | None], torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """One evaluation of an R step, for one guidance branch (method.md, "R: refiner step").

    The evaluation at the start point refines ``v_prev`` (``handed_on``: the velocity the step before handed on) into
    the step's ``v0``; the one at the predicted point refines ``v0`` into ``v1``, and the step then hands ``v0`` on
    (``v_prev := v0``). The refiner is always conditioned on the velocity its offset is added to, which is what
    training teaches and what makes a perfect refiner reproduce a Heun step exactly.

    Args:
        point: Which evaluation of the step this is.
        handed_on: ``v_prev``, or ``None`` when no step before this one ran on this branch (a run that starts inside
            the R block).
        step_velocity: The step's ``v0`` (needed at the predicted point), or ``None``.
        refine: ``refine(given)`` returns the velocity at this evaluation's point: ``refined_velocity(given,
            offset)``, or the base model's own velocity when ``given`` is ``None`` (nothing to refine).

    Returns:
        ``(velocity, handed_on, step_velocity)``: the velocity for the pipeline, and the branch's velocities after
        the evaluation.
    """
    given = handed_on if point == "start" else step_velocity
    velocity = refine(given)
    if point == "start":
        return velocity, handed_on, velocity
    return velocity, velocity if given is None else given, None


def heun_step_from_predicted(
    predicted: torch.Tensor, velocity: torch.Tensor, predicted_velocity: torch.Tensor, step_size: torch.Tensor
) -> torch.Tensor:
    """The end of an H, P or R step as the scheduler sees it: :func:`heun_step` from the start point read back from
    the predicted point the pipeline hands back (:func:`step_start`)."""
    return heun_step(step_start(predicted, velocity, step_size), velocity, predicted_velocity, step_size)


def heun_step_then_predict(
    predicted: torch.Tensor,
    velocity: torch.Tensor,
    predicted_velocity: torch.Tensor,
    step_size: torch.Tensor,
    next_step_size: torch.Tensor,
) -> torch.Tensor:
    """The end of a step followed by the next P step's prediction with the reused velocity ``v1``: the whole update a
    pseudo-corrector chain makes per evaluation, as one function (one fused kernel when compiled)."""
    corrected = heun_step_from_predicted(predicted, velocity, predicted_velocity, step_size)
    return euler_step(corrected, predicted_velocity, next_step_size)


def euler_step_then_predict(
    sample: torch.Tensor, velocity: torch.Tensor, step_size: torch.Tensor, next_step_size: torch.Tensor
) -> torch.Tensor:
    """An Euler step followed by the next P step's prediction with the same velocity."""
    return euler_step(euler_step(sample, velocity, step_size), velocity, next_step_size)


# The updates a scheduler step can make, by name; the scheduler swaps in compiled versions (see compile.py).
UPDATES = {
    "predict": euler_step,
    "correct": heun_step_from_predicted,
    "correct_then_predict": heun_step_then_predict,
    "euler_then_predict": euler_step_then_predict,
}
