"""The benchmark's sampler families beyond the pipeline's own grid (calibrated plans, OSS, time-uniform and AYS-style
grids), how UniPC and DPM-Solver++ follow a pipeline's shift, baselines that cannot run in a pipeline, the end-to-end
share of a call, issue 20's targets, and a whole run on a Flux pipeline."""

import functools
import json

import numpy as np
import pytest
import torch
from conftest import CALL_KWARGS

from flowturbo_diffusers import cli
from flowturbo_diffusers.benchmark import run
from flowturbo_diffusers.benchmark.grids import ays_style_grid, time_uniform_grid
from flowturbo_diffusers.benchmark.run import SamplerResult
from flowturbo_diffusers.benchmark.samplers import (
    DPM2,
    EULER,
    EULER_OSS,
    EULER_UNIFORM,
    FLOWTURBO_CALIBRATED,
    FLOWTURBO_HP,
    HEUN,
    UNIPC,
    UNIPC_OSS,
    SamplerSpec,
    calibrated_samplers,
)
from flowturbo_diffusers.benchmark.switch import SamplerSwitch

OSS_GRID = (1.0, 0.8, 0.5, 0.2, 0.0)


def test_the_time_uniform_grid_is_uniform_in_sigma():
    assert time_uniform_grid(4) == (1.0, 0.75, 0.5, 0.25, 0.0)


def test_the_ays_style_grid_puts_ays_noise_levels_at_equal_signal_to_noise_ratio_in_flow_sigmas():
    from diffusers.schedulers import AysSchedules

    levels = AysSchedules["StableDiffusionSigmas"][:-1]
    grid = ays_style_grid(10)
    assert grid[0] == 1.0 and grid[-1] == 0.0  # a flow pipeline starts from pure noise
    assert grid[1:-1] == pytest.approx([s / (1 + s) for s in levels[1:]])  # x0 + s * noise, scaled by 1 / (1 + s)
    for steps in (1, 4, 6, 16):  # other step counts: log-linear interpolation of the levels
        other = ays_style_grid(steps)
        assert len(other) == steps + 1 and other[0] == 1.0 and other[-1] == 0.0
        assert all(a > b for a, b in zip(other, other[1:]))


def test_each_oss_grid_runs_euler_and_unipc_and_each_calibrated_plan_its_own_grid():
    calibrations = [{"kinds": "HPE", "plan": "H1P1E1", "grid": [1.0, 0.7, 0.3, 0.0]},
                    {"kinds": "E", "plan": "E4", "grid": list(OSS_GRID)}]
    assert calibrated_samplers(calibrations) == [
        SamplerSpec(FLOWTURBO_CALIBRATED, 3, "H1P1E1", (1.0, 0.7, 0.3, 0.0)),
        SamplerSpec(EULER_OSS, 4, "E4", OSS_GRID), SamplerSpec(UNIPC_OSS, 4, None, OSS_GRID)]


def sample(pipe, kind, call_kwargs, seed=0):
    out = pipe("a red 7 on a blue background", generator=torch.Generator().manual_seed(seed), output_type="latent",
               **CALL_KWARGS[kind], **call_kwargs)
    return out.images


