"""A CSV manifest of a user's own collection: ``path,label[,split]`` rows, paths relative to the manifest."""

from __future__ import annotations

import csv
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

from artmove.data.sources.base import SPLITS, FileSource, check_fractions
from artmove.data.splits import by_class, stratified_split
from artmove.errors import ConfigError, DataSetupError

LAYOUT_HINT = (
    "Expected a CSV file (data.root=/path/to/manifest.csv) with rows 'path,label' or 'path,label,split' "
    "(split: train, val or test), paths relative to the manifest's folder; or a header row naming the "
    "columns path, label and optionally split and artist."
)
COLUMNS = ("path", "label", "split", "artist")
UNKNOWN_LABELS = ("error", "drop")

log = logging.getLogger(__name__)


class CsvManifest(FileSource):
    """Images listed in a CSV manifest.

    Classes are the sorted label names. Without a split column the rows are split here,
    stratified and deterministic from ``seed``. An ``artist`` column (with a header row)
    names the artist for ``data.group_by=artist``; otherwise the file name prefix before
    the first ``_`` may (artmove.data.splits.filename_artists_unclear). Rows whose file is missing
    are dropped and listed in ``missing``. A label that only val/test rows carry (a typo such as
    ``Impresionism``) would be a class with no training image: an error naming its lines, or with
    ``unknown_labels="drop"`` those rows are dropped with a warning.
    """

    def __init__(
        self, root: str | Path, val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 42, unknown_labels: str = "error"
    ):
        check_fractions(val_fraction, test_fraction)
        if unknown_labels not in UNKNOWN_LABELS:
            raise ConfigError(f"data.source.unknown_labels={unknown_labels!r}: use one of {', '.join(UNKNOWN_LABELS)}.")
        self.manifest = Path(root)
        if not self.manifest.is_file():
            raise DataSetupError(f"manifest not found: {self.manifest} is not a file. {LAYOUT_HINT}")
        rows = self._without_unknown_labels(self._read(), unknown_labels)
        self.classes = sorted({row["label"] for row in rows})
        label_of = {name: label for label, name in enumerate(self.classes)}
        self.missing: list[Path] = []
        self._artists: dict[Path, str] = {}
        samples: dict[str, list[tuple[Path, int]]] = {split: [] for split in SPLITS}
        for row in rows:
            path = (self.manifest.parent / row["path"]).resolve()
            if not path.is_file():
                self.missing.append(path)
                continue
            samples[row.get("split") or "train"].append((path, label_of[row["label"]]))
            if row.get("artist"):
                self._artists[path] = row["artist"]
        if not samples["train"]:
            raise DataSetupError(f"no existing training images listed in {self.manifest}. {LAYOUT_HINT}")
        if any(row.get("split") for row in rows):
            self.split_samples = samples
            self.published = frozenset(SPLITS)
        else:
            self.split_samples = stratified_split(by_class(samples["train"]), val_fraction, test_fraction, seed)

    def _read(self) -> list[dict[str, Any]]:
        """The rows as ``{column: cell, "line": number}`` (the cells text, the line number an int)."""
        with self.manifest.open(newline="", encoding="utf-8-sig") as handle:
            table = [[cell.strip() for cell in row] for row in csv.reader(handle) if any(c.strip() for c in row)]
        if not table:
            raise DataSetupError(f"{self.manifest} is empty. {LAYOUT_HINT}")
        header = [cell.lower() for cell in table[0]]
        if "path" in header and "label" in header:
            unknown = sorted(set(header) - set(COLUMNS))
            if unknown:
                raise DataSetupError(f"{self.manifest}: unknown columns {unknown}. {LAYOUT_HINT}")
            columns, table = header, table[1:]
        else:
            columns = list(COLUMNS[:3])
        rows = []
        for number, cells in enumerate(table, 2 if columns is header else 1):
            if not 2 <= len(cells) <= len(columns) or not cells[0] or not cells[1]:
                raise DataSetupError(f"{self.manifest}:{number}: expected path,label[,split], got {cells!r}. {LAYOUT_HINT}")
            row = {**dict(zip(columns, cells, strict=False)), "line": number}  # split and artist cells are optional
            if row.get("split") and row["split"] not in SPLITS:
                raise DataSetupError(f"{self.manifest}:{number}: split {row['split']!r} is not one of {list(SPLITS)}.")
            rows.append(row)
        if any(row.get("split") for row in rows) and not all(row.get("split") for row in rows):
            raise DataSetupError(f"{self.manifest}: give a split for every row or for none.")
        return rows

    def _without_unknown_labels(self, rows: list[dict], policy: str) -> list[dict]:
        trained = {row["label"] for row in rows if (row.get("split") or "train") == "train"}
        lines = defaultdict(list)
        for row in rows:
            if row["label"] not in trained:
                lines[row["label"]].append(str(row["line"]))
        if not lines:
            return rows
        named = "; ".join(
            f"{label!r} on line {', '.join(numbers[:5])}{' …' if len(numbers) > 5 else ''}" for label, numbers in sorted(lines.items())
        )
        if policy == "error":
            raise DataSetupError(
                f"{self.manifest}: labels with no training row: {named}. Correct them (a typo?), or drop those "
                "rows with data.source.unknown_labels=drop."
            )
        log.warning("%s: dropped the rows of labels with no training row: %s", self.manifest, named)
        return [row for row in rows if row["label"] in trained]

    def artist(self, path: Path) -> str | None:
        """The artist column's value; None without one (the file name may then tell)."""
        return self._artists.get(Path(path))
