"""Numerics of FlowTurboScheduler on analytic velocity fields, and its equivalence with diffusers' own schedulers."""

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FlowMatchHeunDiscreteScheduler

from flowturbo_diffusers import FlowTurboScheduler
from ode import integrate

DATA_MEAN, DATA_STD = 0.7, 0.5


def gaussian_flow_velocity(x, sigma):
    """Exact flow-matching velocity for data ~ N(mean, std^2): a real flow model's field, with a closed-form solution."""
    variance = (1 - sigma) ** 2 * DATA_STD**2 + sigma**2
    return -DATA_MEAN + (sigma - (1 - sigma) * DATA_STD**2) / variance * (x - (1 - sigma) * DATA_MEAN)


def oscillating_velocity(x, sigma):
    """dx/dsigma = 2 cos(2 sigma) x, solved by x(sigma) = x(1) exp(sin(2 sigma) - sin 2)."""
    return 2 * torch.cos(2 * sigma) * x


FIELDS = {
    "gaussian_flow": (gaussian_flow_velocity, lambda noise: DATA_MEAN + DATA_STD * noise),
    "oscillating": (oscillating_velocity, lambda noise: noise * np.exp(-np.sin(2.0))),
}


def final_error(plan, steps, field):
    velocity, exact = FIELDS[field]
    noise = torch.randn(512, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    scheduler = FlowTurboScheduler(plan=plan)
    latents, _ = integrate(scheduler, velocity, noise, sigmas=np.linspace(1.0, 1.0 / steps, steps))
    return (latents.double() - exact(noise)).abs().max().item()


@pytest.mark.parametrize("field", sorted(FIELDS))
@pytest.mark.parametrize("plan, order", [("H*", 2), ("H1P*", 2), ("P*", 2), ("H*E1", 2), ("E*", 1)])
def test_error_shrinks_at_the_plan_order_when_the_step_halves(plan, order, field):
    errors = [final_error(plan, steps, field) for steps in (16, 32, 64)]
    ratios = [errors[i] / errors[i + 1] for i in range(2)]
    assert ratios == pytest.approx([2**order] * 2, rel=0.12), (errors, ratios)


def _run_loop(scheduler, velocity, latents, steps, **kwargs):
    scheduler.set_timesteps(steps, **kwargs)
    for timestep in scheduler.timesteps:
        latents = scheduler.step(velocity(latents, timestep / 1000), timestep, latents).prev_sample
    return latents


@pytest.mark.parametrize("steps, shift", [(2, 3.0), (3, 3.0), (5, 3.0), (12, 3.0), (28, 3.0), (5, 1.0), (28, 1.0)])
def test_H_then_E_reproduces_flow_match_heun(steps, shift):
    heun = FlowMatchHeunDiscreteScheduler(shift=shift)
    turbo = FlowTurboScheduler.from_config(heun.config, plan=f"H{steps - 1}E1")
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    expected = _run_loop(heun, gaussian_flow_velocity, latents, steps)
    actual = _run_loop(turbo, gaussian_flow_velocity, latents, steps)
    torch.testing.assert_close(turbo.timesteps, heun.timesteps)
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("steps", [2, 3, 12])
@pytest.mark.parametrize("field", sorted(FIELDS))
def test_H_then_E_matches_heun_computed_in_float64(steps, field):
    """Tighter than the comparison above: FlowMatchHeunDiscreteScheduler divides by sigma, and at shift 1 its grid
    has sigma = 0.001, where its own float32 round-off alone reaches 1e-4. FlowTurbo stays within 1e-6."""
    velocity = FIELDS[field][0]
    turbo = FlowTurboScheduler(plan=f"H{steps - 1}E1")
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    actual = _run_loop(turbo, velocity, latents, steps)
    grid, x = turbo.sigma_grid.double(), latents.double()
    for i in range(steps):
        h, v0 = grid[i + 1] - grid[i], velocity(x, grid[i])
        x = x + h * v0 if i == steps - 1 else x + h / 2 * (v0 + velocity(x + h * v0, grid[i + 1]))
    torch.testing.assert_close(actual.double(), x, rtol=0, atol=1e-6)


@pytest.mark.parametrize("config", [{"shift": 3.0}, {"use_dynamic_shifting": True}, {"use_karras_sigmas": True}])
def test_E_plan_reproduces_flow_match_euler(config):
    euler = FlowMatchEulerDiscreteScheduler(**config)
    turbo = FlowTurboScheduler.from_config(euler.config, plan="E*")
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    kwargs = {"mu": 0.8} if config.get("use_dynamic_shifting") else {}
    expected = _run_loop(euler, oscillating_velocity, latents, 7, **kwargs)
    actual = _run_loop(turbo, oscillating_velocity, latents, 7, **kwargs)
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-6)


