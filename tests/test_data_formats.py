"""The published formats (WikiArt CSV, Pandora18k, CSV manifests), artist-aware splits, class balance."""

import io
import logging
import struct
import zlib
from collections import Counter

import pytest
import torch
from PIL import Image

from artmove.data import PaintingDataModule
from artmove.data.files import check_file
from artmove.data.sources import CsvManifest, ImageFolderSplits, Pandora18k, RastaWikiPaintings, SyntheticPaintings, WikiArtCSV
from artmove.data.splits import artist_from_filename, group_split, shared_groups
from artmove.errors import ConfigError, DataSetupError
from conftest import classifier

SAMPLE_CLASSES = [
    "Abstract_Expressionism",
    "Baroque",
    "Cubism",
    "Fauvism",
    "Impressionism",
    "Minimalism",
    "Naive_Art_Primitivism",
    "Pointillism",
    "Pop_Art",
    "Rococo",
    "Ukiyo_e",
]
SPLITS = ("train", "val", "test")


def image(path, colour=(120, 80, 40), size=(40, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def sizes(source):
    return {split: len(source.split(split)) for split in SPLITS}


# --- WikiArt (ArtGAN CSV layout) --------------------------------------------------------
def test_wikiart_sample_labels_come_from_the_csv_index(wikiart_sample):
    source = WikiArtCSV(wikiart_sample)
    assert source.classes == SAMPLE_CLASSES and source.missing == []
    assert sizes(source) == {"train": 990, "val": 440, "test": 110}  # test carved from train's 1100 rows
    for split, per_class in (("train", 90), ("val", 40), ("test", 10)):
        assert Counter(source.split(split).labels) == {label: per_class for label in range(11)}
    samples = dict(source.split("val").samples)
    row = next(line for line in (wikiart_sample / "style_val.csv").read_bytes().split(b"\r\n") if line)
    relative, index = row.decode().split(",")
    names = dict(line.split(" ", 1) for line in (wikiart_sample / "style_class.txt").read_text().splitlines())
    assert source.classes[samples[wikiart_sample / relative]] == names[index]


def test_wikiart_all_classes_and_val_as_test(wikiart_sample):
    source = WikiArtCSV(wikiart_sample, classes="all", test_from="val")
    assert len(source.classes) == 27 and source.classes[3] == "Art_Nouveau"
    assert sizes(source) == {"train": 990, "val": 110, "test": 440}
    assert sorted(set(source.split("test").labels)) == [0, 4, 7, 10, 12, 14, 15, 18, 19, 22, 26]  # published indices
    train = {p for p, _ in source.split("train").samples}
    assert not train & {p for p, _ in source.split("val").samples}


def test_wikiart_carved_split_is_deterministic(wikiart_sample):
    first, again, other = (WikiArtCSV(wikiart_sample, seed=s) for s in (1, 1, 2))
    assert first.split("test").samples == again.split("test").samples
    assert first.split("test").samples != other.split("test").samples


def wikiart_tree(root, rows, classes=("Abstract_Expressionism", "Action_painting", "Analytical_Cubism", "Art_Nouveau")):
    (root / "style_class.txt").write_text("".join(f"{i} {name}\n" for i, name in enumerate(classes)))
    for split in ("train", "val"):
        lines = [f"{folder}/{name},{index}" for folder, name, index in rows]
        (root / f"style_{split}.csv").write_bytes(("\r\n".join(lines) + "\r\n").encode())
    for folder, name, _ in rows:
        image(root / folder / name)


def test_wikiart_folder_names_may_differ_from_class_names(tmp_path):
    rows = [("Art_Nouveau_Modern", f"alphonse-mucha_{i}.jpg", 3) for i in range(4)]
    rows += [("Action_painting", f"jackson-pollock_{i}.jpg", 1) for i in range(4)]
    wikiart_tree(tmp_path, rows)
    source = WikiArtCSV(tmp_path)
    assert source.classes == ["Action_painting", "Art_Nouveau"]
    mucha = [label for path, label in source.split("val").samples if path.parent.name == "Art_Nouveau_Modern"]
    assert mucha and {source.classes[label] for label in mucha} == {"Art_Nouveau"}


def test_wikiart_errors_name_the_line_and_missing_files_are_listed(tmp_path):
    wikiart_tree(tmp_path, [("Cubism", "a_1.jpg", 2), ("Cubism", "a_2.jpg", 9)])
    with pytest.raises(DataSetupError, match=r"style_train.csv:2: class index 9 is not in style_class.txt"):
        WikiArtCSV(tmp_path)
    wikiart_tree(tmp_path, [("Cubism", f"a_{i}.jpg", 2) for i in range(3)])
    (tmp_path / "Cubism" / "a_0.jpg").unlink()
    assert [p.name for p in WikiArtCSV(tmp_path).missing] == ["a_0.jpg", "a_0.jpg"]  # train and val rows
    (tmp_path / "style_class.txt").unlink()
    with pytest.raises(DataSetupError, match=r"style_class.txt not found.*ArtGAN"):
        WikiArtCSV(tmp_path)


# --- Pandora18k -------------------------------------------------------------------------
def pandora_tree(root, per_artist=3):
    for folder in (
        "01_Byzantin_Iconography/andrei-rublev",
        "01_Byzantin_Iconography/theophanes",
        "17_Abstract_Art/suprematism/kazimir-malevich",
        "17_Abstract_Art/constructivism/el-lissitzky",
        "18_PopArt/andy-warhol",
        "18_PopArt/roy-lichtenstein",
    ):
        for i in range(per_artist):
            image(root / folder / f"work{i}.jpg")
    image(root / "18_PopArt" / "_duplicates" / "andy-warhol" / "copy.jpg")
    image(root / "_unsorted" / "x.jpg")


def test_pandora_layout_classes_artists_and_skipped_folders(tmp_path):
    pandora_tree(tmp_path)
    source = Pandora18k(tmp_path, val_fraction=0.2, test_fraction=0.2)
    assert source.classes == ["Byzantin_Iconography", "Abstract_Art", "PopArt"]
    files = [path for split in SPLITS for path, _ in source.split(split).samples]
    assert len(files) == 18 and not any("_duplicates" in str(p) for p in files)
    assert {source.artist(p) for p in files} == {
        "andrei-rublev",
        "theophanes",
        "kazimir-malevich",
        "el-lissitzky",
        "andy-warhol",
        "roy-lichtenstein",
    }
    assert all(Counter(source.split(s).labels) == {0: n, 1: n, 2: n} for s, n in (("val", 1), ("test", 1)))


def test_pandora_without_numbered_folders_is_a_clear_error(tmp_path):
    image(tmp_path / "Cubism" / "a.jpg")
    with pytest.raises(DataSetupError, match=r"no numbered class folders.*Pandora18k"):
        Pandora18k(tmp_path)


# --- CSV manifests ----------------------------------------------------------------------
def test_manifest_with_split_column_and_relative_paths(tmp_path):
    rows = []
    for i, (label, split) in enumerate([("cubism", "train"), ("cubism", "val"), ("baroque", "train"), ("baroque", "test")]):
        image(tmp_path / "img" / f"p{i}.png")
        rows.append(f"img/p{i}.png,{label},{split}")
    (tmp_path / "sets").mkdir()
    (tmp_path / "sets" / "m.csv").write_text("\n".join(f"../{r}" for r in rows) + "\n../img/missing.png,cubism,train\n")
    source = CsvManifest(tmp_path / "sets" / "m.csv")
    assert source.classes == ["baroque", "cubism"] and sizes(source) == {"train": 2, "val": 1, "test": 1}
    assert [p.name for p in source.missing] == ["missing.png"]


def test_manifest_with_header_and_artist_column_is_split_here(tmp_path):
    lines = ["path,label,artist"]
    for i in range(12):
        image(tmp_path / f"{i}.png")
        lines.append(f"{i}.png,{'ab' if i % 2 else 'cd'},painter{i % 4}")
    (tmp_path / "m.csv").write_text("\n".join(lines))
    source = CsvManifest(tmp_path / "m.csv", val_fraction=0.2, test_fraction=0.2)
    assert sizes(source) == {"train": 8, "val": 2, "test": 2}
    assert source.artist((tmp_path / "3.png").resolve()) == "painter3"
    (tmp_path / "bad.csv").write_text("0.png,ab,holdout\n")
    with pytest.raises(DataSetupError, match=r"bad.csv:1: split 'holdout'"):
        CsvManifest(tmp_path / "bad.csv")


# --- artist-aware splits ----------------------------------------------------------------
def test_group_by_artist_keeps_every_rasta_artist_in_one_split(wikipaintings_small, caplog):
    source = RastaWikiPaintings(wikipaintings_small)
    published = {split: source.split(split).samples for split in SPLITS}
    assert shared_groups(published, artist_from_filename)  # RASTA's own split leaks artists
    with caplog.at_level(logging.INFO, logger="artmove.data"):
        datamodule = PaintingDataModule(RastaWikiPaintings, root=str(wikipaintings_small), group_by="artist", regroup_published=True)
        files = datamodule.files
    assert shared_groups(files, artist_from_filename) == set()
    assert sorted(s for split in files.values() for s in split) == sorted(s for split in published.values() for s in split)
    assert all(len(files[split]) > 100 for split in SPLITS)
    assert {label for _, label in files["train"]} == set(range(25))
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("split ")]
    assert len(logged) == 3 and all("grouped by artist" in m for m in logged)
    again = PaintingDataModule(RastaWikiPaintings, root=str(wikipaintings_small), group_by="artist", regroup_published=True).files
    assert again == files


def test_group_by_artist_on_wikiart_stays_stratified(wikiart_sample):
    source = WikiArtCSV(wikiart_sample)
    published = {split: source.split(split).samples for split in SPLITS}
    grouped = group_split(published, artist_from_filename, seed=42)
    assert shared_groups(grouped, artist_from_filename) == set()
    for split in SPLITS:
        target = Counter(label for _, label in published[split])
        got = Counter(label for _, label in grouped[split])
        assert all(abs(got[c] - target[c]) <= 3 for c in target), (split, got)


def test_group_split_does_not_depend_on_listing_order(wikiart_sample):
    """File systems list folders in different orders; the split must not change with it."""
    source = WikiArtCSV(wikiart_sample)
    published = {split: source.split(split).samples for split in SPLITS}
    shuffled = {split: sorted(items, key=lambda s: hash(s[0].name[::-1])) for split, items in published.items()}
    assert group_split(shuffled, artist_from_filename, seed=5) == group_split(published, artist_from_filename, seed=5)
    assert group_split(published, artist_from_filename, seed=5) != group_split(published, artist_from_filename, seed=6)


def test_group_by_needs_files_and_a_known_value():
    with pytest.raises(ConfigError, match="generated"):
        PaintingDataModule(lambda: SyntheticPaintings(1, 1, 1, 32), group_by="artist").files
    with pytest.raises(ConfigError, match=r"data.group_by='painter'"):
        PaintingDataModule(lambda: SyntheticPaintings(1, 1, 1, 32), group_by="painter")
    with pytest.raises(ConfigError, match=r"data.balance='oversample'"):
        PaintingDataModule(lambda: SyntheticPaintings(1, 1, 1, 32), balance="oversample")


# --- class imbalance --------------------------------------------------------------------
EVAL = {"input_size": [3, 32, 32], "interpolation": "bilinear", "mean": [0.5] * 3, "std": [0.5] * 3, "crop_pct": 1.0}


def imbalanced(root):
    for name, count in (("big", 40), ("small", 4)):
        for i in range(count):
            image(root / name / f"a{i}_{name}.png", size=(32, 32))
    return lambda: ImageFolderSplits(root, val_fraction=0.0, test_fraction=0.0)


def test_balance_sampler_draws_classes_evenly(tmp_path):
    datamodule = PaintingDataModule(imbalanced(tmp_path), EVAL, batch_size=44, num_workers=0, balance="sampler", seed=0)
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    labels = torch.cat([next(iter(loader))[1] for _ in range(5)])  # five draws of one sampler, as five epochs
    assert Counter(datamodule.train_labels()) == {0: 40, 1: 4}
    assert 0.35 < labels.float().mean() < 0.65  # about half "small" instead of 4/44


def test_balance_loss_weights_the_cross_entropy(tmp_path):
    datamodule = PaintingDataModule(imbalanced(tmp_path), balance="loss")
    weights = datamodule.class_weights()
    assert weights == pytest.approx([44 / 80, 44 / 8])
    assert PaintingDataModule(imbalanced(tmp_path)).class_weights() is None
    model = classifier("resnet18", 2, class_weights=weights)
    assert torch.allclose(model.criterion.weight, torch.tensor(weights))


# --- reading what PIL would refuse ------------------------------------------------------
def test_large_legitimate_painting_passes_the_decompression_bomb_guard(tmp_path):
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    header = b"IHDR" + struct.pack(">II", 15000, 13000) + bytes(data[24:29])  # 195 Mpx: over PIL's 179 Mpx limit
    data[12:33] = header + struct.pack(">I", zlib.crc32(header))
    (tmp_path / "scan.png").write_bytes(bytes(data))
    assert check_file(tmp_path / "scan.png").size == (15000, 13000)
