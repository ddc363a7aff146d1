"""evaluate gallery=N: the highest-loss paintings beside their Grad-CAM, and a grid per confused pair."""

import csv
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from artmove.evaluation.gallery import CAPTION, PAD, PER_ROW, TILE, _safe, top_losses


def sheet_size(entries: int, tiles: int) -> tuple[int, int]:
    cell_w, columns, rows = tiles * TILE + (tiles - 1) * PAD, min(PER_ROW, entries), math.ceil(entries / PER_ROW)
    return columns * (cell_w + PAD) + PAD, rows * (TILE + CAPTION + PAD) + PAD


def test_top_losses_orders_by_the_true_class_probability():
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.5, 0.5]])
    labels = torch.tensor([0, 0, 1, 1])
    assert top_losses(probs, labels, 3) == [1, 2, 3]  # p_true 0.2, 0.4, 0.5
    assert top_losses(probs, labels, 5, among=[0, 3]) == [3, 0]


@pytest.mark.slow
def test_gallery_shows_the_highest_loss_paintings_first_with_grad_cam(tiny_run, tmp_path):
    from artmove.evaluation.data import evaluation_data
    from artmove.runs.checkpoints import open_run
    from conftest import compose_config, run_cli

    ckpt = tiny_run / "checkpoints" / "last.ckpt"
    done = run_cli("artmove.evaluate", f"ckpt_path={ckpt}", "gallery=5", "gallery_pairs=2", "num_workers=0", f"output_dir={tmp_path}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "gallery: top_losses.png, confused/" in done.stdout
    top = Image.open(tmp_path / "top_losses.png")
    assert top.size == sheet_size(5, 2)  # 5 entries: painting + Grad-CAM each, 4 a row

    # The first tile is the painting with the lowest probability of its true class (predictions.csv).
    rows = list(csv.DictReader((tmp_path / "predictions.csv").open(encoding="utf-8")))
    worst = min(rows, key=lambda row: float(row["p_true"]))
    opened = open_run(ckpt)
    trained = opened.load()
    datamodule = evaluation_data(compose_config("evaluate", f"ckpt_path={ckpt}"), opened, trained, trained.preprocessing)
    (index,) = [i for i, (path, _) in enumerate(datamodule.files["test"]) if str(path) == worst["path"]]
    from artmove.evaluation.gradcam import to_pil

    image = datamodule.evaluation_dataset("test")[index][0]
    expected = np.asarray(to_pil(image, trained.preprocessing["mean"], trained.preprocessing["std"]).resize((TILE, TILE)), dtype=float)
    first = np.asarray(top.crop((PAD, PAD, PAD + TILE, PAD + TILE)), dtype=float)
    heat = np.asarray(top.crop((2 * PAD + TILE, PAD, 2 * PAD + 2 * TILE, PAD + TILE)), dtype=float)
    assert np.abs(first - expected).mean() < 2  # the same painting (PNG, same resize)
    assert np.abs(heat - expected).mean() > 10  # the Grad-CAM overlay beside it is not the plain painting

    pairs = json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))["most_confused"][:2]
    grids = sorted((tmp_path / "confused").glob("*.png"))
    assert len(grids) == len(pairs) == 2
    for pair in pairs:
        path = tmp_path / "confused" / f"{_safe(pair['class_a'])}__{_safe(pair['class_b'])}.png"
        assert Image.open(path).size == sheet_size(min(5, pair["total"]), 1)
