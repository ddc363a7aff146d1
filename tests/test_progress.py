"""Long loops show a progress bar with images per second on stderr."""

import torch
from test_data_tools import painting_folder, run_tool

from artmove.data import prepare
from artmove.evaluation.inference import ImageFiles, predict_files
from conftest import classifier


def test_prepare_shows_images_per_second(tmp_path, monkeypatch, capsys):
    root = painting_folder(tmp_path / "set")
    args = ["data=folder", f"data.root={root}", f"data.prepared_dir={tmp_path / 'cache'}", "size=64", "workers=1"]
    assert run_tool(prepare, monkeypatch, *args, f"hydra.run.dir={tmp_path / 'run'}") == 0
    bar = capsys.readouterr().err.strip().splitlines()[-1].split("\r")[-1]
    assert bar.startswith("prepare 64 px: 100%") and "12/12" in bar and "img/s]" in bar


def test_predict_shows_images_per_second(tmp_path, capsys):
    root = painting_folder(tmp_path / "set", per_class=5)
    model = classifier("test_resnet", 2, image_size=32).eval()
    paths = sorted(root.rglob("*.jpg"))
    with torch.inference_mode():
        _, readable, _ = predict_files(model.network, ImageFiles(paths, lambda image: torch.zeros(1, 3, 32, 32)), 4, 0)
    bar = capsys.readouterr().err.strip().splitlines()[-1].split("\r")[-1]
    assert len(readable) == 10 and bar.startswith("predict: 100%") and "10/10" in bar and "img/s]" in bar
