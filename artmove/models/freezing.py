"""Which part of a backbone is retrained: the ``unfreeze`` fraction, snapped to blocks.

The backbone's weighted layers (modules that own parameters: convolutions, norms,
linear layers, embeddings) are counted in forward order, grouped into timm's blocks
(``model.group_matcher(coarse=False)``). ``unfreeze=f`` retrains the top blocks whose
layer count is nearest to ``f`` x all layers, plus the new head, which always trains.
For resnet50 (106 layers) ``unfreeze=0.2`` -> 21.2 -> ``layer4`` (20 layers): RASTA's
"last 20 layers".
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
    """A block's name: its owners' common prefix, else the owners joined (``conv_head+bn2``)."""
    return _common_prefix(owners) or "+".join(dict.fromkeys(o or "<root>" for o in owners))


def _common_prefix(names: list[str]) -> str:
    parts = [name.split(".") for name in names]
    common = []
    for level in zip(*parts):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    return ".".join(common)


def classifier_name(model: nn.Module) -> str:
    classifier = model.get_classifier()
    for name, module in model.named_modules():
        if module is classifier:
            return name
    raise ValueError(f"{type(model).__name__}: classifier module not found")


def plan_unfreeze(model: nn.Module, fraction: float) -> UnfreezePlan:
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"unfreeze={fraction} is outside [0, 1]: give the fraction of the backbone to retrain.")
    head_prefix = classifier_name(model) + "."
    groups = group_parameters(model, model.group_matcher(coarse=False))
    blocks, layers, head = [], [], []
    for _, names in sorted(groups.items()):
        head += [n for n in names if n.startswith(head_prefix)]
        body = tuple(n for n in names if not n.startswith(head_prefix))
        if body:
            blocks.append(body)
            layers.append(len({_owner(n) for n in body}))
    target = fraction * sum(layers)
    from_top = [0]
    for count in reversed(layers):
        from_top.append(from_top[-1] + count)
    trained = min(range(len(from_top)), key=lambda k: (abs(from_top[k] - target), k))
    return UnfreezePlan(fraction, tuple(head), tuple(blocks), tuple(layers), trained)


def apply_unfreeze(model: nn.Module, plan: UnfreezePlan) -> list[nn.Module]:
    """Set ``requires_grad`` by the plan; return the frozen norm layers (to keep in eval mode)."""
    trainable = plan.trainable
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name in trainable)
    frozen_norms = []
    for module in model.modules():
        own = list(module.parameters(recurse=False))
        if hasattr(module, "running_mean") and own and not any(p.requires_grad for p in own):
            frozen_norms.append(module)
    return frozen_norms
