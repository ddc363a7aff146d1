"""The recommended recipe ships like any other model: a tiny ``experiment=paintings`` run (its multiscale
head; gram with the slow tests) exports (its weights folder by default, every format with the slow
tests) with the numeric check passing, loads in ``Predictor.from_checkpoint`` and ``Predictor.from_export``,
is explained by ``evaluate gallery=8`` and ``predict explain=true``, and answers on the demo page in
headless Chromium (slow). All through the command line."""

import json

import pytest
from PIL import Image
from test_demo_page import needs_browser, page_answers_in_chromium, serving

from artmove import Predictor
from artmove.data.sources import SyntheticPaintings
from conftest import run_cli

TINY_PAINTINGS = [
    "experiment=paintings",
    "image_size=64",
    "trainer.max_epochs=1",
    "data.num_workers=0",
    "data.batch_size=8",
    "data.source.train_per_class=4",
    "data.source.val_per_class=2",
    "data.source.test_per_class=2",
    "data.source.canvas_size=96",
]


@pytest.fixture(scope="module", params=["multiscale", pytest.param("gram", marks=pytest.mark.slow)])
def run(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"paintings-{request.param}")
    done = run_cli("artmove.train", *TINY_PAINTINGS, f"head={request.param}", f"hydra.run.dir={folder}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((folder / "results.json").read_text())["head"]["name"] == request.param
    return folder


@pytest.fixture(scope="module")
def paintings(tmp_path_factory):
    """Three generated paintings as files (the recipe's data: artmove's own generator, nothing from ../shared)."""
    folder = tmp_path_factory.mktemp("paintings")
    test = SyntheticPaintings(train_per_class=1, val_per_class=1, test_per_class=1, canvas_size=96).split("test")
    for index in range(3):
        test[index * 3][0].save(folder / f"painting{index}.png")
    return sorted(folder.iterdir())


@pytest.mark.parametrize("formats", ["safetensors", pytest.param("[onnx,torchscript,torch_export]", marks=pytest.mark.slow)])
def test_it_exports_and_predicts_as_its_checkpoint(run, paintings, tmp_path, formats):
    out = tmp_path / "export"
    done = run_cli(
        "artmove.export", f"ckpt_path={run}", f"formats={formats}", f"out={out}", "check_images=8", f"hydra.run.dir={tmp_path / 'log'}"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((out / "export.json").read_text())
    assert record["layout"] == "artmove" and set(record["checks"]) == {"safetensors", *formats.strip("[]").split(",")} - {""}
    for name, check in record["checks"].items():
        assert check["images"] == 8 and check["top1_agreement"] == 1.0 and check["max_abs_logit_diff"] < 1e-4, name
    from_checkpoint, from_export = Predictor.from_checkpoint(run), Predictor.from_export(out)
    assert type(from_export.network).__name__ == "ArtNetwork" and from_export.class_names == from_checkpoint.class_names
    for mine, theirs in zip(from_checkpoint(paintings, tta="flip"), from_export(paintings, tta="flip"), strict=True):
        assert [m for m, _ in mine.top] == [m for m, _ in theirs.top]
        assert [p for _, p in mine.top] == pytest.approx([p for _, p in theirs.top], abs=1e-6)


def test_evaluate_and_predict_explain_it(run, paintings, tmp_path):
    done = run_cli("artmove.evaluate", f"ckpt_path={run}", "gallery=8", "num_workers=0", f"hydra.run.dir={tmp_path / 'eval'}")
    assert done.returncode == 0, done.stderr[-3000:]
    gallery = Image.open(tmp_path / "eval" / "top_losses.png")
    assert gallery.width > 2 * 224 and gallery.height > 224  # paintings beside their Grad-CAM
    assert "gallery: top_losses.png" in done.stdout
    done = run_cli(
        "artmove.predict",
        f"ckpt_path={run}",
        f"input={paintings[0].parent}",
        "explain=true",
        "num_workers=0",
        f"hydra.run.dir={tmp_path / 'predict'}",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    overlays = sorted((tmp_path / "predict" / "explain").glob("*.gradcam.png"))
    assert [p.name for p in overlays] == [f"{p.stem}.gradcam.png" for p in paintings]
    assert min(Image.open(overlays[0]).size) >= 224


@pytest.mark.slow  # the demo page in Chromium is tested in the default suite by test_demo_page.py
@needs_browser
def test_the_demo_page_answers_with_it(run, paintings, tmp_path):
    expected = Predictor.from_checkpoint(run)(paintings[1]).top
    rows = [{"movement": movement, "probability": probability} for movement, probability in expected]
    with serving(run, tmp_path / "demo") as url:
        page_answers_in_chromium(url, paintings[1], rows, tmp_path)
