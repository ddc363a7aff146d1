"""Checkpoint files on disk: written atomically, read without unpickling anything but tensors.

Lightning's default writer builds the file in ``$TMPDIR`` and, when that is another file system
(a local /tmp, a run folder on NFS or Lustre), copies it into place: a full disk or a kill then
leaves a truncated ``last.ckpt`` as the only copy. :class:`AtomicCheckpointIO` writes beside the
target and renames, so the previous checkpoint stays until the new one is complete.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pickle
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO

PARTIAL_SUFFIX = ".tmp"


class DiskFullError(OSError):
    """A checkpoint did not fit on its disk (a user error: one line, the previous checkpoint kept)."""

    def __str__(self) -> str:
        return self.strerror


#: Free space below which a failed checkpoint write is reported as a full disk.
DISK_FULL_BYTES = 4 * 2**20


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write ``<dir>/.<name>.XXXX.tmp``, fsync it, rename it over ``<name>``, fsync the folder."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options (got {storage_options!r})")
        path = Path(path).absolute()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=PARTIAL_SUFFIX, dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600
            os.replace(tmp, path)
        except BaseException as error:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            if not isinstance(error, Exception):
                raise
            free = shutil.disk_usage(path.parent).free
            if free < DISK_FULL_BYTES or (isinstance(error, OSError) and error.errno == errno.ENOSPC):
                # torch's zip writer reports a short write as "unexpected pos …": say what happened.
                raise DiskFullError(errno.ENOSPC, f"No space left on device for {path} ({free / 2**20:.1f} MiB free); "
                              f"the previous {path.name} is kept: free some space and rerun the same command "
                              "(resume=true continues from the last checkpoint)") from error  # fmt: skip
            raise
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)  # the rename itself survives a crash
        finally:
            os.close(folder)


def remove_partial_writes(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files a killed writer left in ``folder`` (``.<name>.XXXX.tmp``)."""
    folder = Path(folder)
    partial = sorted(folder.glob(f".*.ckpt.*{PARTIAL_SUFFIX}")) if folder.is_dir() else []
    for path in partial:
        path.unlink(missing_ok=True)
    return partial


def _umask() -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    return 0o022


class UnreadableCheckpoint(ValueError):
    """A file that is not a checkpoint this project can load safely."""


def load_checkpoint_file(path: str | os.PathLike) -> Any:
    """``torch.load`` with ``weights_only=True`` (tensors and plain containers only: a pickled object
    that would run code is refused, never executed). Raises UnreadableCheckpoint saying why, in words."""
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UnreadableCheckpoint(f"{path}: no such file") from None
    except Exception as error:  # noqa: BLE001 - every way a file can fail to be a checkpoint
        raise UnreadableCheckpoint(f"{path} is not a readable checkpoint: {why_unreadable(path, error)}") from error


def why_unreadable(path: Path, error: Exception) -> str:
    size = path.stat().st_size if path.is_file() else 0
    if size == 0:
        return "the file is empty (a write that never finished)"
    if isinstance(error, pickle.UnpicklingError) and re.search(r"GLOBAL|global", str(error)):
        return "it holds Python objects besides tensors, refused because unpickling them could run code"
    with path.open("rb") as file:
        zip_archive = file.read(4) == b"PK\x03\x04"  # how every torch.save file (since torch 1.6) starts
    if zip_archive or isinstance(error, EOFError):
        return f"the file ({size} bytes) is truncated or damaged"
    return f"the file ({size} bytes) is not a PyTorch checkpoint"
