"""VelocityRefiner as a model: layouts, zero initialisation, sizing, safetensors-only loading, model card."""

import json
import os
from types import SimpleNamespace

import pytest
import torch
from conftest import make_pipe
from diffusers import SD3Transformer2DModel

from flowturbo_diffusers import VelocityRefiner
from flowturbo_diffusers.adapters import architecture_hash
from flowturbo_diffusers.refiner import RefinerLoadError


@pytest.mark.parametrize(
    "config, shape",
    [
        (dict(layout="image", in_channels=4, patch_size=[2], pooled_dim=8), (2, 4, 8, 8)),
        (dict(layout="sequence", in_channels=12, context_dim=6, cross_attention=True), (2, 10, 12)),
        (dict(layout="video", in_channels=4, patch_size=[1, 2, 2]), (2, 4, 3, 8, 8)),
    ],
)
def test_every_layout_returns_an_offset_shaped_like_the_velocity(config, shape):
    refiner = VelocityRefiner(hidden_size=16, num_attention_heads=2, **config)
    torch.nn.init.normal_(refiner.proj_out.weight)
    x, v = torch.randn(shape), torch.randn(shape)
    offset = refiner(x, v, torch.rand(2), pooled=torch.randn(2, 8), context=torch.randn(2, 5, 6))
    assert offset.shape == v.shape and offset.abs().sum() > 0


def test_patches_are_put_back_where_they_came_from():
    """With an identity-like embedding of the velocity, the untokenised output must equal the input layout."""
    refiner = VelocityRefiner(layout="image", in_channels=1, hidden_size=8, num_attention_heads=2, patch_size=[2])
    tokens, grid = refiner._tokens(torch.zeros(1, 2, 4, 6))
    value = torch.arange(24.0).reshape(1, 1, 4, 6)
    patches = value.reshape(1, 1, 2, 2, 3, 2).permute(0, 2, 4, 3, 5, 1).reshape(1, 6, 4)
    torch.testing.assert_close(refiner._untokens(patches, grid, value.shape), value)


def test_untrained_refiner_returns_the_given_velocity(sd3_pipe):
    refiner = VelocityRefiner.for_transformer(sd3_pipe.transformer)
    x, v = torch.randn(2, 16, 8, 8), torch.randn(2, 16, 8, 8)
    assert torch.equal(refiner(x, v, torch.rand(2), pooled=torch.randn(2, 32)), torch.zeros_like(v))


def test_default_size_is_one_block_at_most_five_percent_of_a_real_sized_base():
    with torch.device("meta"):
        base = SD3Transformer2DModel(
            sample_size=32, patch_size=2, in_channels=16, out_channels=16, num_layers=12, attention_head_dim=32,
            num_attention_heads=8, joint_attention_dim=512, caption_projection_dim=256, pooled_projection_dim=256,
        )
    config = VelocityRefiner.config_for_transformer(base)
    fraction = VelocityRefiner.count_parameters(config) / sum(p.numel() for p in base.parameters())
    assert config["num_layers"] == 1 and config["hidden_size"] <= 256
    assert 0.02 < fraction <= 0.05


REAL_CONFIGS = {
    "sd3.5-medium": ("SD3Transformer2DModel", dict(
        sample_size=128, patch_size=2, in_channels=16, out_channels=16, num_layers=24, attention_head_dim=64,
        num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536, pooled_projection_dim=2048,
        pos_embed_max_size=384, dual_attention_layers=tuple(range(13)), qk_norm="rms_norm")),
    "flux-dev": ("FluxTransformer2DModel", dict(guidance_embeds=True)),
    "sana-1600m": ("SanaTransformer2DModel", dict(
        in_channels=32, out_channels=32, num_attention_heads=70, attention_head_dim=32, num_layers=20,
        num_cross_attention_heads=20, cross_attention_head_dim=112, cross_attention_dim=2240, caption_channels=2304)),
    "wan-1.3b": ("WanTransformer3DModel", dict(
        patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16, out_channels=16,
        text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30)),
}


@pytest.mark.parametrize("name", sorted(REAL_CONFIGS))
def test_refiners_for_real_models_are_one_block_under_five_percent(name):
    import diffusers

    class_name, config = REAL_CONFIGS[name]
    with torch.device("meta"):
        base = getattr(diffusers, class_name)(**config)
    refiner_config = VelocityRefiner.config_for_transformer(base)
    fraction = VelocityRefiner.count_parameters(refiner_config) / sum(p.numel() for p in base.parameters())
    assert refiner_config["num_layers"] == 1 and 0.01 < fraction <= 0.05


