"""`from artmove import Predictor`: the Python API, against `artmove.predict` and an export."""

import re
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor

from artmove import Prediction, Predictor
from artmove.errors import ConfigError
from artmove.predict import predict
from conftest import REPO, compose_config


@pytest.fixture(scope="module")
def paintings(wikipaintings_small):
    test = wikipaintings_small / "wikipaintings_test"
    return [sorted((test / name).iterdir())[0] for name in ("Baroque", "Cubism", "Ukiyo-e")]


@pytest.fixture(scope="module")
def predictor(tiny_run):
    return Predictor.from_checkpoint(tiny_run)


def test_the_docs_example_runs(tiny_run, paintings, tmp_path, monkeypatch, capsys):
    """docs/export.md's three lines, with the run folder and a painting put in for the placeholders."""
    text = (REPO / "docs" / "export.md").read_text(encoding="utf-8")
    (example,) = re.findall(r"<!-- The example below runs in tests/test_predictor.py.*?```python\n(.*?)```", text, re.DOTALL)
    assert len(example.strip().splitlines()) == 3
    shutil.copy(paintings[1], tmp_path / "painting.jpg")
    monkeypatch.chdir(tmp_path)
    exec(example.replace("outputs/2026-12-01/12-00-00", str(tiny_run)), {})
    printed = eval(capsys.readouterr().out)  # a list of (movement, probability)
    assert len(printed) == 5 and all(isinstance(m, str) and 0 < p < 1 for m, p in printed)
    assert [p for _, p in printed] == sorted((p for _, p in printed), reverse=True)


@pytest.mark.parametrize("tta", ["none", "flip"])
def test_predictions_equal_the_predict_command(predictor, tiny_run, paintings, tmp_path, tta):
    listing = tmp_path / "paintings.txt"
    listing.write_text("\n".join(map(str, paintings)), encoding="utf-8")
    cfg = compose_config(
        "predict", f"ckpt_path={tiny_run}", f"input={listing}", f"tta={tta}", f"output_dir={tmp_path}", "num_workers=0", "top_k=5"
    )
    expected = {Path(item["path"]): item["top"] for item in predict(cfg)["predictions"]}
    got = predictor(paintings, tta=None if tta == "none" else tta)
    assert isinstance(got, list) and all(isinstance(p, Prediction) for p in got)
    for path, prediction in zip(paintings, got, strict=True):
        assert [m for m, _ in prediction.top] == [row["movement"] for row in expected[path]]
        assert [p for _, p in prediction.top] == pytest.approx([row["probability"] for row in expected[path]], abs=1e-6)


def same(a: Prediction, b: Prediction, tolerance: float = 1e-6) -> bool:
    return [m for m, _ in a.top] == [m for m, _ in b.top] and [p for _, p in a.top] == pytest.approx([p for _, p in b.top], abs=tolerance)


def test_paths_images_and_tensors_are_the_same_painting(predictor, paintings):
    image = Image.open(paintings[1]).convert("RGB").reduce(4)  # a smaller copy: nothing to decode or resize at length
    pixels = pil_to_tensor(image)  # uint8, 3 x H x W
    from_pil = predictor(image, top_k=3)
    assert isinstance(from_pil, Prediction) and len(from_pil.top) == 3
    assert same(predictor(pixels, top_k=3), from_pil)
    assert same(predictor(pixels.float() / 255, top_k=3), from_pil, 1e-5)
    batch = predictor(torch.stack([pixels, pixels.flip(-1)]), top_k=3)
    assert len(batch) == 2 and same(batch[0], from_pil)
    assert predictor(image, top_k=100).top.__len__() == len(predictor.class_names)
    with pytest.raises(TypeError, match="cannot predict a int"):
        predictor([3])


def test_gradcam_comes_with_the_prediction_on_request(predictor, paintings):
    plain, explained = predictor(paintings[2]), predictor(paintings[2], gradcam=True)
    assert plain.gradcam is None and explained.top == plain.top
    assert explained.gradcam.mode == "RGB" and min(explained.gradcam.size) >= 224


def test_an_export_predicts_as_its_checkpoint(predictor, exported, paintings, tmp_path):
    from_export = Predictor.from_export(exported[0])
    assert from_export.class_names == predictor.class_names and from_export.preprocessing == predictor.preprocessing
    for mine, theirs in zip(predictor(paintings, tta="flip"), from_export(paintings, tta="flip"), strict=True):
        assert same(mine, theirs)
    with pytest.raises(ConfigError, match="is not an export folder"):
        Predictor.from_export(tmp_path)


def test_an_export_keeps_the_size_its_checkpoint_evaluated_at(tmp_path):
    """test_image_size= travels in timm's pretrained config (test_input_size): the export predicts at it."""
    from artmove.models import backbone_preprocessing, create_network
    from artmove.release.formats import WeightsFolder

    preprocessing = backbone_preprocessing("test_resnet", image_size=32, test_image_size=48)
    WeightsFolder().write(
        create_network("test_resnet", 3, pretrained=False), tmp_path, None, {"label_names": ["a", "b", "c"], "preprocessing": preprocessing}
    )
    loaded = Predictor.from_export(tmp_path)
    assert loaded.preprocessing["input_size"] == [3, 32, 32] and loaded.preprocessing["test_input_size"] == [3, 48, 48]
    assert loaded.class_names == ["a", "b", "c"]
