"""Lightning callbacks wired from ``conf/callbacks``, one class per behaviour: a diverged loss stops
the job, a resumed run keeps the metric rows its earlier attempt logged, checkpoints carry the
random state, a stop by a signal leaves a checkpoint, an interrupted run says how to continue, and a
CUDA device gets the fast settings."""

from __future__ import annotations

import csv
import logging
import math
import os
import random
import shlex
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.utilities.exceptions import SIGTERMException
from torch import nn

from artmove.models.trained import RUN_RECORD
from artmove.runs.folder import RunFolder

log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


class FailOnNonFiniteLoss(pl.Callback):
    """Stop with an error once the training loss has been NaN/inf (all ranks together under DDP).

    Training on would only produce a meaningless checkpoint that a sweep ranks like any other.
    The loss stays on the device between checks: reading it (a GPU sync, and an all-reduce under
    DDP) happens every ``trainer.log_every_n_steps`` steps, at each epoch's last batch and when
    training ends.
    """

    def __init__(self) -> None:
        self.first_bad: torch.Tensor | None = None  # the latest loss, or the first non-finite one since the last check

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if not isinstance(loss, torch.Tensor):
            return
        loss = loss.detach()
        seen = self.first_bad
        self.first_bad = loss if seen is None else torch.where(torch.isfinite(seen), loss, seen)
        every: int = trainer.log_every_n_steps  # type: ignore[attr-defined]  # set by Lightning's logger connector at init
        if (batch_idx + 1) % max(1, every) == 0 or trainer.is_last_batch:
            self.check(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module) -> None:
        if self.first_bad is not None:  # training stopped between checks (max_steps, max_time, early stop)
            self.check(trainer)

    def check(self, trainer: pl.Trainer) -> None:
        if self.first_bad is None:  # no loss since the last check (its callers check first)
            return
        value, self.first_bad = float(self.first_bad), None
        diverged = not math.isfinite(value)
        if trainer.world_size > 1:
            diverged = trainer.strategy.reduce_boolean_decision(diverged, all=False)
        if diverged:
            what = f"is {value}" if not math.isfinite(value) else "is not finite on another process"
            raise NonFiniteLossError(
                f"the training loss {what} by epoch {trainer.current_epoch}, step {trainer.global_step}: "
                "lower optimizer.lr (or check the data); this job stops here."
            )


class KeepLoggedMetrics(pl.Callback):
    """A resumed run keeps the per-epoch rows its earlier attempt wrote to ``metrics_file``.

    Lightning's CSVLogger deletes an existing ``metrics.csv`` when it starts writing, so the rows
    are read when this callback is built (before any logger) and, if the fit resumes from a
    checkpoint, the rows logged before the checkpoint's step are handed to the CSV logger, which
    saves them with the new ones: no row twice, however late in an epoch the earlier attempt died.
    """

    def __init__(self, metrics_file: str):
        self.metrics_file = Path(metrics_file)
        self.rows: list[dict[str, str]] = []
        if self.metrics_file.is_file():
            with self.metrics_file.open(newline="", encoding="utf-8") as file:
                self.rows = [{k: v for k, v in row.items() if v != ""} for row in csv.DictReader(file)]

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Called once the checkpoint's loops are restored: ``global_step`` is where the run resumes."""
        rows, self.rows = [row for row in self.rows if float(row.get("step", "inf")) < trainer.global_step], []
        if not trainer.ckpt_path or not rows:
            return
        for logger in trainer.loggers:
            if isinstance(logger, CSVLogger) and Path(logger.log_dir) / "metrics.csv" == self.metrics_file:
                writer = logger.experiment  # removes the old file
                writer.metrics[:0] = rows
                writer.save()
                log.info("kept %d metric rows of the earlier attempt in %s", len(rows), self.metrics_file)


