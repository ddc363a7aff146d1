"""Train and eval transforms from a backbone's timm data config.

Training crops, flips and resizes uint8 tensors and yields uint8 batches, which the data module
normalises on the training device (:func:`normalize_uint8`), as timm's prefetcher does: a quarter of
the bytes through the loader's shared memory and the host-to-GPU copy, and no float work in
the workers. Evaluation uses timm's transform (resize, centre crop, normalise) unchanged.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from timm.data import create_transform
from torchvision.transforms import v2

# Interpolations torch runs on uint8 tensors; timm configs name these (others fall back to bicubic).
TENSOR_INTERPOLATIONS = ("bicubic", "bilinear", "nearest")


class Conversion:
    """A transform step with a stable repr: transforms' reprs key the feature cache."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class ToUint8Tensor(Conversion):
    """An RGB PIL image or H x W x 3 uint8 array as a 3 x H x W uint8 tensor.

    The tensor is a channels-last view of the pixels: torch's antialiased uint8 resize runs
    about twice as fast on that layout as on a contiguous C x H x W copy.
    """

    def __call__(self, image: Image.Image | np.ndarray) -> torch.Tensor:
        array = image if isinstance(image, np.ndarray) and image.flags.writeable else np.array(image)
        return torch.from_numpy(array).permute(2, 0, 1)


class ToPIL(Conversion):
    """A PIL image from a prepared cache array (H x W x 3 uint8); PIL images pass through."""

    def __call__(self, image: Image.Image | np.ndarray) -> Image.Image:
        return Image.fromarray(image) if isinstance(image, np.ndarray) else image


class RandomResizedCrop:
    """torchvision's random-resized crop (same sampling, same fallback) for 3 x H x W uint8 tensors.

    A crop of ``scale`` of the area and a log-uniform aspect ratio in ``ratio``, resized to
    ``size`` with torch's antialiased uint8 kernel. Drawn with Python's ``random`` (seeded per
    loader worker like torch's) and without v2's per-call dispatch: about a quarter less time
    per crop than ``v2.RandomResizedCrop`` (measured on 256 px paintings), which counts once
    decoding is gone (the npy cache).
    """

    def __init__(self, size: Sequence[int], scale: Sequence[float], ratio: Sequence[float], interpolation: str):
        self.size, self.scale, self.ratio = tuple(size), tuple(scale), tuple(ratio)
        self.mode = interpolation if interpolation in TENSOR_INTERPOLATIONS else "bicubic"

    def crop_box(self, height: int, width: int) -> tuple[int, int, int, int]:
        """(top, left, height, width): torchvision's ten tries, then a centre crop of the nearest allowed ratio."""
        area, log_ratio = height * width, (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target_area = area * random.uniform(*self.scale)
            aspect = math.exp(random.uniform(*log_ratio))
            w, h = round(math.sqrt(target_area * aspect)), round(math.sqrt(target_area / aspect))
            if 0 < w <= width and 0 < h <= height:
                return random.randint(0, height - h), random.randint(0, width - w), h, w
        in_ratio = width / height
        if in_ratio < min(self.ratio):
            w, h = width, round(width / min(self.ratio))
        elif in_ratio > max(self.ratio):
            w, h = round(height * max(self.ratio)), height
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        top, left, h, w = self.crop_box(*image.shape[-2:])
        crop = image[None, :, top : top + h, left : left + w]
        return F.interpolate(crop, size=self.size, mode=self.mode, antialias=self.mode != "nearest")[0]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, scale={self.scale}, ratio={self.ratio}, interpolation={self.mode})"


def jitter_strengths(color_jitter: float | Sequence[float]) -> tuple[float, ...]:
    """timm's ``color_jitter``: one strength for brightness, contrast and saturation, or 3-4 values (+ hue)."""
    if isinstance(color_jitter, (int, float)):
        return (float(color_jitter),) * 3
    return tuple(float(v) for v in color_jitter)


def build_train_transform(preprocessing: Mapping[str, Any], augment: Mapping[str, Any] | None = None) -> v2.Compose:
    """Random-resized crop (antialiased, the backbone's interpolation), flips and optional colour jitter
    on uint8 tensors; PIL images and prepared cache arrays both go in, a 3 x H x W uint8 tensor comes out."""
    augment = dict(augment or {})
    steps: list[Any] = [
        ToUint8Tensor(),
        RandomResizedCrop(
            preprocessing["input_size"][1:],
            scale=augment.get("scale", (0.08, 1.0)),
            ratio=augment.get("ratio", (3 / 4, 4 / 3)),
            interpolation=preprocessing["interpolation"],
        ),
    ]
    if augment.get("hflip", 0.5) > 0:
        steps.append(v2.RandomHorizontalFlip(augment.get("hflip", 0.5)))
    if augment.get("vflip", 0.0) > 0:
        steps.append(v2.RandomVerticalFlip(augment["vflip"]))
    if augment.get("color_jitter"):  # None or 0: no ColorJitter step at all
        steps.append(v2.ColorJitter(*jitter_strengths(augment["color_jitter"])))
    steps += policy_augmentations(augment)
    return v2.Compose(steps)


