"""Which checkpoint a command's ``ckpt_path`` means, resolved once at the top of the command and passed
down: a ``.ckpt`` file, a training run folder (its best checkpoint), a run's ``checkpoints/`` folder,
or a sweep folder (its best job by ``optimized_value``, then that job's best checkpoint)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from artmove.errors import ConfigError
from artmove.runs.folder import CHECKPOINTS, CKPT_PATH_FORMS, RunFolder, SweepFolder


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


def evaluation_folder(ckpt_path: str | None) -> Path | None:
    """Where evaluations of ``ckpt_path`` go (``<run>/eval``; a sweep folder's: ``<sweep>/eval``), from the
    path's shape alone (Hydra's run folder is chosen before the command resolves anything); None when
    ``ckpt_path`` is no file or folder."""
    if not ckpt_path:
        return None
    path = Path(ckpt_path).expanduser()
    if path.is_file():
        return RunFolder.of_checkpoint(path).eval_dir
    if path.is_dir():
        return RunFolder(path.parent if path.name == CHECKPOINTS else path).eval_dir
    return None
