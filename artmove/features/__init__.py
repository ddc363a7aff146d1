"""Linear probes in seconds: the frozen backbone's pooled features, computed once and cached."""

from artmove.features.cache import FeatureCache
from artmove.features.datamodule import FeatureDataModule

__all__ = ["FeatureCache", "FeatureDataModule"]
