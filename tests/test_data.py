import io
import math
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from artmove.data import PaintingDataModule
from artmove.data.images import UnreadableImageError, load_rgb
from artmove.data.sources import ImageFolderSplits, RastaWikiPaintings, SyntheticPaintings
from artmove.data.transforms import decode_size
from artmove.errors import ConfigError, DataSetupError
from artmove.evaluation.tta import tta_transform
from artmove.models import backbone_preprocessing

RASTA_CLASSES = [
    "Abstract_Art",
    "Abstract_Expressionism",
    "Art_Informel",
    "Art_Nouveau_(Modern)",
    "Baroque",
    "Color_Field_Painting",
    "Cubism",
    "Early_Renaissance",
    "Expressionism",
    "High_Renaissance",
    "Impressionism",
    "Magic_Realism",
    "Mannerism_(Late_Renaissance)",
    "Minimalism",
    "Naïve_Art_(Primitivism)",
    "Neoclassicism",
    "Northern_Renaissance",
    "Pop_Art",
    "Post-Impressionism",
    "Realism",
    "Rococo",
    "Romanticism",
    "Surrealism",
    "Symbolism",
    "Ukiyo-e",
]


def make_tree(root, classes, per_class, size=(40, 30)):
    for label, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.new("RGB", size, (label * 40 % 256, i * 10 % 256, 90)).save(root / name / f"artist{i % 3}_{i}.png")


# --- RASTA ---------------------------------------------------------------------------
def test_rasta_layout_classes_order_and_split_sizes(wikipaintings_small):
    source = RastaWikiPaintings(wikipaintings_small)
    assert source.classes == RASTA_CLASSES
    assert [len(source.split(s)) for s in ("train", "val", "test")] == [249, 250, 249]
    image, label = source.split("test")[0]
    assert image.mode == "RGB" and source.classes[label] == "Abstract_Art"


def test_rasta_missing_split_says_what_layout_is_expected(tmp_path):
    make_tree(tmp_path / "wikipaintings_train", ["A", "B"], 2)
    with pytest.raises(DataSetupError, match=r"wikipaintings_val.*Expected RASTA's layout"):
        RastaWikiPaintings(tmp_path)


# --- folder ---------------------------------------------------------------------------
def test_folder_split_is_stratified_and_deterministic(tmp_path):
    make_tree(tmp_path, ["cubism", "baroque", "rococo"], 10)
    first = ImageFolderSplits(tmp_path, val_fraction=0.2, test_fraction=0.1, seed=3)
    again = ImageFolderSplits(tmp_path, val_fraction=0.2, test_fraction=0.1, seed=3)
    other = ImageFolderSplits(tmp_path, val_fraction=0.2, test_fraction=0.1, seed=4)
    splits = {s: first.split(s).samples for s in ("train", "val", "test")}
    assert [len(v) for v in splits.values()] == [21, 6, 3]
    for split, count in (("train", 7), ("val", 2), ("test", 1)):  # same share of every class
        assert Counter(first.split(split).labels) == {0: count, 1: count, 2: count}
    assert splits == {s: again.split(s).samples for s in splits}
    assert splits["val"] != other.split("val").samples
    paths = [p for v in splits.values() for p, _ in v]
    assert len(paths) == len(set(paths)) == 30


def test_folder_presplit_layout(tmp_path):
    for split in ("train", "val", "test"):
        make_tree(tmp_path / split, ["a", "b"], 2)
    source = ImageFolderSplits(tmp_path)
    assert source.classes == ["a", "b"] and len(source.split("val")) == 4


def test_folder_without_class_folders_is_a_clear_error(tmp_path):
    with pytest.raises(DataSetupError, match="no class folders"):
        ImageFolderSplits(tmp_path)
    with pytest.raises(DataSetupError, match="does not exist"):
        ImageFolderSplits(tmp_path / "missing")


# --- image reading ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "mode, suffix", [("L", ".png"), ("CMYK", ".jpg"), ("P", ".png"), ("RGBA", ".png"), ("LA", ".png"), ("I;16", ".png"), ("1", ".png")]
)
def test_every_image_mode_loads_as_rgb(tmp_path, mode, suffix):
    path = tmp_path / f"image{suffix}"
    base = Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8))
    image = base.convert(mode) if mode != "I;16" else Image.fromarray((np.arange(600).reshape(20, 30) * 50).astype(np.uint16))
    if mode == "P":
        image.info["transparency"] = 0
    image.save(path)
    loaded = load_rgb(path)
    assert loaded.mode == "RGB" and loaded.size == (30, 20)


