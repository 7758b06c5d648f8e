"""Refiner training: the quality bar, exact resumption after a kill, atomic checkpoints, clear errors, every pipeline,
and data parallel training under `accelerate launch`."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import CALL_KWARGS, make_pipe
from diffusers import DDIMScheduler
from safetensors.torch import load_file

from flowturbo_diffusers import FlowTurboPipeline, VelocityRefiner
from flowturbo_diffusers.training import train_refiner
from flowturbo_diffusers.training.trainer import _checkpoints

PROMPTS = [f"a {colour} {digit}" for colour in ("red", "blue", "green", "white") for digit in range(4)]
QUICK = dict(record_steps=8, eval_plan=None, recommendation_samples=0, progress=False, log_every=5)


def train(pipe, output_dir, kind="sd3", **settings):
    settings = {**QUICK, "call_kwargs": dict(CALL_KWARGS[kind]), **settings}
    return train_refiner(pipe, prompts=PROMPTS, output_dir=str(output_dir), **settings)


def weights(folder):
    return load_file(folder / "refiner" / "diffusion_pytorch_model.safetensors")


@pytest.fixture(scope="module")
def saved_sd3(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "tiny-sd3"
    make_pipe("sd3").save_pretrained(path)
    return path


def test_trained_refiner_brings_the_plan_closer_to_the_reference_than_an_untrained_one(tmp_path, sd3_pipe):
    result = train(sd3_pipe, tmp_path, steps=200, batch_size=8, learning_rate=1e-3, eval_plan="H1P5R3", eval_samples=8)
    metrics = result.metrics
    print(f"\nH1P5R3 vs {metrics['reference']}: trained refiner {metrics['error_trained_refiner']:.4f}, "
          f"zero refiner {metrics['error_zero_refiner']:.4f}, R run as H {metrics['error_heun_instead_of_R']:.4f}")
    assert metrics["error_trained_refiner"] < 0.9 * metrics["error_zero_refiner"]


def test_output_is_a_refiner_folder_ready_to_push_with_a_filled_card(tmp_path, sd3_pipe):
    result = train(sd3_pipe, tmp_path, steps=10, batch_size=4, eval_plan="H1P2R1", eval_samples=2)
    folder = tmp_path / "refiner"
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "diffusion_pytorch_model.safetensors"]
    card = (folder / "README.md").read_text()
    for expected in ("- **steps**: 10", "- **final loss**:", "- **data source**: 16 prompts", "error trained refiner",
                     "- **base model parameters**:"):
        assert expected in card, expected
    rows = (tmp_path / "loss.csv").read_text().splitlines()
    assert rows[0] == "step,loss,seconds" and rows[-1].startswith("10,")
    refiner = VelocityRefiner.from_pretrained(folder)
    FlowTurboPipeline.from_pipe(sd3_pipe, refiner=refiner, plan="H1P2R1")  # fits the base it was trained for
    assert result.final_loss == pytest.approx(float(rows[-1].split(",")[1]), rel=1e-4)


def _cli(*arguments):
    return [sys.executable, "-m", "flowturbo_diffusers.cli", "train-refiner", *arguments]


def _prompt_file(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("# colours and digits\n" + "\n".join(PROMPTS) + "\n\n")
    return path


def _train_arguments(model, prompts, output, steps=200):
    return ["--model", str(model), "--prompts", str(prompts), "--output-dir", str(output), "--steps", str(steps),
            "--batch-size", "4", "--learning-rate", "1e-3", "--lr-scheduler", "cosine",
            "--lr-warmup-steps", str(steps // 20), "--checkpoint-every", "20", "--record-steps", "6",
            "--height", "32", "--width", "32", "--eval-plan", "", "--recommendation-samples", "0"]


@pytest.mark.slow
def test_training_killed_mid_run_and_resumed_ends_with_the_same_weights(tmp_path, saved_sd3):
    prompts = _prompt_file(tmp_path)
    subprocess.run(_cli(*_train_arguments(saved_sd3, prompts, tmp_path / "straight")), check=True, capture_output=True)
    process = subprocess.Popen(_cli(*_train_arguments(saved_sd3, prompts, tmp_path / "killed")),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (tmp_path / "killed" / "checkpoints" / "step-000040").exists() and time.time() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL and not (tmp_path / "killed" / "refiner").exists()
    stopped_at = int(_checkpoints(tmp_path / "killed")[-1].name.split("-")[1])
    assert 40 <= stopped_at < 200
    subprocess.run(_cli(*_train_arguments(saved_sd3, prompts, tmp_path / "killed"), "--resume"), check=True,
                   capture_output=True)
    straight, resumed = weights(tmp_path / "straight"), weights(tmp_path / "killed")
    assert straight.keys() == resumed.keys()
    for name in straight:
        assert torch.equal(straight[name], resumed[name]), name


def test_a_checkpoint_interrupted_while_saving_is_never_used(tmp_path, sd3_pipe, monkeypatch):
    from accelerate import Accelerator

    save_state = Accelerator.save_state
    saves = []

    def crashing_save_state(self, output_dir, **kwargs):
        saves.append(output_dir)
        if len(saves) == 2:  # the second checkpoint: write part of it, then die
            os.makedirs(output_dir, exist_ok=True)
            open(os.path.join(output_dir, "model.safetensors"), "wb").write(b"partial")
            raise RuntimeError("killed while writing")
        return save_state(self, output_dir, **kwargs)

    monkeypatch.setattr(Accelerator, "save_state", crashing_save_state)
    with pytest.raises(RuntimeError, match="killed while writing"):
        train(sd3_pipe, tmp_path / "run", steps=20, batch_size=4, checkpoint_every=5)
    assert [p.name for p in _checkpoints(tmp_path / "run")] == ["step-000005"]
    monkeypatch.setattr(Accelerator, "save_state", save_state)
    train(sd3_pipe, tmp_path / "run", steps=20, batch_size=4, checkpoint_every=5, resume=True)
    train(sd3_pipe, tmp_path / "straight", steps=20, batch_size=4, checkpoint_every=5)
    for name, tensor in weights(tmp_path / "straight").items():
        assert torch.equal(tensor, weights(tmp_path / "run")[name]), name


@pytest.mark.parametrize(
    "settings, error, message",
    [
        (dict(dt_range=(0.0, 1.0)), ValueError, "dt range must satisfy"),
        (dict(dt_range=(-0.1, 0.1)), ValueError, "dt range must satisfy"),
        (dict(dt_range=(0.2, 0.1)), ValueError, "dt range must satisfy"),
        (dict(lr_scheduler="cosine_annealing"), ValueError, "Unknown lr_scheduler 'cosine_annealing'; choose one of"),
        (dict(lr_warmup_steps=5), ValueError, "lr_warmup_steps must be in"),
    ],
)
def test_bad_settings_are_refused_before_any_work(tmp_path, sd3_pipe, settings, error, message):
    with pytest.raises(error, match=message):
        train(sd3_pipe, tmp_path / "out", steps=5, batch_size=4, **settings)
    assert not (tmp_path / "out").exists()


def test_an_empty_prompt_file_is_refused(tmp_path, sd3_pipe):
    empty = tmp_path / "prompts.txt"
    empty.write_text("# nothing yet\n\n")
    with pytest.raises(ValueError, match="has no prompts"):
        train_refiner(sd3_pipe, prompt_file=empty, output_dir=str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_an_existing_output_directory_needs_overwrite(tmp_path, sd3_pipe):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="--overwrite"):
        train(sd3_pipe, tmp_path / "out", steps=2, batch_size=4)
    assert (tmp_path / "out" / "notes.txt").read_text() == "keep me"
    train(sd3_pipe, tmp_path / "out", steps=2, batch_size=4, overwrite=True)
    assert (tmp_path / "out" / "refiner").is_dir() and not (tmp_path / "out" / "notes.txt").exists()


def test_a_non_flow_pipeline_is_refused(tmp_path, sd3_pipe):
    sd3_pipe.scheduler = DDIMScheduler()
    with pytest.raises(ValueError, match="not a flow-matching pipeline"):
        train(sd3_pipe, tmp_path / "out", steps=2, batch_size=4)


def test_a_pipeline_without_a_supported_transformer_is_refused(tmp_path, sd3_pipe):
    sd3_pipe.register_modules(transformer=torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="do not support Linear"):
        train(sd3_pipe, tmp_path / "out", steps=2, batch_size=4)


def test_resuming_with_different_settings_is_refused(tmp_path, sd3_pipe):
    train(sd3_pipe, tmp_path / "run", steps=4, batch_size=4, checkpoint_every=2)
    with pytest.raises(ValueError, match="settings differ.*learning_rate"):
        train(sd3_pipe, tmp_path / "run", steps=4, batch_size=4, checkpoint_every=2, resume=True, learning_rate=0.5)


@pytest.mark.parametrize(
    "kind, call_kwargs",
    [("sd3", {}), ("flux", dict(negative_prompt="grey", true_cfg_scale=2.0)), ("sana", {}), ("wan", {})],
)
def test_every_supported_pipeline_trains_without_pipeline_specific_code(tmp_path, kind, call_kwargs):
    pipe = make_pipe(kind)
    result = train(pipe, tmp_path, kind=kind, steps=3, batch_size=2, record_steps=3,
                   call_kwargs={**CALL_KWARGS[kind], **call_kwargs})
    assert torch.isfinite(torch.tensor(result.final_loss))
    FlowTurboPipeline.from_pipe(pipe, refiner=result.refiner, plan="H1P1R1")


def test_both_guidance_branches_are_recorded(sd3_pipe):
    from flowturbo_diffusers.training.trajectories import record_teacher_calls

    calls = record_teacher_calls(sd3_pipe, ["a red 7"], dict(CALL_KWARGS["sd3"], num_inference_steps=2), progress=False)
    pooled = {tuple(call.per_sample["pooled_projections"].tolist()) for call in calls}
    assert len(calls) == 2 * 2 and len(pooled) == 2  # 2 steps x [uncond, cond]


def test_ema_and_bf16_mixed_precision_run(tmp_path, sd3_pipe):
    result = train(sd3_pipe, tmp_path, steps=4, batch_size=4, ema_decay=0.9, mixed_precision="bf16",
                   gradient_accumulation_steps=2)
    assert torch.isfinite(torch.tensor(result.final_loss))


def test_push_to_hub_uploads_the_refiner(tmp_path, sd3_pipe, local_hub):
    train(sd3_pipe, tmp_path, steps=2, batch_size=4, push_to_hub="org/tiny-refiner")
    files = local_hub.repos["org/tiny-refiner"].files("main")
    assert sorted(files) == ["README.md", "config.json", "diffusion_pytorch_model.safetensors"]




@pytest.mark.slow
def test_accelerate_launch_with_two_processes_splits_the_batch_and_keeps_weights_identical(tmp_path, saved_sd3):
    """Two CPU processes (gloo). accelerate's `--multi_gpu` only selects its torchrun launcher; on CPU it runs gloo."""
    prompts = _prompt_file(tmp_path)
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m",
               "flowturbo_diffusers.cli", "train-refiner",
               *_train_arguments(saved_sd3, prompts, tmp_path / "ddp", steps=6)]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    info = json.loads((tmp_path / "ddp" / "run_info.json").read_text())
    assert info["num_processes"] == 2 and info["per_process_batch_size"] == 2 and info["global_batch_size"] == 4
    first, second = info["final_weight_checksums"]
    assert first == second


