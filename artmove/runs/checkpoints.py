"""Which checkpoint a command's ``ckpt_path`` means, resolved once at the top of the command and passed
down: a ``.ckpt`` file, a training run folder (its best checkpoint), a run's ``checkpoints/`` folder,
or a sweep folder (its best job by ``optimized_value``, then that job's best checkpoint). An ensemble
is a list of them (``ckpt_path=[run_a,run_b]``) or a sweep folder's jobs (``ensemble=all|top3``)."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from artmove.errors import ConfigError
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
    """The checkpoint ``ckpt_path`` means. Its run folder is data too: a saved config naming code artmove's
    own configs never name is refused here, whichever command asked (``RunFolder.config``)."""
    path = Path(ckpt_path).expanduser()
    if path.is_file():
        checkpoint = Checkpoint(path, RunFolder.of_checkpoint(path))
    elif not path.is_dir():
        raise ConfigError(f"checkpoint not found: ckpt_path={ckpt_path} is no file or folder. {CKPT_PATH_FORMS}")
    else:
        path = path.parent if path.name == CHECKPOINTS else path
        run = RunFolder(path) if (path / CHECKPOINTS).is_dir() else SweepFolder(path).best_job()
        checkpoint = Checkpoint(run.best_checkpoint(), run)
    checkpoint.run.config()
    return checkpoint


def resolve_checkpoints(ckpt_path: Any, ensemble: str | None = None) -> list[Checkpoint]:
    """The checkpoint(s) ``ckpt_path`` means: one (a list of one), or an ensemble's members, in order: a list
    ``ckpt_path=[run_a,run_b,…]`` (each resolved as :func:`resolve_checkpoint` does), or a sweep folder
    with ``ensemble=all`` (its finished jobs, best first) or ``ensemble=topK`` (its K best by the sweep's
    optimized value; fewer when it has fewer). Each member is the best checkpoint of its run."""
    if is_list(ckpt_path):
        if ensemble is not None:
            raise ConfigError(f"ensemble={ensemble} chooses jobs of one sweep folder; a list ckpt_path=[…] names every member itself: drop ensemble=.")
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
        raise ConfigError(f"ensemble={ensemble} takes the jobs of a sweep folder, and ckpt_path={ckpt_path} is not one: give "
                          "ckpt_path=<sweep folder> (outputs/multirun/…), or list the members: ckpt_path=[run_a,run_b].")  # fmt: skip
    jobs = SweepFolder(path).ranked_jobs()
    chosen = jobs if count is None else jobs[:count]
    if count is not None and len(jobs) < count:
        log.warning("ensemble=%s: the sweep has %d finished job(s) with checkpoints; all of them are members", ensemble, len(jobs))
    members = [Checkpoint(run.best_checkpoint(), run) for run in chosen]
    for member in members:
        member.run.config()
    return members


def ensemble_size(ensemble: Any) -> int | None:
    """``all`` -> None (every job), ``topK`` -> K (K >= 1); anything else is a ConfigError."""
    match = re.fullmatch(r"top([1-9]\d*)", str(ensemble))
    if ensemble != "all" and not match:
        raise ConfigError(f"ensemble={ensemble!r}: give {ENSEMBLE_FORMS}, with ckpt_path=<sweep folder>.")
    return None if ensemble == "all" else int(match[1])


def is_list(ckpt_path: Any) -> bool:
    """A list of paths (Hydra's ``ckpt_path=[a,b]`` is a ListConfig), not a path."""
    return isinstance(ckpt_path, Sequence) and not isinstance(ckpt_path, (str, bytes))


def evaluation_folder(ckpt_path: str | None) -> Path | None:
    """Where evaluations of ``ckpt_path`` go (``<run>/eval``; a sweep folder's: ``<sweep>/eval``), from the
    path's shape alone (Hydra's run folder is chosen before the command resolves anything); None when
    ``ckpt_path`` is no file or folder, or a list (an ensemble of runs has no one folder)."""
    if not ckpt_path or is_list(ckpt_path):
        return None
    path = Path(ckpt_path).expanduser()
    if path.is_file():
        return RunFolder.of_checkpoint(path).eval_dir
    if path.is_dir():
        return RunFolder(path.parent if path.name == CHECKPOINTS else path).eval_dir
    return None
