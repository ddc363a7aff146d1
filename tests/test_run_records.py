"""A run folder is a record, not a program: its YAML and JSON are read as plain data, its recorded command
line re-runs only plain settings, and a copied or moved run stands on its own. Each case through the real
command line (docs/reliability.md, "A run folder is data")."""

import contextlib
import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from conftest import run_cli

# A tiny real run: 10 generated styles x 1 painting per split, 32 px, a 30-layer test ResNet, 1 epoch.
TINY = [
    "backbone=test_resnet",
    "pretrained=false",
    "image_size=32",
    "data.batch_size=4",
    "data.num_workers=0",
    "data.source.train_per_class=1",
    "data.source.val_per_class=1",
    "data.source.test_per_class=1",
    "data.source.canvas_size=32",
    "trainer.max_epochs=1",
    "callbacks.progress.every_s=0",
]


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory):
    """A 1-epoch run through the command line (its folder); each test works on a copy."""
    run = tmp_path_factory.mktemp("one_epoch") / "run"
    done = run_cli("artmove.train", *TINY, f"hydra.run.dir={run}")
    assert done.returncode == 0, done.stderr[-3000:]
    return run


def copy_of(run, tmp_path, name="run"):
    return shutil.copytree(run, tmp_path / name)


def one_line(done) -> str:
    lines = [line for line in done.stderr.strip().splitlines() if line.startswith("artmove: error:")]
    assert done.returncode == 2 and len(lines) == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    return lines[0]


def fingerprint(folder) -> dict:
    """Every file below ``folder`` with the md5 of its bytes."""
    return {
        str(path.relative_to(folder)): hashlib.md5(path.read_bytes()).hexdigest() for path in sorted(folder.rglob("*")) if path.is_file()
    }


def oc_create_payload(marker) -> str:
    """The issue's payload: ``oc.create`` builds a node whose ``_target_`` (spelled with YAML escapes) Hydra would
    instantiate, creating ``marker``."""
    return f'"${{oc.create:\\"{{\\\\\\"\\x5ftarget\\x5f\\\\\\": pathlib.Path.touch, self: {marker}}}\\"}}"'


def with_config_line(run, key_path: list[str], raw_value: str) -> None:
    """Put ``raw_value`` (YAML text) at ``key_path`` of the run's saved config, as an attacker edits the file."""
    config = run / ".hydra" / "config.yaml"
    document = yaml.safe_load(config.read_text(encoding="utf-8"))
    node = document
    for key in key_path[:-1]:
        node = node[key]
    node[key_path[-1]] = "PLACEHOLDER"
    config.write_text(yaml.safe_dump(document, sort_keys=False).replace("PLACEHOLDER", raw_value), encoding="utf-8")


# --- a saved config is data ----------------------------------------------------------------------
@pytest.mark.parametrize("command", ["evaluate", "export"])
@pytest.mark.parametrize("key_path", [["data", "source", "extra"], ["data", "source", "seed"]], ids=["new key", "existing key"])
def test_an_interpolation_in_a_saved_config_runs_nothing(command, key_path, one_epoch, tmp_path):
    run, marker = copy_of(one_epoch, tmp_path), tmp_path / "PWNED"
    with_config_line(run, key_path, oc_create_payload(marker))
    assert "${oc.create" in yaml.safe_load((run / ".hydra" / "config.yaml").read_text())["data"]["source"][key_path[-1]]
    done = run_cli(
        f"artmove.{command}",
        f"ckpt_path={run}",
        "num_workers=0" if command == "evaluate" else f"out={tmp_path / 'export'}",
        f"hydra.run.dir={tmp_path / 'log'}",
    )
    line = one_line(done)
    assert f"data.source.{key_path[-1]}=" in line and "interpolation artmove's configs never write" in line
    assert not marker.exists() and not (tmp_path / "export").exists() and not (run / "eval").exists()


def test_a_yaml_tag_in_a_saved_config_is_one_line(one_epoch, tmp_path):
    run = copy_of(one_epoch, tmp_path)
    with_config_line(run, ["seed"], "!!python/object/apply:os.system ['touch PWNED']")
    line = one_line(run_cli("artmove.predict", f"ckpt_path={run}", f"input={tmp_path}", f"hydra.run.dir={tmp_path / 'log'}"))
    assert "config.yaml is not plain YAML data" in line and not (tmp_path / "PWNED").exists()