@pytest.mark.parametrize("kind", ["sd3", "flux"])
def test_data_based_training_from_a_captioned_image_folder(tmp_path, kind):
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    rows = []
    for i in range(4):
        colour = (60 * i, 255 - 60 * i, 120)
        Image.new("RGB", (32, 32), colour).save(folder / f"{i}.png")
        rows.append(json.dumps({"file_name": f"{i}.png", "text": f"a flat colour {i}"}))
    (folder / "metadata.jsonl").write_text("\n".join(rows))
    pipe = make_pipe(kind)
    result = train_refiner(pipe, images=folder, output_dir=str(tmp_path / "out"), steps=4, batch_size=4,
                           call_kwargs=dict(CALL_KWARGS[kind]), **{k: v for k, v in QUICK.items() if k != "record_steps"})
    assert torch.isfinite(torch.tensor(result.final_loss))
    assert "4 captioned images" in (tmp_path / "out" / "refiner" / "README.md").read_text()


def test_an_image_folder_without_captions_is_refused(tmp_path, sd3_pipe):
    (tmp_path / "images").mkdir()
    with pytest.raises(ValueError, match="No captioned images"):
        train_refiner(sd3_pipe, images=tmp_path / "images", output_dir=str(tmp_path / "out"))


def test_a_pipeline_loaded_from_a_path_object_trains_and_saves(tmp_path, saved_sd3):
    from diffusers import StableDiffusion3Pipeline

    pipe = StableDiffusion3Pipeline.from_pretrained(saved_sd3)  # a Path: diffusers keeps _name_or_path as one
    pipe.set_progress_bar_config(disable=True)
    result = train(pipe, tmp_path / "out", steps=2, batch_size=4)
    assert VelocityRefiner.from_pretrained(result.output_dir).config.base_model == str(saved_sd3)


