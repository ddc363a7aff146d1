"""Artist leakage: artist-disjoint splits by default where artmove makes them, the overlap reported
everywhere (log, results.json, evaluate, report), and a plain split when the artists cannot be told."""

import json
import logging
from pathlib import Path

import pytest
from PIL import Image

from artmove.data import PaintingDataModule
from artmove.data.sources import RastaWikiPaintings, WikiArtCSV
from artmove.data.sources.base import SPLITS
from artmove.data.splits import artist_from_filename, filename_artists_unclear, shared_groups
from artmove.evaluate import evaluate
from artmove.evaluation.report import read_run, write_report
from artmove.runs.folder import RunFolder
from artmove.train import train
from conftest import LEAN, compose_config, run_cli

TINY = ["backbone=test_resnet", "pretrained=false", "image_size=32", "debug=fast_dev_run", "data.batch_size=4", *LEAN]


def folder(root: Path, name_of, classes=("baroque", "cubism"), per_class=30) -> Path:
    for label, cls in enumerate(classes):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.new("RGB", (40, 30), (90 * label, 10 * i, 50)).save(root / cls / name_of(cls, i))
    return root


def by_painters(cls, i):  # 10 painters per class, 3 paintings each
    return f"{cls}-painter{i % 10}_work{i}.png"


def test_the_rule_for_telling_artists_from_file_names():
    wikiart = [Path(f"{artist}_work-{i}.jpg") for artist in ("claude-monet", "paul-cezanne", "gustave-courbet") for i in range(2)]
    assert filename_artists_unclear(wikiart) is None
    assert "camera" in filename_artists_unclear([Path(f"IMG_{1000 + i}.jpg") for i in range(20)])
    assert "do not start with an artist" in filename_artists_unclear([Path(f"20230612_{i}.jpg") for i in range(20)])
    assert "do not start with an artist" in filename_artists_unclear([Path(f"scan{i}.jpg") for i in range(20)])
    assert "its own prefix" in filename_artists_unclear([Path(f"title{chr(97 + i)}_x.jpg") for i in range(20)])


def test_own_folder_is_split_by_artist_by_default_and_reports_no_overlap(compose_train, tmp_path):
    data = folder(tmp_path / "mine", by_painters)
    grouped = train(compose_train("data=folder", f"data.root={data}", *TINY))
    assert grouped["artist_overlap"]["test"]["artists_in_train"] == 0 and grouped["artist_overlap"]["test"]["artists"] >= 1
    assert grouped["artist_overlap"]["val"]["share"] == 0.0
    plain = train(compose_train("data=folder", f"data.root={data}", "data.group_by=null", *TINY, f"paths.output_dir={tmp_path / 'plain'}"))
    test = plain["artist_overlap"]["test"]  # 3 test images per class, each by a painter also in train
    assert (test["images"], test["images_by_train_artists"], test["share"]) == (6, 6, 1.0)
    written = json.loads((tmp_path / "plain" / "results.json").read_text(encoding="utf-8"))
    assert written["artist_overlap"] == plain["artist_overlap"]


def test_camera_file_names_fall_back_to_a_stratified_split_said_once(tmp_path):
    data = folder(tmp_path / "photos", lambda cls, i: f"IMG_{1000 + 20 * len(cls) + i}.jpg")
    done = run_cli("artmove.train", "data=folder", f"data.root={data}", *TINY, f"hydra.run.dir={tmp_path / 'run'}")
    assert done.returncode == 0, done.stderr[-3000:]
    log = (tmp_path / "run" / "train.log").read_text(encoding="utf-8")
    assert log.count("cannot tell the artists") == 1 and "'IMG'" in log
    results = json.loads((tmp_path / "run" / "results.json").read_text(encoding="utf-8"))
    assert results["data"]["split_sizes"] == {"train": 48, "val": 6, "test": 6}  # stratified, 10 % of each class
    assert "camera" in results["artist_overlap"]["unknown"]
    assert "Artist overlap with train: unknown" in done.stdout