# --- a recorded command line re-runs plain settings only ------------------------------------------
@pytest.mark.parametrize(
    "saved, why",
    [
        ("+callbacks.x='${{oc.create:\\\"{{_target_: pathlib.Path.touch, self: {marker}}}\\\"}}'", "it names code"),
        ("+callbacks.x='${{oc.create:\\\"{{\\x5ftarget\\x5f: pathlib.Path.touch, self: {marker}}}\\\"}}'", "it names code"),
        ("+callbacks.x='${{oc.create:\\\"{{a: ${{oc.env:HOME}}}}\\\"}}'", "an interpolation, not a literal value"),
        ("+callbacks.x=${{oc.create:{{_target_: pathlib.Path.touch, self: {marker}}}}}", "not an override Hydra reads"),
        ("seed=${{oc.env:HOME}}", "an interpolation, not a literal value"),
        ("logger=../../../../{folder}/evil", "not one of artmove's logger options"),
        ("+model.extra=1", "it adds a key artmove's config does not have"),
    ],
)
def test_resume_refuses_a_recorded_command_line_that_is_not_plain_settings(saved, why, one_epoch, tmp_path):
    run, marker = copy_of(one_epoch, tmp_path), tmp_path / "PWNED"
    (run / "evil.yaml").write_text(f"evil:\n  _target_: pathlib.Path.touch\n  self: {marker}\n", encoding="utf-8")
    line = saved.format(marker=marker, folder=str(run).lstrip("/"))
    overrides = run / ".hydra" / "overrides.yaml"
    overrides.write_text(overrides.read_text(encoding="utf-8") + f'- "{line}"\n', encoding="utf-8")
    before = fingerprint(run)
    message = one_line(run_cli("artmove.train", f"resume={run}", "trainer.max_epochs=2"))
    assert why in message and "overrides.yaml holds" in message
    assert not marker.exists() and fingerprint(run) == before  # nothing ran, nothing written


def test_resume_refuses_a_key_the_config_does_not_have_before_anything_is_written(one_epoch, tmp_path):
    run = copy_of(one_epoch, tmp_path)
    overrides = run / ".hydra" / "overrides.yaml"
    overrides.write_text(overrides.read_text(encoding="utf-8") + "- model.no_such_key=1\n", encoding="utf-8")
    before = fingerprint(run)
    message = one_line(run_cli("artmove.train", f"resume={run}", "trainer.max_epochs=2"))
    assert "does not compose with artmove's configs" in message and "no_such_key" in message
    assert fingerprint(run) == before


# --- a run folder stands on its own ----------------------------------------------------------------
def test_a_copied_run_resumes_in_itself_and_leaves_the_original_byte_identical(one_epoch, tmp_path):
    original = copy_of(one_epoch, tmp_path, "original")
    before = fingerprint(original)
    copy = copy_of(original, tmp_path, "copy")
    done = run_cli("artmove.train", f"resume={copy}", "trainer.max_epochs=2")
    assert done.returncode == 0, done.stderr[-3000:]
    assert fingerprint(original) == before
    results_text = (copy / "results.json").read_text(encoding="utf-8")
    results = json.loads(results_text)
    assert results["epochs"] == 2 and str(original) not in results_text
    assert results["best_checkpoint"].startswith("checkpoints/best-") and (copy / results["best_checkpoint"]).is_file()
    assert results["attempts"][1]["changed"] == {"trainer.max_epochs": [1, 2]}  # the folder's new place is no change of settings
    assert results["attempts"][1]["resumed_from"]["checkpoint"] == "checkpoints/last.ckpt"
    assert f"ckpt_path={copy}/checkpoints/" in done.stdout and str(original) not in done.stdout  # the "Next:" lines


