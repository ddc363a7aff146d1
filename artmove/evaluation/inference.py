"""Batched predictions over a labelled split or a list of image files, with test-time augmentation."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import cast

import torch
from torch.utils.data import DataLoader, Dataset

from artmove.data.images import UnreadableImageError, load_rgb
from artmove.data.sources.base import PaintingSplit
from artmove.evaluation.tta import predict_views, stack_views, views_to
from artmove.utils.progress import progress


class MappedViews(Dataset):
    """``(views, checkpoint label)`` of a labelled split; images of dropped classes are left out."""

    def __init__(self, dataset: PaintingSplit, transform: Callable, mapping: Sequence[int | None]):
        self.dataset, self.transform, self.mapping = dataset, transform, list(mapping)
        if all(target is not None for target in self.mapping):
            self.indices = list(range(len(dataset)))
        else:
            self.indices = [i for i, label in enumerate(dataset.labels) if self.mapping[label] is not None]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int):
        image, label = self.dataset[self.indices[position]]
        return self.transform(image), self.mapping[label]

    def path(self, position: int) -> str | None:
        """The image file behind a position, when the split is made of files."""
        samples = getattr(self.dataset, "samples", None)
        return str(samples[self.indices[position]][0]) if samples is not None else None


class ImageFiles(Dataset):
    """``(views or None, error message or None)`` for each file: unreadable files do not stop a batch."""

    def __init__(self, paths: Sequence[Path], transform: Callable, min_size: int | None = None):
        self.paths, self.transform, self.min_size = list(paths), transform, min_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        try:
            return self.transform(load_rgb(self.paths[index], self.min_size)), None
        except UnreadableImageError as error:
            return None, f"{self.paths[index]}: {error.__cause__ or error}"


def _collate_files(batch):
    readable = [views for views, _ in batch if views is not None]
    return (stack_views(readable) if readable else None), [views is not None for views, _ in batch], [e for _, e in batch]


def predict_split(network: torch.nn.Module, dataset: MappedViews, batch_size: int, num_workers: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilities ``[N, classes]`` (mean over views) and checkpoint labels ``[N]``."""
    device = next(network.parameters()).device
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, shuffle=False)
    probs, labels = [], []
    with progress(len(dataset), "evaluate") as bar:
        for views, batch_labels in loader:
            probs.append(predict_views(network, views_to(views, device)).cpu())
            labels.append(batch_labels)
            bar.update(len(batch_labels))
    return torch.cat(probs), torch.cat(labels)


def predict_files(
    network: torch.nn.Module, dataset: ImageFiles, batch_size: int, num_workers: int
) -> tuple[torch.Tensor, list[int], dict[int, str]]:
    """Probabilities of the readable files, their indices in ``dataset``, and ``{index: error}`` for the rest."""
    device = next(network.parameters()).device
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, shuffle=False, collate_fn=_collate_files)
    probs, readable, errors, offset = [], [], {}, 0
    with progress(len(dataset), "predict") as bar:
        for views, ok, messages in loader:
            if views is not None:
                probs.append(predict_views(network, views_to(views, device)).cpu())
            for position, (good, message) in enumerate(zip(ok, messages, strict=True), start=offset):
                if good:
                    readable.append(position)
                else:
                    errors[position] = message
            offset += len(ok)
            bar.update(len(ok))
    num_classes = cast(int, network.num_classes)  # nn.Module types its attributes as Tensor | Module
    return (torch.cat(probs) if probs else torch.empty(0, num_classes)), readable, errors
