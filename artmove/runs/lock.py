"""A run folder is one run's: ``<run>/.lock`` names the process that owns it.

Taken by a Hydra callback when a single run starts, before Hydra writes anything into the folder
(its ``.hydra/`` configs, the log): a second run into the same folder stops there with one line
and leaves the first one's files alone. A lock whose owner is gone (same host, dead process or a
reused pid; or an earlier attempt of the same SLURM job, e.g. a requeue) is taken over.
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

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

LOCK_FILE = ".lock"


class RunFolderInUse(RuntimeError):
    """Another live run owns the folder."""


def _started(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc/<pid>/stat field 22): a reused pid differs."""
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return None


def _owner_alive(owner: dict[str, Any]) -> bool:
    if owner.get("host") != socket.gethostname():  # cannot look: alive, unless it is this SLURM job's earlier attempt
        job = os.environ.get("SLURM_JOB_ID")
        return not (job and owner.get("slurm_job") == job)
    pid = int(owner.get("pid", -1))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return owner.get("start") in (None, _started(pid))


class RunLock:
    def __init__(self, folder: str | os.PathLike):
        self.path = Path(folder) / LOCK_FILE
        self.mine: dict[str, Any] | None = None

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "start": _started(os.getpid()),
              "slurm_job": os.environ.get("SLURM_JOB_ID"), "since": time.strftime("%Y-%m-%d %H:%M:%S")}  # fmt: skip
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                owner = self._read()
                if owner is None:  # being written right now: look again
                    time.sleep(0.05)
                    owner = self._read()
                mine_before = owner and owner.get("pid") == os.getpid() and owner.get("host") == me["host"]
                if owner and _owner_alive(owner) and not mine_before:  # an earlier run of this process: done
                    raise RunFolderInUse(
                        f"run folder {self.path.parent} is in use by pid {owner.get('pid')} on {owner.get('host')} since "
                        f"{owner.get('since')}: choose another hydra.run.dir (or delete {self.path} if that run is gone)."
                    ) from None
                self._break(owner)
                continue
            with os.fdopen(fd, "w") as file:
                json.dump(me, file)
                file.flush()
                os.fsync(file.fileno())
            self.mine = me
            return self
        raise RunFolderInUse(f"could not take {self.path}: other processes keep taking it.")

    def release(self) -> None:
        if self.mine is not None and self._read() == self.mine:
            self.path.unlink(missing_ok=True)
        self.mine = None

    def _read(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    def _break(self, judged: dict[str, Any] | None) -> None:
        """Remove the stale lock, unless another process replaced it meanwhile (rename first: one breaker wins)."""
        aside = self.path.with_name(f"{LOCK_FILE}.stale.{os.getpid()}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        try:
            if judged is not None and json.loads(aside.read_text()) != judged:
                os.link(aside, self.path)  # a new owner's lock: put it back
        except (OSError, ValueError):
            pass
        aside.unlink(missing_ok=True)


class LockRunFolder(Callback):
    """Hydra callback (``hydra.callbacks``): a single run locks ``hydra.run.dir`` on global rank 0."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        from pytorch_lightning.utilities import rank_zero_only

        if rank_zero_only.rank != 0:  # DDP ranks > 0 re-run the command line into the same folder
            return
        folder = OmegaConf.select(config, "hydra.run.dir")  # ${now:…} is cached: the folder run_job makes
        try:
            lock = RunLock(folder).acquire()
        except RunFolderInUse as error:
            print(f"artmove: error: {error}", file=sys.stderr)
            raise SystemExit(2) from None
        self.lock = lock
        atexit.register(lock.release)  # also after an exception or SystemExit

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        lock = getattr(self, "lock", None)
        if lock is not None:
            lock.release()
