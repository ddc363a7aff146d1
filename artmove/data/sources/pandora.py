"""Pandora18k (Florea et al.): ``root/NN_Style/<artist>/<image>``, split here."""

from __future__ import annotations

import re
from pathlib import Path

from artmove.data.images import is_image_file
from artmove.data.sources.base import FileSource, check_fractions, require_dir
from artmove.data.splits import stratified_split
from artmove.errors import DataSetupError

LAYOUT_HINT = (
    "Expected Pandora18k's layout: <root>/01_Byzantin_Iconography/<artist>/<image> ... "
    "<root>/18_PopArt/<artist>/<image> (one more folder level is allowed, as in the abstract-art "
    "class; folders whose names start with '_' are skipped)."
)
CLASS_FOLDER = re.compile(r"^(\d+)_(.+)$")


def images_below(folder: Path) -> list[Path]:
    """Image files under ``folder``, skipping every sub-folder whose name starts with ``_``."""
    found = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(("_", ".")):
            continue
        if path.is_dir():
            found += images_below(path)
        elif path.is_file() and is_image_file(path):
            found.append(path)
    return found


class Pandora18k(FileSource):
    """18 classes from the numbered folders (``01_Byzantin_Iconography`` … ``18_PopArt``).

    Class names drop the number; labels follow it. The artist is the image's folder, so
    ``data.group_by=artist`` keeps each painter in one split. Splits are stratified and
    deterministic from ``seed`` (``val_fraction``, ``test_fraction`` of each class).
    """

    def __init__(self, root: str | Path, val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 42):
        self.root = require_dir(Path(root), "Pandora18k folder (data.root)", LAYOUT_HINT)
        check_fractions(val_fraction, test_fraction)
        folders = sorted(
            (int(match[1]), match[2], path) for path in self.root.iterdir() if path.is_dir() and (match := CLASS_FOLDER.match(path.name))
        )
        if not folders:
            raise DataSetupError(f"no numbered class folders (01_<Style>) in {self.root}. {LAYOUT_HINT}")
        self.classes = [name for _, name, _ in folders]
        per_class = {label: images_below(path) for label, (_, _, path) in enumerate(folders)}
        empty = [self.classes[label] for label, paths in per_class.items() if not paths]
        if empty:
            raise DataSetupError(f"class folders without images in {self.root}: {empty}. {LAYOUT_HINT}")
        self.split_samples = stratified_split(per_class, val_fraction, test_fraction, seed)

    @staticmethod
    def artist(path: Path) -> str:
        return Path(path).parent.name
