"""What a run tells its user, through the command line: a line per epoch in the console and train.log
(plain progress lines when stdout is no terminal), curves.png and the test confusion matrix in its
folder, ``resume=<run folder>`` (checked like a rerun into the folder), and a preset's value that the
chosen fine-tuning policy does not use."""

import csv
import json
import logging
import re
import shutil
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf
from PIL import Image, ImageStat

from artmove.runs.command_line import resume_folder_arguments
from artmove.training.figures import LearningCurves
from conftest import run_cli

# A tiny real run: 10 generated styles x 1 painting per split, 32 px, a 30-layer test ResNet, 2 epochs.
TINY = [
    "backbone=test_resnet",
    "pretrained=false",
    "debug=limit",
    "image_size=32",
    "data.batch_size=4",
    "data.source.train_per_class=1",
    "data.source.val_per_class=1",
    "data.source.test_per_class=1",
    "data.source.canvas_size=32",
]
EPOCH_LINE = re.compile(
    r"epoch (\d)/(\d): train loss \d\.\d{4}, val loss \d\.\d{4}, val top-1 [01]\.\d{4}, top-5 [01]\.\d{4}, "
    r"lr \d\.\de-\d\d, \d+ img/s, elapsed \d:\d\d:\d\d, left ~\d:\d\d:\d\d$"
)


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory):
    """A 2-epoch run through the command line, progress lines every batch: (its folder, what it printed)."""
    run = tmp_path_factory.mktemp("two_epochs") / "run"
    done = run_cli("artmove.train", *TINY, "trainer.max_epochs=2", "callbacks.progress.every_s=0", f"hydra.run.dir={run}")
    assert done.returncode == 0, done.stderr[-3000:]
    return run, done


def test_each_epoch_has_a_line_in_train_log_and_progress_is_plain_lines_off_a_terminal(two_epochs):
    run, done = two_epochs
    log = (run / "train.log").read_text(encoding="utf-8")
    epochs = [EPOCH_LINE.search(line) for line in log.splitlines() if "train loss" in line]
    assert [m.groups() for m in epochs if m] == [("1", "2"), ("2", "2")], log
    assert "epoch 2/2: batch 2/2 (100%), loss " in log and "epoch 1/2: validation batch 1/2" in log and "test: batch 1/2" in log
    assert "\r" not in done.stdout + done.stderr  # no bar redrawn in place
    assert sum(bool(EPOCH_LINE.search(line)) for line in done.stdout.splitlines()) == 2  # the console shows them too


def test_the_run_folder_gets_its_curves_and_test_confusion_matrix(two_epochs):
    run, _ = two_epochs
    with Image.open(run / "curves.png") as png:
        assert png.format == "PNG" and png.width >= 900 and png.height >= 350
        low, high = zip(*ImageStat.Stat(png.convert("RGB")).extrema, strict=True)
        assert max(high) - min(low) > 200 and len(png.convert("RGB").getcolors(2**20)) > 50  # drawn, not one flat colour
    results = json.loads((run / "results.json").read_text(encoding="utf-8"))
    rows = list(csv.reader((run / "test_confusion_matrix.csv").open(encoding="utf-8")))
    assert rows[0] == ["true", *results["classes"]] and [row[0] for row in rows[1:]] == results["classes"]
    assert sum(int(count) for row in rows[1:] for count in row[1:]) == results["test/num_images"]
    with Image.open(run / "test_confusion_matrix.png") as png:
        assert png.width > 500 and len(png.convert("RGB").getcolors(2**20)) > 20


def test_curves_are_drawn_after_a_stop_and_a_figure_that_fails_is_a_warning(tmp_path, caplog):
    (tmp_path / "csv").mkdir()
    (tmp_path / "csv" / "metrics.csv").write_text("epoch,step,train/loss_epoch,val/top1\n0,9,,0.30\n0,9,2.5,\n1,19,,0.40\n1,19,2.0,\n")
    trainer = SimpleNamespace(is_global_zero=True, loggers=[])
    LearningCurves(str(tmp_path)).on_exception(trainer, None, KeyboardInterrupt())  # stopped after two epochs
    with Image.open(tmp_path / "curves.png") as png:
        assert png.width >= 900
    (tmp_path / "curves.png").unlink()
    (tmp_path / "curves.png").mkdir()  # where the figure goes, something it cannot be written over
    with caplog.at_level(logging.WARNING, logger="artmove.training.figures"):
        LearningCurves(str(tmp_path)).on_fit_end(trainer, None)  # no exception: the run's results stand
    assert f"could not draw {tmp_path / 'curves.png'} (IsADirectoryError" in caplog.text


def test_resume_with_another_backbone_is_refused_naming_it(two_epochs):
    run, _ = two_epochs
    config = (run / ".hydra" / "config.yaml").read_text(encoding="utf-8")
    done = run_cli("artmove.train", f"resume={run}", "backbone=resnet18")
    lines = [line for line in done.stderr.splitlines() if line.startswith("artmove: error:")]
    assert done.returncode == 2 and len(lines) == 1, done.stderr[-3000:]
    assert lines[0].startswith(
        f"artmove: error: cannot continue {run / 'checkpoints' / 'last.ckpt'} with other settings: "
        "backbone='resnet18' (the checkpoint's: 'test_resnet')"
    )
    assert (run / ".hydra" / "config.yaml").read_text(encoding="utf-8") == config  # still what its checkpoint trained with


