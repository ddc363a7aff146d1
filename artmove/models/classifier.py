"""The LightningModule: trains an :class:`~artmove.models.network.ArtNetwork` (loss, metrics, steps,
optimisation); what trains and at which learning rates is its bound fine-tuning policy's.

Its checkpoints say what rebuilds the network, as data (``checkpoint["artmove"]``): the network's
spec (backbone, head by name and settings), which weights infer (the EMA's when kept), the
policy's settings and the ImageNet weights it started from. ``artmove.models.trained`` reads them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import pytorch_lightning as pl
import torch
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3
from torch import nn
from torchmetrics import CatMetric, SumMetric

from artmove.errors import ConfigError
from artmove.finetune import FinetunePolicy
from artmove.models.calibration import calibration_scores, ece_reference, kept_at
from artmove.models.compiled import CompiledForward
from artmove.models.conformal import prediction_sets, set_metrics
from artmove.models.metrics import bootstrap_interval, classification_metrics
from artmove.models.network import ArtNetwork
from artmove.models.trained import CHECKPOINT_FORMAT


class ArtClassifier(pl.LightningModule):
    """Train ``network`` on paintings of ``class_names``, preprocessed as ``preprocessing`` says (timm's
    data config), the parameters ``finetune`` selects retraining.

    ``test_step`` returns each batch's logits and labels: callbacks read them from its outputs (the W&B
    report), so a forward averaged over two views (``flip_tta``) counts each painting once.

    ``calibration`` and ``abstain`` (set by ``artmove.training.calibration`` once training ends, None
    before) go into the checkpoints it saves and into the test: ``test/ece`` and ``test/nll`` as the
    network predicts (calibrated), ``…_uncalibrated`` of the raw logits, and the test coverage and top-1
    of the answers at or above the "not sure" threshold chosen on validation.
    """

    def __init__(
        self,
        network: ArtNetwork,
        finetune: FinetunePolicy,
        class_names: list[str],
        preprocessing: Mapping[str, Any],
        label_smoothing: float = 0.0,
        mixup: float = 0.0,
        cutmix: float = 0.0,
        ema_decay: float | None = None,
        optimizer: Mapping[str, Any] | None = None,
        scheduler: Mapping[str, Any] | None = None,
        class_weights: list[float] | None = None,
        compile: bool = False,
        compile_mode: str = "default",
        flip_tta: bool = False,
    ):
        super().__init__()
        if not isinstance(flip_tta, bool):
            raise ConfigError(f"model.flip_tta={flip_tta!r}: give true or false.")
        self.save_hyperparameters(ignore=["network", "finetune"])
        self.network = network
        self.preprocessing = dict(preprocessing)
        self.finetuning = finetune.bind(network)  # the plan, computed once; sets requires_grad from here on
        num_classes = network.num_classes
        # torch.compile of the network's forward (artmove/models/compiled.py): eager when it fails.
        self.compiled = CompiledForward(network.forward, compile_mode) if compile else None
        # class_weights: per-class loss weights (data.balance=loss), from the training split's counts.
        weight = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        self.criterion = nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing)
        self.train_metrics = classification_metrics(num_classes, "train/")
        self.val_metrics = classification_metrics(num_classes, "val/")
        self.test_metrics = classification_metrics(num_classes, "test/")
        self.image_counts = nn.ModuleDict({stage: SumMetric() for stage in ("val", "test")})
        self.test_correct = CatMetric()  # per-image top-1 correctness, for the bootstrap interval
        self.test_logits, self.test_labels = CatMetric(nan_strategy="disable"), CatMetric()  # calibration and selective prediction
        self.calibration: dict[str, Any] | None = None
        self.abstain: dict[str, Any] | None = None
        self.conformal: dict[str, Any] | None = None  # the prediction sets' record (artmove.models.conformal)
        self.mixup = None
        if mixup or cutmix:
            self.mixup = Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, label_smoothing=label_smoothing, num_classes=num_classes)
            self.soft_criterion = SoftTargetCrossEntropy()
        # An exponential moving average of the weights; validation and test use it when enabled.
        self.ema = ModelEmaV3(network, decay=ema_decay).requires_grad_(False) if ema_decay else None
        self.train()  # a new module is in training mode, its frozen norm layers included: put those in eval

    @property
    def inference_network(self) -> ArtNetwork:
        """What validates, tests and ships: the EMA average when the run keeps one."""
        return self.ema.module if self.ema is not None else self.network

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["artmove"] = {
            "format": CHECKPOINT_FORMAT,
            "network": self.network.spec,
            "inference_weights": "ema.module" if self.ema is not None else "network",
            "finetune": self.finetuning.policy.settings,
            "pretrained_cfg": self.network.pretrained_cfg,
            **({"calibration": self.calibration} if self.calibration else {}),
            **({"abstain": self.abstain} if self.abstain else {}),
            **({"conformal": self.conformal} if self.conformal else {}),
        }

    def set_temperature(self, temperature: float) -> None:
        """The logits of the network (and of its EMA average) divided by ``temperature`` from now on."""
        self.network.set_temperature(temperature)
        if self.ema is not None:
            self.ema.module.set_temperature(temperature)

    # --- what trains -----------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        # The bound policy sets what trains in this epoch (gradual unfreezing: more blocks), and Lightning
        # never calls train() on the module (it restores each submodule's mode after validation): set modes here.
        self.finetuning.apply(self.current_epoch)
        self.train()

    def train(self, mode: bool = True):
        """The policy's fixed norm layers stay in eval mode: their running statistics never change."""
        super().train(mode)
        for module in self.finetuning.fixed_norm_layers():
            module.eval()
        return self

    # --- steps -----------------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits of a batch of images, or of pooled vectors (2-D, from the feature cache: only the head's
        trainable part runs)."""
        network = self.network if self.training else self.inference_network
        if images.ndim == 2:
            return network.classify(images)
        if self.compiled is not None and network is self.network:
            return self.compiled(images)
        return network(images)

    def _step(self, batch, metrics, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, logits) of a batch; metrics updated and logged."""
        images, labels = batch
        if stage == "train" and self.mixup is not None:
            # Mixup/CutMix with soft targets; timm mixes pairs, so an odd batch's last image sits out.
            images, labels = images[: len(labels) // 2 * 2], labels[: len(labels) // 2 * 2]
            images, targets = self.mixup(images, labels)  # mixes in place: the batch is not reused
            logits = self(images)
            loss = self.soft_criterion(logits, targets)
        elif stage != "train" and self.hparams.get("flip_tta") and images.ndim == 4:
            # A mirrored painting keeps its movement: average the two views' logits (evaluate's tta=flip).
            logits = (self(images) + self(images.flip(-1))) / 2
            loss = self.criterion(logits, labels)
        else:
            logits = self(images)
            loss = self.criterion(logits, labels)
        metrics.update(logits, labels)
        if stage == "test":
            self.test_correct.update((logits.argmax(dim=1) == labels).float())
            self.test_logits.update(logits.detach().float())
            self.test_labels.update(labels)
        if stage in self.image_counts:
            count = cast(SumMetric, self.image_counts[stage])  # nn.ModuleDict is not generic: its items read as Module
            count.update(len(labels))
            self.log(f"{stage}/num_images", count, on_step=False, on_epoch=True)
        self.log(f"{stage}/loss", loss, on_step=stage == "train", on_epoch=True, prog_bar=stage != "test", batch_size=len(labels))
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=stage == "val")
        return loss, logits

    def training_step(self, batch, batch_idx):
        return self._step(batch, self.train_metrics, "train")[0]

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if self.ema is not None:
            self.ema.update(self.network, step=self.global_step)

    def validation_step(self, batch, batch_idx):
        self._step(batch, self.val_metrics, "val")

    def test_step(self, batch, batch_idx) -> dict[str, torch.Tensor]:
        loss, logits = self._step(batch, self.test_metrics, "test")
        return {"loss": loss, "logits": logits.detach(), "labels": batch[1]}

    def on_test_epoch_end(self) -> None:
        """``test/top1_ci95_low``/``_high``: a bootstrap 95 % interval on top-1 (how far the test split's
        sampling alone could move it), from every process's images."""
        low, high = bootstrap_interval(self.test_correct.compute())
        self.test_correct.reset()
        self.log_dict({"test/top1_ci95_low": low, "test/top1_ci95_high": high, **self.trust_scores()})

    def trust_scores(self) -> dict[str, float]:
        """``test/ece``, ``test/nll`` (as the network predicts), ``test/ece_floor`` / ``_p`` (what a calibrated model
        would show on these images), ``…_uncalibrated`` (the raw logits: the calibrated
        ones times the temperature) and ``test/abstain_coverage`` / ``_top1`` at the threshold, from every process's images."""
        if not self.test_labels.update_count:
            return {}
        logits, labels = self.test_logits.compute(), self.test_labels.compute().long()
        self.test_logits.reset()
        self.test_labels.reset()
        logits = logits.view(len(labels), -1)
        scores = {f"test/{key}": value for key, value in calibration_scores(logits.softmax(1), labels).items()}
        scores.update({f"test/{key}": value for key, value in ece_reference(logits.softmax(1), labels).items()})
        temperature = float(self.inference_network.temperature)
        if temperature != 1:
            raw = calibration_scores((logits * temperature).softmax(1), labels)
            scores.update({f"test/{key}_uncalibrated": value for key, value in raw.items()})
        if self.abstain is not None:
            kept = kept_at(logits.softmax(1), labels, self.abstain["threshold"])
            scores["test/abstain_coverage"] = kept["coverage"]
            if kept["kept"]:  # no answer kept: no top-1 to report (results.json holds no NaN)
                scores["test/abstain_top1"] = kept["top1"]
        if self.conformal is not None:  # the sets' coverage and size on test (its interval: evaluate, metrics.json)
            sets = set_metrics(prediction_sets(logits.softmax(1), self.conformal), labels)
            scores.update({"test/set_coverage": sets["coverage"], "test/set_size": sets["mean_size"]})
        return scores

    # --- optimisation ----------------------------------------------------------------
    @property
    def optimizer_settings(self) -> dict[str, Any]:
        return dict(self.hparams["optimizer"] or {"opt": "adamw", "lr": 1e-3})

    def configure_optimizers(self):
        optimizer = self.finetuning.optimizer(self.optimizer_settings)
        settings = dict(self.hparams.scheduler or {"sched": "none"})
        name = settings.pop("sched", "none")
        if name in (None, "none"):  # only timm's schedulers apply the groups' lr_scale: here, once
            for group in optimizer.param_groups:
                group["lr"] = self.optimizer_settings["lr"] * group.get("lr_scale", 1.0)
            return optimizer
        epochs = self.trainer.max_epochs if self.trainer.max_epochs and self.trainer.max_epochs > 0 else 1
        updates_per_epoch = max(1, int(self.trainer.estimated_stepping_batches) // epochs)
        scheduler, _ = create_scheduler_v2(
            optimizer, sched=name, num_epochs=epochs, updates_per_epoch=updates_per_epoch, step_on_epochs=False, **settings
        )
        # timm applies the groups' lr_scale only in step_update (or its warm-up): in force from the first step.
        scheduler.step_update(num_updates=self.global_step)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def lr_scheduler_step(self, scheduler, metric) -> None:
        # timm schedulers are stepped by update count (and apply per-group lr_scale); torch's (the
        # learning-rate finder's, tune=lr) as Lightning steps them.
        if hasattr(scheduler, "step_update"):
            scheduler.step_update(num_updates=self.global_step)
        else:
            super().lr_scheduler_step(scheduler, metric)
