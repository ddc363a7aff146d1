"""The bad-file screening's results remembered between runs, keyed by path, size and modification time.

Reading 80,000 headers takes tens of seconds at every run (and in every job of a sweep); a second
run on an unchanged set stats the files and reads this file instead. A new or changed file (other
size or mtime) is read again. Processes that start together (DDP ranks, parallel sweep jobs) take
turns on a lock: the first screens, the others find its results.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from filelock import FileLock

from artmove.data.files import FileCheck
from artmove.utils.io import fingerprint, write_text

log = logging.getLogger(__name__)
VERSION = 1


class HeaderCache:
    """``{path: [size, mtime_ns, width, height, error]}`` in one JSON file per data set root."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    @classmethod
    def for_root(cls, directory: Path, root: str) -> HeaderCache:
        name = hashlib.sha256(os.path.abspath(os.path.expanduser(root)).encode()).hexdigest()[:16]
        return cls(directory / "headers" / f"{name}.json")

    def checks(self, paths: Sequence[Path], check: Callable[[Sequence[Path]], list[FileCheck]]) -> list[FileCheck]:
        """Each file's check, in order: remembered when its size and mtime are unchanged, else ``check``ed (and remembered)."""
        with self._lock():
            known = self._load()
            stats = [_stat(path) for path in paths]
            results: list[FileCheck | None] = [None] * len(paths)
            for i, (path, stat) in enumerate(zip(paths, stats, strict=True)):
                entry = known.get(str(path))
                if stat is not None and entry is not None and tuple(entry[:2]) == stat:
                    width, height, error = entry[2:]
                    results[i] = FileCheck(path, (width, height) if width is not None else None, error)
            todo = [i for i, result in enumerate(results) if result is None]
            for i, result in zip(todo, check([paths[i] for i in todo]), strict=True):
                results[i] = result
                stat = stats[i]
                if stat is not None:  # a missing file is not remembered
                    known[str(paths[i])] = [*stat, *(result.size or (None, None)), result.error]
            if todo:
                self._save(known)
            log.info("file screening: %d headers remembered in %s, %d read", len(paths) - len(todo), self.path, len(todo))
            return [result for result in results if result is not None]  # all of them: ``check`` filled the gaps

    def _load(self) -> dict[str, list]:
        try:
            saved = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return saved.get("files", {}) if isinstance(saved, dict) and saved.get("version") == VERSION else {}

    def _save(self, known: dict[str, list]) -> None:
        try:
            write_text(self.path, json.dumps({"version": VERSION, "files": known}))
        except OSError as error:  # a read-only cache folder costs speed, not the run
            log.warning("file screening results not remembered (%s): the next run reads the headers again", error)

    @contextlib.contextmanager
    def _lock(self):
        """Processes starting together take turns; a read-only cache folder only costs the speed-up."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            lock = FileLock(self.path.with_suffix(".lock"))
            lock.acquire()
        except OSError:
            yield
            return
        try:
            yield
        finally:
            lock.release()


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        return fingerprint(os.stat(path))
    except OSError:
        return None