def test_the_learning_rate_follows_the_schedule(tmp_path, sd3_pipe, monkeypatch):
    rates = []
    step = torch.optim.AdamW.step
    monkeypatch.setattr(torch.optim.AdamW, "step", lambda self, *a, **k: (rates.append(self.param_groups[0]["lr"]),
                                                                         step(self, *a, **k))[1])
    train(sd3_pipe, tmp_path / "out", steps=6, batch_size=4, learning_rate=1e-3, lr_scheduler="linear",
          lr_warmup_steps=2)
    expected = [0.0, 5e-4, 1e-3, 7.5e-4, 5e-4, 2.5e-4]  # warm-up over 2 steps, then linear decay to 0 at step 6
    assert rates == pytest.approx(expected)


class DoubledOracleRefiner(VelocityRefiner):
    """Its offset is twice the exact one (base velocity minus the given one): at offset scale 0.5, R steps are exact
    Heun steps."""

    def offset(self, call, velocity):
        self._call = call
        return super().offset(call, velocity)

    def forward(self, sample, velocity, *args):
        return 2 * (self._call.evaluate_base() - velocity)


def test_calibration_chooses_the_offset_scale_closest_to_the_reference(sd3_pipe):
    from flowturbo_diffusers.training import calibrate_offset_scale
    from flowturbo_diffusers.training.evaluation import refiner_errors

    refiner = DoubledOracleRefiner(**VelocityRefiner.config_for_transformer(sd3_pipe.transformer))
    figures = calibrate_offset_scale(sd3_pipe, refiner, ["H1P3R2", "H1P2R3"], PROMPTS[:4], [5, 6, 7, 8],
                                     CALL_KWARGS["sd3"], reference_steps=40, scales=(0.25, 0.5, 1.0), progress=False)
    assert figures["offset_scale"] == 0.5 and refiner.config.offset_scale == 0.5
    errors = figures["errors"]
    assert errors[0.5]["H1P3R2"] < errors[0.25]["H1P3R2"] and errors[0.5]["H1P3R2"] < errors[1.0]["H1P3R2"]
    # At the chosen scale the R steps are exact Heun steps, and evaluation reports the unscaled error beside it.
    metrics = refiner_errors(sd3_pipe, refiner, "H1P3R2", PROMPTS[:4], [5, 6, 7, 8], CALL_KWARGS["sd3"], 40)
    assert metrics["error_trained_refiner"] == pytest.approx(metrics["error_heun_instead_of_R"], rel=1e-4)
    assert metrics["error_trained_refiner_unscaled"] > 1.5 * metrics["error_trained_refiner"]