def test_a_run_resumed_from_another_runs_checkpoint_leaves_that_run_byte_identical(one_epoch, tmp_path):
    """``resume=PATH`` of another folder's checkpoint: the best checkpoint it recorded is copied into the new
    run's folder, then tested and calibrated there."""
    other = copy_of(one_epoch, tmp_path, "other")
    before = fingerprint(other)
    done = run_cli("artmove.train", *TINY, f"resume={other / 'checkpoints' / 'last.ckpt'}", f"hydra.run.dir={tmp_path / 'new'}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert fingerprint(other) == before
    results = json.loads((tmp_path / "new" / "results.json").read_text())
    assert (tmp_path / "new" / results["best_checkpoint"]).is_file() and "test/top1" in results


def test_a_moved_run_resumes_evaluates_and_exports(one_epoch, tmp_path):
    moved = copy_of(one_epoch, tmp_path, "before").rename(tmp_path / "after")
    done = run_cli("artmove.train", f"resume={moved}", "trainer.max_epochs=2")
    assert done.returncode == 0, done.stderr[-3000:]
    evaluated = run_cli("artmove.evaluate", f"ckpt_path={moved}", "num_workers=0")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert json.loads((moved / "eval" / "test" / "metrics.json").read_text())["test/num_images"] == 10
    exported = run_cli("artmove.export", f"ckpt_path={moved}", "check_images=4", f"hydra.run.dir={tmp_path / 'log'}")
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert (moved / "export" / "model.safetensors").is_file()


def test_a_run_of_the_previous_format_still_opens(one_epoch, tmp_path):
    """Before this format: checkpoints with no data record (the saved config says it, ``${seed}`` and
    ``${oc.env:…}`` as Hydra writes them), results.json with absolute paths, here of another folder."""
    run = copy_of(one_epoch, tmp_path)
    for path in (run / "checkpoints").glob("*.ckpt"):
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        del checkpoint["artmove_run"]["data"]
        torch.save(checkpoint, path)
    results = json.loads((run / "results.json").read_text())
    results.update(best_checkpoint=f"/elsewhere/run/{results['best_checkpoint']}", output_dir="/elsewhere/run")
    (run / "results.json").write_text(json.dumps(results))
    config = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
    assert config["data"]["source"]["seed"] == "${seed}" and config["data"]["prepared_dir"].startswith("${oc.env:")
    done = run_cli("artmove.evaluate", f"ckpt_path={run}", "num_workers=0")
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((run / "eval" / "test" / "metrics.json").read_text())
    assert metrics["test/num_images"] == 10 and metrics["checkpoint"].startswith(str(run.resolve()))


# --- fuzzing: whatever a run's files hold, a one-line refusal or the run opens; nothing runs ---------

CODE = ["pathlib.Path.touch", "os.system", "builtins.eval", "subprocess.run"]
RESOLVERS = ["oc.create", "oc.env", "oc.select", "oc.decode", "oc.dict.values", "hydra", "now", "python.eval", "artmove.eval_dir"]
names = st.sampled_from(["_target_", "_partial_", "_args_", "\\x5ftarget\\x5f", "root", "seed", "source", "x", "data"])
code_nodes = st.fixed_dictionaries({"_target_": st.sampled_from(CODE), "self": st.just("{marker}")})


@st.composite
def interpolations(draw, depth: int = 0) -> str:
    """``${resolver:…}`` with code inside, nested, escaped, or a plain reference (to a key that may not exist)."""
    kind = draw(st.sampled_from(["resolver", "reference", "escaped", "nested", "embedded"] if depth < 2 else ["resolver", "reference"]))
    if kind == "reference":
        return "${" + draw(st.sampled_from(["seed", "data.root", "..root", ".seed", "nowhere", "data.source"])) + "}"
    inner = draw(interpolations(depth + 1)) if kind == "nested" else yaml.safe_dump(draw(code_nodes), default_flow_style=True).strip()
    value = "${" + draw(st.sampled_from(RESOLVERS)) + ":" + ('"' + inner.replace('"', '\\"') + '"' if kind != "nested" else inner) + "}"
    return {"escaped": "\\" + value, "embedded": f"/data/{value}/x"}.get(kind, value)


hostile = st.recursive(
    st.one_of(interpolations(), st.sampled_from(CODE), st.integers(-2, 3), st.none(), st.text(max_size=8), code_nodes),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(names, inner, max_size=3)),
    max_leaves=6,
)
places = st.sampled_from(
    [
        ["data", "root"],
        ["data", "source", "seed"],
        ["data", "source", "new"],
        ["seed"],
        ["data", "group_by"],
        ["trainer", "max_epochs"],
        ["callbacks", "x"],
        ["data", "source", "_target_"],
        ["data", "_target_"],
        ["data", "source", "deep", "er"],
        ["task_name"],
    ]
)
TAGS = ["!!python/object/apply:os.system ['touch {marker}']", "!!python/name:os.system", "!!binary aGk=", "!!set {a}", "&a [*a]"]


