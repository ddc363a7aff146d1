"""Which checkpoint a (re)started job continues from, and whether it may.

A SLURM requeue re-runs the same job in the same folder, so ``resume=true`` picks up
``<run>/checkpoints/last.ckpt`` instead of starting over (``KeepLoggedMetrics`` keeps the earlier
attempt's metric rows). Every checkpoint carries the run's record (``RUN_RECORD``: the settings that
define what it trains, its classes, its whole config and its attempts so far): a rerun whose
defining settings differ is refused, naming each, before any data is read; the other changes (more
epochs, loggers, workers) are kept in the run's history of attempts, which results.json shows.

``resume=<run folder>`` continues that run without retyping it (``artmove.runs.command_line``):
``python -m artmove.train resume=outputs/2026-12-01/12-00-00 trainer.max_epochs=10``.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from artmove.errors import ConfigError, UnreadableCheckpoint
from artmove.models.trained import RUN_RECORD, check_same_classes
from artmove.runs.folder import CHECKPOINTS, LAST_CHECKPOINT, RunFolder
from artmove.utils.cli import say_user_error
from artmove.utils.io import read_checkpoint

log = logging.getLogger(__name__)
#: The settings that define what a run trains; a config node named here counts as a whole.
IDENTITY = (
    "backbone",
    "network.head",
    "finetune",
    "image_size",
    "test_image_size",
    "seed",
    "data.root",
    "data.source",
    "data.group_by",
    "data.regroup_published",
)


@dataclass
class Resume:
    """The checkpoint a run continues from (None: it starts), and the record this attempt adds to."""

    checkpoint: str | None
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def classes(self) -> list[str] | None:
        return self.record.get("classes")


def run_settings(cfg: DictConfig) -> dict[str, Any]:
    """The run's config, resolved and flattened (``{"data.batch_size": 32, …}``): what attempts are compared on.
    Paths inside the run folder are relative to it (:func:`within_run`)."""
    return within_run(dict(_flatten(OmegaConf.to_container(cfg, resolve=True))))


def within_run(settings: dict[str, Any]) -> dict[str, Any]:
    """Settings with every path inside the run's own folder (``paths.output_dir``: ``…/checkpoints``,
    ``…/csv/metrics.csv``) written relative to it: a copied or moved run has the same settings, and its
    record names no other folder. Records of earlier versions are read through it too."""
    run = settings.get("paths.output_dir")
    if not isinstance(run, str) or not run:
        return settings
    prefix = run.rstrip("/") + "/"
    return {
        key: "." if value == run else value[len(prefix) :] if isinstance(value, str) and value.startswith(prefix) else value
        for key, value in settings.items()
    }


def identity(cfg: DictConfig) -> dict[str, Any]:
    """The settings that define the run ``cfg`` composes, resolved and flattened as :func:`run_settings`
    flattens them; none depends on Hydra's runtime, so this works before Hydra starts the run."""
    found: dict[str, Any] = {}
    for key in IDENTITY:
        value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        value = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
        found.update(_flatten(value, f"{key}.") if isinstance(value, dict) and value else [(key, value)])
    return found


def resume_checkpoint(resume: bool | str | None, checkpoint_dir: str | Path | None, cfg: DictConfig) -> Resume:
    """``resume=true``: this run's ``last.ckpt`` when it exists; ``false``: never; a path: that checkpoint.

    The file is read here first (tensors only, ``artmove.utils.io.read_checkpoint``), so a damaged or
    hostile one, or one trained with other defining settings, stops the run with one line before any
    data is read or weights are loaded. Returns where fit continues from and this attempt's record."""
    settings = run_settings(cfg)
    started = {"attempt": 1, "started": time.strftime("%Y-%m-%d %H:%M:%S"), "resumed_from": None}
    fresh = Resume(None, {"identity": identity(cfg), "settings": settings, "attempts": [started]})
    path = checkpoint_to_resume(resume, checkpoint_dir)
    if path is None:
        return fresh
    checkpoint = _training_state(path)
    previous = run_record(checkpoint, path)
    check_same_run(previous["identity"], fresh.record["identity"], path)
    old = within_run(previous.get("settings") or {})
    changed = {key: [old.get(key), value] for key, value in settings.items() if old.get(key) != value}
    changed.update({key: [value, None] for key, value in old.items() if key not in settings})
    changed.pop("resume", None)  # how this attempt started: resumed_from says it
    attempts = [
        *previous.get("attempts", []),
        {
            **started,
            "attempt": len(previous.get("attempts", [])) + 1,
            "resumed_from": {"checkpoint": str(path), "epoch": checkpoint.get("epoch"), "global_step": checkpoint.get("global_step")},
            "changed": changed,
        },
    ]
    how = (
        "an earlier attempt of this run; resume=false starts over"
        if resume is True
        else "resume=<run folder>"
        if Path(str(resume)).expanduser().is_dir()
        else "resume=PATH"
    )
    log.info("resuming from %s (%s)%s", path, how, f"; changed since: {', '.join(changed)}" if changed else "")
    return Resume(str(path), {**previous, "settings": settings, "attempts": attempts})