def test_config_records_the_base_fingerprint(sd3_pipe):
    refiner = VelocityRefiner.for_transformer(sd3_pipe.transformer, base_model="org/tiny-sd3")
    assert refiner.config.base_model == "org/tiny-sd3"
    assert refiner.config.base_fingerprint == {
        "transformer": "SD3Transformer2DModel", "layout": "image", "in_channels": 16, "out_channels": 16,
        "patch_size": [2], "pooled_dim": 32, "context_dim": 32, "guidance_embeds": False,
        "architecture": architecture_hash(sd3_pipe.transformer.config),
    }


def test_unknown_transformers_get_a_clear_error():
    with pytest.raises(ValueError, match="do not support Linear yet"):
        VelocityRefiner.for_transformer(torch.nn.Linear(2, 2))


@pytest.fixture
def saved_refiner(tmp_path, sd3_pipe):
    refiner = VelocityRefiner.for_transformer(sd3_pipe.transformer, base_model="org/tiny-sd3")
    torch.nn.init.normal_(refiner.proj_out.weight, std=0.02)
    refiner.save_pretrained(tmp_path / "refiner")
    return refiner, tmp_path / "refiner"


def test_save_writes_config_safetensors_and_a_model_card(saved_refiner):
    refiner, folder = saved_refiner
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "diffusion_pytorch_model.safetensors"]
    loaded = VelocityRefiner.from_pretrained(folder)
    for (name, a), (_, b) in zip(refiner.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    card = (folder / "README.md").read_text()
    assert card.startswith("---\n") and "library_name: diffusers" in card and "base_model: org/tiny-sd3" in card
    assert "- flowturbo" in card and "license: apache-2.0" in card
    assert "FlowTurboPipeline.from_pretrained" in card and "## Recommended plans" in card
    assert "| `H1P5R3` | 9 | 7 | 5 |" in card and "## Training" in card and "## Metrics" in card


def test_training_info_fills_the_card(sd3_pipe, tmp_path):
    refiner = VelocityRefiner.for_transformer(
        sd3_pipe.transformer, training_info={"steps": 300, "final_loss": 0.0123, "metrics": {"rmse": 0.5}}
    )
    refiner.save_pretrained(tmp_path / "r")
    card = (tmp_path / "r" / "README.md").read_text()
    assert "- **steps**: 300" in card and "- **final loss**: 0.0123" in card and "- **rmse**: 0.5" in card


def test_save_replaces_an_existing_folder_only_when_complete(saved_refiner, monkeypatch):
    refiner, folder = saved_refiner
    before = (folder / "diffusion_pytorch_model.safetensors").read_bytes()

    def failing_card(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("flowturbo_diffusers.model_card.refiner_model_card", failing_card)
    torch.nn.init.normal_(refiner.proj_out.weight, std=0.5)
    with pytest.raises(RuntimeError, match="disk full"):
        refiner.save_pretrained(folder)
    assert (folder / "diffusion_pytorch_model.safetensors").read_bytes() == before
    assert sorted(p.name for p in folder.parent.iterdir()) == ["refiner"]  # no staging folder left behind


def _rewrite_weights(folder, change):
    from safetensors.torch import load_file, save_file

    weights = folder / "diffusion_pytorch_model.safetensors"
    tensors = load_file(weights)
    change(tensors)
    save_file(tensors, weights)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda t: t.pop("blocks.0.attention.to_kv.bias"), "tensors missing: blocks.0.attention.to_kv.bias"),
        (lambda t: t.__setitem__("extra.weight", torch.zeros(3)), "tensors unexpected: extra.weight"),
        (lambda t: t.__setitem__("proj_out.bias", t["proj_out.bias"].to(torch.int64)), "integer tensors"),
        (lambda t: t["proj_out.weight"].fill_(float("nan")), "NaN, inf or uninitialised"),
        (lambda t: t["proj_out.weight"].fill_(float("inf")), "NaN, inf or uninitialised"),
    ],
    ids=["missing", "unexpected", "integer", "nan", "inf"],
)
def test_weights_that_do_not_make_a_whole_refiner_are_refused_and_the_old_one_is_kept(saved_refiner, sd3_pipe, tmp_path,
                                                                                      change, message):
    from flowturbo_diffusers import FlowTurboPipeline

    refiner, folder = saved_refiner
    pipe = FlowTurboPipeline.from_pipe(sd3_pipe, refiner=refiner, plan="H1P2R2")
    _rewrite_weights(folder, change)
    with pytest.raises(RefinerLoadError, match=message):
        pipe.load_refiner(folder)
    assert pipe.refiner is refiner and all(p.device.type == "cpu" for p in pipe.refiner.parameters())