def saved_config_base() -> dict:
    """A saved config as Hydra writes it for a run on a folder of paintings (the parts the readers use)."""
    return {
        "task_name": "train",
        "seed": 3,
        "backbone": "test_resnet",
        "data": {
            "_target_": "artmove.data.PaintingDataModule",
            "batch_size": 4,
            "seed": "${seed}",
            "group_by": "artist",
            "prepared_dir": "${oc.env:ARTMOVE_CACHE,'~/.cache/artmove'}",
            "root": "/data/paintings",
            "source": {
                "_target_": "artmove.data.sources.ImageFolderSplits",
                "_partial_": True,
                "val_fraction": 0.1,
                "test_fraction": 0.1,
                "seed": "${seed}",
            },
        },
        "trainer": {"_target_": "pytorch_lightning.Trainer", "max_epochs": 1},
        "callbacks": {},
    }


@contextlib.contextmanager
def nothing_may_run():
    """Calls of code a file could name are recorded (and do nothing) while the readers run."""
    import builtins
    import os
    import subprocess

    from artmove.data.settings import SOURCE_FORMATS, source_schema
    from artmove.runs.plain import shipped_values

    for name in SOURCE_FORMATS:  # artmove's own schemas and configs, read once before (typing evaluates annotations with eval)
        source_schema(name)
    shipped_values()
    calls = []
    with pytest.MonkeyPatch.context() as patch:
        for owner, name in ((os, "system"), (subprocess, "run"), (builtins, "eval"), (Path, "touch")):
            patch.setattr(owner, name, lambda *a, _n=name, **k: calls.append(_n))
        yield calls


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(places, hostile, st.one_of(st.none(), st.sampled_from(TAGS)))
def test_a_fuzzed_saved_config_is_refused_in_one_line_or_opens_and_runs_nothing(tmp_path, place, value, tag):
    from artmove.errors import USER_ERRORS
    from artmove.runs.checkpoints import open_run
    from artmove.runs.folder import RunFolder

    folder = Path(tempfile.mkdtemp(dir=tmp_path))
    marker = folder / "PWNED"
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "last.ckpt").write_bytes(b"weights")
    (folder / ".hydra").mkdir()
    document = saved_config_base()
    node = document
    for key in place[:-1]:
        node = node.setdefault(key, {}) if isinstance(node.get(key), dict) else node.__setitem__(key, {}) or node[key]
    node[place[-1]] = "TAGGED" if tag else value
    text = yaml.safe_dump(document, sort_keys=False).replace("{marker}", str(marker))
    (folder / ".hydra" / "config.yaml").write_text(text.replace("TAGGED", (tag or "").replace("{marker}", str(marker))), encoding="utf-8")
    with nothing_may_run() as calls:
        try:
            opened = open_run(folder)
            RunFolder.is_run(folder)
            opened.run.saved_data_settings()
        except USER_ERRORS as error:
            assert "\n" not in str(error)
    assert calls == [] and not marker.exists()


overrides = st.one_of(
    st.builds(
        lambda key, value: f"{key}={value}",
        st.sampled_from(
            [
                "seed",
                "+callbacks.x",
                "data.root",
                "+trainer.max_time",
                "logger",
                "data",
                "~callbacks",
                "experiment",
                "+model.x",
                "trainer.max_epochs",
            ]
        ),
        st.one_of(
            interpolations(),
            st.sampled_from(
                ["1", "csv", "../../evil", "/abs/evil", "[csv,wandb]", "{a: 1}", "'x'", "folder", "..", "wandb", "none", "null"]
            ),
        ),
    ),
    st.text(max_size=30),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(overrides, min_size=1, max_size=3))
def test_a_fuzzed_recorded_command_line_is_refused_in_one_line_or_composes_and_runs_nothing(tmp_path, lines):
    from artmove.errors import USER_ERRORS
    from artmove.runs.command_line import resume_folder_arguments

    folder = Path(tempfile.mkdtemp(dir=tmp_path))
    marker = folder / "PWNED"
    (folder / ".hydra").mkdir()
    (folder / ".hydra" / "config.yaml").write_text("task_name: train\n", encoding="utf-8")
    (folder / "evil.yaml").write_text(f"_target_: pathlib.Path.touch\nself: {marker}\n", encoding="utf-8")
    saved = ["backbone=test_resnet", *(line.replace("{marker}", str(marker)) for line in lines)]
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(saved), encoding="utf-8")
    with nothing_may_run() as calls:
        try:
            resume_folder_arguments([f"resume={folder}"])
            event("composed")
        except USER_ERRORS as error:
            assert "\n" not in str(error)
            event("refused")
    assert calls == [] and not marker.exists()
