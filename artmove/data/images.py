"""Reading painting files as RGB, whatever their mode, orientation or size."""

from __future__ import annotations

import logging
import os
import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

log = logging.getLogger(__name__)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
# PIL refuses images over 2 x 89 Mpx as decompression bombs; museum scans of paintings can be
# larger. Up to 250 Mpx is read (JPEG decodes in draft mode at the size training needs); larger
# files are refused as unreadable, before their pixels are decoded.
MAX_PIXELS = 250_000_000
# A painting longer than this many times its width (or the reverse) is cut to its central part of this
# aspect ratio once decoded, before any transform: every resize scales the short side to the input
# size, so a 118-byte 40000 x 1 PNG would become a 10-gigapixel image, while an evaluation's centre
# crop never reaches beyond the central square. With it, what a transform resizes is at most
# MAX_ASPECT x S^2 pixels for a short side S (e.g. 0.9 Mpx at S = 293), whatever the file.
MAX_ASPECT = 10


class UnreadableImageError(RuntimeError):
    """An image file that PIL cannot decode (corrupt, truncated, not an image)."""


def is_image_file(path: Path) -> bool:
    return is_image_name(path.name)


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS and not name.startswith(".")


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB: transparency goes onto white, 16-bit is rescaled."""
    if image.mode == "RGB":
        return image
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float32)
        top = float(array.max()) or 1.0
        return Image.fromarray((array / top * 255.0).astype(np.uint8)).convert("RGB")
    return image.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


def within_aspect(image: Image.Image, name: str | Path = "image") -> Image.Image:
    """``image``, or its central part of aspect ratio MAX_ASPECT when it is longer than that (said in the log)."""
    width, height = image.size
    if max(width, height) <= MAX_ASPECT * max(1, min(width, height)):
        return image
    kept_w, kept_h = min(width, MAX_ASPECT * height), min(height, MAX_ASPECT * width)
    left, top = (width - kept_w) // 2, (height - kept_h) // 2
    log.warning("%s: %d x %d pixels, cut to its central %d x %d (longer than %d:1)", name, width, height, kept_w, kept_h, MAX_ASPECT)
    return image.crop((left, top, left + kept_w, top + kept_h))


def load_image(path: Path, min_size: int | None = None) -> Image.Image | np.ndarray:
    """A painting file as an RGB PIL image, or a prepared cache copy (``.npy``) as its H x W x 3 uint8 array."""
    return load_array(path) if path.suffix == ".npy" else load_rgb(path, min_size)


def load_array(path: Path) -> np.ndarray:
    """The pixels of a prepared cache copy (artmove/data/prepared.py): nothing to decode."""
    try:
        with open(path, "rb") as file:
            array = _read_rgb_npy(file)
            if array is None:  # not the layout prepare writes: numpy reads (or rejects) it
                file.seek(0)
                array = np.load(file)
    except (OSError, ValueError, EOFError) as error:
        raise UnreadableImageError(f"cannot read cached image {path}: {error}. Delete it and run prepare again.") from error
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise UnreadableImageError(
            f"cached image {path} holds a {array.dtype} array of shape {array.shape}, not H x W x 3 uint8. Delete it and run prepare again."
        )
    return array


# The .npy header np.save writes for an H x W x 3 uint8 array (format 1.0, padded to 64 bytes).
# Kept for a measured gain: a 256 px copy reads in 43 us this way against 209 us with np.load
# (2026-12-01, this machine), a quarter of a cached image's whole cost with the crop.
_RGB_NPY = re.compile(rb"\A\x93NUMPY\x01\x00..\{'descr': '\|u1', 'fortran_order': False, 'shape': \((\d+), (\d+), 3\), \}", re.DOTALL)


def _read_rgb_npy(file) -> np.ndarray | None:
    head = file.read(128)
    match = _RGB_NPY.match(head)
    if match is None:
        return None
    height, width = int(match[1]), int(match[2])
    file.seek(10 + int.from_bytes(head[8:10], "little"))
    array = np.fromfile(file, np.uint8, height * width * 3)
    if array.size != height * width * 3:
        raise EOFError(f"truncated: {array.size} of {height * width * 3} bytes")
    return array.reshape(height, width, 3)


def open_image(path: str | Path) -> Image.Image:
    """``Image.open`` (the header only) under artmove's pixel limit: ValueError past ``MAX_PIXELS``."""
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < 2 * MAX_PIXELS:
        Image.MAX_IMAGE_PIXELS = 2 * MAX_PIXELS  # PIL's own check only past twice the limit: ours comes first
    with warnings.catch_warnings():  # PIL's DecompressionBombWarning: the check below says it in artmove's words
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        image = Image.open(path)
    if image.width * image.height > MAX_PIXELS:
        image.close()
        raise ValueError(f"{image.width} x {image.height} pixels is over the {MAX_PIXELS // 1_000_000} Mpx limit")
    return image


def load_rgb(path: str | Path, min_size: int | None = None) -> Image.Image:
    """Decode ``path`` as an upright RGB image.

    ``min_size`` lets JPEG decode at a reduced scale (PIL draft mode) while keeping the
    short side at least that long: a 4000 px painting decodes ~8x faster for 224 px input.
    """
    try:
        with open_image(path) as image:
            if min_size and image.format == "JPEG":
                width, height = image.size
                scale = min(width, height) / min_size
                if scale >= 2:
                    image.draft("RGB", (int(width / scale) + 1, int(height / scale) + 1))
            rgb = to_rgb(ImageOps.exif_transpose(image))
            rgb.load()
            return within_aspect(rgb, path)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise UnreadableImageError(f"cannot read image {path}: {error}. Remove or replace the file and run again.") from error
