"""Fine-tuning policies: which part of the backbone retrains, at which learning rates, and when.

One class per ``conf/finetune/*.yaml``, looked up by name in :data:`POLICIES`. A policy takes only
the settings it uses and checks them in its constructor, before any data or weights are read.
:meth:`FinetunePolicy.bind` binds it to one network: the :class:`Finetuning` it returns computes the
plan once and is the one place that sets what trains (``requires_grad``), epoch by epoch, which norm
layers keep fixed statistics, and the optimizer's parameter groups.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from numbers import Real
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, ClassVar, cast

import timm
import torch
from omegaconf import DictConfig, OmegaConf
from timm.optim import create_optimizer_v2, param_groups_layer_decay, param_groups_weight_decay
from torch import nn

from artmove.errors import ConfigError
from artmove.finetune.layers import (
    BACKBONE,
    Network,
    UnfreezePlan,
    frozen_norm_layers,
    norm_layers_with_statistics,
    plan_stages,
    plan_unfreeze,
)
from artmove.utils.registry import Registry

if TYPE_CHECKING:
    from artmove.models.network import ArtNetwork

log = logging.getLogger(__name__)
POLICIES: Registry[type[FinetunePolicy]] = Registry("fine-tuning policy", "finetune")
NORM_STATS = ("frozen", "all")


class FinetunePolicy:
    """What every policy shares: norm-layer handling and the one-line description.

    ``train_bn=true``: BatchNorm layers train everywhere, frozen blocks included (weights and
    statistics). ``freeze_norm_stats="all"``: no norm layer's running statistics change (retrained
    blocks' norm weights still train); ``"frozen"``: only those of frozen layers stay fixed.
    """

    name: ClassVar[str]
    #: Settings its config node carries (``unfreeze: ${unfreeze}``) that this policy does not use: refused when
    #: the user gives one, dropped when a preset or a default set it (:func:`drop_unused_settings`).
    unused: ClassVar[tuple[str, ...]] = ()

    def __init__(self, train_bn: bool = False, freeze_norm_stats: str = "frozen"):
        if not isinstance(train_bn, bool):
            raise ConfigError(f"finetune.train_bn={train_bn!r}: use true or false.")
        if freeze_norm_stats not in NORM_STATS:
            raise ConfigError(f"finetune.freeze_norm_stats={freeze_norm_stats!r}: use frozen or all.")
        self.train_bn, self.freeze_norm_stats = train_bn, freeze_norm_stats

    # --- what a subclass defines ------------------------------------------------------
    def plan(self, network: Network) -> UnfreezePlan:
        """The blocks retrained by the end of training."""
        raise NotImplementedError

    @property
    def settings(self) -> dict[str, Any]:
        """``{"name": …, **settings}``: kept in checkpoints and results (data, never built from)."""
        return {"name": self.name, "train_bn": self.train_bn, "freeze_norm_stats": self.freeze_norm_stats}

    @property
    def keeps_backbone_frozen(self) -> bool:
        """True when no backbone parameter ever trains: its features may then be computed once and cached."""
        return False

    def blocks_training_at(self, plan: UnfreezePlan, epoch: int) -> int:
        """How many blocks from the top train in ``epoch`` (gradual: fewer at first)."""
        return plan.trained_blocks

    @property
    def layer_decay(self) -> float | None:
        """Each block from the top trains at ``layer_decay**depth`` x the head's learning rate; None: one rate."""
        return None

    def bind(self, network: ArtNetwork) -> Finetuning:
        return Finetuning(self, network)


