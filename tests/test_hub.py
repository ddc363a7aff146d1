"""hub=user/repo: the push's exact calls, a push to a local stand-in of the Hub, and offline failure."""

import json
import os
from unittest import mock

import pytest
from huggingface_hub import CommitInfo, HfApi, RepoUrl, constants

from artmove.errors import ConfigError
from artmove.release.hub import check_hub_target, push
from conftest import run_cli
from fake_hub import FakeHub


@pytest.fixture
def export_folder(tmp_path):
    folder = tmp_path / "export"
    folder.mkdir()
    for name, content in (
        ("README.md", "---\nlibrary_name: timm\n---\n\n# card\n"),
        ("config.json", '{"num_classes": 2}'),
        ("model.safetensors", "weights"),
        ("export.json", "{}"),
    ):
        (folder / name).write_text(content, encoding="utf-8")
    return folder


def test_push_creates_a_private_repo_and_uploads_the_folder(export_folder, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing below may reach a network
    seen = {}

    def upload(self, *, repo_id, folder_path, **kwargs):
        seen["files"] = sorted(os.listdir(folder_path))
        return CommitInfo(commit_url=f"https://huggingface.co/{repo_id}/commit/0", commit_message="m", commit_description="", oid="0" * 40)

    with (
        mock.patch.object(
            HfApi, "create_repo", autospec=True, side_effect=lambda self, repo_id, **kw: RepoUrl(f"https://huggingface.co/{repo_id}")
        ) as create,
        mock.patch.object(HfApi, "upload_folder", autospec=True, side_effect=upload) as upload_folder,
    ):
        assert push(export_folder, "someone/art-movements") == "https://huggingface.co/someone/art-movements/commit/0"
    assert create.call_args.args[1:] == ("someone/art-movements",)
    assert create.call_args.kwargs == {"private": True, "exist_ok": True}
    assert upload_folder.call_args.kwargs == {
        "repo_id": "someone/art-movements",
        "folder_path": str(export_folder),
        "commit_message": "Upload model exported by artmove",
    }
    assert seen["files"] == ["README.md", "config.json", "export.json", "model.safetensors"]


def test_push_to_a_local_stand_in_of_the_hub(export_folder, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_fake")
    with FakeHub() as hub:
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "ENDPOINT", hub.url)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}")
        url = push(export_folder, "someone/art-movements", private=False)
    assert url.startswith(hub.url + "/someone/art-movements/commit/")
    assert hub.repos["someone/art-movements"]["visibility"] == "public"
    received = {path: data for (repo, path), data in hub.files.items() if repo == "someone/art-movements"}
    assert received == {p.name: p.read_bytes() for p in export_folder.iterdir()}
    assert ("POST", "/api/validate-yaml") in hub.calls  # the card's front matter went through the Hub's check


def test_a_push_without_a_token_or_owner_stops_before_any_work(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "token"))
    with pytest.raises(ConfigError, match="needs a Hugging Face token: set HF_TOKEN"):
        check_hub_target("someone/art")
    monkeypatch.setenv("HF_TOKEN", "hf_fake")
    with pytest.raises(ConfigError, match="give the owner too, hub=user/art"):
        check_hub_target("art")
    with pytest.raises(ConfigError, match="not a Hub repository id"):
        check_hub_target("some one/art!")


def test_offline_the_cli_fails_in_one_line_and_keeps_the_export(tiny_run, tmp_path, monkeypatch):
    from huggingface_hub import constants

    out = tmp_path / "export"
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # HF_HUB_OFFLINE=1
    monkeypatch.setenv("HF_TOKEN", "hf_fake")
    done = run_cli(
        "artmove.export", f"ckpt_path={tiny_run}", f"out={out}", "check_images=2", "hub=someone/art", f"hydra.run.dir={tmp_path / 'log'}"
    )
    assert done.returncode == 2, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("artmove: error: hub=someone/art: offline (HF_HUB_OFFLINE is set), nothing pushed; the export is complete in")
    assert f"hf upload someone/art {out}" in last
    assert {"README.md", "config.json", "model.safetensors", "export.json"} <= {p.name for p in out.iterdir()}
    assert json.loads((out / "export.json").read_text(encoding="utf-8"))["checks"]["safetensors"]["top1_disagreements"] == 0
