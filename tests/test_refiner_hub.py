"""Pushing a refiner to the Hub and pulling it back, end to end against a local server speaking the Hub API."""

import pytest
import torch

from flowturbo_diffusers import FlowTurboPipeline, VelocityRefiner
from flowturbo_diffusers.refiner import RefinerLoadError


@pytest.fixture
def trained_looking_refiner(sd3_pipe):
    refiner = VelocityRefiner.for_transformer(
        sd3_pipe.transformer, base_model="org/tiny-sd3", training_info={"steps": 10, "metrics": {"rmse": 0.25}}
    )
    torch.nn.init.normal_(refiner.proj_out.weight, std=0.02)
    return refiner


def test_push_then_pull_into_a_fresh_cache_gives_the_same_tensors_and_card(local_hub, trained_looking_refiner, tmp_path):
    trained_looking_refiner.push_to_hub("org/tiny-sd3-refiner", private=True, token="hf_test")
    repo = local_hub.repos["org/tiny-sd3-refiner"]
    assert repo.private
    assert sorted(repo.files("main")) == ["README.md", "config.json", "diffusion_pytorch_model.safetensors"]
    pulled = VelocityRefiner.from_pretrained("org/tiny-sd3-refiner", cache_dir=tmp_path / "fresh-cache")
    for (name, a), (_, b) in zip(trained_looking_refiner.state_dict().items(), pulled.state_dict().items()):
        assert torch.equal(a, b), name
    card = repo.files("main")["README.md"].decode()
    assert 'refiner="org/tiny-sd3-refiner"' in card and "- **rmse**: 0.25" in card and "base_model: org/tiny-sd3" in card
    assert pulled.config.training_info == {"steps": 10, "metrics": {"rmse": 0.25}}


def test_pull_by_revision_and_subfolder(local_hub, trained_looking_refiner, tmp_path):
    from huggingface_hub import HfApi

    trained_looking_refiner.push_to_hub("org/refiners")
    first = local_hub.repos["org/refiners"].commits[-1].oid
    trained_looking_refiner.save_pretrained(tmp_path / "second" / "sd3")
    torch.nn.init.zeros_(trained_looking_refiner.proj_out.weight)
    trained_looking_refiner.save_pretrained(tmp_path / "second" / "sd3")
    HfApi().upload_folder(repo_id="org/refiners", folder_path=tmp_path / "second")
    old = VelocityRefiner.from_pretrained("org/refiners", revision=first, cache_dir=tmp_path / "c1")
    new = VelocityRefiner.from_pretrained("org/refiners", subfolder="sd3", cache_dir=tmp_path / "c2")
    assert old.proj_out.weight.abs().sum() > 0 and new.proj_out.weight.abs().sum() == 0


def test_local_files_only_uses_the_cache_and_fails_clearly_without_it(local_hub, trained_looking_refiner, tmp_path):
    trained_looking_refiner.push_to_hub("org/cached")
    VelocityRefiner.from_pretrained("org/cached", cache_dir=tmp_path / "cache")
    cached = VelocityRefiner.from_pretrained("org/cached", cache_dir=tmp_path / "cache", local_files_only=True)
    assert cached.proj_out.weight.abs().sum() > 0
    with pytest.raises(RefinerLoadError, match="org/cached"):
        VelocityRefiner.from_pretrained("org/cached", cache_dir=tmp_path / "empty", local_files_only=True)


def test_a_pickle_only_repo_is_refused(local_hub, trained_looking_refiner, tmp_path):
    from huggingface_hub import HfApi

    folder = tmp_path / "pickled"
    trained_looking_refiner.save_pretrained(folder)
    (folder / "diffusion_pytorch_model.safetensors").unlink()
    torch.save(trained_looking_refiner.state_dict(), folder / "diffusion_pytorch_model.bin")
    HfApi().create_repo("org/pickled")
    HfApi().upload_folder(repo_id="org/pickled", folder_path=folder)
    with pytest.raises(RefinerLoadError, match="safetensors only"):
        VelocityRefiner.from_pretrained("org/pickled", cache_dir=tmp_path / "cache")


def test_an_unknown_repo_is_a_clear_error(local_hub, tmp_path):
    with pytest.raises(RefinerLoadError, match="Could not read a refiner config.json from org/missing"):
        VelocityRefiner.from_pretrained("org/missing", cache_dir=tmp_path / "cache")


def test_flowturbo_pipeline_pulls_its_refiner_from_the_hub(local_hub, trained_looking_refiner, sd3_pipe, tmp_path):
    trained_looking_refiner.push_to_hub("org/tiny-sd3-refiner")
    pipe = FlowTurboPipeline.from_pipe(sd3_pipe, refiner="org/tiny-sd3-refiner", plan="H1P5R3",
                                       refiner_kwargs={"cache_dir": tmp_path / "cache"})
    assert torch.equal(pipe.refiner.proj_out.weight, trained_looking_refiner.proj_out.weight)