def test_unipc_and_dpm_solver_follow_the_mu_a_flux_pipeline_passes(flux_pipe, monkeypatch):
    """Flux shifts its grid by the image size (``mu``): DPM-Solver++ and UniPC get the mu its own scheduler gets (a
    flow_shift of config.shift would time another grid, and DPM-Solver++ stopped with an AssertionError)."""
    from diffusers import DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

    received = {}

    def spying(scheduler_class):
        original = scheduler_class.set_timesteps

        @functools.wraps(original)  # the same signature: Flux asks it whether it takes sigmas
        def spy(self, *args, **kwargs):
            received[scheduler_class.__name__] = kwargs.get("mu")
            return original(self, *args, **kwargs)

        monkeypatch.setattr(scheduler_class, "set_timesteps", spy)

    for scheduler_class in (DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler):
        spying(scheduler_class)
    switch = SamplerSwitch(flux_pipe)
    with switch.use(SamplerSpec(EULER, 4)) as (pipe, call_kwargs):
        sample(pipe, "flux", call_kwargs)
    mu = received["FlowMatchEulerDiscreteScheduler"]
    assert np.exp(mu) != pytest.approx(flux_pipe.scheduler.config.shift, abs=0.1)  # not the static shift
    with switch.use(SamplerSpec(DPM2, 4)) as (pipe, call_kwargs):
        latents = sample(pipe, "flux", call_kwargs)
        grid = pipe.scheduler.sigmas
    assert torch.isfinite(latents).all() and received["DPMSolverMultistepScheduler"] == pytest.approx(mu)
    expected = DPMSolverMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction",
                                           flow_shift=float(np.exp(mu)))
    expected.set_timesteps(4)
    torch.testing.assert_close(grid, expected.sigmas)
    with switch.use(SamplerSpec(UNIPC, 4)) as (pipe, call_kwargs):
        sample(pipe, "flux", call_kwargs)
    assert received["UniPCMultistepScheduler"] == pytest.approx(mu)
    assert flux_pipe.scheduler is switch.own_scheduler


def test_unipc_and_dpm_solver_are_built_from_a_pipelines_own_flow_sigma_config(sd3_pipe):
    """Sana and Wan ship DPM-Solver or UniPC with flow sigmas: the baselines keep that config's shift."""
    from diffusers import DPMSolverMultistepScheduler

    sd3_pipe.scheduler = DPMSolverMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction",
                                                     flow_shift=3.0, algorithm_type="dpmsolver++")
    switch = SamplerSwitch(sd3_pipe)
    unipc, dpm = switch.scheduler_for(SamplerSpec(UNIPC, 4)), switch.scheduler_for(SamplerSpec(DPM2, 4))
    assert unipc.config.flow_shift == dpm.config.flow_shift == 3.0
    assert dpm.config.solver_order == 2 and dpm.config.algorithm_type == "dpmsolver++"
    assert switch.scheduler_for(SamplerSpec(EULER, 4)).config.shift == 3.0  # Euler too, on the shifted grid


def test_oss_grids_put_euler_and_unipc_on_the_same_sigmas_and_fixed_grids_are_not_shifted(flux_pipe):
    switch = SamplerSwitch(flux_pipe)
    sigmas = {}
    for spec in (SamplerSpec(EULER_OSS, 4, "E4", OSS_GRID), SamplerSpec(UNIPC_OSS, 4, None, OSS_GRID),
                 SamplerSpec(EULER_UNIFORM, 4, "E4", time_uniform_grid(4))):
        with switch.use(spec) as (pipe, call_kwargs):
            sample(pipe, "flux", call_kwargs)
            scheduler = pipe.scheduler
            sigmas[spec.family] = scheduler.sigma_grid if spec.family != UNIPC_OSS else scheduler.sigmas
    # The OSS grid's times go through Flux's shift for this image size, for FlowTurbo's Euler and UniPC alike.
    torch.testing.assert_close(sigmas[UNIPC_OSS], sigmas[EULER_OSS], atol=2e-6, rtol=0)
    assert sigmas[EULER_OSS][1] > 0.8
    torch.testing.assert_close(sigmas[EULER_UNIFORM], torch.tensor(time_uniform_grid(4)))
    assert switch.turbo.scheduler.config.calibrated_grid is None  # the twin's own scheduler is back


