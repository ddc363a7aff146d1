"""What each policy trains, and the optimizer param groups (with their LR scales) it starts with."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Mapping
from fnmatch import fnmatch
from typing import Any

import torch
from timm.optim import create_optimizer_v2
from torch import nn

from artmove.checks import ConfigError
from artmove.finetune.settings import FinetuneSettings
from artmove.models.freezing import UnfreezePlan, apply_unfreeze, plan_stages, plan_unfreeze, train_norm_layers


def plan_for(model: nn.Module, unfreeze: float, settings: FinetuneSettings) -> UnfreezePlan:
    """The blocks retrained at the end of training (for ``gradual``: the floor reached last)."""
    if settings.policy == "stages":
        try:
            return plan_stages(model, settings.stages)
        except ValueError as error:
            raise ConfigError(str(error)) from None
    plan = plan_unfreeze(model, unfreeze)
    if settings.policy == "fraction":
        return plan
    return dataclasses.replace(plan, setting=f"{settings.policy}, unfreeze={unfreeze}")


def initial_plan(plan: UnfreezePlan, settings: FinetuneSettings) -> UnfreezePlan:
    """What trains in the first epoch: ``gradual`` starts with the head only."""
    return dataclasses.replace(plan, trained_blocks=0) if settings.policy == "gradual" else plan


def apply_plan(model: nn.Module, plan: UnfreezePlan, settings: FinetuneSettings) -> None:
    """Set ``requires_grad`` by the plan, and on every norm layer with statistics when ``train_bn``."""
    apply_unfreeze(model, plan)
    if settings.train_bn:
        train_norm_layers(model)


def create_optimizer(model: nn.Module, optimizer: Mapping[str, Any], settings: FinetuneSettings) -> torch.optim.Optimizer:
    """timm's optimizer over the trainable parameters; ``discriminative`` adds timm's per-layer ``lr_scale``."""
    arguments = dict(optimizer)
    if settings.policy == "discriminative":
        arguments["layer_decay"] = settings.layer_decay
    return create_optimizer_v2(model, **arguments)


def apply_lr_scales(optimizer: torch.optim.Optimizer, base_lr: float) -> None:
    """Put each group's ``lr_scale`` in force without a timm scheduler (only timm schedulers read it)."""
    for group in optimizer.param_groups:
        group["lr"] = base_lr * group.get("lr_scale", 1.0)


def weight_decay_groups(
    named: Iterable[tuple[str, nn.Parameter]], weight_decay: float, no_weight_decay: Collection[str] = ()
) -> list[dict[str, Any]]:
    """timm's rule (``param_groups_weight_decay``) for parameters added later: no weight decay on biases,
    1-d (norm) parameters and names matching the model's ``no_weight_decay()`` (ViT's pos_embed, cls_token)."""
    decay, no_decay = [], []
    for name, parameter in named:
        skip = parameter.ndim <= 1 or name.endswith(".bias") or any(fnmatch(name, p) for p in no_weight_decay)
        (no_decay if skip else decay).append(parameter)
    groups = [{"params": no_decay, "weight_decay": 0.0}] if no_decay else []
    return groups + ([{"params": decay, "weight_decay": weight_decay}] if decay else [])
