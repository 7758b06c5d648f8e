"""Calibrated plans: the probe that runs evaluations inside a pipeline, the search, and the calibrated scheduler."""

import functools
import json

import pytest
import torch
from conftest import call, make_pipe

from flowturbo_diffusers import FlowTurboPipeline, FlowTurboScheduler, Plan
from flowturbo_diffusers.calibration import (
    CalibrationSettings,
    _Sampler,
    calibrate_plan,
    refine_grid,
    search_plan,
    sigmas_of,
    teacher_states,
)
from flowturbo_diffusers.steps import euler_step


def test_a_probe_program_runs_in_the_pipeline_exactly_as_the_scheduler_would(sd3_pipe):
    """Euler steps written as a probe program give what FlowTurbo's E* gives on the same grid, in SD3."""
    own = sd3_pipe.scheduler.config
    scheduler = FlowTurboScheduler.from_config(own, plan="E*")
    sd3_pipe.scheduler = scheduler
    expected = call(sd3_pipe, "sd3", num_inference_steps=4)
    sigmas = scheduler.sigma_grid.tolist()
    sd3_pipe.scheduler = FlowTurboScheduler.from_config(own)
    sampler = _Sampler(sd3_pipe, ["a red 7 on a blue background"], [0], dict(height=32, width=32,
                                                                               max_sequence_length=16))
    final = {}

    def euler_program():
        velocity, latents = yield
        for k in range(4):
            latents = euler_step(latents, velocity, sigmas[k + 1] - sigmas[k])
            if k == 3:
                final["latents"] = latents
                yield latents
                return
            velocity, _ = yield latents

    sampler.run(sigmas[:4], euler_program())
    torch.testing.assert_close(final["latents"], expected, rtol=1e-5, atol=1e-5)


def test_the_teacher_converges_to_the_pipelines_own_many_step_solve(sd3_pipe):
    own = sd3_pipe.scheduler.config
    sampler = _Sampler(sd3_pipe, ["a red 7"], [0], dict(height=32, width=32, max_sequence_length=16))
    times = [1.0 - k / 6 for k in range(7)]
    states = teacher_states(sampler, sigmas_of(times, own, None), substeps=4)
    assert len(states) == 7
    sd3_pipe.scheduler = FlowTurboScheduler.from_config(own, plan="H*")
    reference = call(sd3_pipe, "sd3", prompt="a red 7", num_inference_steps=64)
    assert (states[-1] - reference).norm() / reference.norm() < 0.05


def test_refine_grid_moves_times_towards_a_better_objective_and_keeps_them_ordered():
    target = [1.0, 0.8, 0.3, 0.0]

    def objective(grid):
        return sum((a - b) ** 2 for a, b in zip(grid, target))

    grid, value = refine_grid([1.0, 0.66, 0.33, 0.0], objective, passes=6)
    assert value < objective([1.0, 0.66, 0.33, 0.0]) / 4
    assert grid[0] == 1.0 and grid[-1] == 0.0 and all(a > b for a, b in zip(grid, grid[1:]))


@pytest.mark.slow
def test_calibration_beats_the_uncalibrated_plans_of_its_cost_on_the_bundled_model():
    from flowturbo_diffusers.bundled import BUNDLED_CALL_DEFAULTS, digits, load_bundled_pipeline

    pipe = load_bundled_pipeline()
    pipe.set_progress_bar_config(disable=True)
    call_kwargs = {k: v for k, v in BUNDLED_CALL_DEFAULTS.items() if k != "num_inference_steps"}
    settings = CalibrationSettings(budget=4, candidates=8, max_span=5, samples=3, held_out_samples=3,
                                   reference_substeps=2, refine_passes=1)
    result = calibrate_plan(pipe, digits.render_batch(6, seed=3).prompts, settings, call_kwargs, progress=False)
    figures = result.figures
    assert Plan.parse(result.plan).count_evaluations()["base"] <= 4 == figures["budget"]
    assert len(result.grid) == Plan.parse(result.plan).num_steps + 1
    assert figures["calibration_psnr_db"] > figures["calibration_best_uncalibrated_psnr_db"]
    assert figures["held_out_psnr_db"] > figures["held_out_best_uncalibrated_psnr_db"]


def calibrated(config, plan="H1P2E1", grid=(1.0, 0.9, 0.6, 0.25, 0.0)):
    return FlowTurboScheduler.from_config(config, plan=plan, calibrated_grid=list(grid),
                                          calibration={"base_model": "org/tiny-flux", "samples": 4,
                                                       "base_fingerprint": {"architecture": "abc"}})


