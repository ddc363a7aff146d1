"""A backbone's input preprocessing, resolved once from the config for the data module and the model."""

from __future__ import annotations

from typing import Any

import timm
import torch
from timm.data import resolve_model_data_config

from artmove.checks import ConfigError, check_backbone


def backbone_preprocessing(backbone: str, image_size: int | None = None) -> dict[str, Any]:
    """timm's data config of ``backbone`` (input size, interpolation, mean/std, crop), the input size
    set to ``image_size`` when given. Read from a weightless meta-device model: no weights load."""
    check_backbone(backbone)
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 16):
        raise ConfigError(f"image_size={image_size!r}: give a whole number of pixels >= 16, or null for the backbone's own.")
    with torch.device("meta"):
        model = timm.create_model(backbone, pretrained=False, num_classes=2)
    config = resolve_model_data_config(model)
    if image_size:
        config["input_size"] = (3, image_size, image_size)
    return {key: list(value) if isinstance(value, tuple) else value for key, value in config.items()}