def test_wikiart_carves_artist_disjoint_test_and_keeps_the_published_val(wikiart_sample, caplog):
    published = WikiArtCSV(wikiart_sample).split_samples
    with caplog.at_level(logging.INFO, logger="artmove.data"):
        datamodule = PaintingDataModule(WikiArtCSV, root=str(wikiart_sample), group_by="artist")
        files = datamodule.files
    assert files["val"] == published["val"] and datamodule.grouped_splits == ["train", "test"]
    assert shared_groups({s: files[s] for s in ("train", "test")}, artist_from_filename) == set()
    overlap = datamodule.artist_overlap
    assert overlap["test"]["images_by_train_artists"] == 0 and overlap["test"]["images"] == len(files["test"])
    val_leaked = sum(artist_from_filename(p) in {artist_from_filename(q) for q, _ in files["train"]} for p, _ in files["val"])
    assert overlap["val"]["images_by_train_artists"] == val_leaked > 100  # the published val shares painters with train
    assert "artist overlap, test: 0 of" in caplog.text


def test_rasta_keeps_its_published_splits_and_reports_their_overlap(wikipaintings_small, caplog):
    with caplog.at_level(logging.WARNING, logger="artmove.data"):
        kept = PaintingDataModule(RastaWikiPaintings, root=str(wikipaintings_small), group_by="artist")
        files = kept.files
    assert files == RastaWikiPaintings(wikipaintings_small).split_samples
    assert "data.regroup_published=true re-splits them" in caplog.text
    test = kept.artist_overlap["test"]
    train_artists = {artist_from_filename(p) for p, _ in files["train"]}
    assert test["images_by_train_artists"] == sum(artist_from_filename(p) in train_artists for p, _ in files["test"]) > 0
    assert test["share"] == pytest.approx(test["images_by_train_artists"] / len(files["test"]), abs=1e-4)
    regrouped = PaintingDataModule(RastaWikiPaintings, root=str(wikipaintings_small), group_by="artist", regroup_published=True)
    assert all(regrouped.files[s] for s in SPLITS) and regrouped.artist_overlap["test"]["artists_in_train"] == 0


def test_evaluate_and_report_show_the_overlap(tiny_run, tmp_path):
    """tiny_run trains on RASTA's published splits: evaluate's output and the report carry their overlap."""
    trained = json.loads((tiny_run / "results.json").read_text(encoding="utf-8"))["artist_overlap"]
    results = evaluate(
        compose_config("evaluate", f"ckpt_path={tiny_run / 'checkpoints' / 'last.ckpt'}", f"output_dir={tmp_path}", "num_workers=0")
    )
    assert results["artist_overlap"] == {"test": trained["test"]} and trained["test"]["images_by_train_artists"] > 0
    assert json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))["artist_overlap"] == results["artist_overlap"]
    share = f"{100 * trained['test']['share']:.1f} %"
    assert (
        read_run(RunFolder(tiny_run))["test_artist_overlap"]
        == f"{share} ({trained['test']['artists_in_train']}/{trained['test']['artists']} artists)"
    )
    report = write_report([tiny_run], tmp_path / "report").read_text(encoding="utf-8")
    assert "test images by train artists" in report and share in report


def test_too_few_artists_to_fill_every_split_keep_the_stratified_split(tmp_path, caplog):
    from artmove.data.sources import ImageFolderSplits

    data = folder(tmp_path / "few", lambda cls, i: f"painter{i % 3}_{cls}{i}.png", per_class=10)  # 3 painters, both classes
    with caplog.at_level(logging.WARNING, logger="artmove.data"):
        datamodule = PaintingDataModule(ImageFolderSplits, root=str(data), group_by="artist")
        files = datamodule.files
    assert "3 artists are too few" in caplog.text and datamodule.grouped_splits == []
    assert {split: len(files[split]) for split in SPLITS} == {"train": 16, "val": 2, "test": 2}
    assert datamodule.artist_overlap["test"]["share"] == 1.0
