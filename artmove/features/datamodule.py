"""Training the head of a frozen backbone from cached features instead of images (``features=cached``)."""

from __future__ import annotations

import os

import torch
from torch.utils.data import TensorDataset

from artmove.data.datamodule import PaintingDataModule, SplitLoaders
from artmove.data.sources.base import SPLITS
from artmove.errors import ConfigError
from artmove.features.cache import FeatureCache, cache_key, cache_tag, content_digest, extract, feature_device, weights_digest


class FeatureDataModule(SplitLoaders):
    """Per split (pooled features, label) tensors of the classifier's frozen backbone, from the cache
    or computed once (eval transform, train split included); batched like the image data module.

    Built from ``conf/features/cached.yaml`` around the run's image data module and classifier, it
    refuses what cannot work (a backbone that trains, a head that reads feature maps, CutMix) before
    any image is read.
    The cache key is everything that changes the features: the backbone and its actual weights,
    each split's content (files with size and mtime, or a generated split's parameters) and the
    eval transform, and the head's input (``multiscale``: the pooled stages). The classifier takes 2-D
    batches as features and runs only its head; ``head=gram`` trains on feature maps and is refused.
    """

    def __init__(self, images: PaintingDataModule, classifier, cache_dir: str, device: str = "auto"):
        super().__init__()
        network, policy = classifier.network, classifier.finetuning.policy
        if not policy.keeps_backbone_frozen:
            raise ConfigError(
                "features=cached needs a frozen backbone (features computed once): use finetune=fraction unfreeze=0 "
                f"and finetune.train_bn=false (now {policy.settings})."
            )
        if not network.head.cacheable:
            raise ConfigError(
                f"features=cached keeps pooled vectors, and head={network.head.name} trains on the "
                "feature map itself: use head=linear or head=multiscale, or train on images (no features=cached)."
            )
        if classifier.hparams.cutmix:
            raise ConfigError("model.cutmix needs images and features=cached trains on features: set one of them off.")
        self.images, self.network = images, network
        self.cache = FeatureCache(os.path.expanduser(cache_dir))
        self.device = feature_device(device)
        self.batch_size, self.balance, self.seed = images.batch_size, images.balance, images.seed
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        network, backbone = self.network, self.network.spec["backbone"]
        weights = weights_digest(network.backbone)
        self.images.trainer = self.trainer  # num_workers=auto: the node's CPUs shared among this trainer's processes
        for split in SPLITS:
            dataset = self.images.evaluation_dataset(split)
            key = cache_key(backbone, weights, split, content_digest(dataset.dataset), repr(dataset.transform), cache_tag(network.head))
            self.splits[split] = self.cache.load_or_extract(
                backbone, key, split, lambda dataset=dataset: extract(network, dataset, self.batch_size, self.images.workers(), self.device)
            )

    def split_dataset(self, split: str) -> TensorDataset:
        features, labels = self.splits[split]
        return TensorDataset(features.float(), labels)  # fp16 on disk, fp32 for training

    def train_labels(self) -> list[int]:
        return self.images.train_labels()
