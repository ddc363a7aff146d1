"""Test-time augmentation: several views of each image, predictions averaged over them.

``flip`` is RASTA's "bagging" (the image and its mirror); ``five_crop`` / ``ten_crop`` take the
four corners and the centre (and their mirrors) at the eval resize. Every mode starts from the
model's own eval transform, so ``none`` is exactly what training evaluated.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import torch
from torchvision import transforms as T

from artmove.data.transforms import build_transforms, eval_input_size
from artmove.errors import ConfigError

TTA_MODES = {"none": 1, "flip": 2, "five_crop": 5, "ten_crop": 10}
#: ``[views, C, H, W]``, or one such tensor per ensemble member when the members' preprocessings differ
#: (batched: ``[B, views, C, H, W]``, or a list of them).
Views = torch.Tensor | Sequence[torch.Tensor]


def check_tta(mode: str) -> None:
    if mode not in TTA_MODES:
        raise ConfigError(f"tta={mode!r} is not a test-time augmentation: use one of {', '.join(TTA_MODES)}.")


def eval_transform(preprocessing: Mapping[str, Any]) -> T.Compose:
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


def views_transform(preprocessing: Mapping[str, Any] | Sequence[Mapping[str, Any]], mode: str) -> Callable[[Any], Views]:
    """:func:`tta_transform` of one preprocessing, or of each ensemble member's (a tuple of views per image)."""
    if isinstance(preprocessing, Mapping):
        return tta_transform(preprocessing, mode)
    transforms = [tta_transform(member, mode) for member in preprocessing]
    return lambda image: tuple(transform(image) for transform in transforms)


def stack_views(items: Sequence[Views]) -> Views:
    """Several images' views as one batch (per member, for an ensemble's tuples)."""
    if isinstance(items[0], torch.Tensor):
        return torch.stack(list(cast("Sequence[torch.Tensor]", items)))  # a batch holds one kind of views
    return [torch.stack(parts) for parts in zip(*items, strict=True)]  # every image: one view tensor per member


def views_to(views: Views, device: torch.device) -> Views:
    return views.to(device) if isinstance(views, torch.Tensor) else [member.to(device) for member in views]


def _with_mirror(image: torch.Tensor) -> torch.Tensor:
    return torch.stack([image, image.flip(-1)])


@torch.no_grad()
def predict_views(model: torch.nn.Module, views: Views) -> torch.Tensor:
    """``[B, V, C, H, W]`` (or one such batch per ensemble member) -> class probabilities ``[B, classes]``, the
    mean over the V views."""
    if isinstance(views, torch.Tensor):
        batch, count = views.shape[:2]
        probs = model(views.flatten(0, 1)).softmax(-1)
    else:
        batch, count = views[0].shape[:2]
        probs = model([member.flatten(0, 1) for member in views]).softmax(-1)
    return probs.view(batch, count, -1).mean(1)