def policy_augmentations(augment: Mapping[str, Any]) -> list[Any]:
    """torchvision's RandAugment (its settings, e.g. ``{num_ops: 2, magnitude: 9}``) or TrivialAugmentWide,
    then RandomErasing with probability ``random_erasing``; all on uint8 tensors, all off by default
    (their colour operations can erase the cues a movement is told by)."""
    check_augment(augment)
    steps: list[Any] = []
    if augment.get("rand_augment") is not None:
        steps.append(v2.RandAugment(**dict(augment["rand_augment"])))
    if augment.get("trivial_augment"):
        steps.append(v2.TrivialAugmentWide())
    if augment.get("random_erasing"):
        steps.append(v2.RandomErasing(p=float(augment["random_erasing"])))
    return steps


def check_augment(augment: Mapping[str, Any]) -> None:
    """The augmentation policies' settings, checked before any image is read."""
    from artmove.errors import ConfigError

    rand_augment = augment.get("rand_augment")
    if rand_augment is not None and augment.get("trivial_augment"):
        raise ConfigError("data.augment.rand_augment and data.augment.trivial_augment are both set: choose one policy.")
    if rand_augment is not None and not isinstance(rand_augment, Mapping):
        raise ConfigError(
            f"data.augment.rand_augment={rand_augment!r}: give RandAugment's settings, e.g. '{{num_ops: 2, magnitude: 9}}', or null."
        )
    unknown = sorted(set(rand_augment or {}) - {"num_ops", "magnitude", "num_magnitude_bins"})
    if unknown:
        raise ConfigError(f"data.augment.rand_augment: unknown settings {unknown}; use num_ops, magnitude, num_magnitude_bins.")
    if not 0 <= float(augment.get("random_erasing") or 0) <= 1:
        raise ConfigError(f"data.augment.random_erasing={augment['random_erasing']}: a probability in [0, 1].")


def eval_input_size(preprocessing: Mapping[str, Any]) -> tuple[int, int, int]:
    """``(C, H, W)`` of every evaluation view: ``test_input_size`` (``test_image_size=``) when set, else the
    training size."""
    return tuple(preprocessing.get("test_input_size") or preprocessing["input_size"])


def build_eval_transform(preprocessing: Mapping[str, Any]):
    """timm's eval transform (resize to the eval size / crop_pct, centre crop, normalise) -> float tensor."""
    evaluation = create_transform(
        input_size=eval_input_size(preprocessing),
        interpolation=preprocessing["interpolation"],
        mean=tuple(preprocessing["mean"]),
        std=tuple(preprocessing["std"]),
        is_training=False,
        crop_pct=preprocessing["crop_pct"],
        crop_mode=preprocessing.get("crop_mode", "center"),
    )
    evaluation.transforms.insert(0, ToPIL())
    return evaluation


def build_transforms(preprocessing: Mapping[str, Any], augment: Mapping[str, Any] | None = None):
    """(train, eval) transforms: train yields uint8 tensors, eval normalised float tensors."""
    return build_train_transform(preprocessing, augment), build_eval_transform(preprocessing)


def normalize_uint8(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """A uint8 batch (N x 3 x H x W, 0-255) as the float input the backbone expects: (x / 255 - mean) / std."""
    shift, scale = _pixel_constants(tuple(mean), tuple(std), images.device)
    return images.float().sub_(shift).div_(scale)


@functools.lru_cache(maxsize=16)
def _pixel_constants(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """mean and std in 0-255 units, made once per device (no host-to-GPU copy per batch)."""

    def in_pixels(values: tuple[float, ...]) -> torch.Tensor:
        return torch.tensor(values, device=device).view(1, -1, 1, 1) * 255.0

    return in_pixels(mean), in_pixels(std)


def decode_size(preprocessing: Mapping[str, Any] | Sequence[Mapping[str, Any]], training: bool = False) -> int:
    """Shortest side worth decoding (JPEG draft mode, the prepared cache) for the transform that reads the
    image: an evaluation's resize before its centre crop (``test_input_size`` / crop_pct), or for the
    training crops the same at the training size (what it was before evaluations had their own size). Several
    preprocessings (an ensemble's members): the largest of theirs."""
    if not isinstance(preprocessing, Mapping):
        return max(decode_size(member, training) for member in preprocessing)
    size = preprocessing["input_size"] if training else eval_input_size(preprocessing)
    return math.ceil(max(size[1:]) / preprocessing["crop_pct"])
