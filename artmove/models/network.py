"""The network: a timm backbone and a classifier head as one ``nn.Module`` with timm's contract.

:func:`create_network` builds it, from a run's config (``conf/network.yaml``) and from the ``spec`` a
checkpoint or an export records alike; the LightningModule trains it, and evaluation, prediction,
export, Grad-CAM, flip TTA, the feature cache and the demo page all take this same module.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from artmove.errors import ConfigError
from artmove.models.heads import HEADS, Features, Head
from artmove.models.pretrained import create_backbone


class ArtNetwork(nn.Module):
    """``forward_features(images)`` (what the head reads), ``forward_head(features, pre_logits=False)``,
    ``forward(images)`` -> logits, as a timm model; ``pooled(images)`` is what ``features=cached`` stores.

    ``spec`` rebuilds it (``create_network(**spec, pretrained=False)``, then the weights);
    ``weights_source`` and ``pretrained_cfg`` say which ImageNet weights it started from.
    """

    def __init__(self, backbone: nn.Module, head: Head, spec: Mapping[str, Any]):
        super().__init__()
        self.backbone, self.head = backbone, head
        self.spec = dict(spec)
        self.num_classes = head.num_classes
        self.num_features = backbone.num_features  # channels of the final feature map (Grad-CAM)
        self.num_prefix_tokens = getattr(backbone, "num_prefix_tokens", 0)
        self.weights_source: str = "random init"
        self.pretrained_cfg: dict[str, Any] | None = None

    def forward_features(self, images: torch.Tensor) -> Features:
        return self.head.features(self.backbone, images)

    def forward_head(self, features: Features, pre_logits: bool = False) -> torch.Tensor:
        return self.head.classify(self.head.pool(self.backbone, features), pre_logits)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(images))

    def pooled(self, images: torch.Tensor) -> torch.Tensor:
        """The parameter-free vector the head's trainable part reads (``head.cacheable`` heads)."""
        return self.head.pool(self.backbone, self.forward_features(images))

    def no_weight_decay(self) -> set[str]:
        """timm's ``no_weight_decay`` names of the backbone (position embeddings, tokens…)."""
        return {f"backbone.{name}" for name in getattr(self.backbone, "no_weight_decay", set)()}


def create_network(backbone: str, num_classes: int, head: Mapping[str, Any] | None = None, pretrained: bool = True,
                   weights: str | None = None, drop_rate: float = 0.0, drop_path_rate: float = 0.0) -> ArtNetwork:  # fmt: skip
    """A timm ``backbone`` (ImageNet weights from the first source that has them, see
    ``artmove.models.pretrained``) with the ``head`` its settings name (``{"name": "linear"}`` when
    None) for ``num_classes`` classes. ``drop_rate``: dropout before the head's output layer;
    ``drop_path_rate``: stochastic depth, for backbones that have it."""
    head = {"name": "linear", **(head or {})}
    HEADS.settings_of(head, ("backbone", "num_classes", "drop_rate"))  # a bad head fails before weights load
    for key, rate in (("drop_rate", drop_rate), ("drop_path_rate", drop_path_rate)):
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
            raise ConfigError(f"network.{key}={rate!r}: give a probability in [0, 1), e.g. 0.2 (0: none).")
    extra = {"drop_path_rate": drop_path_rate} if drop_path_rate else {}
    try:
        model, source = create_backbone(backbone, pretrained=pretrained, weights=weights, **extra)
    except TypeError as error:
        if "drop_path_rate" not in str(error):
            raise
        raise ConfigError(f"network.drop_path_rate={drop_path_rate}: backbone {backbone} has no stochastic depth; set it to 0.") from None
    module = HEADS.build(head, backbone=model, num_classes=num_classes, drop_rate=drop_rate)
    spec = {"backbone": backbone, "num_classes": num_classes, "head": module.settings, "drop_rate": drop_rate,
            "drop_path_rate": drop_path_rate}  # fmt: skip
    network = ArtNetwork(model, module, spec)
    network.weights_source, network.pretrained_cfg = source, pretrained_record(model, source)
    return network


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
