"""The WikiArt style split published with ArtGAN: image folders plus CSV lists of (file, class index)."""

from __future__ import annotations

import csv
from pathlib import Path

from artmove.data.sources.base import FileSource, require_dir
from artmove.data.splits import by_class, stratified_split
from artmove.errors import DataSetupError

LAYOUT_HINT = (
    "Expected the ArtGAN WikiArt layout: <root>/style_class.txt ('<index> <Name>' lines), "
    "<root>/style_train.csv and <root>/style_val.csv ('<Style>/<file>.jpg,<index>' rows) "
    "and the images under <root>/<Style>/."
)


def read_class_list(path: Path) -> dict[int, str]:
    """``style_class.txt``: one ``<index> <Name>`` per line."""
    classes = {}
    for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        if not line.strip():
            continue
        index, _, name = line.strip().partition(" ")
        if not index.isdigit() or not name.strip():
            raise DataSetupError(f"{path}:{number}: expected '<index> <Name>', got {line!r}. {LAYOUT_HINT}")
        classes[int(index)] = name.strip()
    if sorted(classes) != list(range(len(classes))):
        raise DataSetupError(f"{path}: class indices must run 0..{len(classes) - 1} without gaps. {LAYOUT_HINT}")
    return classes


def read_rows(path: Path, num_classes: int) -> list[tuple[str, int]]:
    """``style_*.csv``: ``<Style>/<file>.jpg,<index>`` rows, no header, CRLF or LF line ends."""
    rows = []
    with path.open(newline="", encoding="utf-8-sig") as handle:
        for number, row in enumerate(csv.reader(handle), 1):
            if not row or not "".join(row).strip():
                continue
            if len(row) != 2 or not row[1].strip().isdigit():
                raise DataSetupError(f"{path}:{number}: expected '<Style>/<file>.jpg,<index>', got {row!r}. {LAYOUT_HINT}")
            index = int(row[1])
            if index >= num_classes:
                raise DataSetupError(f"{path}:{number}: class index {index} is not in style_class.txt (0..{num_classes - 1}).")
            rows.append((row[0].strip(), index))
    return rows


class WikiArtCSV(FileSource):
    """``root/<Style>/<file>.jpg`` listed by ``style_train.csv`` / ``style_val.csv``.

    Labels come from the CSV index into ``style_class.txt`` (folder names may differ from
    class names: ``Art_Nouveau_Modern/`` holds class ``Art_Nouveau``).

    - ``classes="all"`` keeps all the listed classes (27) with their published indices;
      ``"present"`` keeps only those with images, in index order.
    - The release has no test split. ``test_from="train"`` carves a stratified test split
      (``holdout_fraction`` of each class) from train and validates on the published val;
      ``test_from="val"`` tests on the published val and carves validation from train.
    - Rows whose file is missing are dropped and listed in ``missing``.
    """

    def __init__(
        self,
        root: str | Path,
        classes: str = "present",
        test_from: str = "train",
        holdout_fraction: float = 0.1,
        seed: int = 42,
    ):
        if classes not in ("present", "all"):
            raise DataSetupError(f"data.source.classes={classes!r}: use 'present' or 'all'.")
        if test_from not in ("train", "val"):
            raise DataSetupError(f"data.source.test_from={test_from!r}: use 'train' (carve test from train) or 'val'.")
        if not 0 < holdout_fraction < 1:
            raise DataSetupError(f"data.source.holdout_fraction={holdout_fraction} must be in (0, 1).")
        self.root = require_dir(Path(root), "WikiArt data set folder (data.root)", LAYOUT_HINT)
        for name in ("style_class.txt", "style_train.csv", "style_val.csv"):
            if not (self.root / name).is_file():
                raise DataSetupError(f"{self.root / name} not found. {LAYOUT_HINT}")
        names = read_class_list(self.root / "style_class.txt")
        rows = {split: read_rows(self.root / f"style_{split}.csv", len(names)) for split in ("train", "val")}
        kept = sorted(names) if classes == "all" else sorted({i for split in rows.values() for _, i in split})
        self.classes = [names[i] for i in kept]
        label_of = {index: label for label, index in enumerate(kept)}
        self.missing: list[Path] = []
        published = {split: self._samples(split_rows, label_of) for split, split_rows in rows.items()}
        if not published["train"]:
            raise DataSetupError(f"none of the files listed in {self.root / 'style_train.csv'} exist. {LAYOUT_HINT}")
        carved = stratified_split(by_class(published["train"]), holdout_fraction, 0.0, seed)
        held_out = "test" if test_from == "train" else "val"
        kept_split = "val" if test_from == "train" else "test"
        self.split_samples = {"train": carved["train"], held_out: carved["val"], kept_split: published["val"]}
        self.published = frozenset({kept_split})

    def _samples(self, rows: list[tuple[str, int]], label_of: dict[int, int]) -> list[tuple[Path, int]]:
        samples = []
        for relative, index in rows:
            path = self.root / relative
            if path.is_file():
                samples.append((path, label_of[index]))
            else:
                self.missing.append(path)
        return samples
