"""Which checkpoint a (re)started job continues from: a SLURM requeue re-runs the same job
in the same folder, so it picks up ``<run>/checkpoints/last.ckpt`` instead of starting over
(``artmove.training.callbacks.KeepLoggedMetrics`` keeps the earlier attempt's metric rows)."""

from __future__ import annotations

import logging
from pathlib import Path

from artmove.errors import ConfigError, UnreadableCheckpoint
from artmove.runs.folder import LAST_CHECKPOINT
from artmove.utils.io import read_checkpoint

log = logging.getLogger(__name__)


def resume_checkpoint(resume: bool | str | None, checkpoint_dir: str | Path | None) -> str | None:
    """``resume=true``: this run's ``last.ckpt`` when it exists; ``false``: never; a path: that checkpoint.

    The file is read here first (tensors only, see artmove.utils.io.read_checkpoint), so a damaged or hostile one
    stops the run with one line before any data is read or weights are loaded."""
    if resume in (None, False):
        return None
    if resume is True:
        last = Path(checkpoint_dir) / LAST_CHECKPOINT if checkpoint_dir else None
        if last is None or not last.is_file():
            return None
        check_resumable(last)
        log.info("resuming from %s (an earlier attempt of this run; resume=false starts over)", last)
        return str(last)
    path = Path(str(resume)).expanduser()
    if not path.is_file():
        raise ConfigError(f"resume={resume}: no such checkpoint file. Give a .ckpt path, true (this run's last.ckpt) or false.")
    check_resumable(path)
    log.info("resuming from %s", path)
    return str(path)


def check_resumable(path: Path) -> None:
    try:
        checkpoint = read_checkpoint(path)
    except UnreadableCheckpoint as error:
        raise ConfigError(f"cannot resume: {error}. Start over with resume=false, or continue from another "
                          "checkpoint with resume=PATH (e.g. the best-….ckpt beside it).") from None  # fmt: skip
    if not isinstance(checkpoint, dict) or "loops" not in checkpoint:
        raise ConfigError(f"cannot resume from {path}: it holds weights but no training state (not a Lightning "
                          "checkpoint). Use weights=PATH to start from its weights, or resume=false.")  # fmt: skip
