"""tune=lr: Lightning's learning-rate range test with this module and timm's schedulers."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from artmove.errors import ConfigError
from artmove.train import train
from artmove.training.tune import LearningRateFinder
from conftest import LEAN

TINY = [
    "data.source.train_per_class=4",
    "data.source.val_per_class=1",
    "data.source.test_per_class=1",
    "backbone=test_resnet",
    "pretrained=false",
    "image_size=32",
    "data.batch_size=4",
    "data.num_workers=0",
    "tune.num_training=20",
    *LEAN,
]


@pytest.mark.slow
def test_tune_lr_writes_the_curve_the_plot_and_the_suggestion(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "artmove.train", "tune=lr", *TINY, f"hydra.run.dir={tmp_path}"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))["lr_find"]
    lrs, losses = found["lr"], found["loss"]
    assert 13 <= len(lrs) <= 20 and lrs == sorted(lrs) and 1e-7 <= lrs[0] < lrs[-1] <= 1.0
    # Lightning's rule: the steepest fall of the loss, skipping the first 10 points and the last
    window = torch.tensor(losses[10:-1])
    steepest = 10 + int(torch.gradient(window, spacing=[torch.tensor(lrs[10:-1])])[0].argmin())
    assert found["suggested_lr"] == pytest.approx(lrs[steepest])
    assert f"Suggested learning rate: {found['suggested_lr']:.3g}" in done.stdout and "tune=lr_apply" in done.stdout
    assert "lr_find: suggested learning rate" in (tmp_path / "train.log").read_text(encoding="utf-8")
    assert not (tmp_path / "checkpoints").exists()  # the test only: no training
    plot = np.asarray(Image.open(tmp_path / "lr_find.png").convert("RGB")).astype(int)
    red = (plot[..., 0] > 200) & (plot[..., 1] < 60) & (plot[..., 2] < 60)
    blue = (plot[..., 2] > 150) & (plot[..., 0] < 100)
    assert plot.shape[1] > 500 and red.sum() > 30 and blue.sum() > 100  # the curve (blue) and the suggestion (red dot)


def test_tune_lr_apply_trains_with_the_suggestion_under_a_timm_scheduler(compose_train, tmp_path):
    # One epoch of 10 batches: the 20 steps of the test are not bounded by the run's epochs.
    results = train(compose_train("tune=lr_apply", "scheduler=cosine", "trainer.max_epochs=1", *TINY))
    suggested = results["lr_find"]["suggested_lr"]
    assert results["lr_find"]["applied"] and results["optimizer_lr"] == suggested and "test/top1" in results
    checkpoint = torch.load(results["best_checkpoint"], map_location="cpu", weights_only=False)
    assert checkpoint["hyper_parameters"]["optimizer"]["lr"] == suggested
    assert checkpoint["lr_schedulers"][0]["base_values"] == [pytest.approx(suggested)] * len(checkpoint["lr_schedulers"][0]["base_values"])


def test_finder_settings_are_checked():
    with pytest.raises(ConfigError, match="min_lr"):
        LearningRateFinder(min_lr=1.0, max_lr=0.1)
    with pytest.raises(ConfigError, match="num_training=5"):
        LearningRateFinder(num_training=5)
