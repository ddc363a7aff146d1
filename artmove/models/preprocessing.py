"""A backbone's input preprocessing, resolved once from the config for the data module and the model."""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import timm
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from timm.data import resolve_model_data_config

from artmove.errors import ConfigError
from artmove.utils.limits import MAX_IMAGE_SIZE, check_image_size


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


class PreprocessingRecord(BaseModel):
    """The preprocessing a checkpoint or an export records (timm's data config), checked as data: the sizes
    within :data:`MAX_IMAGE_SIZE`, an interpolation timm knows, three finite means and positive stds."""

    model_config = ConfigDict(extra="forbid")

    input_size: tuple[Literal[3], int, int]
    test_input_size: tuple[Literal[3], int, int] | None = None
    interpolation: Literal["bilinear", "bicubic", "nearest", "lanczos", "hamming", "box", "random"]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop_pct: float = Field(gt=0, le=2)
    crop_mode: Literal["center", "squash", "border"] = "center"
    test_crop_pct: float | None = Field(default=None, gt=0, le=2)

    @field_validator("input_size", "test_input_size")
    @classmethod
    def _within_ceiling(cls, size: tuple[int, int, int] | None) -> tuple[int, int, int] | None:
        if size is not None and not all(16 <= side <= MAX_IMAGE_SIZE for side in size[1:]):
            raise ValueError(f"{list(size)}: each side must be from 16 to {MAX_IMAGE_SIZE} pixels")
        return size

    @field_validator("mean", "std")
    @classmethod
    def _finite(cls, values: tuple[float, float, float], info) -> tuple[float, float, float]:
        if not all(math.isfinite(v) for v in values) or (info.field_name == "std" and min(values) <= 0):
            raise ValueError(f"{list(values)}: three finite numbers{' > 0' if info.field_name == 'std' else ''}")
        return values


def checked_preprocessing(preprocessing: Any, where: Path | str) -> dict[str, Any]:
    """A preprocessing read from a file, checked (:class:`PreprocessingRecord`) before any image is sized by it;
    one ConfigError naming the file and the first wrong entry. Returned as given (lists stay lists)."""
    try:
        PreprocessingRecord.model_validate(dict(preprocessing) if isinstance(preprocessing, Mapping) else preprocessing)
    except ValidationError as error:
        first = error.errors()[0]
        key = ".".join(str(part) for part in first["loc"]) or "its top"
        raise ConfigError(f"{where}: its preprocessing is not one artmove can use ({key}: {first['msg']}): refused.") from None
    return dict(preprocessing)


def check_backbone(name: str) -> None:
    if not isinstance(name, str) or not name:
        raise ConfigError(f"backbone={name!r}: give a timm model name, e.g. backbone=resnet50.")
    if name.startswith(("hf-hub:", "hf_hub:", "local-dir:")) or timm.is_model(name):
        return
    close = difflib.get_close_matches(name.split(".", 1)[0], timm.list_models(), n=5, cutoff=0.6)
    hint = f" Closest timm names: {', '.join(close)}." if close else " See timm.list_models()."
    raise ConfigError(f"unknown backbone '{name}': timm has no such model.{hint}")