def test_a_baseline_that_cannot_run_is_replaced_by_its_equivalent_or_left_out(tiny_model_settings, monkeypatch):
    from diffusers import FlowMatchHeunDiscreteScheduler

    from flowturbo_diffusers.benchmark.run import Benchmark

    def refuse(*args, **kwargs):
        raise ValueError("set_timesteps does not support custom sigmas schedules")

    monkeypatch.setattr(FlowMatchHeunDiscreteScheduler, "set_timesteps", refuse)
    bench = Benchmark(tiny_model_settings, progress=False)
    monkeypatch.setattr(bench.switch, "multistep_scheduler", lambda family, grid=None: refuse())
    specs = [SamplerSpec(HEUN, 2), SamplerSpec(DPM2, 2), SamplerSpec(EULER, 2)]
    results = bench.measure_all(specs, bench.reference(), None)
    assert [r.spec.name for r in results] == ["Heun, 2 steps", "Euler, 2 steps"]
    heun = results[0]
    assert heun.base_evaluations == 3  # FlowTurbo's H* at 2 steps: Heun's 2n - 1
    assert heun.latent_psnr == pytest.approx(bench.measure(SamplerSpec(FLOWTURBO_HP, 2, "H2"), bench.reference(),
                                                           None).latent_psnr)
    assert "H* stands in" in bench.notes[HEUN] and "custom sigmas" in bench.notes[HEUN]
    assert bench.notes["DPM-Solver++(2M), 2 steps"].startswith("left out: it fails in this pipeline (ValueError")


def test_calibrated_plans_are_compared_with_the_best_uncalibrated_plan_of_the_same_cost():
    from flowturbo_diffusers.benchmark.analysis import calibration_summary

    def result(family, steps, base, quality, plan=None, grid=None, refined=0):
        return SamplerResult(SamplerSpec(family, steps, plan, grid), base, refined, {1: 0.1}, quality)

    results = [result(FLOWTURBO_CALIBRATED, 3, 6, 40.0, "H1P1E1", (1.0, 0.7, 0.3, 0.0)),
               result(EULER_OSS, 4, 4, 33.0, "E4", OSS_GRID),
               result(EULER, 4, 4, 30.0), result(EULER, 6, 6, 33.0), result(FLOWTURBO_HP, 6, 6, 36.5, "H1P5"),
               result(EULER_UNIFORM, 6, 6, 34.0, "E6", time_uniform_grid(6)),
               result(FLOWTURBO_HP, 8, 8, 38.0, "H1P7"),  # costs more
               result("FlowTurbo H/P/R", 4, 5, 39.0, "H1P3R2", refined=4)]  # has refiner evaluations
    calibrations = [{"kinds": "HPE", "budget": 6, "plan": "H1P1E1", "grid": [1.0, 0.7, 0.3, 0.0], "seconds": 100.0,
                     "figures": {"calibration_psnr_db": 40.3}},
                    {"kinds": "E", "budget": 4, "plan": "E4", "grid": list(OSS_GRID), "seconds": 20.0,
                     "figures": {"calibration_psnr_db": 33.1}}]
    hpe, oss = calibration_summary(results, calibrations)
    assert (hpe["best_uncalibrated"], hpe["gain_db"]) == ("FlowTurbo H/P H1P5", pytest.approx(3.5))
    assert hpe["benchmark_psnr_db"] == 40.0 and hpe["calibration_psnr_db"] == 40.3
    assert (oss["best_uncalibrated"], oss["gain_db"]) == ("Euler, 4 steps", pytest.approx(3.0))  # OSS vs Euler


