"""A resized copy of a data set, keyed by source path and fingerprint (size and modification time).

``prepared_dir/s<size>/<ab>/<sha1>.npy`` (or ``.jpg``) holds the painting with its short side
shrunk to ``size`` (never enlarged). A changed or moved original gets a new key, so a stale
copy is never used; an original without a copy is read as it is.

Two formats: ``npy`` keeps the decoded uint8 pixels (nothing to decode when training: the
fastest, ~270 KB per 256 px painting); ``jpeg`` (quality 90) is ~9x smaller on disk but is
decoded at every read (benchmarks/results/loader.json).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from artmove.data.images import load_rgb
from artmove.utils.io import atomic_write, fingerprint

Sample = tuple[Path, int]
FORMATS = {"npy": ".npy", "jpeg": ".jpg"}  # looked up in this order


def cache_path(prepared_dir: Path, source: Path, size: int, fmt: str = "npy") -> Path:
    file_size, mtime_ns = fingerprint(source.stat())
    key = hashlib.sha1(os.fsencode(source.resolve()) + f"|{size}|{file_size}|{mtime_ns}".encode()).hexdigest()  # any name's bytes
    return Path(prepared_dir) / f"s{size}" / key[:2] / f"{key}{FORMATS[fmt]}"


def write_resized(source: Path, target: Path, size: int, quality: int = 90) -> None:
    """Decode (JPEG draft mode first), shrink the short side to ``size`` with Lanczos, save atomically
    as a uint8 array (``.npy`` target) or a JPEG."""
    image = load_rgb(source, min_size=size)
    scale = size / min(image.size)
    if scale < 1:
        new_size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(new_size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    with atomic_write(target, "wb") as file:
        if target.suffix == ".npy":
            np.save(file, np.asarray(image))
        else:
            image.save(file, "JPEG", quality=quality)


def prepared_sizes(prepared_dir: Path) -> list[int]:
    root = Path(prepared_dir)
    if not root.is_dir():
        return []
    return sorted(int(p.name[1:]) for p in root.iterdir() if p.is_dir() and p.name[:1] == "s" and p.name[1:].isdigit())


def use_cache(samples: Sequence[Sample], prepared_dir: Path, min_size: int) -> tuple[list[Sample], int | None, int]:
    """Swap each original for its cached copy where one exists.

    Uses the smallest prepared size that is at least ``min_size`` (what the transforms
    decode). Returns (samples, size used or None, number of copies used).
    """
    size = next((s for s in prepared_sizes(prepared_dir) if s >= min_size), None)
    if size is None:
        return list(samples), None, 0

    def current_copy(path: Path) -> Path | None:
        key = cache_path(prepared_dir, path, size)  # one stat and hash per file, whatever the format
        copies = (key.with_suffix(suffix) for suffix in FORMATS.values())
        return next((c for c in copies if c.is_file()), None)

    # A few stat calls per file: threads overlap them, which counts on network file systems.
    with ThreadPoolExecutor(16) as pool:
        copies = list(pool.map(current_copy, [path for path, _ in samples], chunksize=256))
    swapped = [(copy or path, label) for copy, (path, label) in zip(copies, samples, strict=True)]
    return swapped, size, sum(copy is not None for copy in copies)
