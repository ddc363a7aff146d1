"""What the data tools (verify, prepare, inspect) share: the data set from the config, errors, workers."""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from artmove.data.datamodule import PaintingDataModule, auto_workers
from artmove.data.sources.base import SPLITS, LabelledFiles
from artmove.errors import ConfigError

log = logging.getLogger("artmove.data")


def load_datamodule(cfg: DictConfig) -> PaintingDataModule:
    """The data module of ``cfg.data``; only file-based data sets make sense for the tools."""
    if "data.root" in OmegaConf.missing_keys(cfg):
        raise ConfigError("this data set needs its location: add data.root=/path/to/the/data set.")
    datamodule = instantiate(cfg.data)
    if not isinstance(datamodule.source.split("train"), LabelledFiles):
        raise ConfigError("this data set is generated, not read from files: choose data=rasta|wikiart|pandora|csv|folder|hf.")
    return datamodule


def all_files(datamodule: PaintingDataModule) -> list[Path]:
    """Every file the source lists, in split order, including listed-but-missing ones."""
    splits = [datamodule.source.split(split) for split in SPLITS]  # file lists: load_datamodule checked
    listed = [path for files in splits if isinstance(files, LabelledFiles) for path, _ in files.samples]
    return listed + list(getattr(datamodule.source, "missing", []))


def workers(value) -> int:
    return auto_workers() if value == "auto" else max(1, int(value))


def say(message: str, *args) -> None:
    """Hydra's job logging sends it to the console and to the run's log file."""
    log.info(message, *args)
