"""The end of a sweep: the report over every job (artmove.evaluation.report), and an exit code that says
whether any job failed."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from artmove.runs.folder import SweepFolder

log = logging.getLogger(__name__)


STARTED = ".started"  # touched when a sweep starts: its jobs are the job folders written since (mtimes of one file system)


def failed_jobs(sweep_dir: Path) -> list[str]:
    """The jobs of the sweep that last started in ``sweep_dir`` whose results.json is missing, older than
    that start, or not ``"status": "ok"`` (an earlier sweep's job folders left there do not count)."""
    marker = sweep_dir / STARTED
    since = marker.stat().st_mtime_ns if marker.is_file() else 0
    jobs = [run for run in SweepFolder(sweep_dir).runs() if not since or _written_since(run.hydra_file("config").parent, since)]
    return [run.path.name for run in jobs if not run.finished or not _written_since(run.results_file, since)]


def _written_since(path: Path, since: int) -> bool:
    return path.exists() and path.stat().st_mtime_ns >= since


class SweepSummary(Callback):
    """Hydra callback: after the last job, write the sweep's report; exit 1 if any job failed.

    Jobs record their own failures (``results.json`` with ``"status": "failed"``) and return,
    so one bad combination does not stop the others; the sweep's exit code still tells.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / STARTED).touch()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from artmove.evaluation.report import write_report  # matplotlib: imported once the jobs are done

        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        failed = failed_jobs(sweep_dir)
        try:
            report = write_report([sweep_dir], sweep_dir)
        except Exception as error:  # noqa: BLE001 - the exit code below must not depend on the report
            log.warning("no sweep report: %s: %s (python -m artmove.report %s)", type(error).__name__, error, sweep_dir)
        else:
            print(report.read_text(encoding="utf-8"), flush=True)
            print(f"Sweep report: {report}", flush=True)
        if failed:
            log.error("%d job(s) failed: %s (results.json and traceback.txt in each)", len(failed), ", ".join(failed))
            print(f"artmove: {len(failed)} job(s) of the sweep failed: {', '.join(failed)}", flush=True)
            raise SystemExit(1)
