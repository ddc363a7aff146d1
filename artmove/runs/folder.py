"""Run and sweep folders: the one place that spells where a run's files live, and how a run's own
files are read back (results.json through one schema, its saved config as data).

A training run writes ``<run>/results.json``, ``checkpoints/{best-….ckpt,last.ckpt}``,
``csv/metrics.csv``, ``curves.png``, ``test_confusion_matrix.{png,csv}``, ``.hydra/{config,overrides,hydra}.yaml``,
``train.log`` and, after a failure, ``traceback.txt``; ``evaluate`` writes ``eval/<split>…/`` and ``export``
writes ``export/`` beside them.
A sweep folder holds one run folder per job (``0/``, ``1/`` …). ``conf/paths/default.yaml`` spells
the same names for the config (``tests/test_runs.py`` checks that the two agree).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, TypedDict

from omegaconf import DictConfig, OmegaConf

from artmove.errors import ConfigError

RESULTS_FILE = "results.json"
CHECKPOINTS = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
METRICS_FILE = "csv/metrics.csv"
TRACEBACK_FILE = "traceback.txt"
HYDRA_DIR = ".hydra"
LOCK_FILE = ".lock"
CURVES_FILE = "curves.png"
TEST_CONFUSION_MATRIX = "test_confusion_matrix"  # .png and .csv


class Results(TypedDict, total=False):
    """``results.json``: what a training run says about itself. Every writer and reader goes through
    :meth:`RunFolder.write_results` and :meth:`RunFolder.results`; the metrics are ``val/…`` and
    ``test/…`` keys beside these (``test/top1``, ``test/top1_ci95_low``, ``test/num_images`` …)."""

    status: Literal["ok", "failed", "interrupted"]
    backbone: str
    head: dict[str, Any]
    unfreeze: float | None
    finetune: dict[str, Any]
    pretrained: bool
    weights_source: str
    pretrained_cfg: dict[str, Any] | None
    seed: int
    data: dict[str, Any]  # {"source", "root", "split_sizes"}
    artist_overlap: dict[str, Any] | None
    num_classes: int
    classes: list[str]
    trainable_params: int
    total_params: int
    trained_layers: int
    total_layers: int
    epochs: int
    attempts: list[dict[str, Any]]  # each attempt in this folder: when, what it resumed from, which settings changed
    best_checkpoint: str | None
    optimized_metric: str
    optimized_value: float | None
    calibration: dict[str, Any]  # temperature scaling fitted on validation: temperature, val/ece_before/_after, val/nll_before/_after
    abstain: dict[str, Any]  # the "not sure" threshold chosen on validation: target, threshold, reached, val/coverage, val/top1
    wall_time_s: float
    output_dir: str
    error: str  # failed runs
    traceback: str


@dataclass(frozen=True)
class RunFolder:
    """One training run's folder."""

    path: Path

    @property
    def results_file(self) -> Path:
        return self.path / RESULTS_FILE

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / LAST_CHECKPOINT

    @property
    def metrics_file(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def traceback_file(self) -> Path:
        return self.path / TRACEBACK_FILE

    @property
    def lock_file(self) -> Path:
        return self.path / LOCK_FILE

    @property
    def curves_file(self) -> Path:
        """Loss and accuracy per epoch, written as the run ends (``artmove.training.figures``)."""
        return self.path / CURVES_FILE

    def test_confusion_matrix(self, suffix: str) -> Path:
        """The confusion matrix of the run's final test: ``.png`` and ``.csv`` (counts)."""
        return self.path / f"{TEST_CONFUSION_MATRIX}{suffix}"

    def hydra_file(self, name: str) -> Path:
        """``.hydra/<name>.yaml``: ``config`` (the composed config), ``overrides``, ``hydra``."""
        return self.path / HYDRA_DIR / f"{name}.yaml"

    @property
    def eval_dir(self) -> Path:
        return self.path / "eval"

    @property
    def export_dir(self) -> Path:
        return self.path / "export"

    @staticmethod
    def is_run(folder: Path) -> bool:
        """A training run's folder: results.json, or a saved config of a training job."""
        if (folder / RESULTS_FILE).is_file():
            return True
        config = folder / HYDRA_DIR / "config.yaml"
        return config.is_file() and OmegaConf.load(config).get("task_name", "train") == "train"

    @staticmethod
    def of_checkpoint(checkpoint: Path) -> RunFolder:
        """The run a checkpoint file belongs to: ``<run>/checkpoints/x.ckpt`` -> ``<run>``, else its folder."""
        parent = checkpoint.resolve().parent
        return RunFolder(parent.parent if parent.name == CHECKPOINTS else parent)

    # --- reading and writing -----------------------------------------------------------
    @cached_property
    def results(self) -> Results:
        """results.json as written ({} when the run wrote none, or not as a JSON object)."""
        try:
            results = json.loads(self.results_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return results if isinstance(results, dict) else {}

    def write_results(self, results: Results, status_file: bool = False) -> Path:
        """results.json; with ``status_file`` (an unfinished attempt of a run that finished before),
        ``<status>.json`` instead, so that the finished results are never lost."""
        from artmove.utils.io import write_json

        path = self.path / f"{results['status']}.json" if status_file else self.results_file
        return write_json(path, results)

    @property
    def finished(self) -> bool:
        return self.results.get("status") == "ok"

    def config(self) -> DictConfig | None:
        """The composed config the run saved (``.hydra/config.yaml``), checked as data: every ``_target_``
        in it must be one artmove's own configs name (:func:`check_targets`); None when not kept."""
        path = self.hydra_file("config")
        if not path.is_file():
            return None
        config = OmegaConf.load(path)
        check_targets(config, path)
        return config

    def best_checkpoint(self) -> Path:
        """The checkpoint its results.json names, else its only ``best*.ckpt`` (or ``final*``), else ``last.ckpt``."""
        named = self.results.get("best_checkpoint")
        if isinstance(named, str) and (self.checkpoints / Path(named).name).is_file():  # by name: the folder may have moved
            return self.checkpoints / Path(named).name
        best = sorted([*self.checkpoints.glob("best*.ckpt"), *self.checkpoints.glob("final*.ckpt")])
        if len(best) > 1:
            raise ConfigError(
                f"ckpt_path={self.path}: {len(best)} checkpoints and no results.json naming one "
                f"({', '.join(p.name for p in best)}): give the file, e.g. ckpt_path={best[0]}."
            )
        if best:
            return best[0]
        if self.last_checkpoint.is_file():
            return self.last_checkpoint
        raise ConfigError(f"ckpt_path={self.path}: no checkpoint in {self.checkpoints} (neither best*.ckpt nor last.ckpt).")


@dataclass(frozen=True)
class SweepFolder:
    """A folder of runs: a Hydra multirun (one run folder per job) or any folder holding runs."""

    path: Path

    def runs(self) -> list[RunFolder]:
        return find_runs([self.path])

    def best_job(self) -> RunFolder:
        """The job with the best ``optimized_value`` among those that finished with checkpoints: maximised,
        or minimised where the sweeper says so (``hydra.sweeper.direction``) or, without one, where the
        metric is a loss."""
        return self.ranked_jobs()[0]

    def ranked_jobs(self) -> list[RunFolder]:
        """The jobs that finished with a score and checkpoints, best ``optimized_value`` first (as
        :meth:`best_job` ranks them; equal scores in folder order)."""
        jobs = [run for run in self.runs() if run.path != self.path]
        scored = [run for run in jobs if run.finished and isinstance(run.results.get("optimized_value"), (int, float))
                  and run.checkpoints.is_dir()]  # fmt: skip
        if not scored:
            found = f"{len(jobs)} job folder(s), none finished with a score and checkpoints" if jobs else "no training run or job folders below it"
            raise ConfigError(f"ckpt_path={self.path}: {found}. {CKPT_PATH_FORMS}")
        sign = -1 if selection_direction(scored[0]) == "minimize" else 1
        return sorted(scored, key=lambda run: -sign * run.results["optimized_value"])


CKPT_PATH_FORMS = "Give a .ckpt file, a training run folder (with checkpoints/) or a sweep folder (multirun)."


def selection_direction(job: RunFolder) -> str:
    """``maximize`` or ``minimize``: how a sweep's jobs are compared on ``optimized_value`` (``best_job``, the report)."""
    hydra_file = job.hydra_file("hydra")
    if hydra_file.is_file():
        direction = OmegaConf.select(OmegaConf.load(hydra_file), "hydra.sweeper.direction", default=None)
        if direction in ("minimize", "maximize"):
            return direction
    return "minimize" if str(job.results.get("optimized_metric", "")).endswith("loss") else "maximize"


def find_runs(paths: Iterable[str | os.PathLike]) -> list[RunFolder]:
    """Training run folders at or below each path (evaluate's folders inside runs are not runs)."""
    found: list[Path] = []
    for path in map(Path, paths):
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such run or sweep folder.")
        if RunFolder.is_run(path):
            found.append(path)
            continue
        for folder, subfolders, _ in os.walk(path):
            subfolders.sort()
            for name in list(subfolders):
                child = Path(folder) / name
                if RunFolder.is_run(child):
                    found.append(child)
                    subfolders.remove(name)  # a run's own subfolders (eval/, checkpoints/) are not runs
    return [RunFolder(path) for path in sorted(dict.fromkeys(found), key=_natural_key)]


def _natural_key(path: Path) -> list:
    """Job folders 2 before 10; numbered and named folders side by side sort without comparing int to str."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in path.parts]


# --- configs read from files -------------------------------------------------------------------
@functools.cache
def shipped_targets() -> frozenset[str]:
    """Every ``_target_`` artmove's own configs (``artmove.conf``) name: all a file's config may name."""
    from importlib.resources import files

    targets: set[str] = set()

    def collect(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("_target_"), str):
                targets.add(node["_target_"])
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    def walk(folder) -> None:
        for entry in folder.iterdir():
            if entry.is_dir():
                walk(entry)
            elif entry.name.endswith(".yaml"):
                collect(OmegaConf.to_container(OmegaConf.create(entry.read_text(encoding="utf-8"))))

    walk(files("artmove.conf"))
    return frozenset(targets)


def check_targets(config: Any, where: Path) -> None:
    """Refuse a config read from a file whose ``_target_`` (anywhere in it) is not one of artmove's own:
    a run folder's saved config is data, and a file may not choose code for ``instantiate``."""
    allowed = shipped_targets()
    foreign: list[str] = []

    def visit(node: Any, key: str) -> None:
        if isinstance(node, dict):
            for name, value in node.items():
                if name == "_target_" and (not isinstance(value, str) or value not in allowed):
                    foreign.append(f"{key or '<root>'}._target_={value!r}")
                visit(value, f"{key}.{name}" if key else str(name))
        elif isinstance(node, list):
            for index, value in enumerate(node):
                visit(value, f"{key}[{index}]")

    visit(OmegaConf.to_container(config, resolve=False) if OmegaConf.is_config(config) else config, "")
    if foreign:
        raise ConfigError(f"{where} names code artmove's own configs never name ({'; '.join(foreign[:3])}): a saved config "
                          "is read as data, and this one is refused. Give the settings on the command line instead (e.g. data=… data.root=…).")  # fmt: skip
