"""The painting data a trained checkpoint is evaluated on: the one named on the command line, else
the data set its run was trained on (the run's saved config, read as data), with the same splits."""

from __future__ import annotations

import copy
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from artmove.data.datamodule import PaintingDataModule
from artmove.errors import ConfigError
from artmove.runs.folder import RunFolder


def evaluation_data(cfg: DictConfig, run: RunFolder, preprocessing: dict[str, Any]) -> PaintingDataModule:
    """The data module of ``cfg.data`` (a command's ``data=…``), else of the run's own data set; ``cfg.seed``
    (else the run's, else 42) is what its splits were drawn with."""
    trained = run.config()  # its _target_s checked: only those artmove's own configs name are built
    if cfg.get("data") is None and trained is None:
        raise ConfigError(
            f"no data set given and {run.path} has no .hydra/config.yaml to take the training "
            "data set from: add data=rasta data.root=/path/to/data (or data=folder/synthetic)."
        )
    seed = cfg.get("seed")
    if seed is None:
        seed = trained.get("seed", 42) if trained is not None else 42
    root = copy.deepcopy(cfg if cfg.get("data") is not None else trained)  # its interpolations (${seed}) resolve there
    with open_dict(root):
        root.seed = seed
    return instantiate(root.data, preprocessing=preprocessing, _convert_="all")
