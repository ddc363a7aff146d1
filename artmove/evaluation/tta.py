"""Test-time augmentation: several views of each image, predictions averaged over them.

``flip`` is RASTA's "bagging" (the image and its mirror); ``five_crop`` / ``ten_crop`` take the
four corners and the centre (and their mirrors) at the eval resize. Every mode starts from the
model's own eval transform, so ``none`` is exactly what training evaluated.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torchvision import transforms as T

from artmove.data.transforms import build_transforms, eval_input_size
from artmove.errors import ConfigError

TTA_MODES = {"none": 1, "flip": 2, "five_crop": 5, "ten_crop": 10}


def check_tta(mode: str) -> None:
    if mode not in TTA_MODES:
        raise ConfigError(f"tta={mode!r} is not a test-time augmentation: use one of {', '.join(TTA_MODES)}.")


def eval_transform(preprocessing: Mapping[str, Any]) -> Callable:
    return build_transforms(preprocessing)[1]


def tta_transform(preprocessing: Mapping[str, Any], mode: str) -> Callable[[Any], torch.Tensor]:
    """PIL image -> ``[views, C, H, W]`` tensor."""
    check_tta(mode)
    evaluation = eval_transform(preprocessing)
    if mode == "none":
        return lambda image: evaluation(image).unsqueeze(0)
    if mode == "flip":
        return lambda image: _with_mirror(evaluation(image))
    steps = list(evaluation.transforms)
    crop_at = next(i for i, step in enumerate(steps) if "Crop" in type(step).__name__)
    resize, finish = T.Compose(steps[:crop_at]), T.Compose(steps[crop_at + 1 :])
    size = eval_input_size(preprocessing)[1:]
    crops = T.FiveCrop(size) if mode == "five_crop" else T.TenCrop(size)
    return lambda image: torch.stack([finish(crop) for crop in crops(resize(image))])


def _with_mirror(image: torch.Tensor) -> torch.Tensor:
    return torch.stack([image, image.flip(-1)])


@torch.no_grad()
def predict_views(model: torch.nn.Module, views: torch.Tensor) -> torch.Tensor:
    """``[B, V, C, H, W]`` -> class probabilities ``[B, classes]``, the mean over the V views."""
    batch, count = views.shape[:2]
    probs = model(views.flatten(0, 1)).softmax(-1)
    return probs.view(batch, count, -1).mean(1)
