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

import copy
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from artmove.data.settings import LOCAL_MODULE_SETTINGS, LOCAL_SOURCE_SETTINGS, DataSettings, describe
from artmove.errors import ConfigError
from artmove.runs.plain import check_saved_config, read_yaml, resolve_references, select

RESULTS_FILE = "results.json"
CHECKPOINTS = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
METRICS_FILE = "csv/metrics.csv"
TRACEBACK_FILE = "traceback.txt"
HYDRA_DIR = ".hydra"
LOCK_FILE = ".lock"
CURVES_FILE = "curves.png"
TEST_CONFUSION_MATRIX = "test_confusion_matrix"  # .png and .csv


METRIC_KEY = re.compile(r"(train|val|test|best_val)/\w+")
#: Keys of results.json that hold a path: written relative to the run folder, so that a copied or moved run
#: names its own files (``checkpoints/best-….ckpt``), never another folder's.
PATH_KEYS = ("best_checkpoint", "checkpoint")


class Results(BaseModel):
    """``results.json``: what a training run says about itself, as :meth:`RunFolder.write_results` writes it and
    :meth:`RunFolder.results` checks it when read back (pydantic: one declaration gives types and the refusal of
    unknown keys, with its own messages). The metrics are ``val/…`` and ``test/…`` keys beside these
    (``test/top1``, ``test/top1_ci95_low``, ``test/num_images`` …): numbers, or null."""

    model_config = ConfigDict(extra="allow")

    status: Literal["ok", "failed", "interrupted"]
    backbone: Any = None  # the settings as given (a failed run records them whatever they were)
    head: dict[str, Any] | None = None
    unfreeze: Any = None
    finetune: dict[str, Any] | None = None
    pretrained: Any = None
    weights_source: str | None = None
    pretrained_cfg: dict[str, Any] | None = None
    seed: Any = None
    data: dict[str, Any] | None = None  # {"source", "root", "split_sizes"}
    artist_overlap: dict[str, Any] | None = None
    num_classes: int | None = None
    classes: list[str] | None = None
    trainable_params: int | None = None
    total_params: int | None = None
    trained_layers: int | None = None
    total_layers: int | None = None
    epochs: int | None = None
    attempts: list[dict[str, Any]] | None = None  # each attempt in this folder: when, what it resumed from, which settings changed
    best_checkpoint: str | None = None  # relative to the run folder
    optimized_metric: str | None = None
    optimized_value: float | None = None
    calibration: dict[str, Any] | None = None  # temperature scaling fitted on validation
    abstain: dict[str, Any] | None = None  # the "not sure" threshold chosen on validation
    conformal: dict[str, Any] | None = None  # the prediction sets' threshold fitted on validation (artmove.models.conformal)
    lr_find: dict[str, Any] | None = None
    optimizer_lr: float | None = None
    overrides: list[str] | None = None
    wall_time_s: float | None = None
    epoch: int | None = None  # an interrupted run's: where it stopped
    step: int | None = None
    checkpoint: str | None = None  # an interrupted run's saved checkpoint, relative to the run folder
    output_dir: str | None = None  # written by earlier versions (the folder then); never read
    error: str | None = None  # failed runs
    traceback: str | None = None

    @model_validator(mode="after")
    def _metrics_only(self) -> Results:
        for key, value in (self.model_extra or {}).items():
            if not METRIC_KEY.fullmatch(key) or not (value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))):
                raise ValueError(f"{key!r} is not a key artmove writes there (or not a number)")
        return self


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
        config = RunFolder(folder).saved_config
        return config is not None and config.get("task_name", "train") == "train"

    @staticmethod
    def of_checkpoint(checkpoint: Path) -> RunFolder:
        """The run a checkpoint file belongs to: ``<run>/checkpoints/x.ckpt`` -> ``<run>``, else its folder."""
        parent = checkpoint.resolve().parent
        return RunFolder(parent.parent if parent.name == CHECKPOINTS else parent)

    # --- reading and writing -----------------------------------------------------------
    @cached_property
    def results(self) -> dict[str, Any]:
        """results.json as written, checked against :class:`Results` ({} when the run wrote none yet, or a
        partial file); one that is not what artmove writes is a ConfigError naming it."""
        try:
            results: dict[str, Any] = json.loads(self.results_file.read_text(encoding="utf-8"))  # a mapping once validated
        except (OSError, ValueError):
            return {}
        try:
            Results.model_validate(results)
        except ValidationError as error:
            raise ConfigError(f"{self.results_file} is not a results.json artmove writes ({describe(error)}): refused.") from None
        return results

    def write_results(self, results: dict[str, Any], status_file: bool = False) -> Path:
        """results.json (its paths relative to the run folder); with ``status_file`` (an unfinished attempt of a
        run that finished before), ``<status>.json`` instead, so that the finished results are never lost."""
        from artmove.utils.io import write_json

        path = self.path / f"{results['status']}.json" if status_file else self.results_file
        return write_json(path, self.relative(results))

    def relative(self, record: dict[str, Any]) -> dict[str, Any]:
        """A record with the paths it holds (``best_checkpoint``, an attempt's ``resumed_from.checkpoint``…)
        relative to this folder when they are inside it; ``output_dir`` (the folder itself) left out."""
        record = copy.deepcopy({key: value for key, value in record.items() if key != "output_dir"})
        for key in PATH_KEYS:
            if isinstance(record.get(key), str):
                record[key] = self.inside(record[key])
        for attempt in record.get("attempts") or []:
            resumed = attempt.get("resumed_from") if isinstance(attempt, dict) else None
            if isinstance(resumed, dict) and isinstance(resumed.get("checkpoint"), str):
                resumed["checkpoint"] = self.inside(resumed["checkpoint"])
        return record

    def inside(self, path: str) -> str:
        """``path`` relative to this folder when it lies inside it, else as given."""
        try:
            return Path(path).resolve().relative_to(self.path.resolve()).as_posix()
        except ValueError:
            return path

    @property
    def finished(self) -> bool:
        return self.results.get("status") == "ok"

    @cached_property
    def saved_config(self) -> dict[str, Any] | None:
        """The composed config Hydra saved (``.hydra/config.yaml``) as plain data: YAML through the safe loader,
        nothing resolved, and refused when it holds an interpolation artmove's configs never write
        (``artmove.runs.plain``); None when not kept. Read once per folder object (the commands' one reader
        checks it, the model card then uses it)."""
        path = self.hydra_file("config")
        if not path.is_file():
            return None
        config = read_yaml(path)
        if not isinstance(config, dict):
            raise ConfigError(f"{path} is not a saved config (a YAML mapping): refused.")
        check_saved_config(config, path)
        return config

    def saved_data_settings(self) -> DataSettings | None:
        """The data set of a run of an earlier format (whose checkpoints do not record it), from its saved
        config: its data node but this machine's own settings, plain references (``${seed}``) followed within
        the file, any other interpolation refused. None when the run kept no config."""
        config = self.saved_config
        if config is None or not isinstance(config.get("data"), dict):
            return None
        where = self.hydra_file("config")
        config = copy.deepcopy(config)
        for key in LOCAL_MODULE_SETTINGS[1:]:
            config["data"].pop(key, None)
        source = config["data"].get("source")
        for key in LOCAL_SOURCE_SETTINGS[1:] if isinstance(source, dict) else ():
            source.pop(key, None)
        seed = resolve_references(config, "seed", where)
        return DataSettings.from_config(resolve_references(config, "data", where), seed, where)

    def best_checkpoint(self) -> Path:
        """The checkpoint its results.json names (by file name, in this folder's ``checkpoints/``), else its only
        ``best*.ckpt`` (or ``final*``), else ``last.ckpt``."""
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
        scored = [
            run
            for run in jobs
            if run.finished and isinstance(run.results.get("optimized_value"), (int, float)) and run.checkpoints.is_dir()
        ]
        if not scored:
            found = (
                f"{len(jobs)} job folder(s), none finished with a score and checkpoints"
                if jobs
                else "no training run or job folders below it"
            )
            raise ConfigError(f"ckpt_path={self.path}: {found}. {CKPT_PATH_FORMS}")
        sign = -1 if selection_direction(scored[0]) == "minimize" else 1
        return sorted(scored, key=lambda run: -sign * run.results["optimized_value"])


CKPT_PATH_FORMS = "Give a .ckpt file, a training run folder (with checkpoints/) or a sweep folder (multirun)."


def selection_direction(job: RunFolder) -> str:
    """``maximize`` or ``minimize``: how a sweep's jobs are compared on ``optimized_value`` (``best_job``, the report)."""
    hydra_file = job.hydra_file("hydra")
    if hydra_file.is_file():
        direction = select(read_yaml(hydra_file), "hydra.sweeper.direction")  # as written: a literal or nothing
        if isinstance(direction, str) and direction in ("minimize", "maximize"):
            return direction
    return "minimize" if str(job.results.get("optimized_metric", "")).endswith("loss") else "maximize"


def find_runs(paths: Iterable[str | os.PathLike[str]]) -> list[RunFolder]:
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


def _natural_key(path: Path) -> list[tuple[int, int, str]]:
    """Job folders 2 before 10; numbered and named folders side by side sort without comparing int to str."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in path.parts]
