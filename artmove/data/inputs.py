"""The image files a user names: one image, a folder's images, or a text file listing them."""

from __future__ import annotations

from pathlib import Path

from artmove.data.images import IMAGE_EXTENSIONS, is_image_file
from artmove.data.sources.base import images_in
from artmove.errors import ConfigError
from artmove.utils.io import printable


def list_inputs(input_path: str | Path) -> list[Path]:
    """The image files behind ``input``: the image itself, a folder's images (recursive) or a list file's paths."""
    path = Path(input_path)
    if path.is_dir():
        paths = images_in(path)
        if not paths:
            raise ConfigError(f"input={path}: no image files in this folder or below it.")
        return paths
    if not path.is_file():
        raise ConfigError(f"input={path}: no such file or folder. Give an image, a folder or a text file of paths.")
    if is_image_file(path):
        return [path]
    data = path.read_bytes()
    not_a_list = (
        f"input={path}: neither an image artmove reads ({', '.join(IMAGE_EXTENSIONS)}) nor a text file of image paths, one per line"
    )
    if b"\0" in data:
        raise ConfigError(f"{not_a_list} (it holds binary data).")
    lines = [line.strip() for line in data.decode("utf-8", "surrogateescape").splitlines()]  # any file name's bytes
    paths = [Path(line) for line in lines if line and not line.startswith("#")]
    if not paths:
        raise ConfigError(f"input={path}: the list file names no images.")
    paths = [p if p.is_absolute() else path.parent / p for p in paths]
    if not any(p.exists() for p in paths):
        raise ConfigError(f"{not_a_list}: none of the {len(paths)} paths it would list exists (the first: {printable(str(paths[0]))}).")
    return paths
