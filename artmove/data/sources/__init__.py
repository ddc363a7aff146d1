"""Data set formats: each turns a layout on disk (or a generator) into classes and splits."""

from artmove.data.sources.base import PaintingSource
from artmove.data.sources.folder import ImageFolderSplits
from artmove.data.sources.hf import HuggingFaceDataset
from artmove.data.sources.manifest import CsvManifest
from artmove.data.sources.pandora import Pandora18k
from artmove.data.sources.rasta import RastaWikiPaintings
from artmove.data.sources.synthetic import SyntheticPaintings
from artmove.data.sources.wikiart import WikiArtCSV

__all__ = [
    "CsvManifest",
    "HuggingFaceDataset",
    "ImageFolderSplits",
    "Pandora18k",
    "PaintingSource",
    "RastaWikiPaintings",
    "SyntheticPaintings",
    "WikiArtCSV",
]
