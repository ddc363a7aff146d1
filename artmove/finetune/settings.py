"""The ``finetune`` config group: which policy decides what retrains, and at which learning rates."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from artmove.checks import ConfigError

POLICIES = ("fraction", "stages", "gradual", "discriminative")
NORM_STATS = ("frozen", "all")


@dataclass(frozen=True)
class FinetuneSettings:
    """One policy's settings; keys a policy does not use keep their defaults.

    - ``fraction``: retrain the top ``unfreeze`` fraction of the backbone (snapped to blocks).
    - ``stages``: retrain the last ``stages`` of timm's coarse layer groups.
    - ``gradual``: head first, then one more block every ``every_epochs`` epochs down to the
      ``unfreeze`` floor; the k-th block joins the optimizer at ``lr_decay**k`` x the head's LR
      (its config keeps the norm statistics of unfrozen blocks fixed: ``freeze_norm_stats: all``).
    - ``discriminative``: retrain the ``unfreeze`` fraction, each layer group at
      ``layer_decay**depth`` x the head's LR (timm's layer-wise LR decay).
    """

    policy: str = "fraction"
    stages: int = 1
    every_epochs: int = 1
    lr_decay: float = 0.5
    layer_decay: float = 0.75
    train_bn: bool = False  # true: norm layers with running statistics train everywhere, frozen blocks too
    freeze_norm_stats: str = "frozen"  # frozen: norm statistics of frozen layers stay fixed; all: of every layer
    cache_features: bool = False  # head only: train the head on cached pooled features
    cache_dir: str | None = None

    @classmethod
    def from_mapping(cls, settings: Mapping[str, Any] | None) -> FinetuneSettings:
        settings = dict(settings or {})
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise ConfigError(f"finetune.{unknown[0]}: no such setting; known: {', '.join(sorted(known))}.")
        return cls(**settings)

    def check(self, unfreeze: float) -> None:
        """Refuse settings that cannot work, with the key to change."""
        if self.policy not in POLICIES:
            raise ConfigError(f"finetune={self.policy!r}: choose one of {', '.join(POLICIES)} (finetune=stages ...).")
        if self.freeze_norm_stats not in NORM_STATS:
            raise ConfigError(f"finetune.freeze_norm_stats={self.freeze_norm_stats!r}: use frozen or all.")
        if isinstance(self.stages, bool) or not isinstance(self.stages, int) or self.stages < 0:
            raise ConfigError(f"finetune.stages={self.stages!r}: give a whole number of stages >= 0 (0 = head only).")
        if isinstance(self.every_epochs, bool) or not isinstance(self.every_epochs, int) or self.every_epochs < 1:
            raise ConfigError(f"finetune.every_epochs={self.every_epochs!r}: give a whole number of epochs >= 1.")
        for key in ("lr_decay", "layer_decay"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
                raise ConfigError(f"finetune.{key}={value!r}: give a factor in (0, 1] (1 = the head's learning rate).")
        if self.cache_features:
            frozen = (self.policy == "fraction" and unfreeze == 0) or (self.policy == "stages" and self.stages == 0)
            if not frozen or self.train_bn:
                raise ConfigError(
                    "finetune.cache_features=true needs a frozen backbone (features computed once): use "
                    f"finetune=fraction unfreeze=0 and finetune.train_bn=false (now finetune={self.policy}, "
                    f"unfreeze={unfreeze}, train_bn={self.train_bn})."
                )


def check_finetune_config(cfg) -> None:
    """The ``finetune`` settings of a composed train config, checked before data or weights are touched;
    ``finetune.stages`` against the backbone's stages (counted on a weightless meta-device model)."""
    settings = FinetuneSettings.from_mapping(cfg.get("finetune"))
    settings.check(cfg.unfreeze)
    if settings.policy == "stages":
        import timm
        import torch

        from artmove.models.freezing import plan_stages

        with torch.device("meta"):
            model = timm.create_model(cfg.backbone, pretrained=False, num_classes=2)
        try:
            plan_stages(model, settings.stages)
        except ValueError as error:
            raise ConfigError(str(error)) from None
