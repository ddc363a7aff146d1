"""The LightningModule: a timm backbone, a fresh head, and the unfreeze policy."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch
from timm.data import resolve_model_data_config
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from torch import nn
from torchmetrics import SumMetric

from artmove.models.freezing import apply_unfreeze, plan_unfreeze
from artmove.models.metrics import classification_metrics
from artmove.models.pretrained import create_backbone

log = logging.getLogger(__name__)


class ArtClassifier(pl.LightningModule):
    """Classify paintings by movement with any timm backbone.

    Everything needed to rebuild the model for evaluation travels in the checkpoint's
    hyper-parameters: backbone, class names and the timm data config (input size,
    interpolation, mean/std, crop).
    """

    def __init__(
        self,
        backbone: str,
        num_classes: int,
        class_names: list[str] | None = None,
        unfreeze: float = 0.2,
        pretrained: bool = True,
        weights: str | None = None,
        label_smoothing: float = 0.0,
        drop_rate: float = 0.0,
        image_size: int | None = None,
        optimizer: Mapping[str, Any] | None = None,
        scheduler: Mapping[str, Any] | None = None,
        data_config: Mapping[str, Any] | None = None,
    ):
        super().__init__()
        self.model, self.weights_source = create_backbone(
            backbone, num_classes, pretrained=pretrained, weights=weights, drop_rate=drop_rate
        )
        self.plan = plan_unfreeze(self.model, unfreeze)
        self.frozen_norms = apply_unfreeze(self.model, self.plan)
        if data_config is None:
            data_config = resolve_model_data_config(self.model)
            if image_size:
                data_config["input_size"] = (3, image_size, image_size)
        data_config = {k: list(v) if isinstance(v, tuple) else v for k, v in data_config.items()}
        self.data_config = data_config
        self.save_hyperparameters()
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.train_metrics = classification_metrics(num_classes, "train/")
        self.val_metrics = classification_metrics(num_classes, "val/")
        self.test_metrics = classification_metrics(num_classes, "test/")
        self.image_counts = nn.ModuleDict({stage: SumMetric() for stage in ("val", "test")})

    # --- what trains -----------------------------------------------------------------
    @property
    def parameter_counts(self) -> dict[str, int]:
        total = sum(p.numel() for p in self.model.parameters())
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        return {"trainable_params": trainable, "total_params": total}

    def describe_trainable(self) -> str:
        counts, plan = self.parameter_counts, self.plan
        return (
            f"unfreeze={plan.fraction}: retraining {plan.trained_layers}/{plan.total_layers} weighted layers "
            f"({plan.trained_blocks}/{len(plan.blocks)} blocks) + head; "
            f"trainable params {counts['trainable_params']:,} / {counts['total_params']:,} "
            f"({100 * counts['trainable_params'] / counts['total_params']:.1f}%); "
            f"trainable modules: {', '.join(plan.trainable_modules())}"
        )

    def train(self, mode: bool = True):
        """Frozen norm layers stay in eval mode: their running statistics never change."""
        super().train(mode)
        for module in self.frozen_norms:
            module.eval()
        return self

    # --- steps -----------------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def _step(self, batch, metrics, stage: str) -> torch.Tensor:
        images, labels = batch
        logits = self(images)
        loss = self.criterion(logits, labels)
        metrics.update(logits, labels)
        if stage in self.image_counts:
            self.image_counts[stage].update(len(labels))
            self.log(f"{stage}/num_images", self.image_counts[stage], on_step=False, on_epoch=True)
        self.log(f"{stage}/loss", loss, on_step=stage == "train", on_epoch=True, prog_bar=stage != "test", batch_size=len(labels))
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=stage == "val")
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, self.train_metrics, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, self.val_metrics, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, self.test_metrics, "test")

    # --- optimisation ----------------------------------------------------------------
    def configure_optimizers(self):
        optimizer = create_optimizer_v2(self.model, **dict(self.hparams.optimizer or {"opt": "adamw", "lr": 1e-3}))
        settings = dict(self.hparams.scheduler or {"sched": "none"})
        name = settings.pop("sched", "none")
        if name in (None, "none"):
            return optimizer
        epochs = self.trainer.max_epochs if self.trainer.max_epochs and self.trainer.max_epochs > 0 else 1
        updates_per_epoch = max(1, int(self.trainer.estimated_stepping_batches) // epochs)
        scheduler, _ = create_scheduler_v2(
            optimizer, sched=name, num_epochs=epochs, updates_per_epoch=updates_per_epoch, step_on_epochs=False, **settings
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def lr_scheduler_step(self, scheduler, metric) -> None:
        # timm schedulers are stepped by update count (and apply per-group lr_scale).
        scheduler.step_update(num_updates=self.global_step)
