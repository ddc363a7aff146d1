"""Models: backbone creation with pretrained weights, input preprocessing, metrics, the LightningModule."""

from artmove.models.classifier import ArtClassifier
from artmove.models.preprocessing import backbone_preprocessing

__all__ = ["ArtClassifier", "backbone_preprocessing"]
