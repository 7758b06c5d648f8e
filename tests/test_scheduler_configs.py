"""FlowTurboScheduler.from_config keeps the meaning of the scheduler configs real flow pipelines ship."""

import numpy as np
import pytest
import torch
from diffusers import (
    DPMSolverMultistepScheduler,
    FlowMatchEulerDiscreteScheduler,
    FlowMatchHeunDiscreteScheduler,
    UniPCMultistepScheduler,
)

from flowturbo_diffusers import FlowTurboScheduler

# Shapes of the configs shipped by SD3 / SD3.5, Flux, Sana (DPM-Solver) and Wan (UniPC).
SD3_CONFIG = {"shift": 3.0}
SD35_DYNAMIC = {"shift": 3.0, "use_dynamic_shifting": True, "base_shift": 0.5, "max_shift": 1.15}
FLUX_CONFIG = {
    "shift": 3.0,
    "use_dynamic_shifting": True,
    "base_shift": 0.5,
    "max_shift": 1.15,
    "base_image_seq_len": 256,
    "max_image_seq_len": 4096,
}
LTX_LIKE = {"shift_terminal": 0.1, "use_dynamic_shifting": True, "time_shift_type": "linear"}


def grids(reference, turbo, steps, **kwargs):
    reference.set_timesteps(steps, **kwargs)
    turbo.set_timesteps(steps, **kwargs)
    return reference.sigmas, turbo.sigma_grid


@pytest.mark.parametrize(
    "config, kwargs",
    [
        (SD3_CONFIG, {}),
        (SD35_DYNAMIC, {"mu": 0.9}),
        (FLUX_CONFIG, {"mu": 1.1}),
        (LTX_LIKE, {"mu": 2.0}),
        ({"shift": 3.0, "use_karras_sigmas": True}, {}),
        ({"shift": 3.0, "use_exponential_sigmas": True}, {}),
    ],
)
def test_euler_configs_keep_their_grid(config, kwargs):
    euler = FlowMatchEulerDiscreteScheduler(**config)
    turbo = FlowTurboScheduler.from_config(euler.config, plan="H1P*")
    for key, value in config.items():
        assert turbo.config[key] == value
    reference, ours = grids(euler, turbo, 9, **kwargs)
    torch.testing.assert_close(ours, reference, rtol=0, atol=0)


def test_beta_sigmas_keep_their_grid():
    pytest.importorskip("scipy")
    euler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_beta_sigmas=True)
    reference, ours = grids(euler, FlowTurboScheduler.from_config(euler.config), 9)
    torch.testing.assert_close(ours, reference, rtol=0, atol=0)


def test_custom_sigmas_and_mu_as_flux_passes_them():
    euler = FlowMatchEulerDiscreteScheduler(**FLUX_CONFIG)
    turbo = FlowTurboScheduler.from_config(euler.config, plan="H1P*")
    sigmas = [1.0, 0.8, 0.6, 0.4, 0.2]
    euler.set_timesteps(sigmas=sigmas, mu=0.7)
    turbo.set_timesteps(sigmas=sigmas, mu=0.7)
    torch.testing.assert_close(turbo.sigma_grid, euler.sigmas, rtol=0, atol=0)


@pytest.mark.parametrize("scheduler_class", [DPMSolverMultistepScheduler, UniPCMultistepScheduler])
def test_dpm_and_unipc_flow_configs_read_flow_shift_as_shift_on_their_own_grid(scheduler_class):
    source = scheduler_class(use_flow_sigmas=True, flow_shift=5.0, prediction_type="flow_prediction")
    turbo = FlowTurboScheduler.from_config(source.config, plan="H1P*")
    assert turbo.config.shift == 5.0
    assert turbo.config.sigma_schedule == scheduler_class.__name__
    reference, ours = grids(source, turbo, 9)
    torch.testing.assert_close(ours, reference, rtol=0, atol=0)


SOURCES = {
    "sd3-euler": lambda: FlowMatchEulerDiscreteScheduler(shift=3.0),
    "flux-euler": lambda: FlowMatchEulerDiscreteScheduler(**FLUX_CONFIG),
    "ltx-euler": lambda: FlowMatchEulerDiscreteScheduler(**LTX_LIKE),
    "heun": lambda: FlowMatchHeunDiscreteScheduler(shift=2.0),
    "sana-dpm": lambda: DPMSolverMultistepScheduler(use_flow_sigmas=True, flow_shift=3.0,
                                                    prediction_type="flow_prediction"),
    "wan-unipc": lambda: UniPCMultistepScheduler(use_flow_sigmas=True, flow_shift=5.0,
                                                 prediction_type="flow_prediction", solver_order=2),
}


