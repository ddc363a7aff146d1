"""A network's layers as the fine-tuning policies see them: weighted layers, blocks, the head, norms.

The backbone's weighted layers (modules that own parameters: convolutions, norms,
linear layers, embeddings) are counted in forward order, grouped into timm's blocks
(``backbone.group_matcher(coarse=False)``). ``unfreeze=f`` retrains the top blocks whose
layer count is nearest to ``f`` x all layers, plus the network's head, which always trains.
For resnet50 (106 layers) ``unfreeze=0.2`` -> 21.2 -> ``layer4`` (20 layers): RASTA's
"last 20 layers". ``plan_stages`` counts timm's coarse groups (stages) instead. Parameter
names are the network's (``backbone.layer4.0.conv1.weight``, ``head.fc.weight``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, cast

from timm.models._manipulate import group_with_matcher  # group_parameters, with names of our own
from torch import nn


class Network(Protocol):
    """What a plan reads: a timm ``backbone`` and a ``head`` (an ``ArtNetwork``, or a stand-in with both)."""

    @property
    def backbone(self) -> nn.Module: ...

    @property
    def head(self) -> nn.Module: ...


@dataclass(frozen=True)
class UnfreezePlan:
    fraction: float
    head: tuple[str, ...]  # parameter names of the head
    blocks: tuple[tuple[str, ...], ...]  # parameter names per backbone block, forward order
    block_layers: tuple[int, ...]  # weighted layers per block
    trained_blocks: int  # counted from the top
    setting: str = ""  # how the plan was asked for, for the log (default: ``unfreeze=<fraction>``)

    @property
    def name(self) -> str:
        return self.setting or f"unfreeze={self.fraction}"

    @property
    def total_layers(self) -> int:
        return sum(self.block_layers)

    @property
    def trained_layers(self) -> int:
        return sum(self.block_layers[len(self.blocks) - self.trained_blocks :])

    def blocks_from_top(self, count: int) -> frozenset[str]:
        """The head's parameters and those of the top ``count`` blocks."""
        return frozenset(self.head).union(*self.blocks[len(self.blocks) - count :] if count else ())

    @property
    def trainable(self) -> frozenset[str]:
        return self.blocks_from_top(self.trained_blocks)

    def trainable_modules(self) -> list[str]:
        """The retrained blocks by their modules' common prefix, then ``head``: what the log shows."""
        top = self.blocks[len(self.blocks) - self.trained_blocks :] if self.trained_blocks else ()
        return [_display([_owner(name).removeprefix(BACKBONE) for name in block]) for block in top] + ["head"]


BACKBONE, HEAD = "backbone.", "head."
#: A parameter name no timm group matcher claims: it joins timm's last group, the one for unmatched names.
_UNMATCHED = "artmove.unmatched"


def _owner(parameter_name: str) -> str:
    return parameter_name.rpartition(".")[0]


def _display(owners: list[str]) -> str:
    """A block's name: its owners' common prefix, else the common prefixes of its owners grouped by
    their first name, joined (``conv_head+bn2``, ``blocks.6.0+conv_head+bn2``)."""
    by_first: dict[str, list[str]] = {}
    for owner in owners:
        by_first.setdefault(owner.split(".")[0], []).append(owner)
    return _common_prefix(owners) or "+".join(_common_prefix(group) or first or "<root>" for first, group in by_first.items())


def _common_prefix(names: list[str]) -> str:
    parts = [name.split(".") for name in names]
    common = []
    for level in zip(*parts, strict=False):  # the prefix ends with the shortest name
        if len(set(level)) != 1:
            break
        common.append(level[0])
    return ".".join(common)


def _grouped(backbone: nn.Module, head: nn.Module, coarse: bool) -> tuple[tuple[str, ...], list[tuple[str, ...]], bool]:
    """(head parameter names, the backbone's parameters per timm layer group in forward order, whether
    the last group holds what timm's matcher leaves to no group: a neck before the classifier, such as
    ConvNeXt's ``head.norm`` or a ViT's ``fc_norm``). Names are the network's (``backbone.…``, ``head.…``)."""
    names = [name for name, _ in backbone.named_parameters()]
    # timm's model API, which nn.Module's attribute lookup types as ``Tensor | Module``
    group_matcher = cast(Callable[..., dict[str, Any] | Callable[[str], Any]], backbone.group_matcher)
    grouped = group_with_matcher(iter([(name, None) for name in [*names, _UNMATCHED]]), group_matcher(coarse=coarse))
    groups = [grouped[key] for key in sorted(grouped)]
    neck = _UNMATCHED in groups[-1] and len(groups[-1]) > 1
    blocks = [tuple(BACKBONE + name for name in group if name != _UNMATCHED) for group in groups]
    head_names = tuple(HEAD + name for name, _ in head.named_parameters())
    return head_names, [block for block in blocks if block], neck


def _layer_count(block: tuple[str, ...]) -> int:
    return len({_owner(n) for n in block})


def plan_unfreeze(network: Network, fraction: float, setting: str = "") -> UnfreezePlan:
    """The top blocks of ``network.backbone`` whose weighted-layer count is nearest to ``fraction`` x all
    layers (ties: fewer), and ``network.head``."""
    head, blocks, _ = _grouped(network.backbone, network.head, coarse=False)
    layers = [_layer_count(block) for block in blocks]
    target = fraction * sum(layers)
    from_top = [0]
    for count in reversed(layers):
        from_top.append(from_top[-1] + count)
    trained = min(range(len(from_top)), key=lambda k: (abs(from_top[k] - target), k))
    return UnfreezePlan(fraction, head, tuple(blocks), tuple(layers), trained, setting)


def plan_stages(network: Network, stages: int) -> UnfreezePlan:
    """Retrain the last ``stages`` of timm's coarse layer groups of ``network.backbone`` (resnet50: stem,
    layer1..layer4), and ``network.head``.

    A neck (parameters timm groups with no stage, such as ConvNeXt's ``head.norm``) belongs to the
    last stage; final norms/convs already do (timm's MATCH_PREV_GROUP).
    """
    head, blocks, neck = _grouped(network.backbone, network.head, coarse=True)
    if neck and len(blocks) > 1:
        blocks = [*blocks[:-2], blocks[-2] + blocks[-1]]
    if isinstance(stages, bool) or not isinstance(stages, int) or not 0 <= stages <= len(blocks):
        names = ", ".join(_display([_owner(n).removeprefix(BACKBONE) for n in block]) for block in blocks)
        raise ValueError(
            f"finetune.stages={stages!r}: {type(network.backbone).__name__} has {len(blocks)} stages ({names}); "
            f"give a whole number from 0 (head only) to {len(blocks)} (everything)."
        )
    layers = tuple(_layer_count(block) for block in blocks)
    fraction = sum(layers[len(layers) - stages :]) / sum(layers)
    return UnfreezePlan(fraction, head, tuple(blocks), layers, stages, setting=f"stages={stages}")


def norm_layers_with_statistics(model: nn.Module) -> list[nn.Module]:
    """Norm layers that keep running statistics (the BatchNorm family, timm's BatchNormAct2d included)."""
    return [m for m in model.modules() if getattr(m, "running_mean", None) is not None]


def frozen_norm_layers(model: nn.Module) -> list[nn.Module]:
    """Norm layers with running statistics whose own parameters are all frozen."""
    frozen = []
    for module in norm_layers_with_statistics(model):
        own = list(module.parameters(recurse=False))
        if own and not any(p.requires_grad for p in own):
            frozen.append(module)
    return frozen
