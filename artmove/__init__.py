"""artmove: recognise the artistic movement of a painting with fine-tuned timm backbones."""

__version__ = "0.1.0"
