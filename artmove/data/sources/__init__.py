"""Data set formats: each turns a layout on disk (or a generator) into classes and splits."""

from artmove.data.sources.base import PaintingSource
from artmove.data.sources.folder import ImageFolderSplits
from artmove.data.sources.hf import HuggingFaceDataset
from artmove.data.sources.manifest import CsvManifest
from artmove.data.sources.pandora import Pandora18k
from artmove.data.sources.rasta import RastaWikiPaintings
from artmove.data.sources.synthetic import SyntheticPaintings
from artmove.data.sources.wikiart import WikiArtCSV

#: Each format by the name of its option in ``conf/data/`` (``data=folder``): how a run's record names its data
#: set, looked up here and never imported (``artmove.data.settings``; tests/test_runs.py checks conf/data agrees).
SOURCE_FORMATS: dict[str, type[PaintingSource]] = {
    "synthetic": SyntheticPaintings,
    "folder": ImageFolderSplits,
    "csv": CsvManifest,
    "rasta": RastaWikiPaintings,
    "wikiart": WikiArtCSV,
    "pandora": Pandora18k,
    "hf": HuggingFaceDataset,
}

__all__ = [
    "SOURCE_FORMATS",
    "CsvManifest",
    "HuggingFaceDataset",
    "ImageFolderSplits",
    "PaintingSource",
    "Pandora18k",
    "RastaWikiPaintings",
    "SyntheticPaintings",
    "WikiArtCSV",
]