class Finetuning:
    """A policy bound to one network: the plan is computed once, here, and this object alone sets
    ``requires_grad`` (:meth:`apply`, at construction and at every epoch's start)."""

    def __init__(self, policy: FinetunePolicy, network: ArtNetwork):
        self.policy, self.network = policy, network
        self.plan = policy.plan(network)
        names = {id(p): n for n, p in network.named_parameters()}
        norms = {names[id(p)] for m in norm_layers_with_statistics(network) for p in m.parameters(recurse=False)}
        self.norms = frozenset(norms) if policy.train_bn else frozenset()  # train_bn: every BatchNorm trains from the start
        self.trainable = self.plan.trainable | self.norms  # every parameter that trains by the end
        self.training_blocks = -1
        self.apply(epoch=0)

    def apply(self, epoch: int) -> None:
        """``requires_grad`` on exactly the parameters that train in ``epoch``; says so when more start."""
        depth = self.policy.blocks_training_at(self.plan, epoch)
        set_trainable(self.network, self.plan.blocks_from_top(depth) | self.norms)
        if 0 <= self.training_blocks < depth:
            log.info("epoch %d: %d of %d block(s) training", epoch, depth, self.plan.trained_blocks)
        self.training_blocks = depth

    def fixed_norm_layers(self) -> list[nn.Module]:
        """Norm layers kept in eval mode (fixed running statistics) while the module trains."""
        if self.policy.freeze_norm_stats == "all":
            return norm_layers_with_statistics(self.network)
        return frozen_norm_layers(self.network)

    def optimizer(self, settings: Mapping[str, Any]) -> torch.optim.Optimizer:
        """timm's optimizer (``opt``, ``lr``, ``weight_decay``… from ``conf/optimizer``) over every parameter that
        trains by the end (a parameter still frozen has no gradient and is not stepped), in timm's weight-decay
        groups (none on biases, norms and ``no_weight_decay()`` names), each with its ``lr_scale``."""
        settings = dict(settings)
        weight_decay = settings.get("weight_decay", 0.0)
        with trainable_as(self.network, self.trainable):
            head = param_groups_weight_decay(self.network.head, weight_decay)
            decay = self.policy.layer_decay
            if decay is None:
                backbone = param_groups_weight_decay(self.network.backbone, weight_decay, no_weight_decay_list=self._backbone_no_decay())
            else:  # timm's layer-decay groups of the backbone, one level below the head
                backbone = param_groups_layer_decay(self.network.backbone, weight_decay, self._backbone_no_decay(), layer_decay=decay)
                for group in backbone:
                    group["lr_scale"] = group["lr_scale"] * decay
        groups = [group for group in head + backbone if group["params"]]
        return create_optimizer_v2(groups, **settings)

    def _backbone_no_decay(self) -> set[str]:
        return {name.removeprefix(BACKBONE) for name in self.network.no_weight_decay()}

    @property
    def parameter_counts(self) -> dict[str, int]:
        """Parameters of the network, and those that train by the end of the run."""
        return {
            "trainable_params": sum(p.numel() for n, p in self.network.named_parameters() if n in self.trainable),
            "total_params": sum(p.numel() for p in self.network.parameters()),
        }

    def describe(self) -> str:
        """The log line naming what trains, e.g. ``unfreeze=0.2: retraining 20/106 weighted layers …``."""
        plan, counts = self.plan, self.parameter_counts
        trainable, total = counts["trainable_params"], counts["total_params"]
        line = (
            f"{plan.name}: retraining {plan.trained_layers}/{plan.total_layers} weighted layers "
            f"({plan.trained_blocks}/{len(plan.blocks)} blocks) + head; "
            f"trainable params {trainable:,} / {total:,} ({100 * trainable / total:.1f}%); "
            f"trainable modules: {', '.join(plan.trainable_modules())}"
        )
        if isinstance(self.policy, Gradual):
            line += f"; gradual: head first, one more block every {self.policy.every_epochs} epoch(s)"
        return line


@POLICIES.register
class Fraction(FinetunePolicy):
    """Retrain the top ``unfreeze`` share of the backbone's weighted layers (snapped to timm's blocks)
    and the head, at one learning rate. README "Unfreeze semantics"."""

    name = "fraction"
    DEFAULT_UNFREEZE = 0.2

    def __init__(self, unfreeze: float | None = None, train_bn: bool = False, freeze_norm_stats: str = "frozen"):
        super().__init__(train_bn, freeze_norm_stats)
        self.unfreeze = self.DEFAULT_UNFREEZE if unfreeze is None else unfreeze
        check_unfreeze(self.unfreeze)

    def plan(self, network):
        return plan_unfreeze(network, self.unfreeze, setting=f"{self.name}, unfreeze={self.unfreeze}" if self.name != "fraction" else "")

    @property
    def settings(self):
        return {**super().settings, "unfreeze": self.unfreeze}

    @property
    def keeps_backbone_frozen(self):
        return self.unfreeze == 0 and not self.train_bn


@POLICIES.register
class Stages(FinetunePolicy):
    """Retrain the last ``stages`` of timm's coarse layer groups (resnet50: ``stages=1`` = ``layer4``).

    ``backbone`` is the timm name the stages are counted on (a weightless meta-device model), so a
    count beyond the backbone's stages fails here, before any data or weights are read.
    """

    name = "stages"
    unused = ("unfreeze",)

    def __init__(
        self, backbone: str, stages: int = 1, unfreeze: float | None = None, train_bn: bool = False, freeze_norm_stats: str = "frozen"
    ):
        super().__init__(train_bn, freeze_norm_stats)
        if unfreeze is not None:
            raise ConfigError(
                f"finetune=stages counts stages, it does not use unfreeze={unfreeze}: drop unfreeze=… or use finetune=fraction."
            )
        with torch.device("meta"):  # the architecture alone: no weights, no head (the stages are the backbone's)
            architecture = SimpleNamespace(backbone=timm.create_model(backbone, pretrained=False, num_classes=0), head=nn.Module())
        try:
            plan_stages(architecture, stages)
        except ValueError as error:
            raise ConfigError(str(error)) from None
        self.backbone, self.stages = backbone, stages

    def plan(self, network):
        return plan_stages(network, self.stages)

    @property
    def settings(self):
        return {**super().settings, "backbone": self.backbone, "stages": self.stages}

    @property
    def keeps_backbone_frozen(self):
        return self.stages == 0 and not self.train_bn


