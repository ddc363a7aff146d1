"""Classifier heads (``head=linear|multiscale|gram``, ``conf/head``): what the backbone's features become.

A head is an ``nn.Module`` in three steps, so that every user of the network asks the same thing:
``features`` (what it reads from the timm backbone), ``pool`` (no parameters: the vector that
``features=cached`` may compute once for a frozen backbone) and ``classify`` (the trainable part,
its output layer last and zero at the start). Heads are built by name from :data:`HEADS`, from a
config and from a checkpoint alike.

Style lives in brushwork and palette as much as in objects: ``multiscale`` pools several stages of
the backbone, ``gram`` keeps second-order statistics (which channels fire together) of the last
feature map, as in neural style transfer. ``linear`` is timm's own classifier: the backbone's pooling,
dropout, one linear layer.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from artmove.errors import ConfigError
from artmove.utils.registry import Registry

HEADS: Registry[type[Head]] = Registry("head", "head")
Features = torch.Tensor | list[torch.Tensor]  # a feature map, or several stages' maps (the final one last)
#: A timm model (the backbone): an ``nn.Module`` with timm's own methods and attributes (``forward_features``,
#: ``num_features``, ``feature_info``, ``pretrained_cfg``…); typed ``nn.Module``, each would read as ``Tensor | Module``.
TimmModel = Any


class Head(nn.Module):
    """A classifier head; subclasses set ``name`` and build their layers from the backbone's widths."""

    name: ClassVar[str]
    #: The trainable part reads a vector computed from the frozen backbone alone: features=cached can keep it.
    cacheable: ClassVar[bool] = True

    def __init__(self, num_classes: int, drop_rate: float = 0.0):
        super().__init__()
        self.num_classes = num_classes
        self.drop = nn.Dropout(drop_rate)

    @property
    def settings(self) -> dict[str, Any]:
        """``{"name": …, **settings}``: what rebuilds this head (kept in checkpoints and exports)."""
        return {"name": self.name}

    def features(self, backbone: TimmModel, images: torch.Tensor) -> Features:
        """What the head reads from the backbone: its final feature map (timm's ``forward_features``)."""
        return backbone.forward_features(images)

    def pool(self, backbone: TimmModel, features: Features) -> torch.Tensor:
        raise NotImplementedError

    def classify(self, pooled: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        raise NotImplementedError

    def zero_output(self, layer: nn.Linear) -> nn.Linear:
        """The output layer starts at zero (as in BiT): the first predictions are uniform whatever the scale of
        the backbone's features. timm's init (uniform +-1/sqrt(classes) for EfficientNets) gave large logits on
        11 classes (first-epoch loss 7.5, ln 11 = 2.4) that 4 epochs of a probe did not undo. Only the output
        layer: a norm or hidden layer before it at zero would let no gradient through."""
        nn.init.zeros_(layer.weight)
        nn.init.zeros_(layer.bias)
        return layer


@HEADS.register
class LinearHead(Head):
    """timm's classifier: the backbone's own pooling (``forward_head(pre_logits=True)``: average pooling for
    CNNs, the class token or its norm for ViTs), dropout, then one linear layer (the default)."""

    name = "linear"

    def __init__(self, backbone: TimmModel, num_classes: int, drop_rate: float = 0.0):
        super().__init__(num_classes, drop_rate)
        self.fc = self.zero_output(nn.Linear(backbone.num_features, num_classes))

    def pool(self, backbone, features):
        return backbone.forward_head(features, pre_logits=True)

    def classify(self, pooled, pre_logits=False):
        pooled = self.drop(pooled)
        return pooled if pre_logits else self.fc(pooled)


@HEADS.register
class MultiscaleHead(Head):
    """Average-pool the last ``stages`` stages (the last one as the classifier sees it, after any final
    conv and norm), dropout, LayerNorm each stage's vector, concatenate, then one linear layer."""

    name = "multiscale"

    def __init__(self, backbone: TimmModel, num_classes: int, drop_rate: float = 0.0, stages: int = 3):
        super().__init__(num_classes, drop_rate)
        if isinstance(stages, bool) or not isinstance(stages, int) or not 2 <= stages <= 4:
            raise ConfigError(f"head.stages={stages!r}: give 2, 3 or 4 (the last stages pooled).")
        if not hasattr(backbone, "forward_intermediates"):
            raise ConfigError(
                f"head=multiscale reads the backbone's stages with timm's forward_intermediates, which "
                f"{type(backbone).__name__} lacks: use head=linear or head=gram."
            )
        self.stages = stages
        self.channels = [info["num_chs"] for info in backbone.feature_info[-stages:]]
        self.channels[-1] = backbone.num_features  # the final feature map (EfficientNet: after conv_head)
        self.norms = nn.ModuleList(nn.LayerNorm(c) for c in self.channels)
        self.fc = self.zero_output(nn.Linear(sum(self.channels), num_classes))

    @property
    def settings(self):
        return {**super().settings, "stages": self.stages}

    def features(self, backbone, images):
        final, stages = backbone.forward_intermediates(images, indices=self.stages)
        return [*stages[:-1], final]

    def pool(self, backbone, features):
        return torch.cat([_average(x) for x in features], dim=1)

    def classify(self, pooled, pre_logits=False):
        parts = self.drop(pooled).split(self.channels, dim=1)
        pooled = torch.cat([norm(part) for norm, part in zip(self.norms, parts, strict=True)], dim=1)
        return pooled if pre_logits else self.fc(pooled)


@HEADS.register
class GramHead(Head):
    """Second-order pooling of the last feature map: a 1x1 convolution down to ``channels``, their Gram
    matrix over positions / (H W), upper triangle (k (k+1) / 2 values), signed square root, LayerNorm,
    dropout, then linear.

    LayerNorm rather than the bilinear-CNN papers' L2 normalisation: a unit vector of 2,080 values
    has entries near 0.02, and a zero-initialised linear layer at the recipe's learning rate then
    needs many epochs to reach confident logits (measured: 0.40 test top-1 against 0.63 for the
    linear head, wikiart_sample, 3 epochs). The channel reduction trains on the feature map itself,
    which features=cached does not keep.
    """

    name = "gram"
    cacheable = False

    def __init__(self, backbone: TimmModel, num_classes: int, drop_rate: float = 0.0, channels: int = 64):
        super().__init__(num_classes, drop_rate)
        if isinstance(channels, bool) or not isinstance(channels, int) or not 2 <= channels <= 256:
            raise ConfigError(f"head.channels={channels!r}: give a whole number from 2 to 256 (64 is cheap).")
        self.channels = channels
        self.reduce = nn.Conv2d(backbone.num_features, channels, kernel_size=1)
        self.register_buffer("upper", torch.triu_indices(channels, channels), persistent=False)
        size = channels * (channels + 1) // 2
        self.norm = nn.LayerNorm(size)
        self.fc = self.zero_output(nn.Linear(size, num_classes))

    @property
    def settings(self):
        return {**super().settings, "channels": self.channels}

    def pool(self, backbone, features):
        return features  # the map itself: the reduction before the Gram matrix trains

    def classify(self, feature_map, pre_logits=False):
        x = self.reduce(feature_map).flatten(2)  # (N, k, H W)
        gram = x @ x.transpose(1, 2) / x.shape[-1]
        vector = gram[:, self.upper[0], self.upper[1]]
        vector = vector.sign() * vector.abs().add(1e-5).sqrt()  # epsilon: a bounded slope at 0
        vector = self.drop(self.norm(vector))
        return vector if pre_logits else self.fc(vector)


def _average(feature_map: torch.Tensor) -> torch.Tensor:
    return feature_map.mean(dim=(2, 3)) if feature_map.ndim == 4 else feature_map.mean(dim=1)
