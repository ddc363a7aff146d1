"""`python -m artmove.train tune=lr …`: Lightning's learning-rate range test before training.

A short run raises the learning rate step by step from ``min_lr`` to ``max_lr`` and records the
loss (Lightning's ``Tuner.lr_find``; the model's weights are restored afterwards). The suggestion is
the rate where the loss falls fastest. ``lr_find.png`` plots the curve with the suggestion marked.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, TypedDict

import pytorch_lightning as pl
from matplotlib.figure import Figure

from artmove.errors import ConfigError
from artmove.evaluation.plots import save_png

log = logging.getLogger(__name__)


class RangeTest(TypedDict):
    """The range test's settings, as ``Tuner.lr_find`` takes them."""

    min_lr: float
    max_lr: float
    num_training: int
    mode: str
    early_stop_threshold: float | None


class LearningRateFinder:
    """Run the range test; with ``apply`` train with the suggested rate (``optimizer.lr``), else stop
    after it. Under a fine-tuning policy with per-group rates (gradual, discriminative) the test
    moves every group together: the suggestion is the head's rate, the groups keep their ratios."""

    def __init__(
        self,
        apply: bool = False,
        min_lr: float = 1e-7,
        max_lr: float = 1.0,
        num_training: int = 100,
        mode: str = "exponential",
        early_stop_threshold: float | None = 4.0,
    ):
        if not 0 < min_lr < max_lr:
            raise ConfigError(f"tune.min_lr={min_lr} and tune.max_lr={max_lr}: need 0 < min_lr < max_lr.")
        if num_training < 13:  # the suggestion skips the first 10 and the last point and needs 2 more
            raise ConfigError(f"tune.num_training={num_training}: the suggestion needs at least 13 steps.")
        self.apply = apply
        self.settings = RangeTest(
            min_lr=min_lr, max_lr=max_lr, num_training=num_training, mode=mode, early_stop_threshold=early_stop_threshold
        )

    def run(self, trainer: pl.Trainer, model: pl.LightningModule, datamodule: pl.LightningDataModule, output_dir: Path) -> dict[str, Any]:
        from pytorch_lightning.tuner import Tuner

        # num_training steps, however few epochs the run has (an epoch has at least one step)
        epochs = trainer.fit_loop.max_epochs
        trainer.fit_loop.max_epochs = max(epochs or 1, self.settings["num_training"])
        try:
            finder = Tuner(trainer).lr_find(model, datamodule=datamodule, update_attr=False, **self.settings)
        finally:
            trainer.fit_loop.max_epochs = epochs
        if finder is None:  # Lightning skips the test under fast_dev_run
            raise ConfigError("tune=lr needs a real run: Lightning skips the learning-rate range test under debug=fast_dev_run.")
        suggestion = finder.suggestion()
        figure = Figure(figsize=(6.4, 4.2))
        axes = figure.subplots()
        finder.plot(suggest=True, ax=axes)
        axes.set_title(f"learning-rate range test: suggested {suggestion:.3g}" if suggestion else "learning-rate range test: no suggestion")
        axes.grid(alpha=0.3)
        plot = save_png(figure, Path(output_dir) / "lr_find.png")
        result = {
            "suggested_lr": suggestion,
            "applied": bool(self.apply and suggestion),
            "plot": str(plot),
            "lr": finder.results["lr"],
            "loss": finder.results["loss"],
        }
        if suggestion is None:
            log.warning(
                "lr_find: too few finite losses for a suggestion (see %s); optimizer.lr stays %s.", plot, model.hparams["optimizer"]["lr"]
            )
        elif self.apply:
            model.hparams["optimizer"] = {**model.hparams["optimizer"], "lr": suggestion}
            log.info("lr_find: suggested learning rate %.3g, training with it (plot: %s)", suggestion, plot)
        else:
            log.info(
                "lr_find: suggested learning rate %.3g (plot: %s); train with optimizer.lr=%.3g or tune=lr_apply",
                suggestion,
                plot,
                suggestion,
            )
        return result
