"""The extra small models that the refiner recipe is measured on (docs/training.md, "The default recipe on models it
was not built around"): their training scripts must keep working, since the models are regenerated, not committed."""

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "examples" / f"{name}.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


@pytest.mark.slow
def test_the_flux_style_model_trains_saves_and_samples_with_true_cfg(tmp_path):
    from diffusers import FluxPipeline

    output = load_script("train_flux_model").main(["--quick", "--output-dir", str(tmp_path / "flux")])

    info = json.loads((output / "flowturbo.json").read_text())
    assert info["quick"] and info["call_defaults"]["true_cfg_scale"] > 1 and info["call_defaults"]["negative_prompt"] == ""
    pipe = FluxPipeline.from_pretrained(output)
    assert not pipe.transformer.config.guidance_embeds  # true CFG: two transformer calls per step
    assert [p.name for p in tmp_path.iterdir()] == ["flux"]  # the staging folder was renamed, nothing left over
