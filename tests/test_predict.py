import csv
import json
import shutil
import subprocess
import sys

import pytest
import torch
from PIL import Image
from timm.data import create_transform

from artmove.data.images import load_rgb
from artmove.data.transforms import decode_size
from artmove.errors import ConfigError
from artmove.evaluation.gradcam import grad_cam
from artmove.models import load_trained
from artmove.predict import list_inputs, predict
from conftest import compose_config, run_cli


@pytest.fixture(scope="module")
def paintings(tmp_path_factory, wikipaintings_small):
    """Three real test paintings in a nested folder, plus a file that is not an image."""
    folder = tmp_path_factory.mktemp("paintings")
    test = wikipaintings_small / "wikipaintings_test"
    for name, target in (("Baroque", "a.jpg"), ("Cubism", "nested/b.jpg"), ("Ukiyo-e", "nested/deeper/c.jpg")):
        (folder / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(sorted((test / name).iterdir())[0], folder / target)
    (folder / "nested" / "broken.jpg").write_bytes(b"not a jpeg")
    return folder


def test_inputs_are_an_image_a_folder_or_a_list_file(tmp_path, paintings):
    assert [p.name for p in list_inputs(paintings)] == ["a.jpg", "b.jpg", "broken.jpg", "c.jpg"]
    assert list_inputs(paintings / "a.jpg") == [paintings / "a.jpg"]
    listing = tmp_path / "list.txt"
    listing.write_text(f"# paintings\n{paintings / 'a.jpg'}\n\nrelative/x.png\n", encoding="utf-8")
    assert list_inputs(listing) == [paintings / "a.jpg", tmp_path / "relative" / "x.png"]
    with pytest.raises(ConfigError, match="no such file or folder"):
        list_inputs(tmp_path / "absent")


@pytest.mark.slow
@pytest.mark.parametrize("content", [b"\x89HEIC\x00\x01binary", b"not a path\x91\nnor this\n"])
def test_an_input_that_is_neither_an_image_nor_a_list_is_one_line(tiny_run, tmp_path, content):
    odd = tmp_path / "photo.heic"
    odd.write_bytes(content)
    done = subprocess.run(
        [sys.executable, "-m", "artmove.predict", f"ckpt_path={tiny_run}", f"input={odd}", f"hydra.run.dir={tmp_path / 'out'}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]  # one line, no traceback
    assert f"input={odd}: neither an image artmove reads" in done.stderr


def test_grad_cam_points_at_the_region_that_raised_the_score():
    class Toy(torch.nn.Module):
        """Features = the image; the head scores class 0 by the mean of channel 0."""

        num_features = 3

        def forward_features(self, x):
            return x

        def forward_head(self, features):
            pooled = features.mean(dim=(2, 3))
            return torch.stack([pooled[:, 0], -pooled[:, 0]], 1)

    images = torch.zeros(2, 3, 8, 8)
    images[0, 0, :4, :4] = 1.0  # bright top-left quadrant
    images[1, 0, 4:, 4:] = 1.0  # bright bottom-right quadrant
    cams = grad_cam(Toy(), images, torch.tensor([0, 0]))
    assert cams.shape == (2, 8, 8) and float(cams.max()) == pytest.approx(1.0)
    assert cams[0, :4, :4].min() == 1.0 and cams[0, 4:, 4:].max() == 0.0
    assert cams[1, 4:, 4:].min() == 1.0 and cams[1, :4, :4].max() == 0.0


def test_predict_cli_reports_and_skips_unreadable_files(tiny_run, paintings, tmp_path):
    ckpt = tiny_run / "checkpoints" / "last.ckpt"
    done = run_cli(
        "artmove.predict",
        f"ckpt_path={ckpt}",
        f"input={paintings}",
        "top_k=3",
        "save=json",
        "explain=true",
        "num_workers=0",
        f"hydra.run.dir={tmp_path}",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "broken.jpg" in done.stderr and "3 image(s) predicted, 1 skipped" in done.stdout
    saved = json.loads((tmp_path / "predictions.json").read_text(encoding="utf-8"))
    assert [p["path"].rsplit("/", 1)[1] for p in saved["predictions"]] == ["a.jpg", "b.jpg", "c.jpg"]
    assert saved["skipped"][0]["path"].endswith("broken.jpg")
    for item in saved["predictions"]:
        probabilities = [top["probability"] for top in item["top"]]
        assert len(probabilities) == 3 and probabilities == sorted(probabilities, reverse=True)
        assert f"1. {item['top'][0]['movement']}" in done.stdout
        with Image.open(item["explanation"]) as overlay:
            assert min(overlay.size) >= 224


def test_predictions_match_the_model_on_its_eval_transform(tiny_run, paintings, tmp_path):
    ckpt = tiny_run / "checkpoints" / "last.ckpt"
    cfg = compose_config(
        "predict",
        f"ckpt_path={ckpt}",
        f"input={paintings / 'nested'}",
        "top_k=25",
        "save=csv",
        f"output_dir={tmp_path}",
        "num_workers=0",
        "batch_size=2",
    )
    result = predict(cfg)
    trained = load_trained(ckpt)
    model, config = trained.network, trained.preprocessing
    transform = create_transform(
        input_size=tuple(config["input_size"]),
        interpolation=config["interpolation"],
        mean=tuple(config["mean"]),
        std=tuple(config["std"]),
        crop_pct=config["crop_pct"],
        is_training=False,
    )
    rows = list(csv.DictReader((tmp_path / "predictions.csv").open(encoding="utf-8")))
    assert len(rows) == 2 * 25 and len(result["skipped"]) == 1
    for item in result["predictions"]:
        with torch.no_grad():
            expected = model(transform(load_rgb(item["path"], decode_size(config)))[None]).softmax(-1)[0]
        got = {top["movement"]: top["probability"] for top in item["top"]}
        assert sum(got.values()) == pytest.approx(1.0, abs=1e-4)
        for label, name in enumerate(trained.class_names):
            assert got[name] == pytest.approx(float(expected[label]), abs=1e-3)


def test_nothing_readable_is_an_error_after_the_report(tiny_run, paintings, tmp_path, capsys):
    listing = tmp_path / "list.txt"
    listing.write_text(f"{paintings / 'nested' / 'broken.jpg'}\nmissing.jpg\n", encoding="utf-8")
    cfg = compose_config(
        "predict", f"ckpt_path={tiny_run / 'checkpoints' / 'last.ckpt'}", f"input={listing}", f"output_dir={tmp_path}", "num_workers=0"
    )
    with pytest.raises(ConfigError, match="none of the 2 input file"):
        predict(cfg)
    assert "missing.jpg" in capsys.readouterr().err