class RandomStateInCheckpoint(pl.Callback):
    """Checkpoints carry the random generators' states (Python, NumPy, torch CPU and CUDA), restored on resume.

    The shuffle of each epoch and the seeds of its loader workers (augmentation) are drawn from the
    main process's generators when the epoch starts; a resumed run restored to the state the
    epoch-end checkpoint saw draws the same ones as an uninterrupted run, so with
    ``trainer.deterministic=true`` it ends with the same weights and metrics. Plain tensors and
    numbers only: the checkpoint still loads with ``weights_only=True`` (Lightning Fabric's
    ``_collect_rng_states`` keeps NumPy's state as an array, which that loader refuses).
    """

    def state_dict(self) -> dict[str, Any]:
        # the legacy form (the default): the global generator is always MT19937, whose state is this tuple
        legacy = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state(legacy=True))
        kind, keys, position, has_gauss, cached_gaussian = legacy
        version, internal, gauss = random.getstate()
        state = {
            "torch": torch.get_rng_state(),
            "python": (version, list(internal), gauss),
            "numpy": {
                "kind": kind,
                "keys": torch.from_numpy(keys.astype(np.int64)),
                "position": int(position),
                "has_gauss": int(has_gauss),
                "cached_gaussian": float(cached_gaussian),
            },
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        torch.set_rng_state(state_dict["torch"])
        version, internal, gauss = state_dict["python"]
        random.setstate((version, tuple(internal), gauss))
        numpy = state_dict["numpy"]
        np.random.set_state(
            (numpy["kind"], numpy["keys"].numpy().astype(np.uint32), numpy["position"], numpy["has_gauss"], numpy["cached_gaussian"])
        )
        if "cuda" in state_dict and torch.cuda.is_available() and len(state_dict["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state_dict["cuda"])


class RunRecordInCheckpoint(pl.Callback):
    """Checkpoints carry the run's record: the settings that define it, its classes, its config and its
    attempts (``artmove.runs.resume``), so that a rerun into its folder is compared with what it trained."""

    def __init__(self, record: dict[str, Any]):
        self.record = record

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint[RUN_RECORD] = self.record


class CheckpointsFollowTheirFolder(pl.Callback):
    """A run writes only in its own folder, wherever its checkpoint was written: a copied or moved run
    continues in itself, and ``resume=<another run's checkpoint>`` never touches that run.

    Lightning's ``ModelCheckpoint`` keeps absolute paths in its state (its folder, the best and last
    checkpoints, the k best) and, resumed in another folder, still reloads the best one's path: a copy's
    end-of-run calibration then rewrote the original's best checkpoint, and a moved run failed on a path
    that no longer exists. When a checkpoint is loaded, before each checkpoint callback reads its state,
    every path it recorded in another folder is re-derived by file name in its folder now: the file there
    (a copy or a move brought it), else a copy of the recorded file made there (a checkpoint resumed from
    another run: its best is then tested and calibrated here), else forgotten. The state then reloads whole."""

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        states = checkpoint.get("callbacks") or {}
        for callback in trainer.checkpoint_callbacks:
            state = states.get(callback.state_key)
            if not isinstance(callback, ModelCheckpoint):  # the one with a folder and recorded paths
                continue
            if not isinstance(state, dict) or callback.dirpath is None or state.get("dirpath") in (None, callback.dirpath):
                continue
            now = Path(callback.dirpath)
            paths = {key: state.get(key) for key in ("best_model_path", "kth_best_model_path", "last_model_path")}
            named = {path: self.here(Path(path), now, trainer) for path in {*paths.values(), *(state.get("best_k_models") or {})} if path}
            state.update({key: named.get(path, "") for key, path in paths.items() if key in state})
            state["best_k_models"] = {named[path]: score for path, score in (state.get("best_k_models") or {}).items() if named.get(path)}
            log.info(
                "checkpoints recorded in %s are read from %s (the run folder was copied or moved, or resumed from another run)",
                state["dirpath"],
                now,
            )
            state["dirpath"] = callback.dirpath
        trainer.strategy.barrier("checkpoints-follow-their-folder")  # the copies made by rank 0 are there for every rank

    @staticmethod
    def here(recorded: Path, now: Path, trainer: pl.Trainer) -> str:
        """The file of that name in ``now``: there already, copied there from ``recorded``, or "" (none)."""
        target = now / recorded.name
        if not target.is_file() and recorded.is_file() and trainer.is_global_zero:
            now.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(target.name + ".copying")
            shutil.copyfile(recorded, partial)
            os.replace(partial, target)
        return str(target) if target.is_file() or recorded.is_file() else ""


class CheckpointOnStop(pl.Callback):
    """A run stopped by SIGTERM (a cluster's pre-emption, ``kill``, a first Ctrl-C) saves ``path``.

    Lightning turns the signal into a stop at the next step boundary (or validation batch); the
    state saved then is consistent, and ``resume=true`` continues from it. Any other exception
    saves nothing: a NaN loss or a crash mid-step must not replace the last good checkpoint.
    """

    def __init__(self, path: str):
        self.path = path

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException):
            trainer.save_checkpoint(self.path)
            log.info("stopped by a signal at epoch %d, step %d: saved %s", trainer.current_epoch, trainer.global_step, self.path)


class ResumeHint(pl.Callback):
    """After Ctrl-C or a failure, one line: the command that continues the run in its own folder
    (``resume=<run folder>``: its saved command line, continued from its ``last.ckpt``), or that there is
    no checkpoint to continue from yet."""

    def __init__(self, output_dir: str):
        self.output_dir = Path(output_dir)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if not trainer.is_global_zero:
            return
        last = RunFolder(self.output_dir).last_checkpoint
        if not last.is_file():
            log.warning("stopped before the first checkpoint (%s): nothing to continue from; rerun the same command.", last)
            return
        command = ["python", "-m", "artmove.train", f"resume={self.output_dir}"]
        log.warning("to continue from %s (epoch %s): %s", last.name, trainer.current_epoch, shlex.join(command))


def is_convolutional(model: nn.Module) -> bool:
    return any(isinstance(module, nn.Conv2d) for module in model.modules())


class GpuSpeedups(pl.Callback):
    """On a CUDA device: the model in channels-last memory format (convolutional backbones: tensor
    cores read NHWC without transposes; the first convolution converts the input), cuDNN autotuning
    (the fastest kernel per input shape, found once) and TF32 for float32 matmuls and convolutions.
    Nothing changes on a CPU."""

    def __init__(self, channels_last: bool = True, cudnn_benchmark: bool = True, tf32: bool = True):
        self.channels_last, self.cudnn_benchmark, self.tf32 = channels_last, cudnn_benchmark, tf32

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if trainer.strategy.root_device.type != "cuda":
            return
        if self.cudnn_benchmark:
            torch.backends.cudnn.benchmark = True
        if self.tf32:
            torch.set_float32_matmul_precision("high")
            torch.backends.cudnn.allow_tf32 = True
        if self.channels_last and is_convolutional(pl_module):
            pl_module.to(memory_format=torch.channels_last)
        log.info(
            "GPU settings: %s precision, channels-last %s, cuDNN benchmark %s, TF32 %s",
            trainer.precision,
            self.channels_last and is_convolutional(pl_module),
            self.cudnn_benchmark,
            self.tf32,
        )
