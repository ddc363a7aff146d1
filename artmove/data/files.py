"""Between a file-based source and the loaders: bad-file screening and skipping unreadable images."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from artmove.data.images import UnreadableImageError, load_image, load_rgb, open_image
from artmove.data.sources.base import LabelledFiles
from artmove.errors import DataSetupError

log = logging.getLogger(__name__)
Sample = tuple[Path, int]


@dataclass(frozen=True)
class FileCheck:
    path: Path
    size: tuple[int, int] | None  # (width, height) when readable
    error: str | None = None


def check_file(path: Path, decode: bool = False) -> FileCheck:
    """Read the header (fast: finds empty, non-image and unknown files) or decode it all (finds truncation too)."""
    try:
        if path.stat().st_size == 0:
            return FileCheck(path, None, "empty file (0 bytes)")
        if decode:
            with open_image(path) as image:
                size = image.size
            load_rgb(path, min_size=64)
            return FileCheck(path, size)
        with open_image(path) as image:
            return FileCheck(path, image.size)
    except UnreadableImageError as error:
        return FileCheck(path, None, str(error.__cause__ or error))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        return FileCheck(path, None, f"{type(error).__name__}: {error}")


def check_files(paths: Sequence[Path], workers: int = 8) -> list[FileCheck]:
    """Each file's header, in order (threads overlap the reads)."""
    with ThreadPoolExecutor(max(1, workers)) as pool:
        return list(pool.map(check_file, paths, chunksize=64))


def screen(
    samples: Mapping[str, Sequence[Sample]], max_bad_fraction: float, where: str, extra_bad: Sequence[Path] = (), cache=None
) -> tuple[dict[str, list[Sample]], list[FileCheck]]:
    """Drop the files whose header cannot be read; stop when more than ``max_bad_fraction`` are bad.

    ``extra_bad`` are files the source listed but could not find (counted as bad too). ``cache``
    (an :class:`artmove.data.header_cache.HeaderCache`) remembers the checks of unchanged files
    between runs. Returns the kept samples and every file's check (size when readable, error when not).
    """
    paths = [path for split in samples.values() for path, _ in split]
    checked = cache.checks(paths, check_files) if cache is not None else check_files(paths)
    checks = checked + [FileCheck(Path(p), None, "listed but missing") for p in extra_bad]
    bad = [check for check in checks if check.error]
    total = len(checks)
    if bad and len(bad) > max_bad_fraction * total:
        shown = "; ".join(f"{c.path} ({c.error})" for c in bad[:5])
        raise DataSetupError(
            f"{len(bad)} of {total} image files in {where} cannot be read ({100 * len(bad) / total:.1f}%, "
            f"more than data.max_bad_fraction={max_bad_fraction}): {shown}{' ...' if len(bad) > 5 else ''}. "
            "List them all with `python -m artmove.data.verify`, then fix or remove them, "
            "or raise data.max_bad_fraction."
        )
    names = {check.path for check in bad}
    kept = {split: [s for s in items if s[0] not in names] for split, items in samples.items()}
    return kept, checks


class ReadableFiles(LabelledFiles):
    """Like :class:`LabelledFiles`, but an image that fails to decode mid-epoch is logged by name
    and replaced by the next readable one, so one truncated file never stops training."""

    def __getitem__(self, index: int):
        for offset in range(len(self.samples)):
            path, label = self.samples[(index + offset) % len(self.samples)]
            try:
                return load_image(path, self.min_image_size), label
            except UnreadableImageError as error:
                log.warning("skipped unreadable image (replaced by the next one): %s", error)
        raise DataSetupError(
            f"no image of this split can be read (first: {self.samples[0][0]}): check the files with `python -m artmove.data.verify`."
        )