def test_a_save_that_fails_between_its_renames_keeps_the_old_refiner_at_the_target(saved_refiner, monkeypatch):
    """Where no atomic exchange exists, the old folder is renamed aside and put back if the new one cannot move in."""
    import flowturbo_diffusers.refiner as refiner_module

    refiner, folder = saved_refiner
    before = (folder / "diffusion_pytorch_model.safetensors").read_bytes()
    monkeypatch.setattr(refiner_module, "_exchange", lambda a, b: False)
    replace, calls = refiner_module.os.replace, []

    def failing_second_rename(source, target):
        calls.append(source)
        if len(calls) == 2:
            raise OSError("the machine went down")
        return replace(source, target)

    monkeypatch.setattr(refiner_module.os, "replace", failing_second_rename)
    torch.nn.init.normal_(refiner.proj_out.weight, std=0.5)
    with pytest.raises(OSError, match="went down"):
        refiner.save_pretrained(folder)
    monkeypatch.undo()
    assert (folder / "diffusion_pytorch_model.safetensors").read_bytes() == before
    VelocityRefiner.from_pretrained(folder)


def test_a_save_swaps_the_new_refiner_in_atomically_on_linux(saved_refiner, monkeypatch):
    import sys

    import flowturbo_diffusers.refiner as refiner_module

    if not sys.platform.startswith("linux"):
        pytest.skip("renameat2 is Linux's")
    refiner, folder = saved_refiner
    renames = []
    monkeypatch.setattr(refiner_module.os, "replace", lambda *a: renames.append(a))
    torch.nn.init.normal_(refiner.proj_out.weight, std=0.5)
    refiner.save_pretrained(folder)
    assert renames == []  # one exchange, no window in which the target is missing
    torch.testing.assert_close(VelocityRefiner.from_pretrained(folder).proj_out.weight, refiner.proj_out.weight)


def test_folders_left_by_interrupted_saves_are_cleaned_up(saved_refiner):
    refiner, folder = saved_refiner
    dead = 2**22 + 12345  # above the default pid_max: no process has it
    for kind in ("staging", "retired"):
        leftover = folder.parent / f".refiner.{kind}-{dead}-abc123"
        leftover.mkdir()
        (leftover / "diffusion_pytorch_model.safetensors").write_bytes(b"x" * 1000)
    ours = folder.parent / f".refiner.staging-{os.getpid()}-inuse"  # this process's own: maybe in use
    ours.mkdir()
    refiner.save_pretrained(folder)
    assert sorted(p.name for p in folder.parent.iterdir()) == [ours.name, "refiner"]


