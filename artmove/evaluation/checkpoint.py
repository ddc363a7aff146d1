"""A trained classifier back from its checkpoint, with no weight download."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from artmove.checks import ConfigError
from artmove.models import ArtClassifier


def load_classifier(ckpt_path: str | Path, device: str = "cpu") -> ArtClassifier:
    """The checkpoint's model in eval mode; its backbone, classes and transforms come from its hparams."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise ConfigError(
            f"checkpoint not found: {path}. Give ckpt_path=<run folder>/checkpoints/<best-….ckpt or last.ckpt>."
        )
    try:
        # compile=False: evaluation runs once over a split, hooks (Grad-CAM) need the eager module.
        model = ArtClassifier.load_from_checkpoint(path, map_location="cpu", pretrained=False, weights=None, compile=False)
    except (KeyError, RuntimeError, TypeError) as error:
        raise ConfigError(f"{path} is not an artmove training checkpoint ({type(error).__name__}: {error}).") from None
    if not model.hparams.get("class_names"):
        model.hparams.class_names = [str(label) for label in range(model.hparams.num_classes)]
    return model.to(resolve_device(device)).eval()


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def run_dir(ckpt_path: str | Path) -> Path:
    """The training run a checkpoint belongs to: ``<run>/checkpoints/x.ckpt`` -> ``<run>``."""
    parent = Path(ckpt_path).resolve().parent
    return parent.parent if parent.name == "checkpoints" else parent


def run_config(ckpt_path: str | Path) -> DictConfig | None:
    """The composed config of the run that wrote the checkpoint (``<run>/.hydra/config.yaml``), if kept."""
    path = run_dir(ckpt_path) / ".hydra" / "config.yaml"
    return OmegaConf.load(path) if path.is_file() else None
