"""Models: the network (a timm backbone and a head, one module), its heads, pretrained weights,
input preprocessing, the LightningModule that trains it, and loading a trained one back."""

from artmove.models.classifier import ArtClassifier
from artmove.models.heads import HEADS
from artmove.models.network import ArtNetwork, create_network
from artmove.models.preprocessing import backbone_preprocessing
from artmove.models.trained import TrainedModel, load_trained

__all__ = ["HEADS", "ArtClassifier", "ArtNetwork", "TrainedModel", "backbone_preprocessing", "create_network", "load_trained"]
