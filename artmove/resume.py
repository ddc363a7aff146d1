"""Which checkpoint a (re)started job continues from: a SLURM requeue re-runs the same job
in the same folder, so it picks up ``<run>/checkpoints/last.ckpt`` instead of starting over
(``artmove.callbacks.KeepLoggedMetrics`` keeps the earlier attempt's metric rows)."""

from __future__ import annotations

import logging
from pathlib import Path

from artmove.checks import ConfigError

log = logging.getLogger(__name__)


def resume_checkpoint(resume: bool | str | None, checkpoint_dir: str | Path | None) -> str | None:
    """``resume=true``: this run's ``last.ckpt`` when it exists; ``false``: never; a path: that checkpoint."""
    if resume in (None, False):
        return None
    if resume is True:
        last = Path(checkpoint_dir) / "last.ckpt" if checkpoint_dir else None
        if last is None or not last.is_file():
            return None
        log.info("resuming from %s (an earlier attempt of this run; resume=false starts over)", last)
        return str(last)
    path = Path(str(resume)).expanduser()
    if not path.is_file():
        raise ConfigError(f"resume={resume}: no such checkpoint file. Give a .ckpt path, true (this run's last.ckpt) or false.")
    log.info("resuming from %s", path)
    return str(path)
