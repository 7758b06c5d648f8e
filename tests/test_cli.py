"""`flowturbo generate`, the README's main command, end to end on the default offline model."""

from PIL import Image

from flowturbo_diffusers import cli


def test_generate_writes_a_grid_and_prints_both_samplers(tmp_path, capsys):
    output = tmp_path / "grid.png"
    assert cli.main(["generate", "--plan", "H1P3", "--baseline-steps", "6", "--prompt", "a red 7 on a blue background",
                     "--prompt", "a green 1 on a white background", "--output", str(output)]) == 0
    printed = capsys.readouterr().out
    assert "FlowTurbo H1P3" in printed and "steps" in printed and "ms" in printed and "faster per image" in printed
    lines = {line.split()[0]: line for line in printed.splitlines() if line.startswith(("Flow", "FlowTurbo"))}
    assert any(line.split()[-5:-2] == ["4", "4", "0"] for line in lines.values())  # 4 steps, 4 base evaluations
    with Image.open(output) as grid:
        grid.verify()
    with Image.open(output) as grid:
        assert grid.format == "PNG" and grid.size[0] > 128 and grid.size[1] > 128


def test_generate_counts_the_baseline_evaluations_and_leaves_no_hook_behind(monkeypatch, sd3_pipe):
    from conftest import CALL_KWARGS, hooks_left

    from flowturbo_diffusers import generate
    from flowturbo_diffusers.plan import Plan

    monkeypatch.setattr(generate, "load_default_model", lambda dtype: (sd3_pipe, dict(CALL_KWARGS["sd3"])))
    runs = generate.compare(refiner="none", plan="H1P2", baseline_steps=3, prompts=["a red 7"], progress=False)
    assert [run.base_evaluations for run in runs] == [3, Plan.parse("H1P2").count_evaluations()["base"]]
    assert hooks_left(sd3_pipe.transformer) == []


def test_flowturbo_without_a_command_prints_help(capsys):
    assert cli.main([]) == 1
    assert "generate" in capsys.readouterr().out


def test_generate_with_compile(tmp_path, capsys):
    assert cli.main(["generate", "--plan", "H1P3", "--baseline-steps", "4", "--prompt", "a red 7", "--compile",
                     "--output", str(tmp_path / "grid.png")]) == 0
    assert "FlowTurbo H1P3 compiled" in capsys.readouterr().out


def test_calibrate_refiner_saves_the_scale_closest_to_the_reference(tmp_path, capsys):
    import torch
    from tiny_pipelines import tiny_sd3_pipeline

    from flowturbo_diffusers import VelocityRefiner

    pipe = tiny_sd3_pipeline()
    pipe.save_pretrained(tmp_path / "model")
    refiner = VelocityRefiner.for_transformer(pipe.transformer)
    torch.nn.init.normal_(refiner.proj_out.weight, std=0.5)  # offsets of pure noise: any scale above 0 hurts
    refiner.save_pretrained(tmp_path / "refiner")
    assert cli.main(["calibrate-refiner", "--model", str(tmp_path / "model"), "--refiner", str(tmp_path / "refiner"),
                     "--output-dir", str(tmp_path / "calibrated"), "--plans", "H1P2R2", "H1P1R3", "--samples", "2",
                     "--scales", "0", "0.5", "1", "--reference-steps", "20", "--height", "32", "--width", "32",
                     "--recommendation-samples", "2"]) == 0
    printed = capsys.readouterr().out
    assert "offset scale 0: relative error H1P2R2" in printed and "<- chosen" in printed
    calibrated = VelocityRefiner.from_pretrained(tmp_path / "calibrated").config
    assert calibrated.offset_scale == 0.0
    # The recommended plans were measured on 2 more samples, and the table was printed.
    measured = calibrated.training_info["plan_measurements"]
    assert list(calibrated.recommended_plans) == measured["recommended_plans"] and measured["samples"] == 2
    assert "| `H1P5R3` |" in printed and "H/P at the same cost" in printed
    assert VelocityRefiner.from_pretrained(tmp_path / "refiner").config.offset_scale == 1.0  # the input is kept


def test_calibrate_refiner_refuses_a_plan_without_R_steps(tmp_path):
    import pytest

    with pytest.raises(ValueError, match="cannot calibrate"):
        cli.main(["calibrate-refiner", "--refiner", str(tmp_path), "--output-dir", str(tmp_path / "out"),
                  "--plans", "H1P5"])


def test_train_refiner_through_the_cli_passes_the_models_call_arguments(tmp_path, capsys):
    """A Flux model with true CFG and a short text length can be trained from the command line."""
    import json

    from tiny_pipelines import tiny_flux_pipeline

    tiny_flux_pipeline().save_pretrained(tmp_path / "flux")
    (tmp_path / "prompts.txt").write_text("a red 7 on a blue background\na green 1 on a white background\n")
    call = {"max_sequence_length": 16, "true_cfg_scale": 4, "negative_prompt": "", "height": 32, "width": 32}
    assert cli.main(["train-refiner", "--model", str(tmp_path / "flux"), "--prompts", str(tmp_path / "prompts.txt"),
                     "--output-dir", str(tmp_path / "out"), "--steps", "2", "--batch-size", "2", "--record-steps", "3",
                     "--pipeline-kwargs", json.dumps(call), "--height", "32", "--eval-plan", "",
                     "--calibration-samples", "0", "--recommendation-samples", "0"]) == 0
    settings = json.loads((tmp_path / "out" / "training_config.json").read_text())
    assert settings["call_kwargs"] == call
    run = json.loads((tmp_path / "out" / "run_info.json").read_text())
    # 2 prompts x 3 steps x 2 separate guidance calls (true CFG), each of one sample.
    assert run["recorded_teacher_calls_on_main_process"] == 2 * 3 * 2
    assert (tmp_path / "out" / "refiner" / "diffusion_pytorch_model.safetensors").is_file()


def test_pipeline_kwargs_that_are_not_a_json_object_are_refused_with_an_example():
    import pytest

    for bad, message in (('{"max_sequence_length": 32', "not valid JSON"), ("[1, 2]", "must be a JSON object")):
        with pytest.raises(SystemExit, match=message):
            cli.main(["generate", "--pipeline-kwargs", bad])