def test_resume_a_run_folder_to_more_epochs_without_retyping_it(two_epochs, tmp_path):
    run = shutil.copytree(two_epochs[0], tmp_path / "run")
    done = run_cli("artmove.train", f"resume={run}", "trainer.max_epochs=3", "test=false")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = list(csv.DictReader((run / "csv" / "metrics.csv").open(encoding="utf-8")))
    assert [int(row["epoch"]) for row in rows if row.get("val/top1")] == [0, 1, 2]  # each epoch once
    assert [int(row["epoch"]) for row in rows if row.get("train/loss_epoch")] == [0, 1, 2]
    results = json.loads((run / "results.json").read_text(encoding="utf-8"))
    assert results["epochs"] == 3 and results["backbone"] == "test_resnet" and len(results["attempts"]) == 2
    changed, resumed = results["attempts"][1]["changed"], results["attempts"][1]["resumed_from"]
    moved = {key for key, (before, _) in changed.items() if str(two_epochs[0]) in str(before)}  # the copy's paths
    assert {k: v for k, v in changed.items() if k not in moved} == {"trainer.max_epochs": [2, 3], "test": [True, False]}  # kept
    assert resumed["epoch"] == 1
    saved = [o for o in OmegaConf.load(run / ".hydra" / "overrides.yaml") if not o.startswith("resume=")]
    assert saved == [*TINY, "trainer.max_epochs=3", "callbacks.progress.every_s=0", "test=false"]  # what the next resume= reads
    assert re.search(r"epoch 3/3: train loss", (run / "train.log").read_text(encoding="utf-8"))


def saved_run(folder, overrides):
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text("task_name: train\nbackbone: test_resnet\n", encoding="utf-8")
    (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {json.dumps(o)}\n" for o in overrides), encoding="utf-8")
    return folder


def test_resume_puts_the_runs_command_line_first_and_this_ones_on_top(tmp_path):
    run = saved_run(tmp_path / "my run", ["backbone=test_resnet", "+trainer.limit_val_batches=1", "seed=3", "resume=false"])
    argv = resume_folder_arguments(
        ["seed=4", "+trainer.limit_val_batches=2", "trainer.limit_val_batches=5", f"resume={run}", "--cfg", "job"]
    )
    assert argv == [
        "backbone=test_resnet",
        "++trainer.limit_val_batches=5",
        "seed=4",
        f"hydra.run.dir='{run}'",
        f"resume='{run}'",
        "--cfg",
        "job",
    ]
    assert resume_folder_arguments(["resume=false", "seed=1"]) == ["resume=false", "seed=1"]  # not a folder: as typed
    assert resume_folder_arguments([f"resume={tmp_path / 'x.ckpt'}"]) == [f"resume={tmp_path / 'x.ckpt'}"]


@pytest.mark.parametrize(
    "saved, why",
    [
        ("data.source._target_=os.system", "it names code"),
        ("+callbacks.x={_target_: os.makedirs, name: /tmp/x}", "it names code"),
        ("seed=1,2", "a sweep"),
        ("hydra.job.chdir=true", "a setting of Hydra's"),
    ],
)
def test_resume_refuses_a_saved_command_line_that_is_not_plain_settings(tmp_path, saved, why):
    run = saved_run(tmp_path / "run", ["backbone=test_resnet", saved])
    done = run_cli("artmove.train", f"resume={run}")
    assert done.returncode == 2 and f"holds {saved!r} ({why})" in done.stderr, done.stderr[-3000:]
    assert not (run / "train.log").exists()  # refused before Hydra wrote anything


def test_a_presets_unfreeze_is_dropped_for_stages_but_the_users_is_refused(tmp_path):
    # experiment=demo sets unfreeze=0.0; finetune=stages counts stages: the preset's value is dropped and said.
    quick = [
        "backbone=test_resnet",
        "pretrained=false",
        "image_size=32",
        "debug=fast_dev_run",
        "data.batch_size=4",
        "data.source.train_per_class=1",
        "data.source.val_per_class=1",
        "data.source.test_per_class=1",
        "data.source.canvas_size=32",
    ]
    done = run_cli("artmove.train", "experiment=demo", "finetune=stages", *quick, f"hydra.run.dir={tmp_path / 'preset'}")
    assert done.returncode == 0, done.stderr[-3000:]
    log = (tmp_path / "preset" / "train.log").read_text(encoding="utf-8")
    assert (
        "finetune=stages does not use unfreeze: the value unfreeze=0.0, set by a preset or a default (not on the command line), is dropped"
        in log
    )
    results = json.loads((tmp_path / "preset" / "results.json").read_text(encoding="utf-8"))
    assert results["finetune"]["name"] == "stages" and results["unfreeze"] is None
    typed = run_cli("artmove.train", "experiment=demo", "finetune=stages", "unfreeze=0.5", *quick, f"hydra.run.dir={tmp_path / 'typed'}")
    assert typed.returncode == 2 and "artmove: error: finetune=stages counts stages, it does not use unfreeze=0.5" in typed.stderr