def test_offset_errors_by_sigma_measure_the_refiner_against_the_teacher(sd3_pipe):
    from flowturbo_diffusers.training.evaluation import offset_errors_by_sigma

    def rows(refiner, edges=(0.0, 0.3, 1.0)):
        return offset_errors_by_sigma(sd3_pipe, refiner, PROMPTS[:2], seed=3, sigma_edges=edges, progress=False,
                                      call_kwargs=dict(CALL_KWARGS["sd3"], num_inference_steps=4))

    config = VelocityRefiner.config_for_transformer(sd3_pipe.transformer)
    exact = rows(DoubledOracleRefiner(**config, offset_scale=0.5))  # its offsets are the teacher's
    assert [(row["sigma_min"], row["sigma_max"]) for row in exact] == [(0.0, 0.3), (0.3, 1.0)]
    assert sum(row["pairs"] for row in exact) == 2 * 2 * 4  # prompts x [uncond, cond] x steps
    for row in exact:
        assert row["relative_error"] < 1e-4 and row["best_scale"] == pytest.approx(0.5)
        assert row["true_offset_rms"] > 0
    doubled = rows(DoubledOracleRefiner(**config))
    assert all(row["relative_error"] == pytest.approx(1.0, rel=1e-4) for row in doubled)  # twice the offset
    zero = rows(VelocityRefiner(**config))
    assert all(row["relative_error"] == pytest.approx(1.0) and row["best_scale"] is None for row in zero)
    with pytest.raises(ValueError, match="increasing"):
        rows(VelocityRefiner(**config), edges=(0.5, 0.2))


