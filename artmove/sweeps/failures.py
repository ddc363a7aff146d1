"""A job that fails leaves its error in its folder; a diverged loss is a failure, not a result."""

from __future__ import annotations

import math
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from artmove.results import write_json

TRACEBACK_FILE = "traceback.txt"


def job_settings(cfg: DictConfig) -> dict[str, Any]:
    """The settings that tell jobs of a sweep apart (read defensively: the config may be the error)."""
    settings = {key: OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False)
                for key in ("backbone", "unfreeze", "pretrained", "seed", "data.root")}  # fmt: skip
    source = OmegaConf.select(cfg, "data.source._target_", default=None, throw_on_resolution_failure=False)
    return {**settings, "data": {"source": source, "root": settings.pop("data.root")}, "overrides": job_overrides()}


def job_overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def record_failure(output_dir: Path, error: BaseException, cfg: DictConfig) -> Path:
    """Write ``results.json`` with ``"status": "failed"`` and the error, and the traceback beside it."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / TRACEBACK_FILE).write_text("".join(traceback.format_exception(error)), encoding="utf-8")
    results = {
        "status": "failed",
        "error": f"{type(error).__name__}: {error}",
        "traceback": TRACEBACK_FILE,
        **job_settings(cfg),
        "output_dir": str(output_dir),
    }
    write_json(output_dir / "results.json", results)
    return output_dir / "results.json"


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


class FailOnNonFiniteLoss(pl.Callback):
    """Stop with an error once the training loss has been NaN/inf (all ranks together under DDP).

    Training on would only produce a meaningless checkpoint that a sweep ranks like any other.
    The loss stays on the device between checks: reading it (a GPU sync, and an all-reduce under
    DDP) happens every ``trainer.log_every_n_steps`` steps, at each epoch's last batch and when
    training ends.
    """

    def __init__(self) -> None:
        self.first_bad: torch.Tensor | None = None  # the latest loss, or the first non-finite one since the last check

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if not isinstance(loss, torch.Tensor):
            return
        loss = loss.detach()
        seen = self.first_bad
        self.first_bad = loss if seen is None else torch.where(torch.isfinite(seen), loss, seen)
        if (batch_idx + 1) % max(1, trainer.log_every_n_steps) == 0 or trainer.is_last_batch:
            self.check(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module) -> None:
        if self.first_bad is not None:  # training stopped between checks (max_steps, max_time, early stop)
            self.check(trainer)

    def check(self, trainer: pl.Trainer) -> None:
        value, self.first_bad = float(self.first_bad), None
        diverged = not math.isfinite(value)
        if trainer.world_size > 1:
            diverged = trainer.strategy.reduce_boolean_decision(diverged, all=False)
        if diverged:
            what = f"is {value}" if not math.isfinite(value) else "is not finite on another process"
            raise NonFiniteLossError(
                f"the training loss {what} by epoch {trainer.current_epoch}, step {trainer.global_step}: "
                "lower optimizer.lr (or check the data); this job stops here."
            )
