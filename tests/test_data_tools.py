"""Bad files, the resized cache, the verify/prepare/inspect tools, and each format training end to end."""

import io
import logging
import os
import sys

import numpy as np
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from PIL import Image

from artmove.data import PaintingDataModule, inspect, prepare, verify
from artmove.data import datamodule as datamodule_module
from artmove.data.prepared import cache_path
from artmove.data.sources import ImageFolderSplits
from artmove.errors import DataSetupError
from artmove.train import train

EVAL = {"input_size": [3, 32, 32], "interpolation": "bilinear", "mean": [0.5] * 3, "std": [0.5] * 3, "crop_pct": 1.0}
FAST_TRAIN = ["backbone=tf_efficientnet_lite0", "unfreeze=0", "debug=fast_dev_run", "image_size=64", "data.batch_size=4"]


def spy(function, calls: list):
    """``function``, recording what each call returns in ``calls``."""

    def recorded(*args, **kwargs):
        calls.append(function(*args, **kwargs))
        return calls[-1]

    return recorded


def painting_folder(root, classes=("baroque", "cubism"), per_class=6, size=(300, 200)):
    for label, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.new("RGB", size, (60 * label, 20 * i, 90)).save(root / name / f"painter{i % 3}_{name}{i}.jpg")
    return root


def spoil(root):
    """A zero-byte file, a text file named .jpg and a truncated JPEG."""
    (root / "baroque" / "zero_bytes.jpg").write_bytes(b"")
    (root / "cubism" / "not_an_image.jpg").write_text("these are notes, not a painting")
    buffer = io.BytesIO()
    Image.effect_noise((300, 200), 60).convert("RGB").save(buffer, "JPEG")
    (root / "cubism" / "truncated_scan.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])


def run_tool(module, monkeypatch, *overrides):
    """Run a data tool's Hydra entry point in this process; return its exit code.

    Hydra configures logging for the job: the root logger's handlers are restored afterwards,
    so no handler bound to this test's captured stdout outlives it.
    """
    monkeypatch.setattr(sys, "argv", [module.__file__, *overrides])
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    GlobalHydra.instance().clear()
    try:
        module.main()
        return 0
    except SystemExit as done:
        return done.code
    finally:
        GlobalHydra.instance().clear()
        for handler in root.handlers:
            if handler not in handlers:
                handler.close()
        root.handlers[:], root.level = handlers, level


# --- bad files ----------------------------------------------------------------------------
def test_bad_files_are_skipped_counted_named_and_never_stop_an_epoch(tmp_path, caplog):
    spoil(painting_folder(tmp_path))
    source = lambda: ImageFolderSplits(tmp_path, val_fraction=0.0, test_fraction=0.0)  # noqa: E731
    datamodule = PaintingDataModule(source, EVAL, batch_size=5, num_workers=0, max_bad_fraction=0.25)
    with caplog.at_level(logging.INFO, logger="artmove.data"):
        assert datamodule.split_sizes()["train"] == 13  # 12 good + the truncated one (its header reads)
        datamodule.setup("fit")
        batches = list(datamodule.train_dataloader())
    assert sum(len(labels) for _, labels in batches) == 13  # the truncated file was replaced, not dropped mid-epoch
    log = caplog.text
    assert "2 unreadable or missing image files skipped" in log
    assert "zero_bytes.jpg (empty file" in log and "not_an_image.jpg" in log
    assert "skipped unreadable image" in log and "truncated_scan.jpg" in log


def test_too_many_bad_files_stop_with_a_clear_error(tmp_path):
    spoil(painting_folder(tmp_path, per_class=3))
    datamodule = PaintingDataModule(lambda: ImageFolderSplits(tmp_path), max_bad_fraction=0.05)
    with pytest.raises(DataSetupError, match=r"2 of 9 image files .* cannot be read .*max_bad_fraction=0.05.*zero_bytes.jpg"):
        datamodule.split_sizes()


def test_verify_decodes_everything_and_writes_the_bad_list(tmp_path, monkeypatch):
    spoil(painting_folder(tmp_path / "set"))
    out = tmp_path / "out"
    args = ["data=folder", f"data.root={tmp_path / 'set'}", f"hydra.run.dir={out}", "workers=1"]
    assert run_tool(verify, monkeypatch, *args, "data.max_bad_fraction=0.5") == 0
    listed = (out / "bad_files.tsv").read_text().splitlines()
    assert sorted(line.split("\t")[0].rsplit("/", 1)[1] for line in listed) == ["not_an_image.jpg", "truncated_scan.jpg", "zero_bytes.jpg"]
    assert run_tool(verify, monkeypatch, *args) == 1  # 3 of 15 bad > 1 %
    assert run_tool(verify, monkeypatch, "data=rasta", f"data.root={tmp_path / 'absent'}", f"hydra.run.dir={out}") == 2


# --- the resized cache ----------------------------------------------------------------------
def test_prepare_writes_once_and_training_reads_the_copies(tmp_path, monkeypatch, capsys):
    root, cache = painting_folder(tmp_path / "set", size=(900, 600)), tmp_path / "cache"
    args = ["data=folder", f"data.root={root}", f"data.prepared_dir={cache}", "size=64", "workers=1"]
    assert run_tool(prepare, monkeypatch, *args, f"hydra.run.dir={tmp_path / 'one'}") == 0
    assert run_tool(prepare, monkeypatch, *args, f"hydra.run.dir={tmp_path / 'two'}") == 0
    first, second = [line for line in capsys.readouterr().out.splitlines() if "] - prepared" in line]
    assert "12 written, 0 already there" in first and "0 written, 12 already there" in second
    copy = cache_path(cache, root / "baroque" / "painter0_baroque0.jpg", 64)
    assert np.load(copy).shape == (64, 96, 3)  # short side 64, aspect kept, decoded pixels
    assert run_tool(prepare, monkeypatch, *args, "format=jpeg", f"hydra.run.dir={tmp_path / 'jpeg'}") == 0
    assert Image.open(cache_path(cache, root / "baroque" / "painter0_baroque0.jpg", 64, "jpeg")).size == (96, 64)
    assert run_tool(prepare, monkeypatch, *args, "format=png", f"hydra.run.dir={tmp_path / 'png'}") == 2

    touched = root / "cubism" / "painter1_cubism1.jpg"
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))  # a changed original
    # The preprocessing decodes >= 32 px: the 64 px copies serve.
    datamodule = PaintingDataModule(lambda: ImageFolderSplits(root), EVAL, num_workers=0, prepared_dir=str(cache))
    datamodule.setup("fit")
    read = [path for split in ("train", "val", "test") for path, _ in datamodule.datasets[split].dataset.samples]
    assert sum(cache in path.parents for path in read) == 11 and touched in read
    assert {path.suffix for path in read if cache in path.parents} == {".npy"}  # the faster copy when both exist
    image, _ = datamodule.datasets["train"][0]
    assert tuple(image.shape) == (3, 32, 32) and image.dtype == torch.uint8
    image, _ = datamodule.datasets["val"][0]
    assert tuple(image.shape) == (3, 32, 32) and image.dtype == torch.float32

    # Needs more than 64 px: the originals.
    too_small = PaintingDataModule(
        lambda: ImageFolderSplits(root), {**EVAL, "input_size": [3, 128, 128]}, num_workers=0, prepared_dir=str(cache)
    )
    too_small.setup("fit")
    assert not any(cache in path.parents for path, _ in too_small.datasets["train"].dataset.samples)


