"""Data set formats: each turns a layout on disk (or a generator) into classes and splits."""

from artmove.data.sources.base import DataSetupError, PaintingSource
from artmove.data.sources.folder import ImageFolderSplits
from artmove.data.sources.rasta import RastaWikiPaintings
from artmove.data.sources.synthetic import SyntheticPaintings

__all__ = ["DataSetupError", "ImageFolderSplits", "PaintingSource", "RastaWikiPaintings", "SyntheticPaintings"]