def test_training_calibrates_the_offset_scale_and_saves_it(tmp_path, sd3_pipe):
    result = train(sd3_pipe, tmp_path, steps=10, batch_size=4, eval_plan="H1P2R2", eval_samples=2,
                   calibration_plans=("H1P2R2", "H1P3R3"), calibration_samples=2)
    metrics = result.metrics
    calibration = metrics["calibration"]
    assert calibration["plans"] == ["H1P2R2", "H1P3R3"] and calibration["samples"] == 2
    chosen = min(calibration["relative_error_by_scale"], key=calibration["relative_error_by_scale"].get)
    assert metrics["offset_scale"] == chosen
    saved = VelocityRefiner.from_pretrained(tmp_path / "refiner")
    assert saved.config.offset_scale == metrics["offset_scale"]
    assert "- **offset scale**:" in (tmp_path / "refiner" / "README.md").read_text()


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(calibration_plans=("H1P*R3",)), "cannot calibrate the refiner's offset scale"),
        (dict(calibration_plans=("H1P5",)), "cannot calibrate the refiner's offset scale"),
        (dict(calibration_samples=-1), "calibration_samples must be 0"),
    ],
)
def test_bad_calibration_settings_are_refused_before_any_work(tmp_path, sd3_pipe, settings, message):
    with pytest.raises(ValueError, match=message):
        train(sd3_pipe, tmp_path, steps=10, **settings)