def test_pseudo_corrector_reuses_the_velocity_of_the_predicted_point():
    """One H step then one P step, written out from method.md (with the evaluation at sigma 0 it makes)."""
    scheduler = FlowTurboScheduler(plan="H1P1", evaluate_at_zero=True)
    sigmas = np.array([1.0, 0.6])
    x0 = torch.tensor([0.3, -1.2])
    velocity = oscillating_velocity
    latents, calls = integrate(scheduler, velocity, x0, sigmas=sigmas)
    s0, s1, s2 = 1.0, 0.6, 0.0
    v0 = velocity(x0, torch.tensor(s0))
    predicted = x0 + (s1 - s0) * v0
    v1 = velocity(predicted, torch.tensor(s1))
    x1 = x0 + (s1 - s0) / 2 * (v0 + v1)
    predicted_2 = x1 + (s2 - s1) * v1  # the P step's v0 is v1, evaluated at the previous predicted point
    v2 = velocity(predicted_2, torch.tensor(s2))
    x2 = x1 + (s2 - s1) / 2 * (v1 + v2)
    assert calls == 3
    torch.testing.assert_close(latents, x2)


def test_by_default_the_last_step_is_an_euler_step_without_an_evaluation_at_sigma_zero():
    """H1P1 as above, except that the P step onto sigma 0 is an Euler step with the reused velocity v1."""
    velocity = oscillating_velocity
    x0 = torch.tensor([0.3, -1.2])
    seen = []

    def recording_velocity(x, sigma):
        seen.append(float(sigma))
        return velocity(x, sigma)

    latents, calls = integrate(FlowTurboScheduler(plan="H1P1"), recording_velocity, x0, sigmas=np.array([1.0, 0.6]))
    s0, s1, s2 = 1.0, 0.6, 0.0
    v0 = velocity(x0, torch.tensor(s0))
    v1 = velocity(x0 + (s1 - s0) * v0, torch.tensor(s1))
    x1 = x0 + (s1 - s0) / 2 * (v0 + v1)
    assert calls == 2 and 0.0 not in seen
    torch.testing.assert_close(latents, x1 + (s2 - s1) * v1)


@pytest.mark.parametrize("plan, last_step_evaluations", [("H3", 1), ("H2P1", 0), ("H2R1", 1), ("H2E1", 1)])
def test_no_plan_evaluates_at_sigma_zero_unless_asked(plan, last_step_evaluations):
    for evaluate_at_zero in (False, True):
        scheduler = FlowTurboScheduler(plan=plan, evaluate_at_zero=evaluate_at_zero)
        scheduler.set_timesteps(3)
        last = [e for e in scheduler.evaluations if e.step == 2]
        assert (scheduler.sigmas[:-1] == 0).any() == (evaluate_at_zero and plan[-2] != "E")
        assert len(last) == last_step_evaluations + (evaluate_at_zero and plan[-2] != "E")


def test_step_keeps_the_input_dtype_and_computes_in_float32():
    scheduler = FlowTurboScheduler(plan="H1P*")
    scheduler.set_timesteps(4)
    sample = torch.randn(1, 4, 4, 4).to(torch.bfloat16)
    out = scheduler.step(torch.randn(1, 4, 4, 4).to(torch.bfloat16), scheduler.timesteps[0], sample).prev_sample
    assert out.dtype == torch.bfloat16
    assert scheduler.run.held_velocity.dtype == torch.float32


def test_step_does_not_synchronise_with_the_host(monkeypatch):
    scheduler = FlowTurboScheduler(plan="H1P2R1E1")
    scheduler.set_timesteps(5)
    latents = torch.randn(1, 4, 4, 4)

    def forbidden(*args, **kwargs):
        raise AssertionError("host synchronisation in step()")

    for name in ("item", "tolist", "__bool__", "__float__", "__int__", "nonzero", "cpu", "numpy"):
        monkeypatch.setattr(torch.Tensor, name, forbidden)
    for timestep in scheduler.timesteps:
        latents = scheduler.step(torch.randn(1, 4, 4, 4), timestep, latents).prev_sample