def test_exif_orientation_is_applied(tmp_path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    Image.new("RGB", (60, 20), "red").save(path, exif=exif)
    assert load_rgb(path).size == (20, 60)


def test_large_jpeg_decodes_in_draft_mode_but_not_below_the_needed_size(tmp_path):
    path = tmp_path / "large.jpg"
    Image.new("RGB", (4000, 3000), "blue").save(path, quality=80)
    small = load_rgb(path, min_size=256)
    assert 256 <= min(small.size) < 3000
    assert load_rgb(path).size == (4000, 3000)


@pytest.mark.parametrize("content", [b"", b"not an image at all", None])
def test_corrupt_files_give_an_error_naming_the_file(tmp_path, content):
    path = tmp_path / "broken.jpg"
    if content is None:  # a truncated JPEG
        buffer = io.BytesIO()
        Image.new("RGB", (200, 200), "green").save(buffer, "JPEG")
        content = buffer.getvalue()[:300]
    path.write_bytes(content)
    with pytest.raises(UnreadableImageError, match=r"broken.jpg"):
        load_rgb(path)


# --- synthetic --------------------------------------------------------------------------
def test_synthetic_paintings_are_deterministic_and_balanced():
    source = SyntheticPaintings(train_per_class=2, val_per_class=1, test_per_class=1, canvas_size=64, seed=1)
    train = source.split("train")
    assert len(train) == 2 * len(source.classes) and len(source.classes) >= 8
    image, _ = train[3]
    again, _ = SyntheticPaintings(2, 1, 1, 64, seed=1).split("train")[3]
    other, _ = SyntheticPaintings(2, 1, 1, 64, seed=2).split("train")[3]
    assert np.array_equal(np.asarray(image), np.asarray(again))
    assert not np.array_equal(np.asarray(image), np.asarray(other))
    assert sorted(train.labels) == sorted(list(range(len(source.classes))) * 2)
    assert not np.array_equal(np.asarray(source.split("val")[0][0]), np.asarray(train[0][0]))


def test_datamodule_batches_follow_the_backbone_preprocessing():
    with pytest.raises(DataSetupError, match="needs the backbone's preprocessing"):
        PaintingDataModule(source=lambda: SyntheticPaintings(2, 1, 1, 64), num_workers=0).setup("fit")
    preprocessing = {"input_size": [3, 48, 48], "interpolation": "bilinear", "mean": [0.5] * 3, "std": [0.5] * 3, "crop_pct": 0.9}
    datamodule = PaintingDataModule(lambda: SyntheticPaintings(2, 1, 1, 64), preprocessing, batch_size=4, num_workers=0)
    datamodule.setup("fit")
    images, labels = next(iter(datamodule.train_dataloader()))
    assert images.shape == (4, 3, 48, 48) and labels.dtype == torch.int64
    assert images.dtype == torch.uint8  # training batches: normalised on the device by the model
    images, _ = next(iter(datamodule.val_dataloader()))
    assert images.shape == (4, 3, 48, 48) and images.dtype == torch.float32
    assert images.min() >= -1.01 and images.max() <= 1.01


def test_test_image_size_sets_every_evaluation_view_but_not_the_training_crops():
    preprocessing = backbone_preprocessing("tf_efficientnet_lite0", image_size=48, test_image_size=56)
    assert preprocessing["input_size"] == [3, 48, 48] and preprocessing["test_input_size"] == [3, 56, 56]
    datamodule = PaintingDataModule(lambda: SyntheticPaintings(2, 1, 1, 64), preprocessing, batch_size=4, num_workers=0)
    datamodule.setup("fit")
    assert next(iter(datamodule.train_dataloader()))[0].shape[-2:] == (48, 48)
    assert next(iter(datamodule.val_dataloader()))[0].shape[-2:] == (56, 56)
    assert tta_transform(preprocessing, "five_crop")(Image.new("RGB", (90, 70))).shape == (5, 3, 56, 56)
    assert decode_size(preprocessing) == math.ceil(56 / preprocessing["crop_pct"])
    with pytest.raises(ConfigError, match=r"test_image_size=8: give a whole number of pixels from 16 to 2048"):
        backbone_preprocessing("tf_efficientnet_lite0", test_image_size=8)


@pytest.mark.parametrize(("devices", "bound_to", "expected"), [(1, None, 16), (4, None, 8), (8, None, 4), (4, 6, 6)])
def test_auto_workers_share_the_node_among_ddp_processes(monkeypatch, devices, bound_to, expected):
    import pytorch_lightning as pl

    monkeypatch.setattr("os.cpu_count", lambda: 32)  # a 32-core node; bound_to: CPUs this process is pinned to
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(bound_to or 32)), raising=False)
    datamodule = PaintingDataModule(lambda: SyntheticPaintings(2, 1, 1, 64), num_workers="auto")
    datamodule.trainer = pl.Trainer(
        accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto", logger=False, enable_checkpointing=False
    )
    assert datamodule.loader_options()["num_workers"] == expected
    assert PaintingDataModule(lambda: SyntheticPaintings(2, 1, 1, 64), num_workers=3).loader_options()["num_workers"] == 3
    with pytest.raises(ConfigError, match=r"data.num_workers='four': give auto or a whole number >= 0"):
        PaintingDataModule(lambda: SyntheticPaintings(2, 1, 1, 64), num_workers="four")