def test_issue_20_targets_are_checked_and_an_older_summary_still_gets_its_rows():
    from flowturbo_diffusers.benchmark.analysis import targets

    level = dict(heun_steps=6, flowturbo_time_saved_vs_heun=0.66, fastest_other="UniPC, OSS grid",
                 flowturbo_time_saved_vs_fastest_other=0.2)
    older = {"headline": {"1": [level]}, "context": {"overhead": {"share_of_call": 0.02}}}
    calibration = [{"kinds": "HPE", "budget": 4, "plan": "H1P1E1", "seconds": 300.0, "gain_db": 3.2,
                    "best_uncalibrated": "FlowTurbo H/P H1P3", "calibration_psnr_db": 33.0, "benchmark_psnr_db": 32.4},
                   {"kinds": "HPE", "budget": 6, "plan": "H1P3E1", "seconds": 650.0, "gain_db": 2.0,
                    "best_uncalibrated": "FlowTurbo H/P H1P5", "calibration_psnr_db": 36.0, "benchmark_psnr_db": 36.1},
                   {"kinds": "E", "budget": 4, "plan": "E4", "seconds": 30.0, "gain_db": 2.5,
                    "best_uncalibrated": "Euler, 4 steps", "calibration_psnr_db": 30.0, "benchmark_psnr_db": 25.0}]
    met = {row["target"]: (row["measured"], row["met"]) for row in targets({**older, "calibration": calibration})}
    assert met == {
        "≥ 65% less time than Heun at Heun-6 fidelity, batch 1": ("66.0%", True),
        "≥ 30% less time than the fastest other sampler at Heun-6 fidelity, batch 1": (
            "20.0% less time than UniPC, OSS grid", False),
        "calibrated plan ≥ 3 dB latent PSNR over the best uncalibrated plan of the same cost, 4 base evaluations": (
            "+3.20 dB (H1P1E1 against FlowTurbo H/P H1P3)", True),
        "calibrated plan ≥ 3 dB latent PSNR over the best uncalibrated plan of the same cost, 6 base evaluations": (
            "+2.00 dB (H1P3E1 against FlowTurbo H/P H1P5)", False),
        "each calibration ≤ 10 minutes": ("slowest 10.8 min (budget 6)", False),
        "held-out latent PSNR within 0.5 dB of the calibration samples'": ("largest gap 0.60 dB (budget 4)", False),
        "scheduler and hook overhead ≤ 3% of a FlowTurbo call": ("2.00%", True),
    }
    assert len(targets(older)) == 3  # a benchmark.json from before calibration: no calibration rows


def test_end_to_end_adds_decoding_to_each_call_and_bounds_the_saving_by_the_loops_share():
    from flowturbo_diffusers.benchmark.analysis import end_to_end_summary

    measured = {"batches": {"1": {"call_seconds": 1.0, "outside_seconds": 0.1, "outside_latent_seconds": 0.06,
                                  "decode_seconds": 0.04, "outside_share": 0.1, "speedup_ceiling": 10.0}}}
    headline_rows = {"1": [{"heun_steps": 6, "heun_seconds": 0.36, "flowturbo_seconds": 0.16}]}
    row = end_to_end_summary(headline_rows, measured)["1"]
    assert row["speedup_ceiling"] == 10.0
    level = row["levels"][0]
    assert level["heun_call_seconds"] == pytest.approx(0.4) and level["flowturbo_call_seconds"] == pytest.approx(0.2)
    assert level["flowturbo_time_saved"] == pytest.approx(0.5)  # 60% of the latent call, 50% of the whole one
    assert level["time_saved_ceiling"] == pytest.approx(0.75)  # 0.1 s of Heun's 0.4 s call is outside the loop


@pytest.fixture
def tiny_model_settings(tmp_path, sd3_pipe):
    from flowturbo_diffusers.benchmark.run import BenchmarkSettings

    sd3_pipe.save_pretrained(tmp_path / "model")
    return BenchmarkSettings(model=str(tmp_path / "model"), quality_samples=2, real_samples=8, reference_steps=4,
                             batch_sizes=(1,), repeats=1, generation_batch=2, call_kwargs=dict(CALL_KWARGS["sd3"]))


# A small grid with the baselines a Flux pipeline trips over: diffusers' Heun (no custom sigmas) and DPM-Solver++
# (mu needs dynamic shifting), Euler on a fixed grid and a FlowTurbo plan.
FLUX_GRID = [SamplerSpec(EULER, 4), SamplerSpec(HEUN, 6), SamplerSpec(DPM2, 4), SamplerSpec(UNIPC, 4),
             SamplerSpec(EULER_UNIFORM, 4, "E4", time_uniform_grid(4)), SamplerSpec(FLOWTURBO_HP, 4, "H1P3")]


