"""The figures a run folder gets as the run ends (``conf/callbacks/default.yaml``), one class per figure:
``curves.png`` (:class:`LearningCurves`) and the test confusion matrix (:class:`ConfusionMatrixFigure`).

A figure is never worth a run: one that cannot be drawn is a warning in the log, and the run's results
stand. Global rank 0 writes them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger

from artmove.runs.folder import RunFolder
from artmove.training.logger import gather_rows

log = logging.getLogger(__name__)


class LearningCurves(pl.Callback):
    """``<run>/curves.png``: loss and accuracy per epoch, training and validation, from the run's own
    ``csv/metrics.csv`` (an earlier attempt's epochs included, ``KeepLoggedMetrics``). Written when fit
    ends, early stopping included, and when it stops on an exception (a signal, Ctrl-C, a failure) with
    the epochs logged so far, once there are two (one epoch is a point per series: its line in the log)."""

    def __init__(self, output_dir: str):
        self.run = RunFolder(Path(output_dir))

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.write(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self.write(trainer)

    def write(self, trainer: pl.Trainer) -> Path | None:
        if not trainer.is_global_zero:
            return None
        try:
            from artmove.evaluation.plots import RUN_CURVES, plot_run_curves
            from artmove.evaluation.report import learning_curves

            for logger in trainer.loggers:
                if isinstance(logger, CSVLogger):
                    logger.save()  # the rows logged since its last flush
            curves = learning_curves(self.run.path, tuple(RUN_CURVES))
            epochs = len({epoch for points in curves.values() for epoch, _ in points})
            if epochs < 2:  # a point per series: the epoch line in train.log says as much
                log.info("no %s: %s epoch logged, a curve needs two", self.run.curves_file.name, epochs)
                return None
            path = plot_run_curves(curves, self.run.curves_file, f"{self.run.path.name}: {epochs} epoch(s)")
        except Exception as error:  # noqa: BLE001 - a figure never fails a run
            log.warning("could not draw %s (%s: %s); the run's results are not affected", self.run.curves_file, type(error).__name__, error)
            return None
        log.info("learning curves: %s", path)
        return path


class ConfusionMatrixFigure(pl.Callback):
    """``<run>/test_confusion_matrix.png`` (row-normalised, as ``evaluate`` draws it) and ``.csv`` (counts:
    a row per true class, a column per predicted one) of the run's final test, from the logits
    ``test_step`` returns (every process's share)."""

    def __init__(self, output_dir: str):
        self.run = RunFolder(Path(output_dir))
        self._logits: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._logits, self._labels = [], []

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        if isinstance(outputs, Mapping) and "logits" in outputs and "labels" in outputs:
            self._logits.append(outputs["logits"].detach().float().cpu())
            self._labels.append(outputs["labels"].detach().cpu())

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        classes = [str(name) for name in pl_module.hparams.get("class_names", [])]
        logits = torch.cat(self._logits) if self._logits else torch.empty(0, len(classes))
        labels = torch.cat(self._labels) if self._labels else torch.empty(0, dtype=torch.long)
        logits, labels = gather_rows(pl_module, logits), gather_rows(pl_module, labels)  # every rank takes part
        self._logits, self._labels = [], []
        if trainer.is_global_zero and len(labels) and classes:
            self.write(logits, labels, classes)

    def write(self, logits: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> Path | None:
        png, table = self.run.test_confusion_matrix(".png"), self.run.test_confusion_matrix(".csv")
        try:
            from artmove.evaluation.metrics import confusion_matrix
            from artmove.evaluation.plots import plot_confusion_matrix
            from artmove.utils.tables import write_csv

            counts = confusion_matrix(logits.softmax(-1), labels)
            write_csv(
                table,
                [{"true": name, **dict(zip(classes, row, strict=True))} for name, row in zip(classes, counts.tolist(), strict=True)],
                ["true", *classes],
            )
            plot_confusion_matrix(counts.numpy(), classes, png, f"test split ({len(labels)} images): % of each true class")
        except Exception as error:  # noqa: BLE001 - a figure never fails a run
            log.warning("could not write %s (%s: %s); the run's results are not affected", png, type(error).__name__, error)
            return None
        log.info("test confusion matrix: %s (counts: %s)", png, table.name)
        return png
