"""artmove: recognise the artistic movement of a painting with fine-tuned timm backbones."""

__version__ = "0.1.0"
__all__ = ["Prediction", "Predictor"]


def __getattr__(name: str):
    """``from artmove import Predictor`` without importing torch for every ``import artmove``."""
    if name in __all__:
        from artmove import predictor

        return getattr(predictor, name)
    raise AttributeError(f"module 'artmove' has no attribute {name!r}")