def public(config):
    return {key: value for key, value in config.items() if not key.startswith("_")}


@pytest.mark.parametrize("source", SOURCES)
def test_swapping_to_flowturbo_and_back_gives_the_original_scheduler(source, tmp_path):
    original = SOURCES[source]()
    turbo = FlowTurboScheduler.from_config(original.config, plan="H1P*")
    turbo.save_pretrained(tmp_path)  # also through a saved scheduler folder
    for config in (turbo.config, FlowTurboScheduler.from_pretrained(tmp_path).config):
        back = type(original).from_config(config)
        # Every key of the original comes back with its value (FlowTurbo's own keys ride along unused, as diffusers
        # keeps the keys of any config a scheduler was built from).
        assert {key: back.config[key] for key in public(original.config)} == public(original.config)
        kwargs = {"mu": 0.8} if original.config.get("use_dynamic_shifting") else {}
        original.set_timesteps(6, **kwargs)
        back.set_timesteps(6, **kwargs)
        torch.testing.assert_close(back.sigmas, original.sigmas, rtol=0, atol=0)
        torch.testing.assert_close(back.timesteps, original.timesteps, rtol=0, atol=0)


@pytest.mark.parametrize("scheduler_class", [DPMSolverMultistepScheduler, UniPCMultistepScheduler])
def test_a_reloaded_flowturbo_scheduler_keeps_its_own_shift_and_grid(scheduler_class, tmp_path):
    source = scheduler_class(use_flow_sigmas=True, flow_shift=3.0, prediction_type="flow_prediction")
    turbo = FlowTurboScheduler.from_config(source.config, shift=4.0)
    turbo.save_pretrained(tmp_path)
    loaded = FlowTurboScheduler.from_pretrained(tmp_path)
    assert loaded.config.shift == 4.0 and loaded.config.sigma_schedule == scheduler_class.__name__


def test_an_epsilon_config_with_flow_sigmas_is_refused():
    source = UniPCMultistepScheduler(use_flow_sigmas=True, flow_shift=3.0, prediction_type="epsilon")
    with pytest.raises(ValueError, match="its model output is 'epsilon', not a flow velocity"):
        FlowTurboScheduler.from_config(source.config)


@pytest.mark.parametrize(
    "scheduler_class, spacing",
    [
        (DPMSolverMultistepScheduler, "use_karras_sigmas"),
        (DPMSolverMultistepScheduler, "use_exponential_sigmas"),
        (DPMSolverMultistepScheduler, "use_beta_sigmas"),
        (UniPCMultistepScheduler, "use_exponential_sigmas"),
        (UniPCMultistepScheduler, "use_beta_sigmas"),
    ],
)
def test_flow_sigmas_with_a_ddpm_spacing_are_refused_before_sampling(scheduler_class, spacing):
    source = scheduler_class(use_flow_sigmas=True, flow_shift=3.0, prediction_type="flow_prediction",
                             **{spacing: True})
    source.set_timesteps(4)
    assert source.sigmas.max() > 100  # diffusers' own grid for this config starts far outside [0, 1]
    with pytest.raises(ValueError, match=f"{spacing}=True.*near sigma 157"):
        FlowTurboScheduler.from_config(source.config)


def test_unipc_karras_flow_sigmas_are_a_valid_grid_and_kept():
    source = UniPCMultistepScheduler(use_flow_sigmas=True, flow_shift=3.0, prediction_type="flow_prediction",
                                     use_karras_sigmas=True)
    reference, ours = grids(source, FlowTurboScheduler.from_config(source.config), 9)
    torch.testing.assert_close(ours, reference.float(), rtol=0, atol=0)


def test_one_step_with_shift_terminal_gives_the_grid_one_to_zero():
    euler = FlowMatchEulerDiscreteScheduler(shift_terminal=0.1)
    euler.set_timesteps(1)
    assert torch.isnan(euler.sigmas[0])  # diffusers divides 0 by 0 here
    turbo = FlowTurboScheduler.from_config(euler.config, plan="H*")
    turbo.set_timesteps(1)
    torch.testing.assert_close(turbo.sigma_grid, torch.tensor([1.0, 0.0]))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"sigmas": [1.0, float("nan"), 0.2]}, "non-finite"),
        ({"sigmas": [1.0, float("inf"), 0.2]}, "non-finite"),
        ({"sigmas": [1.0, 0.5, -0.2]}, r"within \[0, 1\]"),
        ({"sigmas": [0.2, 0.5, 1.0]}, "must not increase"),
        ({"timesteps": [1000.0, 500.0, 2000.0]}, r"within \[0, 1000\]"),
        ({"sigmas": [1.0, 0.5, 0.2], "mu": float("nan")}, "`mu` must be a finite number"),
        ({"sigmas": [1.0, 0.5, 0.2]}, "`mu` must be passed"),
    ],
)
def test_broken_grids_are_refused_with_the_problem_named(kwargs, message):
    turbo = FlowTurboScheduler.from_config(FLUX_CONFIG if "mu" in kwargs or "sigmas" in kwargs and message.startswith("`mu`")
                                           else SD3_CONFIG, plan="H1P*")
    with pytest.raises(ValueError, match=message):
        turbo.set_timesteps(**kwargs)


