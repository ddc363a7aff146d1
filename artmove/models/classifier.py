"""The LightningModule: a timm backbone with a fresh head, its loss, metrics and steps.

What trains and at which learning rates is the fine-tuning policy's (``artmove.finetune``);
the input preprocessing comes resolved from the config (``artmove.models.preprocessing``).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3
from torch import nn
from torchmetrics import CatMetric, SumMetric

from artmove.errors import ConfigError
from artmove.finetune import FinetunePolicy, Fraction
from artmove.finetune.layers import classifier_heads, output_layer
from artmove.models.compiled import CompiledForward
from artmove.models.heads import LinearHead
from artmove.models.metrics import bootstrap_interval, classification_metrics
from artmove.models.pretrained import create_backbone


def pretrained_record(model: nn.Module, weights_source: str) -> dict[str, Any] | None:
    """Which ImageNet weights exactly: timm's resolved pretrained config (``resnet50`` is
    ``resnet50.a1_in1k``, a BCE recipe; ``resnet50.tv_in1k`` torchvision's) and where they were read
    from; None for a random init."""
    if weights_source == "random init":
        return None
    if weights_source.startswith("file "):  # weights=PATH: the file is the whole story
        return {"tag_name": None, "hf_hub_id": None, "url": None, "file": weights_source[5:], "source": weights_source}
    cfg = getattr(model, "pretrained_cfg", None) or {}
    architecture, tag = cfg.get("architecture"), cfg.get("tag")
    return {
        "tag_name": f"{architecture}.{tag}" if tag else architecture,
        "hf_hub_id": cfg.get("hf_hub_id"),
        "url": cfg.get("url"),
        "file": cfg.get("file"),
        "source": weights_source,
    }


class ArtClassifier(pl.LightningModule):
    """Classify paintings by movement with any timm backbone.

    Everything needed to rebuild the model for evaluation travels in the checkpoint's
    hyper-parameters: backbone, class names, the preprocessing (input size, interpolation,
    mean/std, crop) and the fine-tuning policy's settings.
    """

    def __init__(
        self,
        backbone: str,
        num_classes: int,
        preprocessing: Mapping[str, Any],
        finetune: FinetunePolicy | Mapping[str, Any] | None = None,
        head: LinearHead | Mapping[str, Any] | None = None,
        class_names: list[str] | None = None,
        pretrained: bool = True,
        weights: str | None = None,
        label_smoothing: float = 0.0,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
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
        # A checkpoint keeps the policy as its settings (``finetune``); a run passes the policy Hydra built.
        self.policy = finetune if isinstance(finetune, FinetunePolicy) else instantiate(finetune) if finetune else Fraction()
        self.head = head if isinstance(head, LinearHead) else instantiate(head) if head else LinearHead()
        self.save_hyperparameters(ignore=["finetune", "head"])
        self.hparams["finetune"], self.hparams["head"] = self.policy.config, self.head.config
        self.preprocessing = dict(preprocessing)
        extra = {"drop_path_rate": drop_path_rate} if drop_path_rate else {}  # stochastic depth, where the backbone has it
        try:
            self.model, self.weights_source = create_backbone(
                backbone, num_classes, pretrained=pretrained, weights=weights, drop_rate=drop_rate, **extra
            )
        except TypeError as error:
            if "drop_path_rate" not in str(error):
                raise
            raise ConfigError(f"model.drop_path_rate={drop_path_rate}: backbone {backbone} has no stochastic depth; set it to 0.") from None
        self.pretrained_cfg = pretrained_record(self.model, self.weights_source)
        self.head.install(self.model, num_classes, drop_rate)  # its module becomes the backbone's classifier
        # The fresh head's output layer starts at zero (as in BiT): its first predictions are uniform whatever
        # the scale of the backbone's features. timm's init (uniform +-1/sqrt(classes) for EfficientNets) gave
        # large logits on 11 classes (first-epoch loss 7.5, ln 11 = 2.4) that 4 epochs of a probe did not undo.
        # Only the output layer: a norm or hidden layer before it at zero would let no gradient through.
        for layer in filter(None, map(output_layer, classifier_heads(self.model).values())):
            for parameter in layer.parameters():
                nn.init.zeros_(parameter)
        self.plan = self.policy.prepare(self.model)
        # torch.compile of the backbone's forward (artmove/models/compiled.py): eager when it fails.
        self.compiled = CompiledForward(functools.partial(self.head, self.model), compile_mode) if compile else None
        # class_weights: per-class loss weights (data.balance=loss), from the training split's counts.
        weight = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        self.criterion = nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing)
        self.train_metrics = classification_metrics(num_classes, "train/")
        self.val_metrics = classification_metrics(num_classes, "val/")
        self.test_metrics = classification_metrics(num_classes, "test/")
        self.image_counts = nn.ModuleDict({stage: SumMetric() for stage in ("val", "test")})
        self.test_correct = CatMetric()  # per-image top-1 correctness, for the bootstrap interval
        self.mixup = None
        if mixup or cutmix:
            self.mixup = Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, label_smoothing=label_smoothing, num_classes=num_classes)
            self.soft_criterion = SoftTargetCrossEntropy()
        # An exponential moving average of the weights; validation and test use it when enabled.
        self.ema = ModelEmaV3(self.model, decay=ema_decay).requires_grad_(False) if ema_decay else None
        self.train()  # a new module is in training mode, its frozen norm layers included: put those in eval

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["pretrained_cfg"] = self.pretrained_cfg

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """A checkpoint's model is rebuilt without ImageNet weights: keep the record of the ones it started from."""
        self.pretrained_cfg = checkpoint.get("pretrained_cfg")

    # --- what trains -----------------------------------------------------------------
    @property
    def parameter_counts(self) -> dict[str, int]:
        """Parameters of the network, and those that train by the end of the run."""
        trainable = self.policy.trainable(self.model, self.plan)
        return {"trainable_params": sum(p.numel() for n, p in self.model.named_parameters() if n in trainable),
                "total_params": sum(p.numel() for p in self.model.parameters())}  # fmt: skip

    def describe_trainable(self) -> str:
        return self.policy.describe(self.model, self.plan)

    def on_train_epoch_start(self) -> None:
        # Lightning never calls train() on the module (it restores each submodule's mode after
        # validation), and gradual unfreezing changes which norm layers are frozen: set modes here.
        self.train()

    def train(self, mode: bool = True):
        """The policy's fixed norm layers stay in eval mode: their running statistics never change."""
        super().train(mode)
        for module in self.policy.fixed_norm_layers(self.model):
            module.eval()
        return self

    # --- steps -----------------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits of a batch of images, or of pooled features (2-D, from the feature cache: only the head runs)."""
        network = self.ema.module if self.ema is not None and not self.training else self.model
        if images.ndim == 2:
            return self.head.classify(network, images)
        if self.compiled is not None and network is self.model:
            return self.compiled(images)
        return self.head(network, images)

    def _step(self, batch, metrics, stage: str) -> torch.Tensor:
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

    def on_test_epoch_end(self) -> None:
        """``test/top1_ci95_low``/``_high``: a bootstrap 95 % interval on top-1 (how far the test split's
        sampling alone could move it), from every process's images."""
        low, high = bootstrap_interval(self.test_correct.compute())
        self.test_correct.reset()
        self.log_dict({"test/top1_ci95_low": low, "test/top1_ci95_high": high})

    # --- optimisation ----------------------------------------------------------------
    @property
    def optimizer_settings(self) -> dict[str, Any]:
        return dict(self.hparams.optimizer or {"opt": "adamw", "lr": 1e-3})

    def configure_optimizers(self):
        optimizer = self.policy.create_optimizer(self.model, self.plan, self.optimizer_settings)
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

    def configure_callbacks(self):
        return self.policy.callbacks()

    def lr_scheduler_step(self, scheduler, metric) -> None:
        # timm schedulers are stepped by update count (and apply per-group lr_scale); torch's (the
        # learning-rate finder's, tune=lr) as Lightning steps them.
        if hasattr(scheduler, "step_update"):
            scheduler.step_update(num_updates=self.global_step)
        else:
            super().lr_scheduler_step(scheduler, metric)
