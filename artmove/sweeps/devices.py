"""One GPU slot per worker when a sweep runs its jobs in parallel on one machine.

With ``hydra/launcher=local_gpus`` (Hydra's joblib launcher) every worker process takes a
free slot of ``devices_per_job`` GPUs the first time it runs a job, holds it for its life
(an exclusive lock file in ``<sweep>/.device_slots/``) and sees only those GPUs
(``CUDA_VISIBLE_DEVICES``, set before CUDA starts in that process). ``n_jobs`` defaults to
``${gpu_slots:devices_per_job}``, the number of slots, so there are never more workers than slots.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)
_claimed: tuple[IO, str] | None = None  # this process's slot: (open lock file, GPU ids)


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES spells them (indices or UUIDs)."""
    mask = os.environ.get("CUDA_VISIBLE_DEVICES")
    if mask is not None:
        return [gpu.strip() for gpu in mask.split(",") if gpu.strip() and gpu.strip() != "-1"]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def gpu_slots(gpus: Sequence[str], devices_per_job: int = 1) -> list[str]:
    """Disjoint groups of ``devices_per_job`` GPUs: ["0", "1", "2", "3"], 2 -> ["0,1", "2,3"] (leftovers unused)."""
    if devices_per_job < 1:
        raise ValueError(f"devices_per_job={devices_per_job} must be at least 1")
    count = len(gpus) // devices_per_job
    return [",".join(gpus[i * devices_per_job : (i + 1) * devices_per_job]) for i in range(count)]


def claim_slot(lock_dir: Path, slots: Sequence[str], timeout_s: float = 600.0, poll_s: float = 1.0) -> str:
    """This process's slot: the one it holds already, else the first free one (waiting up to ``timeout_s``)."""
    global _claimed
    if _claimed is not None:
        return _claimed[1]
    lock_dir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_s
    while True:
        for index, slot in enumerate(slots):
            # no `with`: the open file is the lock, held until this process ends
            handle = open(lock_dir / f"slot{index}.lock", "w")  # noqa: SIM115 - closed only by the process's exit
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            _claimed = (handle, slot)  # the lock lasts as long as this process
            return slot
        if time.monotonic() > deadline:
            raise TimeoutError(f"no free GPU slot among {list(slots)} after {timeout_s:.0f} s (locks in {lock_dir})")
        time.sleep(poll_s)


class DeviceSlots(Callback):
    """Hydra callback: with the joblib launcher, give each worker process its own GPU slot."""

    def __init__(self, devices_per_job: int = 1):
        self.devices_per_job = devices_per_job
        self.slots: list[str] = []
        self.lock_dir: Path | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if "joblib" not in str(OmegaConf.select(config, "hydra.launcher._target_", default="")):
            return
        self.slots = gpu_slots(visible_gpus(), self.devices_per_job)
        self.lock_dir = Path(config.hydra.sweep.dir) / ".device_slots"
        if self.slots:
            log.info("parallel sweep: GPU slots %s (one per worker process)", self.slots)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not self.slots or self.lock_dir is None:
            return
        slot = claim_slot(self.lock_dir, self.slots)
        os.environ["CUDA_VISIBLE_DEVICES"] = slot
        log.info("job %s runs on GPU(s) %s (worker process %d)", OmegaConf.select(config, "hydra.job.num"), slot, os.getpid())


def _slot_count(devices_per_job: int = 1) -> int:
    return max(1, len(gpu_slots(visible_gpus(), int(devices_per_job))))


if not OmegaConf.has_resolver("gpu_slots"):
    OmegaConf.register_new_resolver("gpu_slots", _slot_count)