def test_save_and_load_round_trip_gives_identical_steps(tmp_path):
    scheduler = FlowTurboScheduler.from_config(FlowMatchEulerDiscreteScheduler(shift=3.0).config, plan="H2P3R1")
    scheduler.save_pretrained(tmp_path)
    loaded = FlowTurboScheduler.from_pretrained(tmp_path)
    assert {k: v for k, v in loaded.config.items() if not k.startswith("_")} == {
        k: v for k, v in scheduler.config.items() if not k.startswith("_")
    }
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(
        _run_loop(loaded, oscillating_velocity, latents, 6), _run_loop(scheduler, oscillating_velocity, latents, 6)
    )


def test_step_count_is_checked_against_the_plan():
    scheduler = FlowTurboScheduler(plan="H1P5R3")
    with pytest.raises(ValueError, match="Pass num_inference_steps=9"):
        scheduler.set_timesteps(28)


def test_step_after_the_last_evaluation_asks_for_set_timesteps():
    scheduler = FlowTurboScheduler(plan="E1")
    scheduler.set_timesteps(1)
    latents = torch.zeros(2)
    latents = scheduler.step(torch.ones(2), scheduler.timesteps[0], latents).prev_sample
    with pytest.raises(ValueError, match="call set_timesteps"):
        scheduler.step(torch.ones(2), scheduler.timesteps[0], latents)


def test_R_steps_without_a_refiner_run_as_heun_and_warn_once(caplog):
    velocity = oscillating_velocity
    noise = torch.randn(16, generator=torch.Generator().manual_seed(4))
    with_r = FlowTurboScheduler(plan="H1P2R2")
    with caplog.at_level("WARNING"):
        refined, calls = integrate(with_r, velocity, noise, 5)
        integrate(with_r, velocity, noise, 5)
    warnings = [r for r in caplog.records if "no refiner is attached" in r.getMessage()]
    assert len(warnings) == 1
    heun, heun_calls = integrate(FlowTurboScheduler(plan="H1P2H2"), velocity, noise, 5)
    assert calls == heun_calls == 2 + 2 + 4 - 1  # no evaluation at sigma 0
    torch.testing.assert_close(refined, heun)


def _per_token_loop(scheduler, latents, token_timesteps):
    """A loop like LTXCondition's: per-token timesteps min(t, token cap), the negative velocity passed to step()."""
    scheduler.set_timesteps(6)
    for t in scheduler.timesteps:
        per_token = torch.minimum(t.expand(token_timesteps.shape), token_timesteps)
        velocity = oscillating_velocity(latents, (per_token / 1000)[..., None])
        latents = scheduler.step(-velocity, t, latents, per_token_timesteps=per_token, return_dict=False)[0]
    return latents


@pytest.mark.parametrize("plan", ["H*", "H1P*", "H1P*E1", "E*"])
def test_per_token_timesteps_step_each_token_from_its_own_sigma(plan):
    latents = torch.randn(2, 6, 3, generator=torch.Generator().manual_seed(0))
    free = torch.full((2, 6), 1000.0)
    conditioned = free.clone()
    conditioned[:, :2] = 0.0  # clean conditioning tokens (sigma 0) must not move
    plain = FlowTurboScheduler(plan=plan, shift=3.0)
    expected = _run_loop(plain, oscillating_velocity, latents, 6)
    torch.testing.assert_close(_per_token_loop(FlowTurboScheduler(plan=plan, shift=3.0), latents, free), expected)
    mixed = _per_token_loop(FlowTurboScheduler(plan=plan, shift=3.0), latents, conditioned)
    torch.testing.assert_close(mixed[:, :2], latents[:, :2], rtol=0, atol=0)
    torch.testing.assert_close(mixed[:, 2:], expected[:, 2:])


def test_per_token_euler_steps_match_flow_match_euler():
    latents = torch.randn(2, 6, 3, generator=torch.Generator().manual_seed(1))
    caps = torch.tensor([[1000.0, 700.0, 400.0, 0.0, 1000.0, 90.0]] * 2)
    ours = _per_token_loop(FlowTurboScheduler(plan="E*", shift=3.0), latents, caps)
    euler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    torch.testing.assert_close(ours, _per_token_loop(euler, latents, caps))


def test_scale_model_input_returns_the_sample_unchanged():
    sample = torch.randn(1, 4, 8, 8)
    assert FlowTurboScheduler().scale_model_input(sample, torch.tensor(500.0)) is sample
