"""Feature caching: a linear probe on cached features matches the image run, and the cache is reused."""

import pytest
import torch

import artmove.data.datamodule as image_datamodule
import artmove.features.datamodule as feature_datamodule
from artmove.data.transforms import build_transforms
from artmove.features.cache import cache_key
from artmove.train import train
from conftest import NO_CALIBRATION

PROBE = [
    "backbone=tf_efficientnet_lite0",
    "unfreeze=0",
    "image_size=64",
    "data.batch_size=8",
    "data.num_workers=0",
    "data.source.train_per_class=3",
    "data.source.val_per_class=1",
    "data.source.test_per_class=2",
    "data.source.canvas_size=80",
    "trainer.max_epochs=2",
    "scheduler=none",
    "optimizer.lr=0.01",
    "trainer.accelerator=cpu",
    "callbacks=none",
    "logger=csv",
    *NO_CALIBRATION,
]
METRICS = ("test/top1", "test/top3", "test/top5", "test/loss")


def eval_transforms_everywhere(preprocessing, augment=None):
    """What the cache sees: the eval transform for the train split too (no random crops or flips)."""
    evaluation = build_transforms(preprocessing, augment)[1]
    return evaluation, evaluation


def test_cached_probe_matches_the_image_run_and_reuses_its_cache(compose_train, tmp_path, monkeypatch):
    cache = f"features.cache_dir={tmp_path / 'cache'}"
    with monkeypatch.context() as patch:
        patch.setattr(image_datamodule, "build_transforms", eval_transforms_everywhere)
        on_images = train(compose_train(*PROBE))
    cached = train(compose_train(*PROBE, "features=cached", cache))
    entries = sorted((tmp_path / "cache" / "tf_efficientnet_lite0").glob("*.pt"))
    assert len(entries) == 3  # one per split
    images = on_images["test/num_images"]
    assert cached["test/num_images"] == images == 20
    for metric in ("test/top1", "test/top3", "test/top5"):
        assert abs(cached[metric] - on_images[metric]) <= 1 / images + 1e-6, metric  # fp16 features: within one image
    assert cached["test/loss"] == pytest.approx(on_images["test/loss"], rel=0.02)

    def no_extraction(*args, **kwargs):
        raise AssertionError("features were computed again instead of read from the cache")

    monkeypatch.setattr(feature_datamodule, "extract", no_extraction)
    again = train(compose_train(*PROBE, "features=cached", cache))
    assert {m: again[m] for m in METRICS} == pytest.approx({m: cached[m] for m in METRICS})


def test_cache_key_follows_what_changes_the_features():
    base = cache_key("resnet50", "w1", "train", "10 files abc", "Resize(224)")
    assert base == cache_key("resnet50", "w1", "train", "10 files abc", "Resize(224)")
    assert (
        len(
            {
                base,
                cache_key("resnet18", "w1", "train", "10 files abc", "Resize(224)"),
                cache_key("resnet50", "w2", "train", "10 files abc", "Resize(224)"),
                cache_key("resnet50", "w1", "val", "10 files abc", "Resize(224)"),
                cache_key("resnet50", "w1", "train", "10 files abd", "Resize(224)"),
                cache_key("resnet50", "w1", "train", "10 files abc", "Resize(160)"),
            }
        )
        == 6
    )


def test_only_what_changes_the_images_changes_the_key(compose_train, monkeypatch):
    """Batch size, workers and augmentation leave the features as they are (the same entries); the
    generated data's parameters and the input size do not (new entries), without a list of keys to keep."""
    from artmove.train import build

    keys = []

    def record(cache, backbone, key, split, compute):
        keys.append(key)
        return torch.zeros(1, 8), torch.zeros(1, dtype=torch.long)

    monkeypatch.setattr(feature_datamodule.FeatureCache, "load_or_extract", record)
    common = ["backbone=test_resnet", "pretrained=false", "unfreeze=0", "features=cached", "image_size=32"]
    for changed in (
        ["data.batch_size=8"],
        ["data.batch_size=4", "data.num_workers=0", "data.augment.hflip=0"],
        ["data.source.canvas_size=200"],
        ["image_size=48"],
    ):
        torch.manual_seed(0)  # the same random weights each time
        build(compose_train(*common, *changed))[1].setup("fit")
    runs = [keys[i : i + 3] for i in range(0, 12, 3)]
    assert runs[0] == runs[1] and len(set(runs[0])) == 3  # per split, loader-independent
    assert not set(runs[2]) & set(runs[0]) and not set(runs[3]) & set(runs[0])


def test_extraction_workers_share_the_node_among_ddp_processes(compose_train, monkeypatch):
    """num_workers=auto under DDP: each of 4 processes on a 32-core node extracts with 8 workers, not 16."""
    import pytorch_lightning as pl

    from artmove.train import build

    workers = []
    monkeypatch.setattr("os.cpu_count", lambda: 32)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(32)), raising=False)
    monkeypatch.setattr(feature_datamodule.FeatureCache, "load_or_extract", lambda cache, backbone, key, split, compute: compute())
    monkeypatch.setattr(
        feature_datamodule, "extract", lambda *args: workers.append(args[3]) or (torch.zeros(1, 8), torch.zeros(1, dtype=torch.long))
    )
    datamodule = build(
        compose_train("backbone=test_resnet", "pretrained=false", "unfreeze=0", "features=cached", "image_size=32", "data.num_workers=auto")
    )[1]
    datamodule.trainer = pl.Trainer(accelerator="cpu", devices=4, strategy="ddp", logger=False, enable_checkpointing=False)
    datamodule.setup("fit")
    assert workers == [8, 8, 8]  # train, val, test
