"""The bundled tiny SD3 pipeline, its classifier and the procedural digits they were trained on."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from flowturbo_diffusers.bundled import digits
from flowturbo_diffusers.bundled import (
    bundled_model_info,
    bundled_model_path,
    load_bundled_classifier,
    load_bundled_pipeline,
)

REPO = Path(__file__).resolve().parents[1]
MAX_FOLDER_BYTES = 20 * 1024 * 1024


@pytest.fixture(scope="module")
def pipe():
    from diffusers import StableDiffusion3Pipeline

    pipe = StableDiffusion3Pipeline.from_pretrained(bundled_model_path(), local_files_only=True)  # plain diffusers
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def classifier():
    return load_bundled_classifier()


def test_pipeline_loads_offline_in_float32_and_generates(pipe):
    assert pipe.transformer.dtype == torch.float32 and pipe.vae.dtype == torch.float32
    assert len(pipe.transformer.transformer_blocks) >= 8
    call = dict(bundled_model_info()["call_defaults"], num_inference_steps=4)
    image = pipe("a red 7 on a blue background", generator=torch.Generator().manual_seed(0), **call).images[0]
    assert image.size == (call["width"], call["height"]) == (digits.IMAGE_SIZE, digits.IMAGE_SIZE)


def test_load_bundled_pipeline_and_call_defaults():
    from flowturbo_diffusers.bundled import BUNDLED_CALL_DEFAULTS

    assert set(BUNDLED_CALL_DEFAULTS) >= {"height", "width", "guidance_scale", "num_inference_steps", "max_sequence_length"}
    pipe = load_bundled_pipeline()
    assert pipe.transformer.dtype == torch.float32
    assert pipe.text_encoder_3 is not None  # the null T5 that makes plain from_pretrained work


def test_samples_show_the_prompted_digit(pipe, classifier):
    """One sample per digit with the recommended settings: the model is genuinely trained and follows the prompt."""
    call = bundled_model_info()["call_defaults"]
    prompts = [digits.make_prompt(d, *digits.COLOUR_PAIRS[(7 * d) % len(digits.COLOUR_PAIRS)]) for d in digits.DIGITS]
    generators = [torch.Generator().manual_seed(i) for i in range(len(prompts))]
    images = pipe(prompts, generator=generators, output_type="pt", **call).images
    correct = (classifier.predict(images) == torch.tensor(digits.DIGITS)).sum().item()
    assert correct >= 8, f"only {correct}/10 samples show the prompted digit"


def test_recorded_classifier_accuracy_matches_a_fresh_evaluation(classifier):
    info = bundled_model_info()
    batch = digits.render_batch(300, seed=20_240_601)
    accuracy = (classifier.predict(batch.images) == batch.labels).float().mean().item()
    assert info["classifier_accuracy"] >= 0.95
    assert abs(accuracy - info["classifier_accuracy"]) <= 0.03
    assert classifier.features(batch.images[:4]).shape == (4, classifier.config.block_out_channels[-1])


def test_the_bundled_scorer_asks_for_digits_and_reads_them_back():
    from flowturbo_diffusers.benchmark.scoring import Scorer
    from flowturbo_diffusers.bundled import load_bundled_scorer

    scorer = load_bundled_scorer()  # the benchmark's default scorer for the bundled model
    assert isinstance(scorer, Scorer)
    prompts, labels = scorer.prompts(20, seed=1)
    assert labels == [i % 10 for i in range(20)] and all(f" {d} on " in p for p, d in zip(prompts, labels))
    assert scorer.prompts(20, seed=1) == (prompts, labels)
    real = scorer.real_images(20, seed=2)
    assert real.shape == (20, 3, digits.IMAGE_SIZE, digits.IMAGE_SIZE) and 0 <= real.min() and real.max() <= 1
    assert scorer.features(real).shape == (20, scorer.classifier.config.block_out_channels[-1])
    rendered = digits.render_batch(20, seed=3)
    assert scorer.accuracy(rendered.images, rendered.labels.tolist()) >= 0.9


def test_recorded_figures_meet_the_targets():
    info = bundled_model_info()
    assert info["sample_accuracy"]["digit_accuracy"] >= 0.90
    assert info["sample_accuracy"]["num_inference_steps"] == info["call_defaults"]["num_inference_steps"]
    card = (bundled_model_path() / "README.md").read_text()
    assert card.startswith("---\n") and "library_name: diffusers" in card and "pipeline_tag: text-to-image" in card


def test_bundled_folder_is_small():
    size = sum(f.stat().st_size for f in bundled_model_path().rglob("*") if f.is_file())
    assert size < MAX_FOLDER_BYTES, f"bundled_model is {size / 1e6:.1f} MB"
    assert json.loads((bundled_model_path() / "model_index.json").read_text())["text_encoder_3"][1] == "T5EncoderModel"


def test_digits_rendering_is_deterministic():
    first, second = digits.render_batch(24, seed=5), digits.render_batch(24, seed=5)
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)
    assert first.prompts == second.prompts
    assert not torch.equal(first.images, digits.render_batch(24, seed=6).images)
    assert first.images.shape == (24, 3, digits.IMAGE_SIZE, digits.IMAGE_SIZE)
    assert 0.0 <= first.images.min() and first.images.max() <= 1.0
    for label, fg, bg, prompt in zip(first.labels, first.foregrounds, first.backgrounds, first.prompts):
        assert fg != bg and prompt == digits.make_prompt(int(label), fg, bg)
    assert len(set(digits.all_prompts())) == 10 * len(digits.COLOUR_PAIRS)


def test_prompt_accuracy_reads_digit_glyph_colour_and_background(classifier):
    from flowturbo_diffusers.bundled import foreground_colours, prompt_accuracy

    batch = digits.render_batch(200, seed=11)
    assert foreground_colours(batch.images, batch.backgrounds) == batch.foregrounds
    assert prompt_accuracy(batch.images, batch.prompts, classifier) == {"digit": 1.0, "foreground": 1.0,
                                                                        "background": 1.0}
    # The same images against prompts that ask for other colours or digits: each score falls on its own.
    swapped = [digits.make_prompt(d, b, f) for d, f, b in zip(batch.labels.tolist(), batch.foregrounds, batch.backgrounds)]
    scores = prompt_accuracy(batch.images, swapped, classifier)
    assert scores["foreground"] == 0.0 and scores["background"] == 0.0 and scores["digit"] == 1.0
    other_digit = [digits.make_prompt((d + 1) % 10, f, b)
                   for d, f, b in zip(batch.labels.tolist(), batch.foregrounds, batch.backgrounds)]
    assert prompt_accuracy(batch.images, other_digit, classifier)["digit"] < 0.05
    # Video (N, F, 3, H, W) is scored by frame: replace the last of 4 frames by other images, and exactly the
    # replaced frames with another background count against it.
    video = batch.images[:10].unsqueeze(1).repeat(1, 4, 1, 1, 1)
    video[:, -1] = batch.images[10:20]
    changed = sum(a != b for a, b in zip(batch.backgrounds[:10], batch.backgrounds[10:20])) / 10
    assert changed > 0
    assert prompt_accuracy(video, batch.prompts[:10], classifier)["background"] == pytest.approx(1 - changed / 4)
    with pytest.raises(ValueError, match="not a coloured-digit prompt"):
        digits.parse_prompt("a photo of a cat")
    with pytest.raises(ValueError, match="one image \\(or video\\) per prompt"):
        prompt_accuracy(batch.images[:3], batch.prompts[:4], classifier)


@pytest.mark.slow
def test_quick_training_smoke_run(tmp_path):
    spec = importlib.util.spec_from_file_location("train_tiny_pipeline", REPO / "examples" / "train_tiny_pipeline.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)

    output = script.main(["--quick", "--output-dir", str(tmp_path / "model")])

    assert (output / "model_index.json").is_file() and (output / "classifier" / "config.json").is_file()
    info = json.loads((output / "flowturbo.json").read_text())
    assert info["quick"] and set(info["wall_time_seconds"]) >= {"classifier", "vae", "transformer"}
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # the staging folder was renamed, nothing left over


def test_the_bundled_refiner_fits_the_bundled_pipeline(pipe):
    from flowturbo_diffusers import FlowTurboPipeline, VelocityRefiner

    refiner = VelocityRefiner.from_pretrained(bundled_model_path() / "refiner")
    refiner.check_compatible(pipe.transformer)
    default_plan = bundled_model_info()["flowturbo"]["default_plan"]
    turbo = FlowTurboPipeline.from_pretrained(bundled_model_path())  # picks up refiner/ and its recommended plan
    assert turbo.refiner is not None and str(turbo.plan) == default_plan
    turbo = FlowTurboPipeline.from_pipe(pipe)  # so does wrapping the loaded pipeline (what `flowturbo generate` does)
    assert turbo.refiner is not None and str(turbo.plan) == default_plan
    assert type(pipe.scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"
    assert refiner.num_parameters() <= 0.05 * pipe.transformer.num_parameters()


def test_recorded_flowturbo_figures_meet_the_target():
    figures = bundled_model_info()["flowturbo"]
    default = figures["plans"][figures["default_plan"]]
    assert default["digit_accuracy"] >= figures["euler_digit_accuracy"] - 0.02
    errors = figures["errors_vs_reference"]
    assert errors["error_trained_refiner"] < errors["error_zero_refiner"]
