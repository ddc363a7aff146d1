"""artmove: recognise the artistic movement of a painting with fine-tuned timm backbones."""

from typing import Any

from omegaconf import OmegaConf

__version__ = "0.1.0"
__all__ = ["Prediction", "Predictor"]


def __getattr__(name: str) -> Any:
    """``from artmove import Predictor`` without importing torch for every ``import artmove``."""
    if name in __all__:
        from artmove.serving import predictor

        return getattr(predictor, name)
    raise AttributeError(f"module 'artmove' has no attribute {name!r}")


def _mixed_precision() -> str:
    from artmove.training.trainer import mixed_precision  # torch is imported when a config asks, not with the package

    return mixed_precision()


# `precision: ${artmove.mixed_precision:}` in conf/trainer/gpu.yaml and ddp.yaml: bf16-mixed where the GPU has it.
OmegaConf.register_new_resolver("artmove.mixed_precision", _mixed_precision, replace=True)


def _scaled(pixels: int | None, factor: float) -> int | None:
    return None if pixels is None else round(pixels * factor)


# `test_image_size: ${artmove.scaled:${image_size},1.143}` in conf/experiment/paintings.yaml: a size that
# follows image_size= (224 -> 256); null stays null (the backbone's own size).
OmegaConf.register_new_resolver("artmove.scaled", _scaled, replace=True)


def _help(config_name: str, command: str, *, _root_: Any = None) -> str:
    from artmove.utils.help import help_resolver

    return help_resolver(config_name, command, _root_=_root_)


# `--help` of every Hydra command (conf/hydra/help/artmove.yaml): its own keys and groups, described by their YAML comments.
OmegaConf.register_new_resolver("artmove.help", _help, replace=True)