@POLICIES.register
class Discriminative(Fraction):
    """The ``unfreeze`` share (``unfreeze=1``: everything), each timm block at ``layer_decay**depth`` x
    the head's learning rate (timm's ``param_groups_layer_decay``)."""

    name = "discriminative"

    def __init__(self, unfreeze: float | None = None, layer_decay: float = 0.75, train_bn: bool = False, freeze_norm_stats: str = "frozen"):
        super().__init__(unfreeze, train_bn, freeze_norm_stats)
        self._layer_decay = check_factor("layer_decay", layer_decay)

    @property
    def layer_decay(self):
        return self._layer_decay

    @property
    def settings(self):
        return {**super().settings, "layer_decay": self._layer_decay}


@POLICIES.register
class Gradual(Fraction):
    """ULMFiT-style: the head alone first, then one more block every ``every_epochs`` epochs, down to
    the blocks ``unfreeze`` selects; the k-th block from the top trains at ``lr_decay**k`` x the head's
    learning rate. Every block of the plan is in the optimizer from the start (its ``lr_scale`` set),
    frozen until its epoch comes: nothing is rebuilt mid-run, and a resumed run carries on."""

    name = "gradual"

    def __init__(
        self,
        unfreeze: float | None = None,
        every_epochs: int = 1,
        lr_decay: float = 0.5,
        train_bn: bool = False,
        freeze_norm_stats: str = "frozen",
    ):
        super().__init__(unfreeze, train_bn, freeze_norm_stats)
        if isinstance(every_epochs, bool) or not isinstance(every_epochs, int) or every_epochs < 1:
            raise ConfigError(f"finetune.every_epochs={every_epochs!r}: give a whole number of epochs >= 1.")
        self.every_epochs, self.lr_decay = every_epochs, check_factor("lr_decay", lr_decay)

    @property
    def layer_decay(self):
        return self.lr_decay

    @property
    def settings(self):
        return {**super().settings, "every_epochs": self.every_epochs, "lr_decay": self.lr_decay}

    def blocks_training_at(self, plan, epoch):
        return min(plan.trained_blocks, epoch // self.every_epochs)


def create_policy(settings: Mapping[str, Any]) -> FinetunePolicy:
    """The policy ``settings`` names (``conf/finetune``: ``{name: fraction, unfreeze: 0.2, …}``)."""
    if isinstance(settings, DictConfig):  # the only config node that is a Mapping
        # to_container of a DictConfig is a dict; a config node's keys here are setting names (str)
        return POLICIES.build(cast(dict[str, Any], OmegaConf.to_container(settings, resolve=True)))
    return POLICIES.build(settings)


def drop_unused_settings(cfg: DictConfig, given: Iterable[str] | None, say: bool = True) -> list[str]:
    """Set to null, in ``cfg.finetune``, each setting the chosen policy does not use (:attr:`FinetunePolicy.unused`)
    that the user did not give: a preset's or a default's value (``experiment=demo`` sets ``unfreeze=0.0``;
    ``finetune=stages`` counts stages) is dropped with one log line, while one on the command line still
    reaches the policy, which refuses it. ``given``: the command line's overrides (Hydra's
    ``overrides.task``); None when unknown (a config composed in Python): nothing is dropped. ``say``: log
    the drop (once per run: train says it, the rerun check does not). Returns the dropped keys."""
    node = cfg.get("finetune")
    if given is None or node is None or "_target_" in node or node.get("name") not in POLICIES.names:
        return []
    typed = set()
    for override in given:
        key = str(override).split("=", 1)[0].lstrip("+~")
        typed.add(key.split("@", 1)[0])
    dropped = []
    for key in POLICIES.get(node.name).unused:
        value = OmegaConf.select(node, key, default=None)
        if value is not None and key not in typed and f"finetune.{key}" not in typed:
            node[key] = None
            dropped.append(key)
            (log.info if say else log.debug)(
                "finetune=%s does not use %s: the value %s=%s, set by a preset or a default (not on the command line), is dropped",
                node.name,
                key,
                key,
                value,
            )
    return dropped


def check_unfreeze(value) -> None:
    if isinstance(value, bool) or not isinstance(value, Real) or not 0 <= float(value) <= 1:
        raise ConfigError(
            f"unfreeze={value!r} must be a number in [0, 1]: the fraction of the backbone to retrain "
            "(0 = head only, 0.2 = the top 20%, 1 = everything)."
        )


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
