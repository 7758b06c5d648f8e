"""The step formulas of steps.py, one by one against method.md ("The three kinds of step")."""

import torch

from flowturbo_diffusers.steps import (
    UPDATES,
    euler_step,
    heun_step,
    refined_velocity,
    refiner_evaluation,
    step_start,
)

x, v0, v1, v2 = (torch.randn(3, 4, generator=torch.Generator().manual_seed(i)) for i in range(4))
h, h_next = torch.tensor(-0.2), torch.tensor(-0.1)


def test_euler_heun_and_the_start_point_are_method_md_formulas():
    torch.testing.assert_close(euler_step(x, v0, h), x + h * v0)
    torch.testing.assert_close(heun_step(x, v0, v1, h), x + h / 2 * (v0 + v1))
    torch.testing.assert_close(step_start(euler_step(x, v0, h), v0, h), x)


def test_the_scheduler_updates_compose_the_formulas():
    predicted = euler_step(x, v0, h)
    torch.testing.assert_close(UPDATES["correct"](predicted, v0, v1, h), heun_step(x, v0, v1, h))
    torch.testing.assert_close(
        UPDATES["correct_then_predict"](predicted, v0, v1, h, h_next), euler_step(heun_step(x, v0, v1, h), v1, h_next)
    )
    torch.testing.assert_close(UPDATES["euler_then_predict"](x, v0, h, h_next), x + h * v0 + h_next * v0)


def test_an_R_step_refines_v_prev_then_its_own_v0_and_hands_v0_on():
    refined = []

    def refine(given):
        refined.append(given)
        return refined_velocity(given, torch.full_like(given, 0.5))

    velocity, handed_on, step_velocity = refiner_evaluation("start", v2, None, refine)
    torch.testing.assert_close(velocity, v2 + 0.5)  # v0 = v_prev + r
    assert handed_on is v2 and step_velocity is velocity
    velocity_1, handed_on, step_velocity = refiner_evaluation("predicted", handed_on, step_velocity, refine)
    torch.testing.assert_close(velocity_1, v2 + 1.0)  # v1 = v0 + r: conditioned on the velocity it is added to
    torch.testing.assert_close(handed_on, v2 + 0.5)  # v_prev := v0
    assert step_velocity is None and torch.equal(refined[1], v2 + 0.5)


def test_an_R_evaluation_with_nothing_to_refine_takes_the_base_velocity_and_hands_it_on():
    def refine(given):
        assert given is None
        return v1  # the base model's own velocity

    velocity, handed_on, step_velocity = refiner_evaluation("predicted", None, None, refine)
    assert velocity is v1 and handed_on is v1 and step_velocity is None
