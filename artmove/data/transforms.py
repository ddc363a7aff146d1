"""Train and eval transforms from a backbone's timm data config."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from timm.data import create_transform


def build_transforms(data_config: Mapping[str, Any], augment: Mapping[str, Any] | None = None):
    """(train, eval) transforms: random-resized-crop + flips for training, resize + centre crop for eval.

    ``data_config`` is timm's (input_size, interpolation, mean, std, crop_pct, crop_mode).
    """
    augment = dict(augment or {})
    common = dict(
        input_size=tuple(data_config["input_size"]),
        interpolation=data_config["interpolation"],
        mean=tuple(data_config["mean"]),
        std=tuple(data_config["std"]),
    )
    train = create_transform(
        **common,
        is_training=True,
        scale=tuple(augment.get("scale", (0.08, 1.0))),
        ratio=tuple(augment.get("ratio", (3 / 4, 4 / 3))),
        hflip=augment.get("hflip", 0.5),
        vflip=augment.get("vflip", 0.0),
        color_jitter=augment.get("color_jitter"),  # None: no ColorJitter step at all
    )
    evaluation = create_transform(
        **common, is_training=False, crop_pct=data_config["crop_pct"], crop_mode=data_config.get("crop_mode", "center")
    )
    return train, evaluation


def decode_size(data_config: Mapping[str, Any]) -> int:
    """Shortest side worth decoding: the eval resize before the centre crop."""
    return math.ceil(max(data_config["input_size"][1:]) / data_config["crop_pct"])
