"""Training the head of a frozen backbone from cached features instead of images."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from artmove.data.datamodule import Transformed, balanced_sampler
from artmove.data.sources.base import SPLITS
from artmove.distributed import eval_sampler
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


class FeatureDataModule(pl.LightningDataModule):
    """Per split (features, label) tensors, batched like the image data module (same batch size, shuffling)."""

    def __init__(self, splits: Mapping[str, tuple[torch.Tensor, torch.Tensor]], classes: list[str], batch_size: int,
                 balance: str = "none", seed: int = 42):  # fmt: skip
        super().__init__()
        self.splits, self.classes, self.batch_size = dict(splits), classes, batch_size
        self.balance, self.seed = balance, seed

    def split_sizes(self) -> dict[str, int]:
        return {split: len(labels) for split, (_, labels) in self.splits.items()}

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        features, labels = self.splits[split]
        dataset = TensorDataset(features.float(), labels)  # fp16 on disk, fp32 for training
        sampler = None if split == "train" else eval_sampler(dataset)  # DDP: each image once
        if shuffle and self.balance == "sampler":
            sampler, shuffle = balanced_sampler(labels.tolist(), self.seed), False
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=shuffle, sampler=sampler)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)


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
    return FeatureDataModule(splits, datamodule.classes, datamodule.batch_size,
                             getattr(datamodule, "balance", "none"), getattr(datamodule, "seed", 42))  # fmt: skip