def test_recommended_plans_come_from_measurement_against_training_free_plans_of_equal_cost():
    """On the bundled model, a perfect refiner (R steps exactly Heun steps) at a tenth of a call beats the H/P plans
    of its cost and is recommended; an untrained refiner costed like the base model does not, and the H/P plans are
    recommended. (The tiny random pipelines' ODEs are too close to straight lines to tell plans apart.)"""
    from flowturbo_diffusers.bundled import BUNDLED_CALL_DEFAULTS, digits, load_bundled_pipeline
    from flowturbo_diffusers.training.evaluation import TRAINING_FREE_RECOMMENDATION, recommend_plans

    pipe = load_bundled_pipeline()
    pipe.set_progress_bar_config(disable=True)
    config = VelocityRefiner.config_for_transformer(pipe.transformer)
    settings = dict(prompts=digits.render_batch(2, seed=5).prompts, seeds=[40, 41],
                    call_kwargs={k: v for k, v in BUNDLED_CALL_DEFAULTS.items() if k != "num_inference_steps"},
                    reference_steps=32, refiner_plans=("H1P2R2", "H1P3R3"),
                    training_free_plans=tuple(f"H1P{n}" for n in range(1, 10)), progress=False)
    perfect = recommend_plans(pipe, DoubledOracleRefiner(**config, offset_scale=0.5), refiner_cost=0.1, **settings)
    rows = {row["plan"]: row for row in perfect["plans"]}
    # 5 base and 5 refiner evaluations (none at sigma 0), a refiner evaluation costing 0.1
    assert rows["H1P3R3"]["cost"] == pytest.approx(5 + 0.1 * 5) and rows["H1P3"]["refiner_evaluations"] == 0
    assert perfect["refiner_pays"] and set(perfect["recommended_plans"]) == {"H1P2R2", "H1P3R3"}
    gains = [rows[plan]["gain_db"] for plan in perfect["recommended_plans"]]
    assert min(gains) > 0 and gains == sorted(gains, reverse=True)  # best first

    # Beside each R plan, the same plan with an untrained refiner: the perfect refiner's R steps are not that.
    assert all(abs(rows[plan]["psnr_db"] - rows[plan]["zero_refiner_psnr_db"]) > 0.1 for plan in ("H1P2R2", "H1P3R3"))

    untrained = recommend_plans(pipe, VelocityRefiner(**config), refiner_cost=1.0, **settings)
    assert all(row["psnr_db"] == pytest.approx(row["zero_refiner_psnr_db"])  # it is the zero refiner
               for row in untrained["plans"] if row["refiner_evaluations"])
    assert not untrained["refiner_pays"]
    assert untrained["recommended_plans"] == list(TRAINING_FREE_RECOMMENDATION)
    assert all(row["gain_db"] <= 0 for row in untrained["plans"] if row["refiner_evaluations"])


def test_the_training_free_curve_is_read_at_the_r_plans_cost():
    from flowturbo_diffusers.training.evaluation import psnr_at_cost

    curve = [(3, 20.0), (4, 24.0), (4, 25.0), (6, 29.0)]
    assert psnr_at_cost(curve, 4.5) == pytest.approx(26.0)  # between the best at cost 4 and cost 6
    assert psnr_at_cost(curve, 3) == pytest.approx(20.0)
    assert psnr_at_cost(curve, 2.9) is None and psnr_at_cost(curve, 6.1) is None  # outside: no comparison


def test_the_refiners_call_cost_is_measured_and_needs_a_plan_with_r_steps(sd3_pipe):
    from flowturbo_diffusers.training.evaluation import refiner_call_cost

    refiner = VelocityRefiner.for_transformer(sd3_pipe.transformer)
    cost = refiner_call_cost(sd3_pipe, refiner, "H1P2R2", PROMPTS[:1], [0], CALL_KWARGS["sd3"], repeats=1)
    assert 0 < cost < 10
    with pytest.raises(ValueError, match="fixed plan with R steps"):
        refiner_call_cost(sd3_pipe, refiner, "H1P5", PROMPTS[:1], [0], CALL_KWARGS["sd3"])


def test_training_recommends_measured_plans_and_the_card_shows_the_measurement(tmp_path, sd3_pipe):
    result = train(sd3_pipe, tmp_path, steps=10, batch_size=4, recommendation_samples=2)
    saved = VelocityRefiner.from_pretrained(tmp_path / "refiner")
    measured = saved.config.training_info["plan_measurements"]
    assert list(saved.config.recommended_plans) == measured["recommended_plans"] == result.metrics["recommended_plans"]
    assert measured["samples"] == 2 and {row["plan"] for row in measured["plans"]} >= {"H1P5R3", "H1P5"}
    card = (tmp_path / "refiner" / "README.md").read_text()
    assert "| `H1P5R3` |" in card and "H/P at the same cost" in card and "| untrained refiner |" in card
    if not measured["refiner_pays"]:
        assert "No R plan beat the training-free (H/P) plans" in card
    with pytest.raises(ValueError, match="recommendation_samples must be 0"):
        train(sd3_pipe, tmp_path / "bad", steps=10, recommendation_samples=-1)
