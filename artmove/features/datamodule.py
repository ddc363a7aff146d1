"""Training the head of a frozen backbone from cached features instead of images."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch.utils.data import TensorDataset

from artmove.data.datamodule import SplitLoaders, Transformed
from artmove.data.sources.base import SPLITS
from artmove.features.cache import (
    FeatureCache,
    cache_key,
    extract,
    samples_digest,
    weights_digest,
)

# Loader settings that do not change which images (or pixels) a split holds.
LOADER_KEYS = ("_target_", "batch_size", "num_workers", "pin_memory", "persistent_workers", "prefetch_factor",
               "augment", "balance", "cache_dir")  # fmt: skip


class FeatureDataModule(SplitLoaders):
    """Per split (features, label) tensors, batched like the image data module (same batch size, shuffling)."""

    def __init__(self, splits: Mapping[str, tuple[torch.Tensor, torch.Tensor]], batch_size: int,
                 balance: str = "none", seed: int = 42):  # fmt: skip
        super().__init__()
        self.splits, self.batch_size = dict(splits), batch_size
        self.balance, self.seed = balance, seed

    def split_dataset(self, split: str) -> TensorDataset:
        features, labels = self.splits[split]
        return TensorDataset(features.float(), labels)  # fp16 on disk, fp32 for training

    def train_labels(self) -> list[int]:
        return self.splits["train"][1].tolist()


def cached_features(datamodule, model, cache_dir: str, data: Mapping[str, Any], device: str | torch.device = "cpu"):
    """A :class:`FeatureDataModule` with the frozen backbone's features of every split (eval transform,
    train split included), from the cache or computed once; ``model`` is switched to take features.

    ``data`` is the data config (``cfg.data``); loader-only keys are left out of the cache key.
    """
    datamodule.setup("fit")
    eval_transform = datamodule.datasets["val"].transform  # the transform the image run evaluates with
    identity = {k: v for k, v in data.items() if k not in LOADER_KEYS}
    cache, weights = FeatureCache(cache_dir), weights_digest(model.model)
    backbone = model.hparams.backbone
    splits = {}
    for split in SPLITS:
        images = Transformed(datamodule.datasets[split].dataset, eval_transform)
        key = cache_key(backbone, weights, identity, split, samples_digest(images.dataset), {"config": datamodule.data_config, "transform": eval_transform})
        splits[split] = cache.load_or_extract(
            backbone, key, split,
            lambda: extract(model.model, images, datamodule.batch_size, datamodule.num_workers, torch.device(device)),
        )  # fmt: skip
    model.features_input = True
    return FeatureDataModule(splits, datamodule.batch_size, datamodule.balance, datamodule.seed)
