"""What a training run says while it runs (``conf/callbacks/default.yaml``), one class per behaviour:

- :class:`EpochLine`: one log line per epoch, in the console and in ``<run>/train.log``:
  ``epoch 3/10: train loss 1.8421, val top-1 0.4375, top-5 0.8125, lr 2.7e-03, 212 img/s, elapsed 0:04:12, left ~0:09:48``;
- :func:`progress_bar`: Lightning's bar on a terminal; elsewhere (SLURM, ``nohup``, a pipe) a
  :class:`PlainProgress`, which writes a plain log line every ``every_s`` seconds and never a carriage
  return, so a cluster's log file reads line by line.

Both log through Python's ``logging`` (``artmove.training.progress``), which Hydra sends to the console
and to ``train.log``.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from datetime import timedelta
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ProgressBar, RichProgressBar, TQDMProgressBar
from pytorch_lightning.utilities.imports import _RICH_AVAILABLE

from artmove.errors import ConfigError

log = logging.getLogger(__name__)


def on_terminal() -> bool:
    """Both standard streams are terminals: a bar redrawn in place is read by a person, not written to a file."""
    return sys.stdout.isatty() and sys.stderr.isatty()


def progress_bar(every_s: float = 30.0) -> ProgressBar:
    """On a terminal, the bar Lightning picks itself (rich when installed, else tqdm); elsewhere
    :class:`PlainProgress` every ``every_s`` seconds (0: every batch)."""
    if on_terminal():
        return RichProgressBar() if _RICH_AVAILABLE else TQDMProgressBar()
    return PlainProgress(every_s)


def duration(seconds: float) -> str:
    """``0:04:12`` (hours:minutes:seconds, whole seconds)."""
    return str(timedelta(seconds=round(max(0.0, seconds))))


def epochs_label(trainer: pl.Trainer, epoch: int) -> str:
    """``3/10`` (1-based), or ``3`` when the run has no epoch limit."""
    total = trainer.max_epochs
    return f"{epoch + 1}/{total}" if total is not None and total > 0 else str(epoch + 1)


def batch_size(batch: Any) -> int:
    """The images in a ``(inputs, labels)`` batch (cached features count as their images)."""
    inputs = batch[0] if isinstance(batch, (list, tuple)) and batch else batch
    return len(inputs) if hasattr(inputs, "__len__") else 0


class PlainProgress(ProgressBar):
    """Lightning's progress bar as plain log lines: at most one every ``every_s`` seconds while training,
    validating or testing, e.g. ``epoch 2/10: batch 120/500 (24%), loss 1.9731, 208 img/s``. It takes the
    place of Lightning's own bar (a progress bar callback), which writes carriage returns."""

    def __init__(self, every_s: float = 30.0):
        super().__init__()
        if not isinstance(every_s, (int, float)) or isinstance(every_s, bool) or not every_s >= 0:
            raise ConfigError(f"callbacks.progress.every_s={every_s!r}: give seconds >= 0 (0: a line every batch).")
        self.every_s, self.enabled = float(every_s), True
        self._last = self._started = 0.0
        self._images = 0

    def disable(self) -> None:
        self.enabled = False

    def enable(self) -> None:
        self.enabled = True

    @property
    def is_enabled(self) -> bool:
        return self.enabled

    @property
    def is_disabled(self) -> bool:
        return not self.enabled

    def _due(self) -> bool:
        now = time.monotonic()
        if self.enabled and now - self._last >= self.every_s:
            self._last = now
            return True
        return False

    def _start(self) -> None:
        self._started = self._last = time.monotonic()
        self._images = 0

    @staticmethod
    def _of(done: int, total: float) -> str:
        return f"{done}/{total} ({100 * done / total:.0f}%)" if math.isfinite(total) and total > 0 else str(done)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx: int) -> None:
        self._images += batch_size(batch)
        if not self._due():
            return
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        loss = f", loss {float(loss):.4f}" if isinstance(loss, torch.Tensor) else ""
        rate = self._images * trainer.world_size / max(time.monotonic() - self._started, 1e-9)
        log.info(
            "epoch %s: batch %s%s, %.0f img/s",
            epochs_label(trainer, trainer.current_epoch),
            self._of(batch_idx + 1, self.total_train_batches),
            loss,
            rate,
        )

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last = time.monotonic()  # a first validation line after every_s seconds of it
        self.reset_dataloader_idx_tracker()

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.has_dataloader_changed(dataloader_idx)  # what the batch totals are counted on

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        if not trainer.sanity_checking and self._due():
            log.info(
                "epoch %s: validation batch %s",
                epochs_label(trainer, trainer.current_epoch),
                self._of(batch_idx + 1, self.total_val_batches_current_dataloader),
            )

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last = time.monotonic()
        self.reset_dataloader_idx_tracker()

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.has_dataloader_changed(dataloader_idx)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        if self._due():
            log.info("test: batch %s", self._of(batch_idx + 1, self.total_test_batches_current_dataloader))


class EpochLine(pl.Callback):
    """One line per epoch (global rank 0): epoch/total, the training loss, validation top-1 and top-5, the
    learning rate (the head's: the largest of the optimizer's groups), training images per second (all
    processes), the time since this attempt started and the estimated time left (the mean epoch so
    far times the epochs to go; an upper bound when early stopping ends the run sooner)."""

    def __init__(self) -> None:
        self._fit_started = self._epoch_started = self._train_seconds = 0.0
        self._images = self._epochs = 0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._fit_started, self._epochs = time.monotonic(), 0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_started, self._images, self._train_seconds = time.monotonic(), 0, 0.0

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx: int) -> None:
        self._images += batch_size(batch)
        self._train_seconds = time.monotonic() - self._epoch_started  # training only: validation comes after

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        self._epochs += 1
        log.info(self.line(trainer))

    def line(self, trainer: pl.Trainer) -> str:
        metrics = trainer.callback_metrics
        parts = [f"epoch {epochs_label(trainer, trainer.current_epoch)}:"]
        for name, label in (("train/loss_epoch", "train loss"), ("val/loss", "val loss"), ("val/top1", "val top-1"), ("val/top5", "top-5")):
            value = metrics.get(name)
            if value is not None:
                parts.append(f"{label} {float(value):.4f},")
        rates = [group["lr"] for optimizer in trainer.optimizers for group in optimizer.param_groups if "lr" in group]
        if rates:
            parts.append(f"lr {max(rates):.1e},")
        if self._train_seconds > 0:
            parts.append(f"{self._images * trainer.world_size / self._train_seconds:.0f} img/s,")
        elapsed = time.monotonic() - self._fit_started
        parts.append(f"elapsed {duration(elapsed)}")
        total = trainer.max_epochs
        if total is not None and total > 0 and self._epochs:
            left = elapsed / self._epochs * max(0, total - trainer.current_epoch - 1)
            parts[-1] += f", left ~{duration(left)}"
        return " ".join(parts)
