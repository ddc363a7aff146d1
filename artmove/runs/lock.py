"""A run folder is one run's, and a sweep folder one sweep's: ``<folder>/.lock`` is held (``filelock``,
released when its process ends, however it ends) for as long as the run or the sweep lives.

Taken by a Hydra callback when a single run starts, before Hydra writes anything into the folder
(its ``.hydra/`` configs, the log): a second run into the same folder stops there with one line and
leaves the first one's files alone. A requeued SLURM job, or a rerun after a crash, finds the lock
free: its owner is gone.
"""

from __future__ import annotations

import atexit
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from artmove.runs.folder import LOCK_FILE


class RunFolderInUse(RuntimeError):
    """Another live run owns the folder."""


def lock_folder(folder: str | os.PathLike[str]) -> FileLock:
    """Hold ``<folder>/.lock``, or raise RunFolderInUse naming its owner (pid, host, since: written beside
    it for that message). This process holding it already (an earlier run of it) takes it again."""
    folder = Path(folder).absolute()
    folder.mkdir(parents=True, exist_ok=True)
    lock, owner = FileLock(folder / LOCK_FILE, is_singleton=True, thread_local=False), folder / f"{LOCK_FILE}.owner"
    try:
        lock.acquire(timeout=0)
    except Timeout:
        try:
            who = json.loads(owner.read_text())
            by = f" by pid {who['pid']} on {who['host']} since {who['since']}"
        except (OSError, ValueError, KeyError, TypeError):
            by = ""
        raise RunFolderInUse(
            f"folder {folder} is in use{by}: choose another hydra.run.dir (or hydra.sweep.dir), or wait for that run to end."
        ) from None
    owner.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}))
    return lock


#: The locks this process holds (kept here, not on the callback: Hydra's launchers pickle their callbacks).
HELD: list[FileLock] = []


def release_held() -> None:
    """Release every run or sweep lock this process holds: at exit, however the command ended."""
    while HELD:
        HELD.pop().release(force=True)


atexit.register(release_held)


class LockRunFolder(Callback):
    """Hydra callback (``hydra.callbacks``): a single run locks ``hydra.run.dir`` on global rank 0, and a
    sweep its ``hydra.sweep.dir`` (each job then has a folder of its own inside it)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        from pytorch_lightning.utilities import rank_zero_only

        # Lightning sets ``rank`` on the function at import; its types do not declare it.
        if rank_zero_only.rank == 0:  # type: ignore[attr-defined]  # DDP ranks > 0 re-run the command line into the same folder
            self._lock(OmegaConf.select(config, "hydra.run.dir"))  # ${now:…} is cached: the folder run_job makes

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._lock(OmegaConf.select(config, "hydra.sweep.dir"))

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        release_held()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        release_held()

    @staticmethod
    def _lock(folder: str) -> None:
        try:
            HELD.append(lock_folder(folder))
        except RunFolderInUse as error:
            print(f"artmove: error: {error}", file=sys.stderr)
            raise SystemExit(2) from None
