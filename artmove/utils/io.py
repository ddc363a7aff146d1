"""Files on disk: written whole or not at all, fingerprinted by size and modification time, and
checkpoints read without unpickling anything but tensors."""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from artmove.errors import UnreadableCheckpoint

PARTIAL_SUFFIX = ".tmp"


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", durable: bool = False, **open_args: Any) -> Iterator[IO]:
    """Write ``.<name>.XXXX.tmp`` beside ``path`` and rename it into place: a reader, a crash or a full
    disk sees the old file or the new one, never half of one. ``durable``: fsync the file and the
    folder too (checkpoints: the rename survives a power cut)."""
    path = Path(path).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=PARTIAL_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, mode, **open_args) as handle:
            yield handle
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


def remove_partial_writes(folder: str | os.PathLike, pattern: str = "*") -> list[Path]:
    """Delete the temporary files a killed writer left in ``folder`` (``.<name>.XXXX.tmp`` for names matching ``pattern``)."""
    folder = Path(folder)
    partial = sorted(folder.glob(f".{pattern}.*{PARTIAL_SUFFIX}")) if folder.is_dir() else []
    for path in partial:
        path.unlink(missing_ok=True)
    return partial


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_write(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    return Path(path)


def write_json(path: str | os.PathLike, payload: Any) -> Path:
    """Indented JSON, written atomically. A file name that is not UTF-8 (Python keeps its bytes as lone
    surrogates) is written as a JSON escape (``\\udce9``) and reads back as it was."""
    text = json.dumps(payload, indent=2, ensure_ascii=False, default=str) + "\n"
    return write_text(path, text.encode("utf-8", "backslashreplace").decode("utf-8"))


def fingerprint(stat: os.stat_result) -> tuple[int, int]:
    """What tells a file's versions apart without reading it: (size in bytes, modification time in ns)."""
    return stat.st_size, stat.st_mtime_ns


def _umask() -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    return 0o022


def read_checkpoint(path: str | os.PathLike) -> Any:
    """``torch.load`` with ``weights_only=True`` (tensors and plain containers only: a pickled object
    that would run code is refused, never executed). Raises UnreadableCheckpoint saying why, in words."""
    import torch

    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UnreadableCheckpoint(f"{path}: no such file") from None
    except Exception as error:  # every way a file can fail to be a checkpoint (re-raised as one error)
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


def printable(text: str) -> str:
    """A file name as valid UTF-8 text: bytes that are not UTF-8 (legal in Linux names, kept by Python as
    surrogates) shown as ``\\xe9``, so strict readers (pandas, spreadsheets) can open the file."""
    return os.fsencode(text).decode("utf-8", "backslashreplace")
