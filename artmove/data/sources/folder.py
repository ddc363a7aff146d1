"""A plain class-per-folder image collection, pre-split or split here."""

from __future__ import annotations

from pathlib import Path

from artmove.data.sources.base import SPLITS, FileSource, check_fractions, class_folders, images_in, require_dir
from artmove.data.splits import stratified_split
from artmove.errors import DataSetupError

LAYOUT_HINT = (
    "Expected <root>/<Class>/<image> (split here by data.source.val_fraction/test_fraction), "
    "or <root>/train/<Class>/, <root>/val/<Class>/ and <root>/test/<Class>/."
)


class ImageFolderSplits(FileSource):
    """``root/<Class>/<image>`` split per class, or ``root/{train,val,test}/<Class>/``."""

    def __init__(self, root: str | Path, val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 42):
        self.root = require_dir(Path(root), "image folder (data.root)", LAYOUT_HINT)
        check_fractions(val_fraction, test_fraction)
        if (self.root / "train").is_dir():
            self.split_samples = self._presplit()
            self.published = frozenset(SPLITS)
        else:
            self.classes = class_folders(self.root)
            per_class = {label: images_in(self.root / name) for label, name in enumerate(self.classes)}
            self._check(per_class)
            self.split_samples = stratified_split(per_class, val_fraction, test_fraction, seed)

    def _presplit(self) -> dict[str, list[tuple[Path, int]]]:
        folders = {split: require_dir(self.root / split, f"{split} split", LAYOUT_HINT) for split in SPLITS}
        self.classes = class_folders(folders["train"])
        samples = {}
        for split, folder in folders.items():
            unknown = sorted(set(class_folders(folder)) - set(self.classes))
            if unknown:
                raise DataSetupError(
                    f"{folder} has classes that train/ lacks: {unknown}. Rename or remove them: every split uses train/'s class names."
                )
            samples[split] = [(path, label) for label, name in enumerate(self.classes) for path in images_in(folder / name)]
        return samples

    def _check(self, per_class: dict[int, list[Path]]) -> None:
        if not self.classes:
            raise DataSetupError(f"no class folders in {self.root}. {LAYOUT_HINT}")
        empty = [self.classes[label] for label, paths in per_class.items() if not paths]
        if empty:
            raise DataSetupError(f"class folders without images in {self.root}: {empty}.")
