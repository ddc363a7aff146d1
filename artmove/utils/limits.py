"""The sizes a setting or a file may ask for, checked before anything is allocated: one line that says the
number and the limit, instead of a process the kernel kills minutes later."""

from __future__ import annotations

from typing import Any

from artmove.errors import ConfigError

#: The largest input side (pixels) a setting or a file may ask for: 4x the largest eval size of timm's
#: ImageNet weights (512). One 2048-px image is 50 MB as float32 before the network's activations.
MAX_IMAGE_SIZE = 2048
#: The most images a batch setting may ask for.
MAX_BATCH_SIZE = 4096
#: The most input pixels one batch may hold (batch size x side²): 32 images of 2048 px, 4096 of 181 px;
#: the batch's float32 input alone is then 1.6 GB.
MAX_BATCH_PIXELS = 32 * 2048 * 2048


def check_image_size(key: str, size: int | None, default: str) -> None:
    """A size setting is null or a whole number of pixels from 16 to :data:`MAX_IMAGE_SIZE` (``default``: what null means)."""
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or not 16 <= size <= MAX_IMAGE_SIZE):
        raise ConfigError(
            f"{key}={size!r}: give a whole number of pixels from 16 to {MAX_IMAGE_SIZE} (the largest input artmove "
            f"allocates), or null for {default}."
        )


def check_batch(key: str, batch_size: Any, image_size: int | None, views: int = 1) -> None:
    """A batch size from 1 to :data:`MAX_BATCH_SIZE` whose images of ``image_size`` pixels (``views`` each: test-time
    augmentation, an ensemble's members) hold at most :data:`MAX_BATCH_PIXELS`: checked before anything is allocated."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise ConfigError(f"{key}={batch_size!r}: give a whole number of images from 1 to {MAX_BATCH_SIZE}.")
    pixels = views * image_size**2 if image_size else 0
    if batch_size * pixels > MAX_BATCH_PIXELS:
        most = max(1, MAX_BATCH_PIXELS // pixels)
        shown = f"{image_size} px" + (f", {views} views each" if views > 1 else "")
        raise ConfigError(
            f"{key}={batch_size} at {shown} is {batch_size * pixels * 12 / 2**30:.1f} GiB of float32 input alone, "
            f"over the {MAX_BATCH_PIXELS * 12 / 2**30:.1f} GiB artmove allocates for one batch: "
            f"give {key}={most} or less."
        )