@pytest.mark.slow
def test_the_benchmark_runs_end_to_end_on_a_flux_pipeline(tmp_path, monkeypatch):
    from tiny_pipelines import tiny_flux_pipeline

    from flowturbo_diffusers.calibration import CalibrationSettings

    tiny_flux_pipeline().save_pretrained(tmp_path / "flux")
    tiny = dict(candidates=4, max_span=2, samples=2, held_out_samples=0, refine_passes=0)
    monkeypatch.setattr(run, "default_samplers", lambda with_refiner, quick: FLUX_GRID)
    monkeypatch.setattr(run, "default_calibrations", lambda budgets, quick: [
        CalibrationSettings(budget=3, kinds=kinds, **tiny) for kinds in ("HPE", "E")])
    docs = tmp_path / "docs" / "benchmarks.md"
    assert cli.main(["bench", "--model", str(tmp_path / "flux"), "--quick", "--quality-samples", "2",
                     "--reference-steps", "8", "--repeats", "1", "--batch-sizes", "1", "--height", "32", "--width",
                     "32", "--pipeline-kwargs", '{"max_sequence_length": 16}', "--end-to-end-steps", "8",
                     "--output-dir", str(tmp_path / "out"),
                     "--docs", str(docs)]) == 0
    summary = json.loads((tmp_path / "out" / "benchmark.json").read_text())
    context = summary["context"]
    names = [row["spec"]["name"] for row in summary["results"]]
    assert names[:len(FLUX_GRID)] == [spec.name for spec in FLUX_GRID]  # Heun and DPM-Solver++ ran, none left out
    families = {row["spec"]["family"] for row in summary["results"]}
    assert {FLOWTURBO_CALIBRATED, EULER_OSS, UNIPC_OSS} <= families
    assert "H* stands in" in context["notes"][HEUN] and context["pipeline"] == "FluxPipeline"
    for row in summary["results"]:
        assert np.isfinite(row["latent_psnr"]) and row["base_evaluations"] > 0 and row["seconds_per_image"]["1"] > 0
        assert row["fid"] is None and row["accuracy"] is None  # no scorer: fidelity and cost only
    # Calibration ran on other prompts and seeds than the evaluation samples, and the report says how long it took.
    for record in context["calibrations"]:
        assert record["prompts_shared_with_evaluation"] == 0 and record["seeds"][0] >= 900_000
        assert record["seconds"] > 0
    assert [row["kinds"] for row in summary["calibration"]] == ["HPE", "E"]
    whole = context["end_to_end"]["batches"]["1"]
    assert 0 < whole["outside_share"] < 1 and whole["decode_seconds"] > 0 and context["end_to_end"]["steps"] == 8
    text = docs.read_text()
    assert "## Calibrated plans" in text and "## End to end" in text and "Amdahl" in text
    assert "**Notes on the samplers:**" in text and "96%" in text
    # The reports are a function of benchmark.json (sampler grids included).
    assert cli.main(["bench", "--from-results", "--output-dir", str(tmp_path / "out"), "--docs", str(docs)]) == 0
    assert docs.read_text() == text
    # A benchmark.json from before calibrations, grids and whole-call timing is written again too, without them.
    for key in ("calibrations", "end_to_end", "notes"):
        del context[key]
    older = {**summary, "context": context, "results": [row for row in summary["results"] if not row["spec"]["grid"]]}
    for row in older["results"]:
        del row["spec"]["grid"]
    (tmp_path / "out" / "benchmark.json").write_text(json.dumps(older))
    assert cli.main(["bench", "--from-results", "--output-dir", str(tmp_path / "out")]) == 0
    assert "## Calibrated plans" not in (tmp_path / "out" / "benchmark.md").read_text()


def test_the_calibrations_wall_time_counts_the_shared_part_once():
    from flowturbo_diffusers.benchmark.markdown import calibration_wall_seconds

    rows = [{"kinds": "HPE", "seconds": 376.8, "shared_seconds": 365.4},
            {"kinds": "HPE", "seconds": 402.0, "shared_seconds": 365.4},
            {"kinds": "E", "seconds": 43.0, "shared_seconds": 30.0},
            {"kinds": "E", "seconds": 55.0, "shared_seconds": 30.0}]
    assert calibration_wall_seconds(rows) == pytest.approx(365.4 + 11.4 + 36.6 + 30.0 + 13.0 + 25.0)
    assert calibration_wall_seconds([{"kinds": "E", "seconds": 60.0}]) == 60.0  # results from before the field
