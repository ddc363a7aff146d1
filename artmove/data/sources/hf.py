"""A Hugging Face dataset: parquet files (the Hub's ``data/<split>-NNNNN-of-NNNNN.parquet``), a
``save_to_disk`` folder (Arrow files + ``state.json``), or a Hub dataset name (``huggan/wikiart``,
downloaded once into the Hugging Face cache, with a network).

Read with pyarrow (``pip install 'artmove[hf]'``), not the ``datasets`` library. Class names come from
the label column's ``ClassLabel`` feature (the ``huggingface`` metadata ``datasets`` writes into every
parquet and Arrow file), else from its string values. The images (an ``Image`` feature's
``{bytes, path}`` struct) are written once, as the dataset's own bytes, to files under ``cache_dir``,
so that they go through artmove's image path like any painting on disk: the header screening, the
pixel and aspect limits of ``load_rgb``, the prepared copies, the loaders' workers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from filelock import FileLock

from artmove.data.images import is_image_name
from artmove.data.sources.base import SPLITS, FileSource, check_fractions
from artmove.data.splits import by_class, stratified_split
from artmove.errors import DataSetupError
from artmove.utils.io import atomic_write

log = logging.getLogger(__name__)

LAYOUT_HINT = (
    "Expected a Hugging Face dataset: a folder of .parquet files (as the Hub stores them: data/train-00000-of-00072.parquet), "
    "one .parquet file, a folder written by datasets' save_to_disk, or a Hub name (data.root=huggan/wikiart, with a network)."
)
SPLIT_NAMES = {"train": "train", "validation": "val", "valid": "val", "val": "val", "dev": "val", "test": "test"}
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_SPLIT_IN_NAME = re.compile(r"^(?:partial-)?(train|validation|valid|val|dev|test)(?:$|[-_.])")
_MAGIC = ((b"\xff\xd8\xff", ".jpg"), (b"\x89PNG", ".png"), (b"GIF8", ".gif"), (b"BM", ".bmp"), (b"II*\x00", ".tif"), (b"MM\x00*", ".tif"))


def pyarrow_modules():
    try:
        import pyarrow
        import pyarrow.ipc
        import pyarrow.parquet
    except ImportError:
        raise DataSetupError(
            "data=hf reads Hugging Face datasets with pyarrow, which is not installed: pip install 'artmove[hf]'."
        ) from None
    return pyarrow, pyarrow.parquet, pyarrow.ipc


class HuggingFaceDataset(FileSource):
    """Images and labels from the columns ``image_column`` and ``label_column`` of a Hugging Face dataset.

    - ``root``: a folder of parquet files (searched recursively), one parquet file, a ``save_to_disk``
      folder (a Dataset or a DatasetDict), or a Hub dataset name (fetched with ``huggingface_hub``:
      the repository's parquet files at ``revision``; offline, only from the local cache).
    - Splits: a file's split is in its name (``train-…``, ``validation-…``, ``test-…``) or its folder
      (``train/``), and a DatasetDict's are its own. Splits the dataset has are kept (published); the
      missing val/test are carved from train by ``val_fraction`` / ``test_fraction`` (stratified, seeded;
      ``data.group_by=artist`` then makes the carved splits artist-disjoint).
    - ``artist_column`` (null: none) names each painting's artist, for ``data.group_by=artist``.
    - Rows without a label are dropped (counted in the log); rows without an image count as missing files.
    """

    def __init__(
        self,
        root: str | Path,
        image_column: str = "image",
        label_column: str = "style",
        artist_column: str | None = "artist",
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        seed: int = 42,
        cache_dir: str | Path = "~/.cache/artmove/hf",
        revision: str | None = None,
    ):
        check_fractions(val_fraction, test_fraction)
        pyarrow_modules()  # the one-line error before anything else
        self.root = str(root)
        self.image_column, self.label_column, self.artist_column = image_column, label_column, artist_column
        files = self._files_by_split(locate(self.root, revision))
        features, schema = self._features(next(path for paths in files.values() for path in paths))
        for column in (image_column, label_column, artist_column):
            if column is not None and column not in schema.names:
                raise DataSetupError(
                    f"{self.root}: no column {column!r} (it has {', '.join(schema.names)}); name the columns with "
                    "data.source.image_column, label_column and artist_column (null: none)."
                )
        tables = {split: [self._read_columns(path) for path in paths] for split, paths in files.items()}
        label_names = class_label_names(features.get(label_column))
        artist_names = class_label_names(features.get(artist_column)) if artist_column else None
        values = [value for parts in tables.values() for table in parts for value in table[label_column] if value is not None]
        self.classes, label_of = self._classes(values, label_names)
        images = Extracted(Path(os.path.expanduser(str(cache_dir))), files, image_column, self)
        self.missing: list[Path] = []
        self._artists: dict[Path, str] = {}
        samples: dict[str, list[tuple[Path, int]]] = {split: [] for split in SPLITS}
        unlabelled = 0
        for split, parts in tables.items():
            for path, table in zip(files[split], parts, strict=True):
                for row, label in enumerate(table[label_column]):
                    image = images.path(path, row)
                    if label is None:
                        unlabelled += 1
                    elif image is None:
                        self.missing.append(Path(f"{path}#row{row}"))
                    else:
                        samples[split].append((image, label_of[label]))
                        artist = table[artist_column][row] if artist_column else None
                        if artist is not None and artist != "":
                            if artist_names and isinstance(artist, int) and 0 <= artist < len(artist_names):
                                self._artists[image] = artist_names[artist]  # a ClassLabel's index
                            else:
                                self._artists[image] = str(artist)
        if unlabelled:
            log.warning("%s: %d rows without a %s label left out", self.root, unlabelled, label_column)
        if not samples["train"]:
            raise DataSetupError(f"{self.root}: no labelled training images (splits found: {', '.join(files)}). {LAYOUT_HINT}")
        self.published = frozenset(split for split in ("val", "test") if samples[split])
        carve_val = 0.0 if "val" in self.published else val_fraction
        carve_test = 0.0 if "test" in self.published else test_fraction
        if carve_val or carve_test:
            carved = stratified_split(by_class(samples["train"]), carve_val, carve_test, seed)
            samples = {"train": carved["train"], "val": samples["val"] or carved["val"], "test": samples["test"] or carved["test"]}
        else:
            self.published |= {"train"}
        self.split_samples = samples

    def artist(self, path: Path) -> str | None:
        """The artist column's value (its ClassLabel name) for this painting; None without one."""
        return self._artists.get(Path(path))

    # --- reading -------------------------------------------------------------------------------
    def _files_by_split(self, found: dict[str, list[Path]]) -> dict[str, list[Path]]:
        unknown = sorted(set(found) - set(SPLIT_NAMES))
        if unknown:
            log.info("%s: split(s) %s are not train/validation/test and are left out", self.root, ", ".join(unknown))
        by_split: dict[str, list[Path]] = {}
        for name, paths in found.items():
            if name in SPLIT_NAMES:
                by_split.setdefault(SPLIT_NAMES[name], []).extend(paths)
        if not by_split:
            raise DataSetupError(f"{self.root}: no train, validation or test data files found. {LAYOUT_HINT}")
        return by_split

    def _schema(self, path: Path):
        pa, pq, _ = pyarrow_modules()
        if path.suffix == ".parquet":
            return pq.read_schema(path)
        with pa.memory_map(str(path)) as source:
            return _arrow_reader(source).schema

    def _features(self, path: Path) -> tuple[dict[str, Any], Any]:
        """The ``datasets`` features recorded in the file's schema metadata (``{}`` without), and the schema."""
        schema = self._schema(path)
        metadata = (schema.metadata or {}).get(b"huggingface")
        try:
            features = json.loads(metadata)["info"]["features"] if metadata else {}
        except (ValueError, KeyError, TypeError):
            features = {}
        return (features if isinstance(features, dict) else {}), schema

    def _read_columns(self, path: Path) -> dict[str, list]:
        """The label and artist columns of one data file (the images are read when extracted)."""
        pa, pq, _ = pyarrow_modules()
        columns = [c for c in (self.label_column, self.artist_column) if c]
        if path.suffix == ".parquet":
            table = pq.read_table(path, columns=columns)
        else:
            with pa.memory_map(str(path)) as source:
                table = _arrow_reader(source).read_all().select(columns)
        return {name: table.column(name).to_pylist() for name in columns}

    def _classes(self, values: list, names: list[str] | None) -> tuple[list[str], dict[Any, int]]:
        """The classes present (in ClassLabel order, else sorted) and each label value's index among them."""
        present = sorted(set(values), key=lambda v: (str(type(v)), v))
        if names is not None:
            outside = [v for v in present if not isinstance(v, int) or not 0 <= v < len(names)]
            if outside:
                raise DataSetupError(f"{self.root}: {self.label_column} values {outside[:5]} are not among its {len(names)} class names.")
            seen = set(present)
            kept = [v for v in range(len(names)) if v in seen]
            return [names[v] for v in kept], {v: i for i, v in enumerate(kept)}
        return [str(v) for v in present], {v: i for i, v in enumerate(present)}

    def image_batches(self, path: Path):
        """The image column of one data file, batch by batch, as Python values."""
        pa, pq, _ = pyarrow_modules()
        if path.suffix == ".parquet":
            for batch in pq.ParquetFile(path).iter_batches(batch_size=64, columns=[self.image_column]):
                yield batch.column(0).to_pylist()
            return
        with pa.memory_map(str(path)) as source:
            for batch in _arrow_reader(source):
                yield batch.column(self.image_column).to_pylist()


def _arrow_reader(source):
    """``save_to_disk`` writes Arrow IPC streams; an Arrow file (with a footer) is read too."""
    ipc = pyarrow_modules()[2]
    try:
        return ipc.open_stream(source)
    except Exception:  # noqa: BLE001 - not a stream: the random-access file format
        source.seek(0)
        return ipc.open_file(source)


def class_label_names(feature: Any) -> list[str] | None:
    """The names of a ``ClassLabel`` feature (as ``datasets`` records it), None for any other feature."""
    if isinstance(feature, dict) and feature.get("_type") == "ClassLabel" and isinstance(feature.get("names"), list):
        return [str(name) for name in feature["names"]]
    return None


def locate(root: str, revision: str | None) -> dict[str, list[Path]]:
    """``{split name as the dataset calls it: [data files]}`` for a parquet file or folder, a
    ``save_to_disk`` folder, or a Hub dataset name."""
    path = Path(os.path.expanduser(root))
    if not path.exists():
        if not _HUB_NAME.match(root):
            raise DataSetupError(f"data.root={root}: no such file or folder. {LAYOUT_HINT}")
        path = from_hub(root, revision)
    if path.is_file():
        if path.suffix != ".parquet":
            raise DataSetupError(f"data.root={root}: not a .parquet file. {LAYOUT_HINT}")
        return {split_of(path, path.parent): [path]}
    if (path / "dataset_dict.json").is_file():
        names = _json(path / "dataset_dict.json").get("splits", [])
        return {name: saved_files(path / name) for name in names}
    if (path / "state.json").is_file():
        return {"train": saved_files(path)}
    found: dict[str, list[Path]] = {}
    for file in sorted(path.rglob("*.parquet")):
        if not any(part.startswith(".") for part in file.relative_to(path).parts):
            found.setdefault(split_of(file, path), []).append(file)
    if not found:
        raise DataSetupError(f"data.root={root}: no .parquet files, dataset_dict.json or state.json in that folder. {LAYOUT_HINT}")
    return found


def split_of(file: Path, root: Path) -> str:
    """The split a data file belongs to, from its name (``test-00000-of-00001.parquet``) or a folder
    below ``root`` (``default/validation/0000.parquet``); ``train`` when neither says."""
    for name in [file.stem, *reversed(file.relative_to(root).parent.parts)]:
        match = _SPLIT_IN_NAME.match(name)
        if match:
            return match[1]
    return "train"


def saved_files(folder: Path) -> list[Path]:
    """The Arrow files of one ``save_to_disk`` Dataset, in order (its ``state.json``)."""
    state = _json(folder / "state.json")
    files = [folder / entry["filename"] for entry in state.get("_data_files", []) if isinstance(entry, dict) and "filename" in entry]
    if not files or not all(file.is_file() for file in files):
        raise DataSetupError(f"{folder / 'state.json'}: its data files are missing. {LAYOUT_HINT}")
    return files


def _json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise DataSetupError(f"cannot read {path}: {error}. {LAYOUT_HINT}") from None
    return data if isinstance(data, dict) else {}


def from_hub(name: str, revision: str | None) -> Path:
    """The local folder of a Hub dataset's parquet files: downloaded once into the Hugging Face cache
    (offline, ``HF_HUB_OFFLINE=1``: only what the cache holds)."""
    import huggingface_hub

    log.info("data.root=%s: a Hugging Face Hub dataset; fetching its parquet files (once, into the Hugging Face cache)", name)
    try:
        return Path(huggingface_hub.snapshot_download(name, repo_type="dataset", revision=revision, allow_patterns=["*.parquet"]))
    except Exception as error:  # noqa: BLE001 - any failure: one line saying what to do
        first = next(iter(str(error).splitlines()), type(error).__name__)
        raise DataSetupError(
            f"data.root={name}: not a local file or folder, and the Hub dataset could not be fetched ({first}). With a network: "
            f"`hf download {name} --repo-type dataset`; or give the folder of its parquet files as data.root."
        ) from None


class Extracted:
    """The images of a dataset as files: ``<cache_dir>/<key>/<data file>/<row>.<ext>``, written once (the
    dataset's own bytes) under a lock, with a marker saying they are all there. ``key`` depends on the
    data files (path, size, modification time) and the image column, so a changed dataset is written anew."""

    def __init__(self, cache_dir: Path, files: dict[str, list[Path]], column: str, source: HuggingFaceDataset):
        data_files = [path for paths in files.values() for path in paths]
        stamp = "|".join(f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in data_files) + f"|{column}"
        self.folder = cache_dir / hashlib.sha256(stamp.encode()).hexdigest()[:16]
        self.index: dict[tuple[Path, int], Path | None] = {}
        index_file = self.folder / "index.json"
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.folder) + ".lock"):
            if not index_file.is_file():
                self._extract(data_files, source, index_file)
        saved = _json(index_file).get("files", {})
        for path in data_files:
            for row, relative in enumerate(saved.get(str(path), [])):
                self.index[(path, row)] = (
                    None if relative is None else (self.folder / relative if not os.path.isabs(relative) else Path(relative))
                )

    def path(self, data_file: Path, row: int) -> Path | None:
        return self.index.get((data_file, row))

    def _extract(self, data_files: list[Path], source: HuggingFaceDataset, index_file: Path) -> None:
        from artmove.utils.progress import progress

        total = sum(_rows(path) for path in data_files)
        log.info("%s: writing its %d images once to %s", source.root, total, self.folder)
        listed: dict[str, list[str | None]] = {}
        with progress(total, "images written") as bar:
            for number, path in enumerate(data_files):
                names: list[str | None] = []
                for batch in source.image_batches(path):
                    for value in batch:
                        names.append(self._write(value, path, number, len(names)))
                    bar.update(len(batch))
                listed[str(path)] = names
        with atomic_write(index_file) as file:
            json.dump({"files": listed}, file)

    def _write(self, value: Any, data_file: Path, number: int, row: int) -> str | None:
        """One image to a file; its name relative to the folder (or an absolute path the dataset points at), None without one."""
        data, where = (value.get("bytes"), value.get("path")) if isinstance(value, dict) else (value, None)
        if isinstance(data, str):  # a column of paths
            data, where = None, data
        if not data:
            if not where:
                return None
            pointed = Path(where) if os.path.isabs(where) else data_file.parent / where
            return str(pointed.resolve())
        suffix = Path(where).suffix.lower() if where and is_image_name(Path(where).name) else _sniff(data)
        relative = f"{number:05d}/{row:06d}{suffix}"
        target = self.folder / relative
        if not (target.is_file() and target.stat().st_size == len(data)):  # an interrupted earlier run's files are kept
            with atomic_write(target, "wb") as file:
                file.write(data)
        return relative


def _rows(path: Path) -> int:
    pa, pq, _ = pyarrow_modules()
    if path.suffix == ".parquet":
        return pq.ParquetFile(path).metadata.num_rows
    with pa.memory_map(str(path)) as handle:
        return sum(batch.num_rows for batch in _arrow_reader(handle))


def _sniff(data: bytes) -> str:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    return next((suffix for magic, suffix in _MAGIC if data.startswith(magic)), ".img")
