"""What a command's ``ckpt_path`` means, read once: the one entry point through which evaluate, predict,
export, demo and ``Predictor`` open a model (:func:`open_run`). A ``.ckpt`` file, a training run folder
(its best checkpoint), a run's ``checkpoints/`` folder, or a sweep folder (its best job by
``optimized_value``, then that job's best checkpoint); an ensemble is a list of them
(``ckpt_path=[run_a,run_b]``) or a sweep folder's jobs (``ensemble=all|top3``).

Everything read on the way is data: results.json through its schema (``RunFolder.results``), the
checkpoints as tensors and plain values, the run's data set from the checkpoint's record (or, for runs
of an earlier format, the run's saved config with plain references only: ``artmove.runs.plain``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from artmove.data.settings import DataSettings
from artmove.errors import ConfigError
from artmove.models.ensemble import TrainedEnsemble, load_model
from artmove.models.trained import TrainedModel
from artmove.runs.folder import CHECKPOINTS, CKPT_PATH_FORMS, RunFolder, SweepFolder

log = logging.getLogger(__name__)
ENSEMBLE_FORMS = "ensemble=all (every finished job of the sweep) or ensemble=top<k> (its k best by the sweep's optimized metric, e.g. top3)"


@dataclass(frozen=True)
class Checkpoint:
    """A resolved ``ckpt_path``: the file, and the run folder it belongs to."""

    file: Path
    run: RunFolder

    @property
    def name(self) -> str:
        return self.file.name


def resolve_checkpoint(ckpt_path: str | Path) -> Checkpoint:
    """The checkpoint one path means (a member of :func:`open_run`'s list, or the whole of it)."""
    path = Path(ckpt_path).expanduser()
    if path.is_file():
        checkpoint = Checkpoint(path, RunFolder.of_checkpoint(path))
    elif not path.is_dir():
        raise ConfigError(f"checkpoint not found: ckpt_path={ckpt_path} is no file or folder. {CKPT_PATH_FORMS}")
    else:
        path = path.parent if path.name == CHECKPOINTS else path
        run = RunFolder(path) if (path / CHECKPOINTS).is_dir() else SweepFolder(path).best_job()
        checkpoint = Checkpoint(run.best_checkpoint(), run)
    return checkpoint


def resolve_checkpoints(ckpt_path: Any, ensemble: str | None = None) -> list[Checkpoint]:
    """The checkpoint(s) ``ckpt_path`` means: one (a list of one), or an ensemble's members, in order: a list
    ``ckpt_path=[run_a,run_b,…]`` (each resolved as :func:`resolve_checkpoint` does), or a sweep folder
    with ``ensemble=all`` (its finished jobs, best first) or ``ensemble=topK`` (its K best by the sweep's
    optimized value; fewer when it has fewer). Each member is the best checkpoint of its run."""
    if is_list(ckpt_path):
        if ensemble is not None:
            raise ConfigError(
                f"ensemble={ensemble} chooses jobs of one sweep folder; a list ckpt_path=[…] names every member itself: drop ensemble=."
            )
        members = [resolve_checkpoint(path) for path in ckpt_path]
        if not members:
            raise ConfigError("ckpt_path=[]: give at least one checkpoint, run or sweep folder.")
        files = [member.file.resolve() for member in members]
        twice = next((str(path) for path in files if files.count(path) > 1), None)
        if twice:
            raise ConfigError(f"ckpt_path lists {twice} twice: an ensemble's members are different checkpoints.")
        return members
    if ensemble is None:
        return [resolve_checkpoint(ckpt_path)]
    count = ensemble_size(ensemble)
    path = Path(str(ckpt_path)).expanduser()
    if not path.is_dir() or path.name == CHECKPOINTS or (path / CHECKPOINTS).is_dir():
        raise ConfigError(
            f"ensemble={ensemble} takes the jobs of a sweep folder, and ckpt_path={ckpt_path} is not one: give "
            "ckpt_path=<sweep folder> (outputs/multirun/…), or list the members: ckpt_path=[run_a,run_b]."
        )
    jobs = SweepFolder(path).ranked_jobs()
    chosen = jobs if count is None else jobs[:count]
    if count is not None and len(jobs) < count:
        log.warning("ensemble=%s: the sweep has %d finished job(s) with checkpoints; all of them are members", ensemble, len(jobs))
    return [Checkpoint(run.best_checkpoint(), run) for run in chosen]


def ensemble_size(ensemble: Any) -> int | None:
    """``all`` -> None (every job), ``topK`` -> K (K >= 1); anything else is a ConfigError."""
    if ensemble == "all":
        return None
    match = re.fullmatch(r"top([1-9]\d*)", str(ensemble))
    if not match:
        raise ConfigError(f"ensemble={ensemble!r}: give {ENSEMBLE_FORMS}, with ckpt_path=<sweep folder>.")
    return int(match[1])


def is_list(ckpt_path: Any) -> bool:
    """A list of paths (Hydra's ``ckpt_path=[a,b]`` is a ListConfig), not a path."""
    return isinstance(ckpt_path, Sequence) and not isinstance(ckpt_path, (str, bytes))


def home_folder(ckpt_path: Any) -> Path | None:
    """The folder a ``ckpt_path`` belongs to, from the path's shape alone: a checkpoint's run, a run folder,
    a sweep folder (where its evaluations, ``eval/``, and exports go); None when it is no file or folder, or a
    list (an ensemble of runs has no one folder). Evaluate's output folder is chosen from it before
    the command starts (Hydra makes it first); :func:`open_run` gives the same."""
    if not ckpt_path or is_list(ckpt_path):
        return None
    path = Path(str(ckpt_path)).expanduser()
    if path.is_file():
        return RunFolder.of_checkpoint(path).path
    if path.is_dir():
        return path.parent if path.name == CHECKPOINTS else path
    return None


@dataclass(frozen=True)
class OpenedRun:
    """A command's ``ckpt_path`` (and ``ensemble=``), resolved: its checkpoint(s), each with its run folder,
    and the folder it belongs to (``home``: the run's, or the sweep's; None for a list of runs)."""

    checkpoints: tuple[Checkpoint, ...]
    home: Path | None
    ensemble: str | None = None

    @property
    def files(self) -> list[Path]:
        return [checkpoint.file for checkpoint in self.checkpoints]

    @property
    def run(self) -> RunFolder:
        """The (first member's) run: its data set is the one evaluated."""
        return self.checkpoints[0].run

    @property
    def is_ensemble(self) -> bool:
        return len(self.checkpoints) > 1

    @property
    def eval_dir(self) -> Path | None:
        return None if self.home is None else self.home / "eval"

    @property
    def export_dir(self) -> Path | None:
        """``<run>/export``; an ensemble of a sweep's jobs: ``<sweep>/export-ensemble_<all|topK>``; a list: None."""
        if not self.is_ensemble:
            return self.run.export_dir
        return None if self.home is None else self.home / f"export-ensemble_{self.ensemble}"

    def load(self, device: str = "cpu") -> TrainedModel | TrainedEnsemble:
        """The trained network (an ensemble's members), each checkpoint read once, as data; an ensemble calibrated
        as one model (``artmove.runs.ensemble_calibration``: its own temperature, sets and threshold)."""
        trained = load_model(self.files, device)
        if isinstance(trained, TrainedEnsemble):
            from artmove.runs.ensemble_calibration import calibrate_ensemble  # it reads data: imported when an ensemble needs it

            calibrate_ensemble(trained, self)
        return trained

    def data_settings(self, trained: TrainedModel | TrainedEnsemble) -> DataSettings | None:
        """The data set the (first member's) run trained on: its checkpoint's record, else, for a run of an
        earlier format, its saved config read as plain data; None when neither says."""
        member = trained.members[0] if isinstance(trained, TrainedEnsemble) else trained
        record = (member.run_record or {}).get("data")
        if record is not None:
            return DataSettings.read(record, member.checkpoint)
        return self.run.saved_data_settings()


def open_run(ckpt_path: Any, ensemble: str | None = None) -> OpenedRun:
    """What ``ckpt_path`` (with ``ensemble=``) means: the one place a command's checkpoint path is read."""
    if ensemble is not None:
        ensemble_size(ensemble)
    checkpoints = tuple(resolve_checkpoints(ckpt_path, ensemble))
    for checkpoint in checkpoints:
        _ = checkpoint.run.saved_config  # read and checked now: one someone edited to hold code is refused, whichever command opens it
    return OpenedRun(checkpoints, home_folder(ckpt_path), ensemble)
