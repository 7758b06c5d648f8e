"""Plan parsing, fill plans, evaluation layout and the clear errors for malformed plans."""

import pytest

from flowturbo_diffusers.plan import Evaluation, Plan, evaluation_layout


def test_paper_plan_parses_to_its_segments():
    plan = Plan.parse("H1P5R3")
    assert plan.segments == (("H", 1), ("P", 5), ("R", 3))
    assert plan.num_steps == 9
    assert plan.kinds() == ("H",) + ("P",) * 5 + ("R",) * 3
    assert str(plan) == "H1P5R3"


def test_whitespace_and_lowercase_are_accepted():
    assert Plan.parse(" h8 p9 r5 ").segments == (("H", 8), ("P", 9), ("R", 5))


def test_fill_plan_takes_the_steps_left_over():
    plan = Plan.parse("H1P*R3")
    assert plan.is_fill and plan.num_steps is None
    assert plan.kinds(28) == ("H",) + ("P",) * 24 + ("R",) * 3
    assert plan.kinds(4) == ("H", "R", "R", "R")


@pytest.mark.parametrize(
    "plan, base, refiner",
    [
        ("H1P5R3", 2 + 5, 6 - 1),
        ("H8P9R5", 16 + 9, 10 - 1),
        ("P3", 3 + 1 - 1, 0),
        ("E4", 4, 0),
        ("H3E1", 7, 0),
        ("P2H1E2R1", 2 + 1 + 2 + 2, 2 - 1),
        ("H1P5", 2 + 5 - 1, 0),
    ],
)
def test_evaluation_count_is_2H_plus_P_plus_E_plus_one_for_a_leading_P_less_the_one_at_sigma_zero(plan, base, refiner):
    parsed = Plan.parse(plan)
    assert parsed.count_evaluations() == {"base": base, "refiner": refiner}
    at_zero = parsed.count_evaluations(evaluate_at_zero=True)
    ends_with = parsed.kinds()[-1]
    assert at_zero == {"base": base + (ends_with in "HP"), "refiner": refiner + (ends_with == "R")}


def test_layout_evaluates_P_only_at_its_predicted_point():
    assert evaluation_layout(("H", "P", "E")) == (
        Evaluation(0, "H", "start"),
        Evaluation(0, "H", "predicted"),
        Evaluation(1, "P", "predicted"),
        Evaluation(2, "E", "start"),
    )
    assert [e.sigma_index for e in evaluation_layout(("H", "P", "P"), evaluate_at_zero=True)] == [0, 1, 2, 3]
    assert [e.sigma_index for e in evaluation_layout(("H", "P", "P"))] == [0, 1, 2]  # no evaluation at sigma 0


def test_a_leading_P_evaluates_its_start_point_too():
    assert evaluation_layout(("P", "P"))[:2] == (Evaluation(0, "P", "start"), Evaluation(0, "P", "predicted"))


@pytest.mark.parametrize(
    "plan, message",
    [
        ("H1X2", "Unknown step kind 'X'"),
        ("H0P5", "Step counts must be positive, got 'H0'"),
        ("H-1P5", "Step counts must be positive, got 'H-1'"),
        ("H1P", "has no count"),
        ("R3H1", "starts with a refiner step"),
        ("H1P*R*", "more than one '*'"),
        ("", "The plan is empty"),
        ("H1P5!", "Cannot read '!'"),
    ],
)
def test_malformed_plans_raise_a_value_error_with_a_valid_example(plan, message):
    with pytest.raises(ValueError, match=message) as error:
        Plan.parse(plan)
    assert "H1P5R3" in str(error.value)


def test_more_steps_than_requested_is_an_error_that_suggests_the_fill_form():
    with pytest.raises(ValueError, match=r"has 9 steps, more than the 5 requested.*'H1P\*R3'"):
        Plan.parse("H1P5R3").kinds(5)


def test_fixed_plan_with_fewer_steps_than_requested_is_an_error():
    with pytest.raises(ValueError, match="num_inference_steps=9"):
        Plan.parse("H1P5R3").kinds(28)


def test_fill_plan_with_too_few_steps_names_the_minimum():
    with pytest.raises(ValueError, match="needs at least 4 steps but num_inference_steps=3"):
        Plan.parse("H1P*R3").kinds(3)


def test_fill_that_leaves_R_first_is_refused():
    with pytest.raises(ValueError, match="starts with a refiner step"):
        Plan.parse("P*R3").kinds(3)


def test_a_huge_step_count_is_a_value_error_not_a_memory_error():
    with pytest.raises(ValueError, match="more than 10,000 steps") as error:
        Plan.parse("H99999999999")
    assert "H1P5R3" in str(error.value)
    with pytest.raises(ValueError, match="num_inference_steps must be between 1 and 10,000"):
        Plan.parse("H1P*").kinds(10**9)


@pytest.mark.parametrize("steps", [2.5, "8", True])
def test_a_step_count_that_is_not_a_whole_number_names_the_argument(steps):
    plan = Plan.parse("H1P*")
    with pytest.raises(ValueError, match="num_inference_steps must be a whole number of steps, such as 8"):
        plan.kinds(steps)


def test_a_wrong_number_of_sigmas_is_reported_as_sigmas():
    with pytest.raises(ValueError, match=r"the pipeline's 8 sigmas ask for. Pass 6 sigmas \(one per step\)"):
        Plan.parse("H1P5").kinds(8, source="sigmas")
