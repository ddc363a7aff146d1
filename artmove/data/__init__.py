"""Painting data sets: formats (sources), image reading, transforms, the data module."""

from artmove.data.datamodule import PaintingDataModule

__all__ = ["PaintingDataModule"]