def test_missing_weights_are_a_clear_error(saved_refiner):
    _, folder = saved_refiner
    (folder / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(RefinerLoadError, match="has no diffusion_pytorch_model.safetensors"):
        VelocityRefiner.from_pretrained(folder)


def test_a_pickle_only_checkpoint_is_refused(saved_refiner):
    refiner, folder = saved_refiner
    (folder / "diffusion_pytorch_model.safetensors").unlink()
    torch.save(refiner.state_dict(), folder / "diffusion_pytorch_model.bin")
    with pytest.raises(RefinerLoadError, match="safetensors only"):
        VelocityRefiner.from_pretrained(folder)


def test_corrupt_weights_are_refused(saved_refiner):
    _, folder = saved_refiner
    weights = folder / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: len(weights.read_bytes()) // 2])
    with pytest.raises(RefinerLoadError, match="corrupt or truncated"):
        VelocityRefiner.from_pretrained(folder)


def test_weights_that_do_not_match_the_config_are_refused(saved_refiner):
    _, folder = saved_refiner
    config = json.loads((folder / "config.json").read_text())
    config["hidden_size"] = 64
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(RefinerLoadError, match="do not match its config.json"):
        VelocityRefiner.from_pretrained(folder)


def test_a_folder_holding_another_model_is_refused(tmp_path):
    make_pipe("sd3").vae.save_pretrained(tmp_path / "vae")
    with pytest.raises(RefinerLoadError, match="holds a AutoencoderKL, not a VelocityRefiner"):
        VelocityRefiner.from_pretrained(tmp_path / "vae")


def test_a_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(RefinerLoadError, match="Could not read a refiner config.json"):
        VelocityRefiner.from_pretrained(tmp_path / "nothing-here", local_files_only=True)


def test_pickle_saving_is_refused(sd3_pipe, tmp_path):
    with pytest.raises(ValueError, match="safetensors only"):
        VelocityRefiner.for_transformer(sd3_pipe.transformer).save_pretrained(tmp_path, safe_serialization=False)


def _call(sample, pooled):
    """The parts of a routed transformer call that ``refine`` reads."""
    return SimpleNamespace(sample=sample, sigma=torch.full((sample.shape[0],), 0.3), pooled=pooled, context=None,
                           guidance=None, positions=None)


def test_offset_scale_multiplies_the_refined_offset(saved_refiner):
    refiner, _ = saved_refiner
    generator = torch.Generator().manual_seed(0)
    channels = refiner.config.in_channels
    sample, velocity = (torch.randn(2, channels, 8, 8, generator=generator) for _ in range(2))
    call = _call(sample, torch.randn(2, refiner.config.pooled_dim, generator=generator))
    with torch.no_grad():
        offset = refiner.refine(call, velocity) - velocity
        assert offset.abs().mean() > 1e-3  # a refiner that moves the velocity, so the scale shows
        refiner.register_to_config(offset_scale=0.6)
        torch.testing.assert_close(refiner.refine(call, velocity), velocity + 0.6 * offset)
        refiner.register_to_config(offset_scale=0.0)
        torch.testing.assert_close(refiner.refine(call, velocity), velocity)


def test_offset_scale_is_saved_and_older_configs_load_with_scale_one(saved_refiner, tmp_path):
    refiner, folder = saved_refiner
    refiner.register_to_config(offset_scale=0.7)
    refiner.save_pretrained(tmp_path / "scaled")
    assert VelocityRefiner.from_pretrained(tmp_path / "scaled").config.offset_scale == 0.7
    config = json.loads((folder / "config.json").read_text())
    config.pop("offset_scale", None)  # a refiner saved before the scale existed
    (folder / "config.json").write_text(json.dumps(config))
    assert VelocityRefiner.from_pretrained(folder).config.offset_scale == 1.0


@pytest.mark.parametrize("scale", [-0.5, 2.5, float("nan")])
def test_an_offset_scale_out_of_range_is_refused(sd3_pipe, scale):
    with pytest.raises(ValueError, match="offset_scale must be between 0"):
        VelocityRefiner.for_transformer(sd3_pipe.transformer, offset_scale=scale)


def test_a_refiner_for_a_base_of_other_depth_is_refused_although_the_channels_match(sd3_pipe):
    from tiny_pipelines import tiny_sd3_pipeline

    deeper = SD3Transformer2DModel(**{**sd3_pipe.transformer.config, "num_layers": 3})
    refiner = VelocityRefiner.for_transformer(deeper)
    with pytest.raises(ValueError, match="architecture: refiner"):
        refiner.check_compatible(sd3_pipe.transformer)
    VelocityRefiner.for_transformer(sd3_pipe.transformer).check_compatible(tiny_sd3_pipeline(seed=5).transformer)


def test_a_refiner_for_another_hub_model_needs_check_base_model_off(sd3_pipe):
    from flowturbo_diffusers import FlowTurboPipeline

    refiner = VelocityRefiner.for_transformer(sd3_pipe.transformer, base_model="org/base-model")
    sd3_pipe.transformer.register_to_config(_name_or_path="someone/fine-tuned-model")
    pipe = FlowTurboPipeline.from_pipe(sd3_pipe, refiner=False, plan="H1P*")
    with pytest.raises(ValueError, match="check_base_model=False"):
        pipe.load_refiner(refiner)
    pipe.load_refiner(refiner, check_base_model=False)
    assert pipe.refiner is refiner
    sd3_pipe.transformer.register_to_config(_name_or_path="/local/folder/transformer")  # a path: not compared by name
    pipe.load_refiner(refiner)


def test_a_refiner_saved_before_the_architecture_check_still_loads_with_a_warning(saved_refiner, sd3_pipe, caplog):
    refiner, folder = saved_refiner
    config = json.loads((folder / "config.json").read_text())
    del config["base_fingerprint"]["architecture"]
    (folder / "config.json").write_text(json.dumps(config))
    with caplog.at_level("WARNING"):
        VelocityRefiner.from_pretrained(folder).check_compatible(sd3_pipe.transformer)
    assert any("before refiners recorded their base's architecture" in r.getMessage() for r in caplog.records)


def test_the_refiner_loads_in_the_pipelines_dtype(saved_refiner, sd3_pipe, tmp_path, caplog):
    from flowturbo_diffusers import FlowTurboPipeline

    _, folder = saved_refiner
    sd3_pipe.save_pretrained(tmp_path / "base")
    with caplog.at_level("WARNING"):
        pipe = FlowTurboPipeline.from_pretrained(tmp_path / "base", refiner=folder, plan="H1P2R2",
                                                 torch_dtype=torch.bfloat16)
        assert pipe.refiner.dtype == torch.bfloat16  # at load, not cast at the first call
        pipe.set_progress_bar_config(disable=True)
        pipe("a red 7", num_inference_steps=5, height=32, width=32, max_sequence_length=16, output_type="latent")
    assert not [r for r in caplog.records if "Casting" in r.getMessage() or "cast" in r.getMessage().lower()]
