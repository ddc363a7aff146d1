"""Deterministic splits: stratified by class, and optionally keeping each artist in one split.

Everything here depends only on file names, labels and the seed (string seeds, sorted
inputs), so a split is identical across processes, machines and Python hash seeds.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

Sample = tuple[Path, int]


def artist_from_filename(path: Path) -> str:
    """WikiArt's and RASTA's file names start with the artist: ``claude-monet_seascape-1.jpg``."""
    return Path(path).name.split("_", 1)[0]


def stratified_split(
    per_class: dict[int, list[Path]], val_fraction: float, test_fraction: float, seed: int
) -> dict[str, list[Sample]]:
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


def group_split(
    samples: Mapping[str, Sequence[Sample]], group_of: Callable[[Path], str], seed: int
) -> dict[str, list[Sample]]:
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

    assigned = {s: Counter() for s in names}
    result: dict[str, list[Sample]] = {s: [] for s in names}
    for group in order:
        counts = Counter(label for _, label in groups[group])

        def cost(split: str) -> tuple[float, int]:
            # growth of sum_c (assigned - target)^2 / target if the group joins this split
            growth = sum(
                n * (2 * (assigned[split][c] - targets[split][c]) + n) / max(targets[split][c], 0.5)
                for c, n in counts.items()
            )
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


def shared_groups(samples: Mapping[str, Sequence[Sample]], group_of: Callable[[Path], str]) -> set[str]:
    """Groups (artists) that appear in more than one split."""
    seen: dict[str, set[str]] = defaultdict(set)
    for split, items in samples.items():
        for path, _ in items:
            seen[group_of(path)].add(split)
    return {group for group, splits in seen.items() if len(splits) > 1}
