"""RASTA's WikiPaintings layout (Lecoutre et al. 2017)."""

from __future__ import annotations

from pathlib import Path

from artmove.data.sources.base import SPLITS, FileSource, class_folders, images_in, require_dir
from artmove.errors import DataSetupError

LAYOUT_HINT = (
    "Expected RASTA's layout: <root>/wikipaintings_train/<Class>/*.jpg, and the same under "
    "wikipaintings_val/ and wikipaintings_test/. Set data.root to the folder holding them."
)


class RastaWikiPaintings(FileSource):
    """``root/wikipaintings_{train,val,test}/<Class>/<artist>_<title>.jpg``.

    Class names are kept exactly as the folders spell them (``Naïve_Art_(Primitivism)``);
    the label of a class is its position in ``sorted()`` of the train folder names.
    """

    def __init__(self, root: str | Path):
        self.root = require_dir(Path(root), "RASTA data set folder (data.root)", LAYOUT_HINT)
        self.split_dirs = {
            split: require_dir(self.root / f"wikipaintings_{split}", f"RASTA {split} split", LAYOUT_HINT) for split in SPLITS
        }
        self.classes = class_folders(self.split_dirs["train"])
        if not self.classes:
            raise DataSetupError(f"no class folders in {self.split_dirs['train']}. {LAYOUT_HINT}")
        self.split_samples = {split: self._scan(split) for split in SPLITS}
        self.published = frozenset(SPLITS)

    def _scan(self, split: str) -> list[tuple[Path, int]]:
        folder = self.split_dirs[split]
        unknown = sorted(set(class_folders(folder)) - set(self.classes))
        if unknown:
            raise DataSetupError(
                f"{folder} has class folders that the train split lacks: {unknown}. All splits must use the train split's class names."
            )
        samples = [
            (path, label) for label, name in enumerate(self.classes) if (folder / name).is_dir() for path in images_in(folder / name)
        ]
        if not samples:
            raise DataSetupError(f"no images found under {folder}. {LAYOUT_HINT}")
        return samples
