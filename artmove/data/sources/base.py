"""What every data set format provides: its class names and three splits."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

from torch.utils.data import Dataset

from artmove.data.images import is_image_name, load_rgb
from artmove.errors import DataSetupError

SPLITS = ("train", "val", "test")


class SizedDataset(Dataset):
    """A map-style dataset, which has a length (torch's ``Dataset`` type declares none)."""

    def __len__(self) -> int:
        raise NotImplementedError


class PaintingSplit(SizedDataset):
    """One split of a data set: ``(PIL RGB image, label)`` pairs, and all its labels without decoding."""

    @property
    def labels(self) -> list[int]:
        raise NotImplementedError


class PaintingSource(ABC):
    """A painting data set in one on-disk (or generated) format.

    ``split(name)`` returns a dataset of ``(PIL RGB image, label)`` pairs; the data module
    adds the transforms. ``classes[label]`` is the class name.
    """

    classes: list[str]

    @abstractmethod
    def split(self, name: str, min_image_size: int | None = None) -> PaintingSplit: ...


class FileSource(PaintingSource):
    """A format whose splits are lists of image files: the constructor fills ``split_samples``,
    ``{split: [(path, label), ...]}``, and names in ``published`` the splits the data set itself
    defines (the others are carved here, so an artist-aware split may re-make them)."""

    split_samples: dict[str, list[tuple[Path, int]]]
    published: frozenset[str] = frozenset()

    def split(self, name: str, min_image_size: int | None = None) -> LabelledFiles:
        return LabelledFiles(self.split_samples[name], min_image_size)


class LabelledFiles(PaintingSplit):
    """Image files with integer labels, decoded to RGB on access."""

    def __init__(self, samples: Sequence[tuple[Path, int]], min_image_size: int | None = None):
        self.samples = list(samples)
        self.min_image_size = min_image_size

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        return load_rgb(path, self.min_image_size), label

    @property
    def labels(self) -> list[int]:
        return [label for _, label in self.samples]


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    """Split fractions must each be in [0, 1) and leave images for training."""
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise DataSetupError(
            f"data.source.val_fraction={val_fraction} and test_fraction={test_fraction} must be in [0, 1) and leave images for training."
        )


def require_dir(path: Path, what: str, hint: str) -> Path:
    if not path.is_dir():
        raise DataSetupError(f"{what} not found: {path} does not exist or is not a folder. {hint}")
    return path


def class_folders(root: Path) -> list[str]:
    """Sub-folder names of ``root`` in sorted() order (RASTA's and torchvision's label order)."""
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def images_in(folder: Path) -> list[Path]:
    """Image files below ``folder`` (recursive, not into linked folders; links to files, even dangling
    ones, included), in ``sorted()`` Path order.

    One ``os.scandir`` pass, names sorted as strings and made Paths once: ``rglob`` + ``is_file``
    spent most of a second run's setup on 80,000 files building and statting Paths.
    """
    found, folders = [], [os.fspath(folder)]
    while folders:
        with os.scandir(folders.pop()) as entries:
            for entry in entries:
                if entry.is_dir() and not entry.is_symlink():
                    folders.append(entry.path)
                elif is_image_name(entry.name) and (entry.is_file() or entry.is_symlink()):
                    found.append(entry.path)  # a dangling link too: listed, then reported as unreadable, never silently dropped
    found.sort(key=lambda path: path.split(os.sep))  # Path's order: component by component
    return [Path(path) for path in found]
