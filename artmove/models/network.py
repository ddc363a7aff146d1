"""The network: a timm backbone and a classifier head as one ``nn.Module`` with timm's contract.

:func:`create_network` builds it, from a run's config (the ``network`` node of ``conf/train.yaml``) and from the ``spec`` a
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

    ``temperature`` (a buffer, 1 until a run is calibrated; artmove/models/calibration.py) divides the
    logits, so every user of the network, and every file exported from it, gives calibrated
    probabilities. It is not in the state dict (checkpoints of every format load as they are): the
    spec records it (``spec["temperature"]``, absent for 1), and :func:`create_network` sets it back.
    """

    temperature: torch.Tensor  # a buffer: declared, else nn.Module's attribute lookup types it ``Tensor | Module``

    def __init__(self, backbone: nn.Module, head: Head, spec: Mapping[str, Any]):
        super().__init__()
        self.backbone, self.head = backbone, head
        self.spec = dict(spec)
        self.num_classes = head.num_classes
        self.num_features = backbone.num_features  # channels of the final feature map (Grad-CAM)
        self.num_prefix_tokens = getattr(backbone, "num_prefix_tokens", 0)
        self.weights_source: str = "random init"
        self.pretrained_cfg: dict[str, Any] | None = None
        self.register_buffer("temperature", torch.ones(()), persistent=False)

    def set_temperature(self, value: float) -> None:
        """Divide the logits by ``value`` from now on (1: the raw logits), and record it in the spec."""
        if not (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < float("inf")):
            raise ConfigError(f"temperature={value!r}: give a number > 0.")
        self.temperature.fill_(float(value))
        if value == 1:
            self.spec.pop("temperature", None)
        else:
            self.spec["temperature"] = float(value)

    def forward_features(self, images: torch.Tensor) -> Features:
        return self.head.features(self.backbone, images)

    def forward_head(self, features: Features, pre_logits: bool = False) -> torch.Tensor:
        pooled = self.head.pool(self.backbone, features)
        return self.head.classify(pooled, pre_logits) if pre_logits else self.classify(pooled)

    def classify(self, pooled: torch.Tensor) -> torch.Tensor:
        """Logits of the head's pooled vectors (what ``features=cached`` stores), divided by the temperature."""
        return self.head.classify(pooled) / self.temperature

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(images))

    def pooled(self, images: torch.Tensor) -> torch.Tensor:
        """The parameter-free vector the head's trainable part reads (``head.cacheable`` heads)."""
        return self.head.pool(self.backbone, self.forward_features(images))

    def no_weight_decay(self) -> set[str]:
        """timm's ``no_weight_decay`` names of the backbone (position embeddings, tokens…)."""
        return {f"backbone.{name}" for name in getattr(self.backbone, "no_weight_decay", set)()}


def create_network(
    backbone: str,
    num_classes: int,
    head: Mapping[str, Any] | None = None,
    pretrained: bool = True,
    weights: str | None = None,
    drop_rate: float = 0.0,
    drop_path_rate: float = 0.0,
    temperature: float = 1.0,
) -> ArtNetwork:
    """A timm ``backbone`` (ImageNet weights from the first source that has them, see
    ``artmove.models.pretrained``) with the ``head`` its settings name (``{"name": "linear"}`` when
    None) for ``num_classes`` classes. ``drop_rate``: dropout before the head's output layer;
    ``drop_path_rate``: stochastic depth, for backbones that have it; ``temperature``: what the logits
    are divided by (a calibrated network's, from its spec)."""
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
    spec = {
        "backbone": backbone,
        "num_classes": num_classes,
        "head": module.settings,
        "drop_rate": drop_rate,
        "drop_path_rate": drop_path_rate,
    }
    network = ArtNetwork(model, module, spec)
    network.weights_source, network.pretrained_cfg = source, pretrained_record(model, source)
    network.set_temperature(temperature)
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