def test_a_calibrated_grid_follows_the_pipelines_shift_and_resolution(flux_pipe):
    scheduler = calibrated(flux_pipe.scheduler.config)
    mus = {}
    set_timesteps = scheduler.set_timesteps

    @functools.wraps(set_timesteps)
    def recording(*args, **kwargs):
        mus[kwargs.get("mu")] = None
        return set_timesteps(*args, **kwargs)

    flux_pipe.scheduler = scheduler
    grids = []
    for size in (32, 64):
        scheduler.set_timesteps = recording
        call(flux_pipe, "flux", num_inference_steps=4, height=size, width=size)
        mu = list(mus)[-1]
        expected = sigmas_of([1.0, 0.9, 0.6, 0.25, 0.0], scheduler.config, mu)
        torch.testing.assert_close(scheduler.sigma_grid, torch.tensor(expected), rtol=0, atol=1e-6)
        grids.append(scheduler.sigma_grid.clone())
    assert (grids[1][1:-1] > grids[0][1:-1]).all()  # more tokens, larger mu: more time at high noise


def test_a_calibrated_scheduler_refuses_another_step_count_and_runs_its_own(sd3_pipe):
    scheduler = calibrated(sd3_pipe.scheduler.config)
    sd3_pipe.scheduler = scheduler
    with pytest.raises(ValueError, match="calibrated plan 'H1P2E1' of 4 steps, but 6 were requested"):
        call(sd3_pipe, "sd3", num_inference_steps=6)
    pipe = FlowTurboPipeline.from_pipe(sd3_pipe, refiner=False)
    assert str(pipe.plan) == "H1P2E1"
    assert torch.isfinite(call(pipe, "sd3")).all()  # the plan's own step count, passed by FlowTurboPipeline
    assert pipe.last_evaluation_counts == {"base": 5, "refiner": 0}


def test_a_calibrated_scheduler_saves_loads_and_carries_a_model_card(sd3_pipe, tmp_path):
    scheduler = calibrated(sd3_pipe.scheduler.config)
    scheduler.save_pretrained(tmp_path / "scheduler")
    loaded = FlowTurboScheduler.from_pretrained(tmp_path, subfolder="scheduler")
    assert loaded.config.calibrated_grid == [1.0, 0.9, 0.6, 0.25, 0.0] and loaded.config.plan == "H1P2E1"
    card = (tmp_path / "scheduler" / "README.md").read_text()
    assert "base_model: org/tiny-flux" in card and "`H1P2E1`" in card and '"architecture": "abc"' in card
    loaded.set_timesteps(4)
    scheduler.set_timesteps(4)
    torch.testing.assert_close(loaded.sigma_grid, scheduler.sigma_grid, rtol=0, atol=0)


@pytest.mark.parametrize("grid, message", [([1.0, 0.5, 0.0], "fixed plan of 2 steps"),
                                           ([1.0, 0.5, 0.6, 0.2, 0.0], "decrease strictly")])
def test_a_calibrated_grid_that_does_not_fit_its_plan_is_refused(grid, message):
    with pytest.raises(ValueError, match=message):
        FlowTurboScheduler(plan="H1P2E1", calibrated_grid=grid)


def test_another_plan_drops_the_calibrated_grid_with_a_warning(caplog):
    scheduler = calibrated(make_pipe("sd3").scheduler.config)
    with caplog.at_level("WARNING"):
        scheduler.set_plan("H1P*")
    assert scheduler.config.calibrated_grid is None
    assert any("calibrated grid is dropped" in record.getMessage() for record in caplog.records)


@pytest.mark.slow
def test_flowturbo_calibrate_writes_a_scheduler_folder(tmp_path, capsys):
    from flowturbo_diffusers import cli

    assert cli.main(["calibrate", "--budget", "3", "--output-dir", str(tmp_path / "out"), "--samples", "2",
                     "--held-out-samples", "2", "--candidates", "6", "--max-span", "4", "--refine-passes", "1"]) == 0
    printed = capsys.readouterr().out
    assert "held-out samples:" in printed and "best uncalibrated" in printed
    scheduler = FlowTurboScheduler.from_pretrained(tmp_path / "out", subfolder="scheduler")
    figures = json.loads((tmp_path / "out" / "calibration.json").read_text())
    assert scheduler.config.plan == figures["plan"] and scheduler.config.calibrated_grid == figures["grid"]
    assert (tmp_path / "out" / "scheduler" / "README.md").is_file()


def test_a_budgets_best_plan_does_not_depend_on_the_largest_budget_searched(sd3_pipe):
    """States at the full budget still finish with a P step onto sigma 0, which costs no evaluation: the dynamic
    program at budget 2 finds the same best 2-evaluation plans as the one at budget 3 (calibrate_plans shares one)."""
    own = sd3_pipe.scheduler.config
    sampler = _Sampler(sd3_pipe, ["a red 7"], [0], dict(height=32, width=32, max_sequence_length=16))
    times = [1.0 - k / 6 for k in range(7)]
    sigmas = sigmas_of(times, own, None)
    teacher = teacher_states(sampler, sigmas, substeps=2)
    tables = {budget: search_plan(sampler, sigmas, teacher, CalibrationSettings(budget=budget, candidates=6))[1]
              for budget in (2, 3)}
    for cost in (1, 2):
        small, large = tables[2][cost][6], tables[3][cost][6]
        assert small.path == large.path and small.error == pytest.approx(large.error, rel=1e-6)
    assert any(kind == "P" for kind, _ in tables[2][2][6].path)
