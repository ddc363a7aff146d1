"""One hop between commands: checkpoint names that read right, the
evaluate/predict lines a run ends with (run as printed), and the line that continues an interrupted run."""

import logging
import re
import shlex
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from artmove.train import next_commands
from artmove.training.callbacks import ResumeHint

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_a_run_ends_with_evaluate_and_predict_lines_that_run_as_printed(tmp_path):
    """Class folders with brackets and spaces (RASTA's Naïve_Art_(Primitivism)) survive the shell and Hydra."""
    for label, name in enumerate(("Naïve_Art_(Primitivism)", "Pop Art")):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(10):
            Image.new("RGB", (40, 30), (200 * label, 20 * i, 60)).save(tmp_path / "data" / name / f"painter{i % 5}-x_{i}.png")
    run = tmp_path / "run"
    train = subprocess.run(
        [
            sys.executable,
            "-m",
            "artmove.train",
            "data=folder",
            f"data.root={tmp_path / 'data'}",
            "backbone=test_resnet",
            "pretrained=false",
            "image_size=32",
            "debug=limit",
            f"hydra.run.dir={run}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert train.returncode == 0, train.stderr[-3000:]
    lines = train.stdout.split("Next:\n", 1)[1].splitlines()[:2]
    best = next((run / "checkpoints").glob("best-*.ckpt"))
    assert re.fullmatch(r"best-epoch000-val_acc\d\.\d{4}\.ckpt", best.name)  # reads as epoch 0, accuracy 0.xxxx
    evaluate, predict = (shlex.split(line) for line in lines)
    assert evaluate[:3] == ["python", "-m", "artmove.evaluate"] and predict[:3] == ["python", "-m", "artmove.predict"]
    assert f"ckpt_path={best}" in evaluate
    done = subprocess.run([sys.executable, *evaluate[1:], "num_workers=0"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and re.search(r"Test split: \d+ images, 2 classes", done.stdout), done.stderr[-3000:]
    done = subprocess.run([sys.executable, *predict[1:], f"hydra.run.dir={tmp_path / 'p'}"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "1 image(s) predicted" in done.stdout, done.stderr[-3000:]
    assert "(Primitivism)" in done.stdout


def test_next_commands_without_files_name_a_placeholder(tmp_path):
    text = next_commands(str(tmp_path / "best.ckpt"), None)
    assert text.splitlines()[2].endswith("input=PATH/TO/PAINTINGS")


def test_an_interrupted_run_says_how_to_continue(tmp_path, caplog):
    hint, trainer = ResumeHint(str(tmp_path)), SimpleNamespace(is_global_zero=True, current_epoch=3)
    with caplog.at_level(logging.WARNING, logger="artmove.training.callbacks"):
        hint.on_exception(trainer, None, KeyboardInterrupt())
    assert "nothing to continue from" in caplog.text
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").touch()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="artmove.training.callbacks"):
        hint.on_exception(trainer, None, KeyboardInterrupt())
    command = shlex.split(caplog.text.split("(epoch 3): ", 1)[1])
    assert command == ["python", "-m", "artmove.train", f"resume={tmp_path}"]  # the run's own command line, from its folder
