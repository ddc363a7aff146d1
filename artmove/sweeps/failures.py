"""A job that fails leaves its error in its folder; a diverged loss is a failure, not a result."""

from __future__ import annotations

import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from artmove.reporting import write_json

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
    """Stop at the first NaN/inf training loss with an error (all ranks together under DDP).

    Training on would only produce a meaningless checkpoint that a sweep ranks like any other.
    """

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if not isinstance(loss, torch.Tensor):
            return
        diverged = not bool(torch.isfinite(loss.detach()).all())
        if trainer.world_size > 1:
            diverged = trainer.strategy.reduce_boolean_decision(diverged, all=False)
        if diverged:
            raise NonFiniteLossError(
                f"the training loss is {loss.item()} at epoch {trainer.current_epoch}, step {trainer.global_step}: "
                "lower optimizer.lr (or check the data); this job stops here."
            )
