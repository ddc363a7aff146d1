"""A backbone's input preprocessing, resolved once from the config for the data module and the model."""

from __future__ import annotations

import difflib
from typing import Any

import timm
import torch
from timm.data import resolve_model_data_config

from artmove.errors import ConfigError


def backbone_preprocessing(backbone: str, image_size: int | None = None, test_image_size: int | None = None) -> dict[str, Any]:
    """timm's data config of ``backbone`` (input size, interpolation, mean/std, crop), the input size
    set to ``image_size`` when given. Read from a weightless meta-device model: no weights load.

    ``test_image_size`` sets timm's ``test_input_size``: the size every evaluation (validation, test,
    ``evaluate``, ``predict``) resizes and crops to, while training crops at ``image_size``. Random
    crops show objects larger than the centre crop does, so a network trained at 224 px often sees
    best a little larger at test time (Touvron et al. 2019, "Fixing the train-test resolution
    discrepancy"; timm's ``test_input_size``)."""
    check_backbone(backbone)
    check_image_size("image_size", image_size, "the backbone's own")
    check_image_size("test_image_size", test_image_size, "the backbone's own")
    with torch.device("meta"):
        model = timm.create_model(backbone, pretrained=False, num_classes=2)
    config = resolve_model_data_config(model)
    if image_size:
        config["input_size"] = (3, image_size, image_size)
    if test_image_size:
        config["test_input_size"] = (3, test_image_size, test_image_size)
    return {key: list(value) if isinstance(value, tuple) else value for key, value in config.items()}


def check_image_size(key: str, size: int | None, default: str) -> None:
    """A size setting is null or a whole number of pixels >= 16 (``default``: what null means)."""
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 16):
        raise ConfigError(f"{key}={size!r}: give a whole number of pixels >= 16, or null for {default}.")


def check_backbone(name: str) -> None:
    if not isinstance(name, str) or not name:
        raise ConfigError(f"backbone={name!r}: give a timm model name, e.g. backbone=resnet50.")
    if name.startswith(("hf-hub:", "hf_hub:", "local-dir:")) or timm.is_model(name):
        return
    close = difflib.get_close_matches(name.split(".", 1)[0], timm.list_models(), n=5, cutoff=0.6)
    hint = f" Closest timm names: {', '.join(close)}." if close else " See timm.list_models()."
    raise ConfigError(f"unknown backbone '{name}': timm has no such model.{hint}")
