"""Checks on a composed config that fail in a second, before data is read or weights loaded."""

from __future__ import annotations

import math
import re
from numbers import Real
from typing import Any

from omegaconf import DictConfig, OmegaConf

from artmove.errors import ConfigError, user_error_behind
from artmove.utils.limits import check_batch, check_image_size


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
    """The numbers the optimizer, the loss and Lightning's Trainer take, which are built after data and weights."""
    lr = OmegaConf.select(cfg, "optimizer.lr", default=None)
    if not is_number(lr) or not 0 < lr < math.inf:
        raise ConfigError(f"optimizer.lr={lr!r}: give a learning rate > 0, e.g. optimizer.lr=1e-3.")
    decay = OmegaConf.select(cfg, "optimizer.weight_decay", default=0.0)
    if not is_number(decay) or not 0 <= decay < math.inf:
        raise ConfigError(f"optimizer.weight_decay={decay!r}: give a number >= 0 (0 = none).")
    smoothing = OmegaConf.select(cfg, "model.label_smoothing", default=0.0)
    if not is_number(smoothing) or not 0 <= smoothing < 1:
        raise ConfigError(f"model.label_smoothing={smoothing!r}: give a share in [0, 1), e.g. 0.1 (0 = none).")
    epochs = OmegaConf.select(cfg, "trainer.max_epochs", default=None)
    if epochs is not None and (not isinstance(epochs, int) or isinstance(epochs, bool) or not (epochs >= 1 or epochs == -1)):
        raise ConfigError(f"trainer.max_epochs={epochs!r}: give a whole number of epochs >= 1 (or -1: until max_steps/max_time).")
    schedule, steps = OmegaConf.select(cfg, "scheduler.sched", default="none"), OmegaConf.select(cfg, "trainer.max_steps", default=-1)
    if epochs == -1 and schedule not in (None, "none") and steps in (None, -1):
        raise ConfigError(
            "trainer.max_epochs=-1 trains without an epoch limit, and the learning-rate schedule "
            f"(scheduler={schedule}) needs a length: give trainer.max_steps=N (the schedule spans it), "
            "trainer.max_epochs=N, or scheduler=none (a constant rate, until trainer.max_time or a stop)."
        )
    check_whole("seed", OmegaConf.select(cfg, "seed", default=0), minimum=0)
    check_image_size("image_size", OmegaConf.select(cfg, "image_size", default=None), "the backbone's own")
    check_image_size("test_image_size", OmegaConf.select(cfg, "test_image_size", default=None), "image_size")
    check_batch("data.batch_size", OmegaConf.select(cfg, "data.batch_size", default=1), OmegaConf.select(cfg, "image_size", default=None))


def check_whole(key: str, value: Any, minimum: int = 1) -> None:
    """A whole-number setting (``seed``, ``batch_size``, ``num_workers``…) at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{key}={value!r}: give a whole number >= {minimum}.")


def is_number(value) -> bool:
    """A real number (not a bool): what a numeric setting must be before its range is checked."""
    return isinstance(value, Real) and not isinstance(value, bool)


# How each command's required settings look on a command line.
EXAMPLES = {"ckpt_path": "ckpt_path=<run>/checkpoints/last.ckpt", "input": "input=painting.jpg"}


def require_settings(cfg: DictConfig) -> None:
    """One message naming every ``???`` setting left unset, with an example for each."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        examples = " ".join(EXAMPLES.get(key, f"{key}=…") for key in missing)
        raise ConfigError(f"missing settings: {', '.join(missing)}: set them on the command line, e.g. {examples}.")


def instantiate_checked(config: Any, key: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` of the config node at ``key``: a user error its constructor raised comes
    out as itself (not Hydra's wrapper), and a setting the constructor does not take as a ConfigError."""
    from hydra.utils import instantiate

    try:
        return instantiate(config, **kwargs)
    except Exception as raised:
        error = user_error_behind(raised)
        unknown = re.search(r"unexpected keyword argument '(\w+)'", str(raised.__cause__ or raised))
        if error is raised and unknown:
            target = str(config.get("_target_", "")).rsplit(".", 1)[-1]
            known = ", ".join(sorted(set(config) - {"_target_", "_partial_", "_convert_", unknown[1]}))
            raise ConfigError(f"{key}.{unknown[1]}: {target} has no such setting; its settings: {known}.") from None
        if error is raised:
            raise
        raise error from None


def plain_dict(node: Any) -> dict[str, Any]:
    """A config node (the user's own, composed from artmove's configs) resolved to plain containers, as a dict."""
    container = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
    if not isinstance(container, dict):
        raise ConfigError(f"expected a mapping of settings, got {container!r}.")
    return {str(key): value for key, value in container.items()}
