"""Deterministic splits: stratified by class, and optionally keeping each artist in one split.

Everything here depends only on file names, labels and the seed (string seeds, sorted
inputs), so a split is identical across processes, machines and Python hash seeds.
"""

from __future__ import annotations

import os
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import cast

Sample = tuple[Path, int]


def artist_from_filename(path: Path) -> str:
    """WikiArt's and RASTA's file names start with the artist: ``claude-monet_seascape-1.jpg``."""
    return (path.name if isinstance(path, Path) else os.path.basename(path)).split("_", 1)[0]


def _names_someone(prefix: str) -> bool:
    """A prefix can be a name: it has letters and at most half of its characters are digits."""
    digits = sum(c.isdigit() for c in prefix)
    return any(c.isalpha() for c in prefix) and digits * 2 <= len(prefix)


def filename_artists_unclear(paths: Sequence[Path]) -> str | None:
    """Why the file names' prefixes (before the first ``_``) cannot be artists, or None when they can.

    The rule: at least 90 % of the files have a prefix with letters and at most half digits
    (``claude-monet_…``, not ``20230612_…`` or ``scan12.jpg``); no prefix starts more than half of
    the file names (a camera's ``IMG_``/``DSC_``, not a painter); and some prefix starts two of
    them (one file per prefix groups nothing: titles, not artists).
    """
    paths = list(paths)
    if not paths:
        return "no image files"
    names = [Path(p).name for p in paths]
    prefixes = [name.split("_", 1)[0] for name in names if "_" in name and _names_someone(name.split("_", 1)[0])]
    if len(prefixes) < 0.9 * len(names):
        example = next(name for name in names if "_" not in name or not _names_someone(name.split("_", 1)[0]))
        return f"{len(names) - len(prefixes)} of {len(names)} file names do not start with an artist's name and '_' (e.g. {example})"
    counts = Counter(prefixes)
    top, held = counts.most_common(1)[0]
    if len(names) >= 4 and held * 2 > len(names):
        return f"one prefix, {top!r}, starts {held} of {len(names)} file names (a camera's or a batch's, not an artist's)"
    if len(names) >= 4 and held == 1:
        return f"every file name has its own prefix ({len(names)} files): no artist has two paintings"
    return None


def artist_lookup(named: Callable[[Path], str | None] | None, paths: Sequence[Path]) -> tuple[Callable[[Path], str] | None, str | None]:
    """How to tell each file's artist: the data set's own record (``named``, e.g. an artist column or
    Pandora's folders) where it has one for every file, else the file name's prefix when
    :func:`filename_artists_unclear` finds nothing wrong. Returns (artist of a path, None) or
    (None, why the artists cannot be told)."""
    if named is not None and all(named(p) for p in paths):
        return cast("Callable[[Path], str]", named), None  # a name for every file: checked just above
    reason = filename_artists_unclear(paths)
    if reason:
        return None, reason
    if named is None:
        return artist_from_filename, None
    return (lambda path: named(path) or artist_from_filename(path)), None


def stratified_split(per_class: dict[int, list[Path]], val_fraction: float, test_fraction: float, seed: int) -> dict[str, list[Sample]]:
    """Shuffle each class's sorted files with ``seed`` and cut val/test/train by fractions.

    Deterministic across processes and machines: it depends only on the file names and seed.
    Every class with at least 3 images gets at least one val and one test image.
    """
    splits: dict[str, list[Sample]] = {"train": [], "val": [], "test": []}
    for label, paths in sorted(per_class.items()):
        shuffled = sorted(paths)
        random.Random(f"{seed}-{label}").shuffle(shuffled)
        n = len(shuffled)
        n_val = max(1, round(n * val_fraction)) if val_fraction > 0 and n >= 3 else 0
        n_test = max(1, round(n * test_fraction)) if test_fraction > 0 and n >= 3 else 0
        splits["val"] += [(p, label) for p in shuffled[:n_val]]
        splits["test"] += [(p, label) for p in shuffled[n_val : n_val + n_test]]
        splits["train"] += [(p, label) for p in shuffled[n_val + n_test :]]
    return splits


