"""The painting data a trained checkpoint is evaluated on: the one named on the command line, else
the data set its run was trained on (as the run recorded it, read as data), with the same splits."""

from __future__ import annotations

import copy
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from artmove.data.datamodule import PaintingDataModule
from artmove.errors import ConfigError
from artmove.models.ensemble import TrainedEnsemble
from artmove.models.trained import TrainedModel
from artmove.runs.checkpoints import OpenedRun


def evaluation_data(
    cfg: DictConfig, opened: OpenedRun, trained: TrainedModel | TrainedEnsemble, preprocessing: dict[str, Any]
) -> PaintingDataModule:
    """The data module of ``cfg.data`` (the command's own ``data=…``, composed from artmove's configs), else of
    the run's recorded data set, built from artmove's formats by name; ``cfg.seed`` (else the run's, else 42)
    is what its splits were drawn with."""
    recorded = opened.data_settings(trained)
    seed = cfg.get("seed")
    if cfg.get("data") is not None:
        root = copy.deepcopy(cfg)  # its interpolations (${seed}) resolve there
        with open_dict(root):
            root.seed = seed if seed is not None else recorded.seed if recorded is not None else 42
        return instantiate(root.data, preprocessing=preprocessing, _convert_="all")
    if recorded is None:
        raise ConfigError(
            f"no data set given and {opened.run.path} does not record the one it trained on (no record in its "
            "checkpoint, no .hydra/config.yaml): add data=rasta data.root=/path/to/data "
            "(or data=folder/synthetic)."
        )
    return (recorded if seed is None else recorded.model_copy(update={"seed": seed})).build(preprocessing)