# --- a look at the data ---------------------------------------------------------------------
def test_inspect_prints_counts_sizes_and_writes_a_contact_sheet(wikiart_sample, tmp_path, monkeypatch, capsys):
    args = ["data=wikiart", f"data.root={wikiart_sample}", f"hydra.run.dir={tmp_path}", "sheet.per_class=3", "sheet.thumb=48"]
    assert run_tool(inspect, monkeypatch, *args) == 0
    text = capsys.readouterr().out
    assert "contact sheet:" in (tmp_path / "inspect.log").read_text()  # the run's log file has it too
    assert "Ukiyo_e" in text and "total                       989     440     111" in text  # test carved by artist
    assert "(train/test grouped by artist)" in text and "artist overlap, test: 0 of 37 artists also in train" in text
    assert "short side min   224" in text and "bad files (header unreadable or missing): 0" in text
    sheet = Image.open(tmp_path / "contact_sheet.png")
    assert sheet.height == 11 * (48 + 4) and sheet.width > 3 * 48


# --- each format trains end to end ----------------------------------------------------------
def test_wikiart_trains_grouped_by_artist_with_class_weighted_loss(compose_train, wikiart_sample, caplog, monkeypatch):
    weights = []
    monkeypatch.setattr(PaintingDataModule, "class_weights", spy(PaintingDataModule.class_weights, weights))
    with caplog.at_level(logging.INFO, logger="artmove.data"):
        results = train(
            compose_train("data=wikiart", f"data.root={wikiart_sample}", "data.group_by=artist", "data.balance=loss", *FAST_TRAIN)
        )
    assert len(weights[0]) == 11 and len(set(weights[0])) > 1  # the loss got unequal class weights
    assert results["num_classes"] == 11 and sum(results["data"]["split_sizes"].values()) == 1540
    assert "test/top1_macro" in results
    assert "split test:" in caplog.text and "artists" in caplog.text


def test_pandora_trains_end_to_end_with_balanced_sampling(compose_train, tmp_path, monkeypatch):
    for folder in ("01_Byzantin_Iconography/a", "02_Early_Renaissance/b", "02_Early_Renaissance/c"):
        painting_folder(tmp_path / "pandora" / folder, classes=("",), per_class=4, size=(80, 60))
    samplers = []
    monkeypatch.setattr(datamodule_module, "balanced_sampler", spy(datamodule_module.balanced_sampler, samplers))
    results = train(compose_train("data=pandora", f"data.root={tmp_path / 'pandora'}", "data.balance=sampler", *FAST_TRAIN))
    assert results["classes"] == ["Byzantin_Iconography", "Early_Renaissance"]
    assert samplers  # the train loader drew through the class-balanced sampler


def test_manifest_trains_end_to_end(compose_train, tmp_path):
    painting_folder(tmp_path / "mine", per_class=5, size=(80, 60))
    rows = [f"{p.relative_to(tmp_path / 'mine')},{p.parent.name}" for p in sorted((tmp_path / "mine").rglob("*.jpg"))]
    (tmp_path / "mine" / "list.csv").write_text("\n".join(rows))
    results = train(compose_train("data=csv", f"data.root={tmp_path / 'mine' / 'list.csv'}", *FAST_TRAIN))
    assert results["classes"] == ["baroque", "cubism"] and results["data"]["split_sizes"]["train"] == 6
