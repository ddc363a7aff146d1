"""The LightningDataModule shared by every painting data set."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from artmove.data.files import FileCheck, ReadableFiles, screen
from artmove.data.header_cache import HeaderCache
from artmove.data.prepared import use_cache
from artmove.data.samplers import balanced_sampler, eval_sampler
from artmove.data.sources import PaintingSource
from artmove.data.sources.base import SPLITS, LabelledFiles, PaintingSplit, SizedDataset
from artmove.data.splits import artist_lookup, artist_overlap, describe_overlap, group_split, split_summary
from artmove.data.transforms import build_eval_transform, build_transforms, check_augment, decode_size, normalize_uint8
from artmove.errors import ConfigError, DataSetupError

log = logging.getLogger(__name__)
BALANCE = ("none", "sampler", "loss")


class Transformed(SizedDataset):
    def __init__(self, dataset: SizedDataset, transform: Callable):
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        image, label = self.dataset[index]
        return self.transform(image), label


class SplitLoaders(pl.LightningDataModule):
    """The train/val/test loaders of a data module with a dataset per split: train shuffled (or
    drawn class-balanced with ``balance="sampler"``), val/test each image once under DDP."""

    batch_size: int
    balance: str
    seed: int

    def split_dataset(self, split: str) -> Dataset:
        raise NotImplementedError

    def train_labels(self) -> list[int]:
        raise NotImplementedError

    def loader_options(self) -> dict[str, Any]:
        """DataLoader settings beyond batch size and order (workers, pinned memory…)."""
        return {}

    def _loader(self, split: str) -> DataLoader:
        dataset = self.split_dataset(split)
        if split != "train":
            # every split dataset is map-style, with a length: torch's Dataset type declares none
            sampler, shuffle = eval_sampler(dataset), False  # type: ignore[arg-type]
        elif self.balance == "sampler":
            sampler, shuffle = balanced_sampler(self.train_labels(), self.seed), False
        else:
            sampler, shuffle = None, True
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=shuffle, sampler=sampler, **self.loader_options())

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")


class PaintingDataModule(SplitLoaders):
    """Loads a painting data set through a :class:`PaintingSource` and timm transforms.

    ``source`` builds the data set's format; it is called with ``root`` unless root is
    None. ``preprocessing`` is the backbone's timm data config (input size, interpolation,
    mean/std, crop), which the transforms follow; without it the module lists and reads
    the splits' images but cannot transform them.

    For file-based sources: unreadable files are dropped and named (stop when more than
    ``max_bad_fraction`` are bad), ``group_by="artist"`` keeps each artist in one of the splits
    made here (published splits stay as they are unless ``regroup_published``; when the artists
    cannot be told the splits stay stratified, said once), ``artist_overlap`` measures how many
    val/test images are by artists also in train, copies prepared in ``prepared_dir``
    (``python -m artmove.data.prepare``) replace the originals (the screening's results are
    remembered there too, for the next run), and ``balance`` ("sampler" or "loss") counters
    class imbalance.
    """

    def __init__(
        self,
        source: Callable[..., PaintingSource],
        preprocessing: Mapping[str, Any] | None = None,
        root: str | None = None,
        batch_size: int = 32,
        num_workers: int | str = 2,
        pin_memory: bool | str = "auto",
        persistent_workers: bool = True,
        prefetch_factor: int | None = None,
        augment: Mapping[str, Any] | None = None,
        seed: int = 42,
        group_by: str | None = None,
        regroup_published: bool = False,
        balance: str = "none",
        max_bad_fraction: float = 0.01,
        prepared_dir: str | None = None,
    ):
        super().__init__()
        if group_by not in (None, "artist"):
            raise ConfigError(f"data.group_by={group_by!r}: use null or artist.")
        if balance not in BALANCE:
            raise ConfigError(f"data.balance={balance!r}: use one of {', '.join(BALANCE)}.")
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ConfigError(f"data.batch_size={batch_size!r}: give a whole number of images >= 1, e.g. data.batch_size=32.")
        if isinstance(max_bad_fraction, bool) or not isinstance(max_bad_fraction, (int, float)) or not 0 <= max_bad_fraction <= 1:
            raise ConfigError(f"data.max_bad_fraction={max_bad_fraction!r}: give a fraction in [0, 1], e.g. 0.01.")
        self.build_source, self.root = source, root
        if num_workers != "auto" and (isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0):
            raise ConfigError(f"data.num_workers={num_workers!r}: give auto or a whole number >= 0, e.g. data.num_workers=4.")
        self.batch_size, self.num_workers = batch_size, num_workers  # auto: resolved when loaders are built (workers())
        self.pin_memory, self.persistent_workers = pin_memory, persistent_workers
        self.prefetch_factor = prefetch_factor
        self.augment = dict(augment or {})
        check_augment(self.augment)
        self.seed, self.group_by, self.balance = seed, group_by, balance
        self.regroup_published = regroup_published
        # {"val"/"test": overlap with train's artists} (artmove.data.splits.artist_overlap), or
        # {"unknown": why}; filled with ``files``, None for generated data.
        self.artist_overlap: dict[str, Any] | None = None
        self.grouped_splits: list[str] = []  # the splits re-made by artist, filled with ``files``
        self.max_bad_fraction = max_bad_fraction
        self.prepared_dir = Path(os.path.expanduser(prepared_dir)) if prepared_dir else None
        self.preprocessing = dict(preprocessing) if preprocessing is not None else None
        self.file_checks: list[FileCheck] = []  # every listed file's header check, filled with ``files``
        self.datasets: dict[str, Dataset] = {}

    @cached_property
    def source(self) -> PaintingSource:
        with gc_paused():
            return self.build_source() if self.root is None else self.build_source(root=self.root)

    @property
    def classes(self) -> list[str]:
        return self.source.classes

    @cached_property
    def files(self) -> dict[str, list[tuple[Path, int]]] | None:
        """The (path, label) samples of each split after screening and grouping; None if generated."""
        with gc_paused():
            return self._screened_and_grouped()

    def _screened_and_grouped(self) -> dict[str, list[tuple[Path, int]]] | None:
        splits = {split: self.source.split(split) for split in SPLITS}
        listed = {split: d for split, d in splits.items() if isinstance(d, LabelledFiles)}
        if len(listed) < len(splits):
            if self.group_by:
                raise ConfigError(f"data.group_by={self.group_by}: this data set is generated, it has no artists; set data.group_by=null.")
            return None
        where = str(self.root) if self.root else "the data set"
        cache = HeaderCache.for_root(self.prepared_dir, str(self.root)) if self.prepared_dir and self.root else None
        samples, self.file_checks = screen(
            {s: d.samples for s, d in listed.items()}, self.max_bad_fraction, where, getattr(self.source, "missing", []), cache
        )
        bad = [check for check in self.file_checks if check.error]
        if bad:
            log.warning("%d unreadable or missing image files skipped in %s:", len(bad), where)
            for check in bad:
                log.warning("  bad file: %s (%s)", check.path, check.error)
        artist, unknown = artist_lookup(getattr(self.source, "artist", None), [p for split in samples.values() for p, _ in split])
        if self.group_by == "artist":
            if artist is None:
                log.warning("data.group_by=artist: cannot tell the artists (%s); the splits stay stratified, without artists.", unknown)
            else:
                samples, self.grouped_splits = self._grouped(samples, artist)
        for split, row in split_summary(samples, artist or str).items():
            log.info(
                "split %s: %d images, %s artists, %d classes%s",
                split,
                row["images"],
                row["artists"] if artist else "?",
                row["classes"],
                " (grouped by artist)" if split in self.grouped_splits else "",
            )
        if artist is None:
            self.artist_overlap = {"unknown": unknown}
            log.info("artist overlap: unknown (%s)", unknown)
        else:
            self.artist_overlap = artist_overlap(samples, artist)
            for split, overlap in self.artist_overlap.items():
                log.info("artist overlap, %s", describe_overlap(split, overlap))
        return samples

    def _grouped(self, samples: dict[str, list[tuple[Path, int]]], artist: Callable[[Path], str]) -> tuple[dict, list[str]]:
        """Every artist in one split among the splits made here; the data set's published splits are
        kept (all of them re-made with ``regroup_published``). Returns the samples and the re-made splits."""
        published = set() if self.regroup_published else set(getattr(self.source, "published", ()))
        made_here = [split for split in SPLITS if split not in published]
        if len(made_here) < 2:
            log.warning(
                "data.group_by=artist: the splits %s are the data set's own and stay as they are (artist overlap "
                "below); data.regroup_published=true re-splits them by artist.",
                "/".join(sorted(published)),
            )
            return samples, []
        grouped = group_split({split: samples[split] for split in made_here}, artist, self.seed)
        emptied = [split for split in made_here if samples[split] and not grouped[split]]
        if emptied:
            artists = len({artist(path) for split in made_here for path, _ in samples[split]})
            log.warning(
                "data.group_by=artist: %d artists are too few to fill the %s split(s) by artist; the splits stay "
                "stratified, without artists (overlap below).",
                artists,
                "/".join(emptied),
            )
            return samples, []
        if published:
            log.info("grouping %s by artist; the published %s split(s) stay as they are", "/".join(made_here), "/".join(sorted(published)))
        return {**samples, **grouped}, made_here

    def class_weights(self) -> list[float] | None:
        """Loss weights for ``balance="loss"``: total / (classes x count) per class, 0 for absent classes."""
        if self.balance != "loss":
            return None
        counts = Counter(self.train_labels())
        total, n = sum(counts.values()), len(self.classes)
        return [total / (n * counts[c]) if counts[c] else 0.0 for c in range(n)]

    def train_labels(self) -> list[int]:
        files = self.files
        return [label for _, label in files["train"]] if files is not None else list(self.source.split("train").labels)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        train_transform, eval_transform = build_transforms(self._preprocessing(), self.augment)
        for split in SPLITS:
            training = split == "train"
            self.datasets[split] = Transformed(self.images(split, training=training), train_transform if training else eval_transform)

    def evaluation_dataset(self, split: str) -> Transformed:
        """A split's images as training reads them, through the eval transform (train split included)."""
        return Transformed(self.images(split), build_eval_transform(self._preprocessing()))

    def _preprocessing(self) -> dict[str, Any]:
        if self.preprocessing is None:
            raise DataSetupError("PaintingDataModule needs the backbone's preprocessing to transform images: pass preprocessing=.")
        return self.preprocessing

    def images(self, split: str, use_cache: bool = True, training: bool = False) -> PaintingSplit:
        """The split's (image, label) pairs as training sees them: bad files screened out, artists
        grouped, unreadable files skipped, read from the prepared cache where it has a copy; decoded
        no smaller than the transform that reads them needs (``training``: the random crops of
        training, else an evaluation's resize; JPEG draft mode)."""
        min_size = decode_size(self.preprocessing, training) if self.preprocessing is not None else None
        files = self.files
        if files is None:
            return self.source.split(split, min_size)
        samples = self._cached(split, files[split], min_size) if use_cache and min_size else files[split]
        return ReadableFiles(samples, min_size)

    def _cached(self, split: str, samples: list[tuple[Path, int]], min_size: int) -> list[tuple[Path, int]]:
        if self.prepared_dir is None:
            return samples
        swapped, size, hits = use_cache(samples, self.prepared_dir, min_size)
        if size is not None:
            log.info("split %s: %d/%d images from the prepared cache %s", split, hits, len(samples), self.prepared_dir / f"s{size}")
        return swapped

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Training batches travel as uint8 (artmove/data/transforms.py): normalised here, on the device,
        then given the trainer's input precision (``bf16-true``…), which Lightning applies to float
        batches only, before this hook."""
        images, labels = batch
        if images.dtype == torch.uint8:
            preprocessing = self._preprocessing()
            images = normalize_uint8(images, preprocessing["mean"], preprocessing["std"])
            if self.trainer is not None:
                images = self.trainer.precision_plugin.convert_input(images)
        return images, labels

    def split_sizes(self) -> dict[str, int]:
        files = self.files
        return {split: len(files[split]) if files is not None else len(self.source.split(split)) for split in SPLITS}

    def split_dataset(self, split: str) -> Dataset:
        return self.datasets[split]

    def workers(self) -> int:
        """``data.num_workers``, with ``auto`` resolved for the processes this run starts on this node
        (one per device under DDP): they share the node's CPUs."""
        if isinstance(self.num_workers, int):  # else "auto" (checked in __init__)
            return self.num_workers
        return auto_workers(processes=self.trainer.num_devices if self.trainer is not None else 1)

    def loader_options(self) -> dict[str, Any]:
        num_workers = self.workers()
        workers = num_workers > 0
        # Persistent workers carry their random state from epoch to epoch, which no checkpoint holds:
        # under trainer.deterministic=true they restart each epoch, seeded from the main process's
        # generators (saved in checkpoints), so that a resumed run augments as an uninterrupted one.
        persistent = self.persistent_workers and workers and not torch.are_deterministic_algorithms_enabled()
        return dict(
            num_workers=num_workers,
            pin_memory=torch.cuda.is_available() if self.pin_memory == "auto" else bool(self.pin_memory),
            persistent_workers=persistent,
            prefetch_factor=self.prefetch_factor if workers else None,
        )


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection within: listing 80,000 files makes hundreds of thousands of objects
    that live on, and the collector's passes over them were a third of a second run's setup."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def auto_workers(processes: int = 1) -> int:
    """One loader worker per CPU this process may use, at most 16. ``processes`` training processes on
    one node (DDP, one per device) share its CPUs unless each is bound to its own (SLURM's
    ``--cpus-per-task`` binding, taskset): 8 ranks x 32 workers each on a 32-core node would
    oversubscribe it 8-fold and hold 8x the prefetched batches in memory."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if processes > 1 and cpus >= (os.cpu_count() or cpus):  # not bound: the node's CPUs are shared
        cpus //= processes
    return max(1, min(16, cpus))
