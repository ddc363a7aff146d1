"""Models: backbone creation with pretrained weights, the unfreeze policy, the LightningModule."""

from artmove.models.classifier import ArtClassifier

__all__ = ["ArtClassifier"]
