"""FlowTurboScheduler.from_config keeps the meaning of the scheduler configs real flow pipelines ship."""

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


@pytest.mark.parametrize("scheduler_class", [DPMSolverMultistepScheduler, UniPCMultistepScheduler])
def test_use_flow_sigmas_does_not_leak_into_the_config(scheduler_class, tmp_path):
    source = scheduler_class(use_flow_sigmas=True, flow_shift=3.0, prediction_type="flow_prediction")
    turbo = FlowTurboScheduler.from_config(source.config)
    for leaked in ("use_flow_sigmas", "flow_shift", "prediction_type", "solver_order"):
        assert leaked not in turbo.config
        assert not hasattr(turbo.config, leaked)
    # Also when the config comes from a saved scheduler folder.
    source.save_pretrained(tmp_path)
    loaded = FlowTurboScheduler.from_pretrained(tmp_path)
    assert "use_flow_sigmas" not in loaded.config and loaded.config.sigma_schedule == scheduler_class.__name__


def test_heun_config_is_accepted():
    turbo = FlowTurboScheduler.from_config(FlowMatchHeunDiscreteScheduler(shift=2.0).config, plan="H3E1")
    assert turbo.config.shift == 2.0 and turbo.config.plan == "H3E1"


def test_non_flow_config_is_refused_with_a_clear_error():
    with pytest.raises(ValueError, match="not a flow-matching config"):
        FlowTurboScheduler.from_config(DPMSolverMultistepScheduler().config)


@pytest.mark.parametrize("key", ["invert_sigmas", "stochastic_sampling"])
def test_unsupported_euler_options_are_refused(key):
    with pytest.raises(ValueError, match=key):
        FlowTurboScheduler.from_config(FlowMatchEulerDiscreteScheduler(**{key: True}).config)


def test_plan_given_to_from_config_overrides_the_saved_one():
    turbo = FlowTurboScheduler.from_config(FlowTurboScheduler(plan="H2P3").config, plan="H1P*R2")
    assert turbo.config.plan == "H1P*R2"


def test_a_bad_plan_fails_at_construction():
    with pytest.raises(ValueError, match="Unknown step kind"):
        FlowTurboScheduler.from_config(SD3_CONFIG, plan="H1Q2")
