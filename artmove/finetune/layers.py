"""A backbone's layers as the fine-tuning policies see them: weighted layers, blocks, heads, norms.

The backbone's weighted layers (modules that own parameters: convolutions, norms,
linear layers, embeddings) are counted in forward order, grouped into timm's blocks
(``model.group_matcher(coarse=False)``). ``unfreeze=f`` retrains the top blocks whose
layer count is nearest to ``f`` x all layers, plus the new head, which always trains.
For resnet50 (106 layers) ``unfreeze=0.2`` -> 21.2 -> ``layer4`` (20 layers): RASTA's
"last 20 layers". ``plan_stages`` counts timm's coarse groups (stages) instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from timm.models import group_parameters
from torch import nn


@dataclass(frozen=True)
class UnfreezePlan:
    fraction: float
    head: tuple[str, ...]  # parameter names of the classifier
    blocks: tuple[tuple[str, ...], ...]  # parameter names per block, forward order, head excluded
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

    @property
    def trainable(self) -> frozenset[str]:
        top = self.blocks[len(self.blocks) - self.trained_blocks :]
        return frozenset(self.head).union(*top)

    def trainable_modules(self) -> list[str]:
        """Owners of trainable parameters, collapsed to their common block prefixes for display."""
        top = self.blocks[len(self.blocks) - self.trained_blocks :] + (self.head,)
        return [_display([_owner(name) for name in block]) for block in top if block]


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
    for level in zip(*parts):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    return ".".join(common)


def classifier_heads(model: nn.Module) -> dict[str, nn.Module]:
    """The classifier head(s) by module name: what timm's ``get_classifier()`` returns (a pair for
    distilled DeiT and LeViT) and what the model's pretrained config names (VOLO's ``aux_head`` too);
    a head inside another one counts as part of it."""
    returned = model.get_classifier()
    returned = returned if isinstance(returned, tuple) else (returned,)
    modules = dict(model.named_modules())
    by_id = {id(module): name for name, module in modules.items()}
    configured = getattr(model, "pretrained_cfg", {}).get("classifier") or ()
    names = [by_id[id(head)] for head in returned] + ([configured] if isinstance(configured, str) else list(configured))
    names = [name for name in dict.fromkeys(names) if name in modules]
    outer = [name for name in names if not any(name.startswith(f"{other}.") for other in names)]
    return {name: modules[name] for name in outer}


def output_layer(head: nn.Module) -> nn.Module | None:
    """The last linear (or convolution) layer of a head: LeViT's is BatchNorm + Linear, some are MLPs."""
    layers = [module for module in head.modules() if isinstance(module, (nn.Linear, nn.Conv2d))]
    return layers[-1] if layers else None


def head_prefixes(model: nn.Module) -> tuple[str, ...]:
    """Parameter-name prefixes of the classifier head(s): ``("fc.",)``, ``("head.", "head_dist.")``."""
    return tuple(f"{name}." for name in classifier_heads(model))


def _grouped(model: nn.Module, coarse: bool) -> tuple[tuple[str, ...], list[tuple[str, ...]], bool]:
    """(classifier parameter names, the other parameters per timm layer group in forward order,
    whether the last of those groups is a neck that timm groups with the classifier)."""
    in_head = head_prefixes(model)
    groups = group_parameters(model, model.group_matcher(coarse=coarse))
    blocks, head, neck = [], [], False
    for _, names in sorted(groups.items()):
        own_head = [n for n in names if n.startswith(in_head)]
        body = tuple(n for n in names if not n.startswith(in_head))
        head += own_head
        if body:
            blocks.append(body)
            neck = bool(own_head)
    return tuple(head), blocks, neck


def _layer_count(block: tuple[str, ...]) -> int:
    return len({_owner(n) for n in block})


def plan_unfreeze(model: nn.Module, fraction: float, setting: str = "") -> UnfreezePlan:
    """The top blocks whose weighted-layer count is nearest to ``fraction`` x all layers (ties: fewer)."""
    head, blocks, _ = _grouped(model, coarse=False)
    layers = [_layer_count(block) for block in blocks]
    target = fraction * sum(layers)
    from_top = [0]
    for count in reversed(layers):
        from_top.append(from_top[-1] + count)
    trained = min(range(len(from_top)), key=lambda k: (abs(from_top[k] - target), k))
    return UnfreezePlan(fraction, head, tuple(blocks), tuple(layers), trained, setting)


def plan_stages(model: nn.Module, stages: int) -> UnfreezePlan:
    """Retrain the last ``stages`` of timm's coarse layer groups (resnet50: stem, layer1..layer4).

    Parameters timm groups with the classifier but that are not the classifier (ConvNeXt's
    ``head.norm``) belong to the last stage; final norms/convs already do (timm's MATCH_PREV_GROUP).
    """
    head, blocks, neck = _grouped(model, coarse=True)
    if neck and len(blocks) > 1:
        blocks = blocks[:-2] + [blocks[-2] + blocks[-1]]
    if isinstance(stages, bool) or not isinstance(stages, int) or not 0 <= stages <= len(blocks):
        names = ", ".join(_display([_owner(n) for n in block]) for block in blocks)
        raise ValueError(
            f"finetune.stages={stages!r}: {type(model).__name__} has {len(blocks)} stages ({names}); "
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
