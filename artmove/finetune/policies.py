"""Fine-tuning policies: which part of the backbone retrains, at which learning rates, and when.

One class per ``conf/finetune/*.yaml`` (Hydra builds it from ``_target_``). A policy takes only
the settings it uses, checks them in its constructor, and answers everything the rest of the
code asks about fine-tuning: the plan (what trains by the end), the trainable set at the start,
the optimizer's parameter groups, the callbacks it needs, which norm layers keep fixed statistics,
and whether the backbone stays frozen (the one place that allows cached features). A new policy
is a subclass and a yaml file; one from a user's own module works through ``_target_`` too.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from numbers import Real
from typing import Any

import timm
import torch
from pytorch_lightning import Callback
from timm.optim import create_optimizer_v2, param_groups_layer_decay
from torch import nn

from artmove.errors import ConfigError
from artmove.finetune.layers import (
    UnfreezePlan,
    frozen_norm_layers,
    norm_layers_with_statistics,
    plan_stages,
    plan_unfreeze,
)

NORM_STATS = ("frozen", "all")


class FinetunePolicy:
    """What every policy shares: norm-layer handling, the optimizer, the one-line description.

    ``train_bn=true``: BatchNorm layers train everywhere, frozen blocks included (weights and
    statistics). ``freeze_norm_stats="all"``: no norm layer's running statistics change (retrained
    blocks' norm weights still train); ``"frozen"``: only those of frozen layers stay fixed.
    """

    def __init__(self, train_bn: bool = False, freeze_norm_stats: str = "frozen"):
        if not isinstance(train_bn, bool):
            raise ConfigError(f"finetune.train_bn={train_bn!r}: use true or false.")
        if freeze_norm_stats not in NORM_STATS:
            raise ConfigError(f"finetune.freeze_norm_stats={freeze_norm_stats!r}: use frozen or all.")
        self.train_bn, self.freeze_norm_stats = train_bn, freeze_norm_stats

    # --- what a subclass defines ------------------------------------------------------
    def plan(self, model: nn.Module) -> UnfreezePlan:
        """The blocks retrained by the end of training."""
        raise NotImplementedError

    @property
    def config(self) -> dict[str, Any]:
        """The settings that rebuild this policy (``_target_`` included): kept in checkpoints."""
        return {"_target_": f"{type(self).__module__}.{type(self).__qualname__}", "train_bn": self.train_bn,
                "freeze_norm_stats": self.freeze_norm_stats}  # fmt: skip

    def callbacks(self) -> list[Callback]:
        """Lightning callbacks the policy needs while fitting."""
        return []

    @property
    def keeps_backbone_frozen(self) -> bool:
        """True when no backbone parameter ever trains: its features may then be computed once and cached."""
        return False

    def initial_trainable(self, plan: UnfreezePlan) -> frozenset[str]:
        """Parameter names that train from the first step (gradual: the head only)."""
        return plan.trainable

    def param_groups(self, model: nn.Module, plan: UnfreezePlan, weight_decay: float) -> list[dict[str, Any]] | None:
        """Optimizer parameter groups with their ``lr_scale``; None: timm's default grouping of the
        trainable parameters (no weight decay on biases, norms and ``no_weight_decay()`` names)."""
        return None

    # --- shared mechanics --------------------------------------------------------------
    def trainable(self, model: nn.Module, plan: UnfreezePlan) -> frozenset[str]:
        """Every parameter that trains by the end: the plan's, and all norm layers' with ``train_bn``."""
        if not self.train_bn:
            return plan.trainable
        names = {id(p): n for n, p in model.named_parameters()}
        norms = {names[id(p)] for m in norm_layers_with_statistics(model) for p in m.parameters(recurse=False)}
        return plan.trainable | norms

    def prepare(self, model: nn.Module) -> UnfreezePlan:
        """Set ``requires_grad`` for the start of training; return the plan."""
        plan = self.plan(model)
        start = self.initial_trainable(plan) | (self.trainable(model, plan) - plan.trainable)
        set_trainable(model, start)
        return plan

    def fixed_norm_layers(self, model: nn.Module) -> list[nn.Module]:
        """Norm layers kept in eval mode (fixed running statistics) while the module trains."""
        return norm_layers_with_statistics(model) if self.freeze_norm_stats == "all" else frozen_norm_layers(model)

    def create_optimizer(self, model: nn.Module, plan: UnfreezePlan, settings: Mapping[str, Any]) -> torch.optim.Optimizer:
        """timm's optimizer (``opt``, ``lr``, ``weight_decay``… from ``conf/optimizer``) over the policy's groups."""
        settings = dict(settings)
        groups = self.param_groups(model, plan, settings.get("weight_decay", 0.0))
        return create_optimizer_v2(model if groups is None else groups, **settings)

    def describe(self, model: nn.Module, plan: UnfreezePlan) -> str:
        """The log line naming what trains, e.g. ``unfreeze=0.2: retraining 20/106 weighted layers …``."""
        trainable = self.trainable(model, plan)
        total = sum(p.numel() for p in model.parameters())
        count = sum(p.numel() for n, p in model.named_parameters() if n in trainable)
        return (
            f"{plan.name}: retraining {plan.trained_layers}/{plan.total_layers} weighted layers "
            f"({plan.trained_blocks}/{len(plan.blocks)} blocks) + head; "
            f"trainable params {count:,} / {total:,} ({100 * count / total:.1f}%); "
            f"trainable modules: {', '.join(plan.trainable_modules())}"
        )


class Fraction(FinetunePolicy):
    """Retrain the top ``unfreeze`` share of the backbone's weighted layers (snapped to timm's blocks)
    and the head, at one learning rate. README "Unfreeze semantics"."""

    DEFAULT_UNFREEZE = 0.2

    def __init__(self, unfreeze: float | None = None, **norms: Any):
        super().__init__(**norms)
        self.unfreeze = self.DEFAULT_UNFREEZE if unfreeze is None else unfreeze
        check_unfreeze(self.unfreeze)

    def plan(self, model: nn.Module) -> UnfreezePlan:
        return plan_unfreeze(model, self.unfreeze)

    @property
    def config(self) -> dict[str, Any]:
        return {**super().config, "unfreeze": self.unfreeze}

    @property
    def keeps_backbone_frozen(self) -> bool:
        return self.unfreeze == 0 and not self.train_bn


class Stages(FinetunePolicy):
    """Retrain the last ``stages`` of timm's coarse layer groups (resnet50: ``stages=1`` = ``layer4``).

    ``backbone`` is the timm name the stages are counted on (a weightless meta-device model), so a
    count beyond the backbone's stages fails here, before any data or weights are read.
    """

    def __init__(self, backbone: str, stages: int = 1, unfreeze: float | None = None, **norms: Any):
        super().__init__(**norms)
        if unfreeze is not None:
            raise ConfigError(
                f"finetune=stages counts stages, it does not use unfreeze={unfreeze}: drop unfreeze=… "
                "or use finetune=fraction."
            )
        with torch.device("meta"):
            architecture = timm.create_model(backbone, pretrained=False, num_classes=2)
        try:
            plan_stages(architecture, stages)
        except ValueError as error:
            raise ConfigError(str(error)) from None
        self.backbone, self.stages = backbone, stages

    def plan(self, model: nn.Module) -> UnfreezePlan:
        return plan_stages(model, self.stages)

    @property
    def config(self) -> dict[str, Any]:
        return {**super().config, "backbone": self.backbone, "stages": self.stages}

    @property
    def keeps_backbone_frozen(self) -> bool:
        return self.stages == 0 and not self.train_bn


class Discriminative(Fraction):
    """The ``unfreeze`` share (``unfreeze=1``: everything), each timm block at ``layer_decay**depth`` x
    the head's learning rate (timm's ``param_groups_layer_decay``)."""

    def __init__(self, unfreeze: float | None = None, layer_decay: float = 0.75, **norms: Any):
        super().__init__(unfreeze, **norms)
        self.layer_decay = check_factor("layer_decay", layer_decay)

    def plan(self, model: nn.Module) -> UnfreezePlan:
        return plan_unfreeze(model, self.unfreeze, setting=f"discriminative, unfreeze={self.unfreeze}")

    @property
    def config(self) -> dict[str, Any]:
        return {**super().config, "layer_decay": self.layer_decay}

    def param_groups(self, model: nn.Module, plan: UnfreezePlan, weight_decay: float) -> list[dict[str, Any]]:
        return layer_decay_groups(model, self.trainable(model, plan), weight_decay, self.layer_decay)


class Gradual(Fraction):
    """ULMFiT-style: the head alone first, then one more block every ``every_epochs`` epochs, down to
    the blocks ``unfreeze`` selects; the k-th block from the top trains at ``lr_decay**k`` x the head's
    learning rate. Every block of the plan is in the optimizer from the start (its ``lr_scale`` set),
    frozen until its epoch comes: nothing is rebuilt mid-run, and a resumed run carries on."""

    def __init__(self, unfreeze: float | None = None, every_epochs: int = 1, lr_decay: float = 0.5, **norms: Any):
        super().__init__(unfreeze, **norms)
        if isinstance(every_epochs, bool) or not isinstance(every_epochs, int) or every_epochs < 1:
            raise ConfigError(f"finetune.every_epochs={every_epochs!r}: give a whole number of epochs >= 1.")
        self.every_epochs, self.lr_decay = every_epochs, check_factor("lr_decay", lr_decay)

    def plan(self, model: nn.Module) -> UnfreezePlan:
        return plan_unfreeze(model, self.unfreeze, setting=f"gradual, unfreeze={self.unfreeze}")

    @property
    def config(self) -> dict[str, Any]:
        return {**super().config, "every_epochs": self.every_epochs, "lr_decay": self.lr_decay}

    def initial_trainable(self, plan: UnfreezePlan) -> frozenset[str]:
        return frozenset(plan.head)

    def blocks_unfrozen_at(self, plan: UnfreezePlan, epoch: int) -> int:
        return min(plan.trained_blocks, epoch // self.every_epochs)

    def param_groups(self, model: nn.Module, plan: UnfreezePlan, weight_decay: float) -> list[dict[str, Any]]:
        return layer_decay_groups(model, self.trainable(model, plan), weight_decay, self.lr_decay)

    def callbacks(self) -> list[Callback]:
        from artmove.finetune.gradual import GradualUnfreezing

        return [GradualUnfreezing(self)]

    def describe(self, model: nn.Module, plan: UnfreezePlan) -> str:
        return f"{super().describe(model, plan)}; gradual: head first, one more block every {self.every_epochs} epoch(s)"


def check_factor(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ConfigError(f"finetune.{key}={value!r}: give a factor in (0, 1] (1 = the head's learning rate).")
    return float(value)


def set_trainable(model: nn.Module, names: frozenset[str]) -> None:
    """``requires_grad`` on exactly the named parameters (the module's ``train()`` then keeps frozen
    norm layers in eval mode)."""
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name in names)


@contextmanager
def trainable_as(model: nn.Module, names: frozenset[str]) -> Iterator[None]:
    """Temporarily make exactly ``names`` trainable (timm's group builders read ``requires_grad``)."""
    before = {name: p.requires_grad for name, p in model.named_parameters()}
    set_trainable(model, names)
    try:
        yield
    finally:
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(before[name])


def layer_decay_groups(model: nn.Module, trainable: frozenset[str], weight_decay: float, decay: float) -> list[dict[str, Any]]:
    """timm's layer-decay groups (weight-decay rule and ``no_weight_decay()`` included) over the
    parameters that train by the end, each group with ``lr_scale = decay**depth`` from the head down."""
    no_weight_decay = getattr(model, "no_weight_decay", lambda: set())()
    with trainable_as(model, trainable):
        return param_groups_layer_decay(model, weight_decay, no_weight_decay_list=no_weight_decay, layer_decay=decay)


def check_unfreeze(value) -> None:
    if isinstance(value, bool) or not isinstance(value, Real) or not 0 <= value <= 1:
        raise ConfigError(
            f"unfreeze={value!r} must be a number in [0, 1]: the fraction of the backbone to retrain "
            "(0 = head only, 0.2 = the top 20%, 1 = everything)."
        )
