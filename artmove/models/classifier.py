"""The LightningModule: a timm backbone, a fresh head, the fine-tuning policy and regularisers."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.trainer.states import TrainerFn
from timm.data import Mixup, resolve_model_data_config
from timm.loss import SoftTargetCrossEntropy
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3
from torch import nn
from torchmetrics import SumMetric

from artmove.checks import ConfigError
from artmove.finetune.gradual import GradualUnfreezing
from artmove.finetune.policies import apply_lr_scales, apply_plan, create_optimizer, initial_plan, plan_for
from artmove.finetune.settings import FinetuneSettings
from artmove.models.freezing import classifier_heads, frozen_norm_layers, norm_layers_with_statistics, output_layer
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
        drop_path_rate: float = 0.0,
        mixup: float = 0.0,
        cutmix: float = 0.0,
        ema_decay: float | None = None,
        finetune: Mapping[str, Any] | None = None,
        image_size: int | None = None,
        optimizer: Mapping[str, Any] | None = None,
        scheduler: Mapping[str, Any] | None = None,
        data_config: Mapping[str, Any] | None = None,
        class_weights: list[float] | None = None,
    ):
        super().__init__()
        self.finetune = FinetuneSettings.from_mapping(finetune)
        self.finetune.check(unfreeze)
        if self.finetune.cache_features and cutmix:
            raise ConfigError("model.cutmix needs images, finetune.cache_features=true trains on features: set one of them off.")
        extra = {"drop_path_rate": drop_path_rate} if drop_path_rate else {}  # stochastic depth, where the backbone has it
        try:
            self.model, self.weights_source = create_backbone(
                backbone, num_classes, pretrained=pretrained, weights=weights, drop_rate=drop_rate, **extra
            )
        except TypeError as error:
            if "drop_path_rate" not in str(error):
                raise
            raise ConfigError(f"model.drop_path_rate={drop_path_rate}: backbone {backbone} has no stochastic depth; set it to 0.") from None
        # The fresh head's output layer starts at zero (as in BiT): its first predictions are uniform whatever
        # the scale of the backbone's features. timm's init (uniform +-1/sqrt(classes) for EfficientNets) gave
        # large logits on 11 classes (first-epoch loss 7.5, ln 11 = 2.4) that 4 epochs of a probe did not undo.
        # Only the output layer: a norm or hidden layer before it at zero would let no gradient through.
        heads = classifier_heads(self.model)
        if self.finetune.cache_features and len(heads) > 1:
            raise ConfigError(f"finetune.cache_features=true needs one classifier head; {backbone} has {len(heads)} "
                              f"({', '.join(heads)}): train it on images.")  # fmt: skip
        for layer in filter(None, map(output_layer, heads.values())):
            for parameter in layer.parameters():
                nn.init.zeros_(parameter)
        self.plan = plan_for(self.model, unfreeze, self.finetune)
        apply_plan(self.model, initial_plan(self.plan, self.finetune), self.finetune)
        # True while the inputs are cached pooled features (artmove.features): only the head runs.
        self.features_input = False
        if data_config is None:
            data_config = resolve_model_data_config(self.model)
            if image_size:
                data_config["input_size"] = (3, image_size, image_size)
        data_config = {k: list(v) if isinstance(v, tuple) else v for k, v in data_config.items()}
        self.data_config = data_config
        self.save_hyperparameters()
        # class_weights: per-class loss weights (data.balance=loss), from the training split's counts.
        weight = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        self.criterion = nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing)
        self.train_metrics = classification_metrics(num_classes, "train/")
        self.val_metrics = classification_metrics(num_classes, "val/")
        self.test_metrics = classification_metrics(num_classes, "test/")
        self.image_counts = nn.ModuleDict({stage: SumMetric() for stage in ("val", "test")})
        self.mixup = None
        if mixup or cutmix:
            self.mixup = Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, label_smoothing=label_smoothing, num_classes=num_classes)
            self.soft_criterion = SoftTargetCrossEntropy()
        # An exponential moving average of the weights; validation and test use it when enabled.
        self.ema = ModelEmaV3(self.model, decay=ema_decay).requires_grad_(False) if ema_decay else None
        self.train()  # a new module is in training mode, its frozen norm layers included: put those in eval

    # --- what trains -----------------------------------------------------------------
    @property
    def parameter_counts(self) -> dict[str, int]:
        total = sum(p.numel() for p in self.model.parameters())
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        return {"trainable_params": trainable, "total_params": total}

    def describe_trainable(self) -> str:
        counts, plan = self.parameter_counts, self.plan
        if self.finetune.policy == "gradual":
            trainable = plan.trainable
            counts = dict(counts, trainable_params=sum(p.numel() for n, p in self.model.named_parameters() if n in trainable))
        return (
            f"{plan.name}: retraining {plan.trained_layers}/{plan.total_layers} weighted layers "
            f"({plan.trained_blocks}/{len(plan.blocks)} blocks) + head; "
            f"trainable params {counts['trainable_params']:,} / {counts['total_params']:,} "
            f"({100 * counts['trainable_params'] / counts['total_params']:.1f}%); "
            f"trainable modules: {', '.join(plan.trainable_modules())}"
            + (f"; gradual: head first, one more block every {self.finetune.every_epochs} epoch(s)"
               if self.finetune.policy == "gradual" else "")
        )

    def on_train_epoch_start(self) -> None:
        # Lightning never calls train() on the module (it restores each submodule's mode after
        # validation), and gradual unfreezing changes which norm layers are frozen: set modes here.
        self.train()

    def train(self, mode: bool = True):
        """Frozen norm layers stay in eval mode: their running statistics never change
        (with ``finetune.freeze_norm_stats=all``, no norm layer's statistics change)."""
        super().train(mode)
        fixed = norm_layers_with_statistics if self.finetune.freeze_norm_stats == "all" else frozen_norm_layers
        for module in fixed(self.model):
            module.eval()
        return self

    # --- steps -----------------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        network = self.ema.module if self.ema is not None and not self.training else self.model
        if self.features_input:
            features = F.dropout(images, p=self.hparams.drop_rate, training=self.training)
            return network.get_classifier()(features)
        return network(images)

    def _step(self, batch, metrics, stage: str) -> torch.Tensor:
        images, labels = batch
        if stage == "train" and self.mixup is not None:
            # Mixup/CutMix with soft targets; timm mixes pairs, so an odd batch's last image sits out.
            images, labels = images[: len(labels) // 2 * 2], labels[: len(labels) // 2 * 2]
            images, targets = self.mixup(images, labels)  # mixes in place: the batch is not reused
            logits = self(images)
            loss = self.soft_criterion(logits, targets)
        else:
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

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if self.ema is not None:
            self.ema.update(self.model, step=self.global_step)

    def validation_step(self, batch, batch_idx):
        self._step(batch, self.val_metrics, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, self.test_metrics, "test")

    # --- optimisation ----------------------------------------------------------------
    @property
    def optimizer_settings(self) -> dict[str, Any]:
        return dict(self.hparams.optimizer or {"opt": "adamw", "lr": 1e-3})

    def configure_optimizers(self):
        optimizer = create_optimizer(self.model, self.optimizer_settings, self.finetune)
        scheduler = self._create_scheduler(optimizer)
        if scheduler is None:
            apply_lr_scales(optimizer, self.optimizer_settings["lr"])
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _create_scheduler(self, optimizer):
        settings = dict(self.hparams.scheduler or {"sched": "none"})
        name = settings.pop("sched", "none")
        if name in (None, "none"):
            return None
        epochs = self.trainer.max_epochs if self.trainer.max_epochs and self.trainer.max_epochs > 0 else 1
        updates_per_epoch = max(1, int(self.trainer.estimated_stepping_batches) // epochs)
        scheduler, _ = create_scheduler_v2(
            optimizer, sched=name, num_epochs=epochs, updates_per_epoch=updates_per_epoch, step_on_epochs=False, **settings
        )
        # timm applies the groups' lr_scale only in step_update (or its warm-up): in force from the first step.
        scheduler.step_update(num_updates=self.global_step)
        return scheduler

    def refresh_lr_schedule(self, optimizer) -> None:
        """After param groups joined the optimizer: rebuild the timm scheduler over all groups (it keeps
        per-group state) at the current update, or apply the groups' ``lr_scale`` when there is none."""
        configs = self.trainer.lr_scheduler_configs
        if not configs:
            apply_lr_scales(optimizer, self.optimizer_settings["lr"])
            return
        configs[0].scheduler = self._create_scheduler(optimizer)

    def configure_callbacks(self):
        if self.finetune.policy != "gradual" or self.trainer.state.fn != TrainerFn.FITTING:
            return []
        return [GradualUnfreezing(self.plan, self.finetune, weight_decay=self.optimizer_settings.get("weight_decay", 0.0))]

    def lr_scheduler_step(self, scheduler, metric) -> None:
        # timm schedulers are stepped by update count (and apply per-group lr_scale).
        scheduler.step_update(num_updates=self.global_step)
