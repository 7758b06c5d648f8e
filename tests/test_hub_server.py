"""Tests of the local Hub server (tests/hub_server.py) through the real huggingface_hub and diffusers clients."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models import ModelMixin
from huggingface_hub import HfApi, constants, hf_hub_download, snapshot_download
from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError
from safetensors.torch import load_file, save_file

REPO_ID = "test-user/tiny-repo"


class TinyModel(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(self, in_features: int = 8, out_features: int = 4):
        super().__init__()
        self.proj = torch.nn.Linear(in_features, out_features)

    def forward(self, x):
        return self.proj(x)


def _make_folder(root: Path) -> dict[str, bytes]:
    """Writes a small model folder; returns its files as {path in repo: bytes}."""
    (root / "sub").mkdir(parents=True)
    (root / "config.json").write_text(json.dumps({"hidden_size": 16, "kind": "tiny"}))
    save_file({"weight": torch.randn(256, 200), "bias": torch.zeros(200)}, str(root / "model.safetensors"))
    (root / "README.md").write_text("---\nlicense: apache-2.0\n---\n# Tiny test repo\n")
    (root / "sub" / "extra.json").write_text(json.dumps({"nested": True}))
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def uploaded(local_hub, tmp_path):
    """A private repo holding the folder from `_make_folder`; returns (api, local files, commit info)."""
    api = HfApi()
    url = api.create_repo(REPO_ID, private=True, token="x", exist_ok=True)
    assert url.repo_id == REPO_ID
    files = _make_folder(tmp_path / "upload")
    info = api.upload_folder(repo_id=REPO_ID, folder_path=tmp_path / "upload", token="x", commit_message="first")
    return api, files, info


def _read_tree(folder: str | Path) -> dict[str, bytes]:
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_create_upload_and_snapshot_download(local_hub, uploaded, tmp_path):
    api, files, info = uploaded
    assert len(files["model.safetensors"]) > 200_000
    repo = local_hub.repos[REPO_ID]
    assert repo.private is True
    assert repo.files("main") == files
    assert info.oid == repo.branches["main"] and len(info.oid) == 40
    assert info.repo_url.repo_id == REPO_ID

    # create_repo again with exist_ok=True is a no-op that keeps the repo private.
    api.create_repo(REPO_ID, private=False, token="x", exist_ok=True)
    assert local_hub.repos[REPO_ID].private is True

    # Everything went inline through preupload + commit: no LFS batch, no Xet.
    paths = [path for _, path in local_hub.requests]
    assert f"/api/models/{REPO_ID}/preupload/main" in paths and f"/api/models/{REPO_ID}/commit/main" in paths
    assert not any("lfs" in p or "xet" in p for p in paths)

    folder = snapshot_download(REPO_ID, cache_dir=tmp_path / "cache", token="x")
    assert _read_tree(folder) == files
    assert Path(folder).name == info.oid  # snapshots/<commit sha>

    only_json = snapshot_download(REPO_ID, cache_dir=tmp_path / "cache2", allow_patterns=["*.json"])
    assert set(_read_tree(only_json)) == {"config.json", "sub/extra.json"}

    assert sorted(api.list_repo_files(REPO_ID)) == sorted(files)
    model_info = api.model_info(REPO_ID)
    assert model_info.sha == info.oid and model_info.private is True
    assert sorted(s.rfilename for s in model_info.siblings) == sorted(files)
    tree = {entry.path for entry in api.list_repo_tree(REPO_ID)}  # non recursive: top level + folder
    assert tree == {"config.json", "model.safetensors", "README.md", "sub"}


def test_hf_hub_download_with_subfolder(local_hub, uploaded, tmp_path):
    _, files, info = uploaded
    path = hf_hub_download(REPO_ID, "extra.json", subfolder="sub", cache_dir=tmp_path / "cache")
    assert Path(path).read_bytes() == files["sub/extra.json"]
    weights = hf_hub_download(REPO_ID, "model.safetensors", revision="main", cache_dir=tmp_path / "cache")
    assert Path(weights).read_bytes() == files["model.safetensors"]
    assert load_file(weights)["weight"].shape == (256, 200)
    assert f"snapshots/{info.oid}/" in Path(weights).as_posix()


def test_old_commit_stays_downloadable(local_hub, uploaded, tmp_path):
    api, files, first = uploaded
    new_config = json.dumps({"hidden_size": 32}).encode()
    second = api.upload_file(path_or_fileobj=new_config, path_in_repo="config.json", repo_id=REPO_ID, token="x")
    assert second.oid != first.oid
    assert [c.oid for c in local_hub.repos[REPO_ID].commits][-2:] == [first.oid, second.oid]

    cache = tmp_path / "cache"
    old = hf_hub_download(REPO_ID, "config.json", revision=first.oid, cache_dir=cache)
    new = hf_hub_download(REPO_ID, "config.json", revision="main", cache_dir=cache)
    assert Path(old).read_bytes() == files["config.json"]
    assert Path(new).read_bytes() == new_config
    old_snapshot = snapshot_download(REPO_ID, revision=first.oid, cache_dir=tmp_path / "cache2")
    assert _read_tree(old_snapshot) == files

    # Re-uploading an unchanged file is dropped client-side (preupload returns the remote git oid).
    same = api.upload_file(path_or_fileobj=new_config, path_in_repo="config.json", repo_id=REPO_ID, token="x")
    assert same.oid == second.oid


def test_not_found_errors_map_to_hub_exceptions(local_hub, uploaded, tmp_path):
    api, _, _ = uploaded
    cache = tmp_path / "cache"
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("test-user/does-not-exist", "config.json", cache_dir=cache)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("test-user/does-not-exist")
    with pytest.raises(RepositoryNotFoundError):
        snapshot_download("test-user/does-not-exist", cache_dir=cache)
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(REPO_ID, "missing.bin", cache_dir=cache)
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(REPO_ID, "config.json", revision="0" * 40, cache_dir=cache)
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(REPO_ID, "config.json", revision="no-such-branch", cache_dir=cache)
    with pytest.raises(RevisionNotFoundError):
        snapshot_download(REPO_ID, revision="no-such-branch", cache_dir=cache)


def test_diffusers_model_round_trip(local_hub, tmp_path):
    model = TinyModel(in_features=8, out_features=4)
    model.save_pretrained(tmp_path / "saved")
    api = HfApi()
    api.create_repo("test-user/tiny-model", token="x", exist_ok=True)
    api.upload_folder(repo_id="test-user/tiny-model", folder_path=tmp_path / "saved", token="x")

    loaded = TinyModel.from_pretrained("test-user/tiny-model", cache_dir=tmp_path / "fresh")
    assert loaded.config.in_features == 8 and loaded.config.out_features == 4
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor)
    assert any(p.name == "diffusion_pytorch_model.safetensors" for p in (tmp_path / "fresh").rglob("*"))


def test_diffusers_push_to_hub(local_hub, tmp_path):
    model = TinyModel(in_features=3, out_features=5)
    model.push_to_hub("test-user/pushed", private=True, token="x")
    repo = local_hub.repos["test-user/pushed"]
    assert repo.private is True
    assert {"config.json", "diffusion_pytorch_model.safetensors", "README.md"} <= set(repo.files())

    loaded = TinyModel.from_pretrained("test-user/pushed", cache_dir=tmp_path / "fresh", token="x")
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor)


def test_upload_folder_with_xet_enabled_still_uses_regular_uploads(local_hub, monkeypatch, tmp_path):
    """With hf_xet installed, upload_folder takes a pipelined path; "regular" upload modes keep it off Xet."""
    pytest.importorskip("hf_xet")
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", False)
    api = HfApi()
    api.create_repo("test-user/xet-path", token="x")
    files = _make_folder(tmp_path / "upload")
    api.upload_folder(repo_id="test-user/xet-path", folder_path=tmp_path / "upload", token="x")
    assert local_hub.repos["test-user/xet-path"].files() == files
    folder = snapshot_download("test-user/xet-path", cache_dir=tmp_path / "cache")
    assert _read_tree(folder) == files


def test_requests_to_other_hosts_fail_loudly(local_hub, tmp_path):
    with pytest.raises(RuntimeError, match="local_hub"):
        HfApi(endpoint="https://huggingface.co").model_info("gpt2")
