"""Checks on a composed config that fail in a second, before data is read or weights loaded."""

from __future__ import annotations

import difflib
from numbers import Real

import timm
from omegaconf import DictConfig, OmegaConf


class ConfigError(ValueError):
    """A configuration the user has to change."""


def check_backbone(name: str) -> None:
    if not isinstance(name, str) or not name:
        raise ConfigError(f"backbone={name!r}: give a timm model name, e.g. backbone=resnet50.")
    if name.startswith(("hf-hub:", "hf_hub:", "local-dir:")) or timm.is_model(name):
        return
    close = difflib.get_close_matches(name.split(".", 1)[0], timm.list_models(), n=5, cutoff=0.6)
    hint = f" Closest timm names: {', '.join(close)}." if close else " See timm.list_models()."
    raise ConfigError(f"unknown backbone '{name}': timm has no such model.{hint}")


def check_unfreeze(value) -> None:
    if isinstance(value, bool) or not isinstance(value, Real) or not 0 <= value <= 1:
        raise ConfigError(
            f"unfreeze={value!r} must be a number in [0, 1]: the fraction of the backbone to retrain "
            "(0 = head only, 0.2 = the top 20%, 1 = everything)."
        )


def check_train_config(cfg: DictConfig) -> None:
    """What no single object checks: a data set without its location, and ``???`` settings."""
    if "data.root" in OmegaConf.missing_keys(cfg):
        raise ConfigError(
            f"this data set needs its location: add data.root=/path/to/the/dataset "
            f"(the data config in use: {cfg.data.source._target_.rsplit('.', 1)[-1]})."
        )
    require_settings(cfg)
    check_run_numbers(cfg)


def check_run_numbers(cfg: DictConfig) -> None:
    """The numbers the optimizer and Lightning's Trainer take, which are built after data and weights."""
    lr = OmegaConf.select(cfg, "optimizer.lr", default=None)
    if not _is_number(lr) or lr <= 0:
        raise ConfigError(f"optimizer.lr={lr!r}: give a learning rate > 0, e.g. optimizer.lr=1e-3.")
    decay = OmegaConf.select(cfg, "optimizer.weight_decay", default=0.0)
    if not _is_number(decay) or decay < 0:
        raise ConfigError(f"optimizer.weight_decay={decay!r}: give a number >= 0 (0 = none).")
    epochs = OmegaConf.select(cfg, "trainer.max_epochs", default=None)
    if epochs is not None and (not isinstance(epochs, int) or isinstance(epochs, bool) or not (epochs >= 1 or epochs == -1)):
        raise ConfigError(f"trainer.max_epochs={epochs!r}: give a whole number of epochs >= 1 (or -1: until max_steps/max_time).")


def _is_number(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


# How each command's required settings look on a command line.
EXAMPLES = {"ckpt_path": "ckpt_path=<run>/checkpoints/last.ckpt", "input": "input=painting.jpg"}


def require_settings(cfg: DictConfig) -> None:
    """One message naming every ``???`` setting left unset, with an example for each."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        examples = " ".join(EXAMPLES.get(key, f"{key}=…") for key in missing)
        raise ConfigError(f"missing settings: {', '.join(missing)}: set them on the command line, e.g. {examples}.")