def checkpoint_to_resume(resume: bool | str | None, checkpoint_dir: str | Path | None) -> Path | None:
    """``resume=true``: this run's ``last.ckpt`` when it exists; ``false``: none; a checkpoint file: that one;
    a run folder: its ``last.ckpt`` when it exists (none yet: the run starts over, with its settings)."""
    if resume in (None, False):
        return None
    if resume is True:
        path = Path(checkpoint_dir) / LAST_CHECKPOINT if checkpoint_dir else None
        return path if path is not None and path.is_file() else None
    path = Path(str(resume)).expanduser()
    if path.is_dir():
        last = RunFolder(path.parent if path.name == CHECKPOINTS else path).last_checkpoint
        if not last.is_file():
            log.info("resume=%s: no %s yet (no epoch ended): the run starts over in its folder, with its settings", resume, last)
        return last if last.is_file() else None
    if not path.is_file():
        raise ConfigError(
            f"resume={resume}: no such checkpoint file or run folder. Give a run folder, a .ckpt path, "
            "true (this run's last.ckpt) or false."
        )
    return path


def run_record(checkpoint: dict[str, Any], path: Path) -> dict[str, Any]:
    record = checkpoint.get(RUN_RECORD)
    if not isinstance(record, dict) or not isinstance(record.get("identity"), dict):
        raise ConfigError(
            f"cannot resume from {path}: it does not record the settings it was trained with (written by an "
            f"earlier artmove, or not by artmove). Start over with resume=false (its weights: weights={path})."
        )
    return record


class CheckResume(Callback):
    """Hydra callback (``hydra.callbacks``): a rerun into a run folder whose defining settings differ from its
    last checkpoint's stops with one line before Hydra writes the new settings into the folder's
    ``.hydra/``, which keeps saying what its checkpoint was trained with (evaluate reads it). ``train``
    checks again, for runs started from Python; the checkpoint is memory-mapped here, not read."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.get("task_name") != "train":
            return
        from artmove.finetune.policies import drop_unused_settings

        try:
            path = checkpoint_to_resume(config.get("resume", True), RunFolder(Path(config.hydra.run.dir)).checkpoints)
            if path is None:
                return
            try:
                checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except Exception:  # noqa: BLE001 - an unreadable file is train's to report, with its reason
                return
            now = copy.deepcopy(config)  # as train settles it: a preset's value the policy does not use, dropped
            drop_unused_settings(now, list(config.hydra.overrides.task), say=False)
            check_same_run(run_record(checkpoint, path)["identity"], identity(now), path)
        except ConfigError as error:
            say_user_error(error)
            raise SystemExit(2) from None


def check_same_run(trained: dict[str, Any], now: dict[str, Any], path: Path) -> None:
    """One line naming every defining setting that differs from the checkpoint's."""
    keys = sorted(set(trained) | set(now))
    differ = [f"{key}={now.get(key)!r} (the checkpoint's: {trained.get(key)!r})" for key in keys if trained.get(key) != now.get(key)]
    if differ:
        raise ConfigError(
            f"cannot continue {path} with other settings: {'; '.join(differ)}. Rerun with the checkpoint's settings, "
            "or start a new run (another hydra.run.dir, or resume=false to overwrite this one)."
        )


def check_resumed_classes(resume: Resume, classes: list[str]) -> None:
    """The data set's classes are the checkpoint's (compared once the data set is listed, before weights load)."""
    if resume.checkpoint and resume.classes is not None:
        check_same_classes(
            resume.classes,
            classes,
            f"cannot continue {resume.checkpoint}: the data set's classes differ from the checkpoint's",
            "Continue on the same data, or start a new run.",
        )


def _training_state(path: Path) -> dict[str, Any]:
    try:
        checkpoint = read_checkpoint(path)
    except UnreadableCheckpoint as error:
        raise ConfigError(
            f"cannot resume: {error}. Start over with resume=false, or continue from another "
            "checkpoint with resume=PATH (e.g. the best-….ckpt beside it)."
        ) from None
    if not isinstance(checkpoint, dict) or "loops" not in checkpoint:
        raise ConfigError(
            f"cannot resume from {path}: it holds weights but no training state (not a Lightning "
            "checkpoint). Use weights=PATH to start from its weights, or resume=false."
        )
    return checkpoint


def _flatten(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict) and node:
        for key, value in node.items():
            yield from _flatten(value, f"{prefix}{key}.")
    else:
        yield prefix[:-1], node