def by_class(samples: Sequence[Sample]) -> dict[int, list[Path]]:
    per_class: dict[int, list[Path]] = defaultdict(list)
    for path, label in samples:
        per_class[label].append(path)
    return dict(per_class)


def group_split(samples: Mapping[str, Sequence[Sample]], group_of: Callable[[Path], str], seed: int) -> dict[str, list[Sample]]:
    """Re-split ``samples`` so that every group (artist) lies in exactly one split.

    The per-class sizes of the given split are the targets: whole groups are assigned,
    largest first (ties in a seeded order), each to the split where it least increases
    the squared relative deviation from those targets. Stratification is close to exact
    when artists are small, approximate when one artist holds a large share of a class.
    """
    names = list(samples)
    targets = {s: Counter(label for _, label in samples[s]) for s in names}
    groups: dict[str, list[Sample]] = defaultdict(list)
    for path, label in sorted(sample for split in samples.values() for sample in split):
        groups[group_of(path)].append((path, label))
    order = sorted(groups)
    random.Random(f"{seed}-groups").shuffle(order)
    order.sort(key=lambda g: -len(groups[g]))  # stable: the seeded order breaks ties

    assigned: dict[str, Counter[int]] = {s: Counter() for s in names}
    result: dict[str, list[Sample]] = {s: [] for s in names}
    for group in order:
        counts = Counter(label for _, label in groups[group])

        def cost(split: str, counts: Counter[int] = counts) -> tuple[float, int]:
            # growth of sum_c (assigned - target)^2 / target if the group joins this split
            growth = sum(n * (2 * (assigned[split][c] - targets[split][c]) + n) / max(targets[split][c], 0.5) for c, n in counts.items())
            return growth, names.index(split)

        best = min(names, key=cost)
        assigned[best].update(counts)
        result[best] += groups[group]
    return result


def split_summary(samples: Mapping[str, Sequence[Sample]], group_of: Callable[[Path], str]) -> dict[str, dict[str, int]]:
    """Images, artists and classes per split (for the run log)."""
    return {
        split: {
            "images": len(items),
            "artists": len({group_of(path) for path, _ in items}),
            "classes": len({label for _, label in items}),
        }
        for split, items in samples.items()
    }


def artist_overlap(samples: Mapping[str, Sequence[Sample]], artist_of: Callable[[Path], str]) -> dict[str, dict[str, float | int]]:
    """For val and test: their artists, how many of them also paint in train, their images, and the
    images by those shared artists (count and share): the leak that lets a model learn painters."""
    train_artists = {artist_of(path) for path, _ in samples.get("train", [])}
    overlap = {}
    for split in ("val", "test"):
        items = samples.get(split, [])
        artists = {artist_of(path) for path, _ in items}
        leaked = sum(1 for path, _ in items if artist_of(path) in train_artists)
        overlap[split] = {
            "artists": len(artists),
            "artists_in_train": len(artists & train_artists),
            "images": len(items),
            "images_by_train_artists": leaked,
            "share": round(leaked / len(items), 4) if items else 0.0,
        }
    return overlap


def describe_overlap(split: str, row: Mapping[str, float | int]) -> str:
    """One line: ``test: 5 of 12 artists also in train, with 20 of 40 images (50.0 %)``."""
    return (
        f"{split}: {row['artists_in_train']} of {row['artists']} artists also in train, with "
        f"{row['images_by_train_artists']} of {row['images']} images ({100 * row['share']:.1f} %)"
    )


def shared_groups(samples: Mapping[str, Sequence[Sample]], group_of: Callable[[Path], str]) -> set[str]:
    """Groups (artists) that appear in more than one split."""
    seen: dict[str, set[str]] = defaultdict(set)
    for split, items in samples.items():
        for path, _ in items:
            seen[group_of(path)].add(split)
    return {group for group, splits in seen.items() if len(splits) > 1}
