"""Feature caching: a linear probe on cached features matches the image run, and the cache is reused."""

import pytest
import torch

import artmove.data.datamodule as image_datamodule
import artmove.features.datamodule as feature_datamodule
from artmove.data.transforms import build_transforms
from artmove.features.cache import cache_key
from artmove.train import train

PROBE = ["backbone=tf_efficientnet_lite0", "unfreeze=0", "model.image_size=64", "data.batch_size=8", "data.num_workers=0",
         "data.source.train_per_class=3", "data.source.val_per_class=1", "data.source.test_per_class=2",
         "data.source.canvas_size=80", "trainer.max_epochs=2", "scheduler=none", "optimizer.lr=0.01",
         "trainer.accelerator=cpu", "callbacks=none", "logger=csv"]  # fmt: skip
METRICS = ("test/top1", "test/top3", "test/top5", "test/loss")


def eval_transforms_everywhere(data_config, augment=None):
    """What the cache sees: the eval transform for the train split too (no random crops or flips)."""
    evaluation = build_transforms(data_config, augment)[1]
    return evaluation, evaluation


def test_cached_probe_matches_the_image_run_and_reuses_its_cache(compose_train, tmp_path, monkeypatch):
    cache = f"finetune.cache_dir={tmp_path / 'cache'}"
    with monkeypatch.context() as patch:
        patch.setattr(image_datamodule, "build_transforms", eval_transforms_everywhere)
        on_images = train(compose_train(*PROBE))
    cached = train(compose_train(*PROBE, "finetune.cache_features=true", cache))
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
    again = train(compose_train(*PROBE, "finetune.cache_features=true", cache))
    assert {m: again[m] for m in METRICS} == pytest.approx({m: cached[m] for m in METRICS})


def test_cache_key_follows_what_changes_the_features():
    data = {"root": "/paintings", "source": {"_target_": "Folder"}}
    base = cache_key("resnet50", "w1", data, "train", [10, "abc"], {"input_size": [3, 224, 224]})
    assert base == cache_key("resnet50", "w1", dict(data), "train", [10, "abc"], {"input_size": [3, 224, 224]})
    assert len({base,
                cache_key("resnet18", "w1", data, "train", [10, "abc"], {"input_size": [3, 224, 224]}),
                cache_key("resnet50", "w2", data, "train", [10, "abc"], {"input_size": [3, 224, 224]}),
                cache_key("resnet50", "w1", {**data, "root": "/other"}, "train", [10, "abc"], {"input_size": [3, 224, 224]}),
                cache_key("resnet50", "w1", data, "train", [10, "abd"], {"input_size": [3, 224, 224]}),
                cache_key("resnet50", "w1", data, "val", [10, "abc"], {"input_size": [3, 224, 224]}),
                cache_key("resnet50", "w1", data, "train", [10, "abc"], {"input_size": [3, 160, 160]})}) == 7  # fmt: skip


def test_loader_settings_do_not_change_the_key(compose_train, monkeypatch):
    """Batch size, workers and augmentation leave the features as they are: the same cache entry."""
    from hydra.utils import instantiate

    from artmove.models import ArtClassifier

    keys = []

    def record(cache, backbone, key, split, compute):
        keys.append(key)
        return torch.zeros(1, 8), torch.zeros(1, dtype=torch.long)

    monkeypatch.setattr(feature_datamodule.FeatureCache, "load_or_extract", record)
    model = ArtClassifier("test_resnet", 10, pretrained=False, unfreeze=0.0, image_size=32)
    for loader in (["data.batch_size=8"], ["data.batch_size=4", "data.num_workers=0", "data.augment.hflip=0"]):
        data = compose_train(*loader).data
        datamodule = instantiate(data)
        datamodule.use_data_config(model.data_config)
        feature_datamodule.cached_features(datamodule, model, "unused", data)
    assert len(keys) == 6 and keys[:3] == keys[3:] and len(set(keys[:3])) == 3  # per split, loader-independent
