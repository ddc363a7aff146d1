"""The LightningDataModule shared by every painting data set."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import cached_property
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from artmove.data.sources import DataSetupError, PaintingSource
from artmove.data.sources.base import SPLITS
from artmove.data.transforms import build_transforms, decode_size


class Transformed(Dataset):
    def __init__(self, dataset: Dataset, transform: Callable):
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        image, label = self.dataset[index]
        return self.transform(image), label


class PaintingDataModule(pl.LightningDataModule):
    """Loads a painting data set through a :class:`PaintingSource` and timm transforms.

    ``source`` builds the data set's format; it is called with ``root`` unless root is
    None. The transforms follow the backbone: call :meth:`use_data_config` with the
    model's timm data config before ``setup``.
    """

    def __init__(
        self,
        source: Callable[..., PaintingSource],
        root: str | None = None,
        batch_size: int = 32,
        num_workers: int = 2,
        pin_memory: bool | str = "auto",
        persistent_workers: bool = True,
        augment: Mapping[str, Any] | None = None,
    ):
        super().__init__()
        self.build_source, self.root = source, root
        self.batch_size, self.num_workers = batch_size, num_workers
        self.pin_memory, self.persistent_workers = pin_memory, persistent_workers
        self.augment = dict(augment or {})
        self.data_config: dict[str, Any] | None = None
        self.datasets: dict[str, Dataset] = {}

    @cached_property
    def source(self) -> PaintingSource:
        return self.build_source() if self.root is None else self.build_source(root=self.root)

    @property
    def classes(self) -> list[str]:
        return self.source.classes

    def use_data_config(self, data_config: Mapping[str, Any]) -> None:
        self.data_config = dict(data_config)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        if self.data_config is None:
            raise DataSetupError("PaintingDataModule.use_data_config(model.data_config) must be called before setup().")
        train_transform, eval_transform = build_transforms(self.data_config, self.augment)
        min_size = decode_size(self.data_config)
        for split in SPLITS:
            transform = train_transform if split == "train" else eval_transform
            self.datasets[split] = Transformed(self.source.split(split, min_size), transform)

    def split_sizes(self) -> dict[str, int]:
        return {split: len(self.source.split(split)) for split in SPLITS}

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        pin = torch.cuda.is_available() if self.pin_memory == "auto" else bool(self.pin_memory)
        return DataLoader(
            self.datasets[split],
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            pin_memory=pin,
            persistent_workers=self.persistent_workers and self.num_workers > 0,
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