@pytest.mark.parametrize("key, value", [("shift", float("nan")), ("shift", 0.0), ("base_shift", float("inf")),
                                        ("shift_terminal", 1.5)])
def test_a_config_that_breaks_the_grid_is_refused_at_construction(key, value):
    with pytest.raises(ValueError, match=key):
        FlowTurboScheduler(**{key: value})


def test_sigmas_and_timesteps_together_as_cogview4_passes_them():
    config = dict(use_dynamic_shifting=True, time_shift_type="linear", base_shift=0.25, max_shift=0.75)
    timesteps = np.linspace(1000, 1, 6)
    euler = FlowMatchEulerDiscreteScheduler(**config)
    euler.set_timesteps(timesteps=timesteps, sigmas=timesteps / 1000, mu=0.5)
    turbo = FlowTurboScheduler.from_config(euler.config, plan="H1P*")
    turbo.set_timesteps(timesteps=timesteps, sigmas=timesteps / 1000, mu=0.5)
    torch.testing.assert_close(turbo.sigma_grid, euler.sigmas, rtol=0, atol=0)
    # The model sees the timesteps it was given, at the evaluations' grid points (H1P* at 6 steps: 0 to 5).
    torch.testing.assert_close(turbo.timesteps, euler.timesteps[:6], rtol=0, atol=0)


def test_a_fixed_plan_given_the_wrong_number_of_sigmas_names_sigmas():
    turbo = FlowTurboScheduler.from_config(FLUX_CONFIG, plan="H1P5")
    with pytest.raises(ValueError, match="the pipeline's 8 sigmas ask for. Pass 6 sigmas"):
        turbo.set_timesteps(sigmas=np.linspace(1, 1 / 8, 8), mu=0.5)
    with pytest.raises(ValueError, match="num_inference_steps must be a whole number"):
        turbo.set_timesteps(2.5, mu=0.5)


def test_heun_config_is_accepted():
    turbo = FlowTurboScheduler.from_config(FlowMatchHeunDiscreteScheduler(shift=2.0).config, plan="H3E1")
    assert turbo.config.shift == 2.0 and turbo.config.plan == "H3E1"


def test_non_flow_config_is_refused_with_a_clear_error():
    with pytest.raises(ValueError, match="not a flow-matching config"):
        FlowTurboScheduler.from_config(DPMSolverMultistepScheduler().config)


def test_stochastic_sampling_is_refused():
    with pytest.raises(ValueError, match="stochastic_sampling"):
        FlowTurboScheduler.from_config(FlowMatchEulerDiscreteScheduler(stochastic_sampling=True).config)


def mochi_like_loop(scheduler, latents):
    """Mochi's loop: custom sigmas, the model sees 1 - sigma as its timestep and returns the negative velocity."""
    scheduler.set_timesteps(sigmas=[1.0, 0.8, 0.55, 0.3, 0.1])
    scheduler.set_begin_index(0)
    for t in scheduler.timesteps:
        sigma = 1 - t / 1000
        latents = scheduler.step(-(torch.cos(3 * latents) * sigma - latents), t, latents).prev_sample
    return latents


def test_inverted_sigmas_have_eulers_meaning():
    euler = FlowMatchEulerDiscreteScheduler(invert_sigmas=True)
    latents = torch.randn(2, 5, generator=torch.Generator().manual_seed(0))
    expected = mochi_like_loop(euler, latents)
    torch.testing.assert_close(mochi_like_loop(FlowTurboScheduler.from_config(euler.config, plan="E*"), latents),
                               expected)
    heun = mochi_like_loop(FlowTurboScheduler.from_config(euler.config, plan="H*"), latents)
    assert (heun - expected).abs().max() > 1e-3  # a different sampler, on the same inverted grid


def test_plan_given_to_from_config_overrides_the_saved_one():
    turbo = FlowTurboScheduler.from_config(FlowTurboScheduler(plan="H2P3").config, plan="H1P*R2")
    assert turbo.config.plan == "H1P*R2"


def test_a_bad_plan_fails_at_construction():
    with pytest.raises(ValueError, match="Unknown step kind"):
        FlowTurboScheduler.from_config(SD3_CONFIG, plan="H1Q2")
