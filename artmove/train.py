"""`python -m artmove.train backbone=resnet50 unfreeze=0.2`: fit, test the best checkpoint, report."""

from __future__ import annotations

import gc
import json
import logging
import math
import re
import shlex
import sys
import time
import warnings
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.utilities import rank_zero_only
from pytorch_lightning.utilities.exceptions import SIGTERMException

from artmove.data.datamodule import PaintingDataModule
from artmove.data.settings import DataSettings
from artmove.errors import USER_ERRORS, ConfigError, user_error_behind
from artmove.finetune import create_policy
from artmove.finetune.policies import drop_unused_settings
from artmove.models import ArtClassifier
from artmove.runs.command_line import accepts_resume_folder
from artmove.runs.folder import RunFolder
from artmove.runs.results import format_table, job_overrides, record_failure, record_unfinished, sets_line
from artmove.runs.resume import Resume, check_resumed_classes, resume_checkpoint
from artmove.sweeps.ddp_jobs import in_multirun, needs_own_process, run_in_own_process
from artmove.training.calibration import calibrate_run, check_conformal_settings, check_trust_settings
from artmove.training.callbacks import CheckpointOnStop, CheckpointsFollowTheirFolder, RunRecordInCheckpoint
from artmove.training.interrupts import EXIT_INTERRUPTED, ctrl_c_stops_after_step, slurm_usr1_requeues
from artmove.training.trainer import check_trainer
from artmove.utils.cli import say_user_error
from artmove.utils.config import check_train_config, instantiate_checked, plain_dict
from artmove.utils.io import remove_partial_writes
from artmove.utils.limits import check_batch

log = logging.getLogger("artmove.train")


def global_rank() -> int:
    """This process's rank (0 outside DDP), as Lightning sets it on ``rank_zero_only`` at start."""
    return int(getattr(rank_zero_only, "rank", 0))


def build(cfg: DictConfig, resume: Resume | None = None) -> tuple[PaintingDataModule, pl.LightningDataModule, ArtClassifier]:
    """The run's objects, each built from its config node and checked there, in the order that fails
    soonest (after :func:`check_train_config`): the preprocessing (which checks the backbone) and the
    fine-tuning policy (no weights, no data), the image data module, the network
    (weights load) and the classifier that trains it, and with ``features=cached`` the feature data
    module. A run that continues a checkpoint (``resume``) must have its classes. Returns (image data
    module, the data module training reads, classifier)."""
    preprocessing = instantiate_checked(cfg.preprocessing, "preprocessing")
    check_batch("data.batch_size", cfg.data.batch_size, max(preprocessing["input_size"][1:]))
    # A policy of artmove's by name; a user's own class where their config names it (_target_: my.Policy).
    policy = instantiate_checked(cfg.finetune, "finetune") if "_target_" in cfg.finetune else create_policy(cfg.finetune)
    images = instantiate_checked(cfg.data, "data", preprocessing=preprocessing, _convert_="all")
    classes = images.classes
    if resume is not None:
        check_resumed_classes(resume, classes)
    network = instantiate_checked(cfg.network, "network", num_classes=len(classes), _convert_="all")
    model = instantiate_checked(
        cfg.model,
        "model",
        network=network,
        finetune=policy,
        class_names=classes,
        preprocessing=preprocessing,
        class_weights=images.class_weights(),
        _convert_="all",
    )
    features = cfg.get("features")
    datamodule = instantiate_checked(features, "features", images=images, classifier=model) if features else images
    return images, datamodule, model


def recorded_data(cfg: DictConfig) -> dict | None:
    """The data set as the checkpoints record it, resolved now (what evaluate and export rebuild the splits
    from); None for a source artmove does not ship (a user's own ``_target_``): evaluating it then takes ``data=…``."""
    try:
        return DataSettings.from_config(plain_dict(cfg.data), cfg.seed, "data").record()
    except ConfigError:
        return None


def train(cfg: DictConfig) -> dict:
    """Run one training job: check its settings, build its objects, fit, calibrate on validation, test the
    best checkpoint, write results.json and print the table; return its results."""
    started = time.time()
    check_settings(cfg)
    run = RunFolder(Path(cfg.paths.output_dir))
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    callbacks, checkpoint_dir = build_callbacks(cfg)
    resume = resume_checkpoint(cfg.get("resume", True), checkpoint_dir, cfg)  # read and compared now: a bad file costs a second
    images, datamodule, model = build(cfg, resume)
    resume.record.update(classes=images.classes, data=recorded_data(cfg))
    callbacks += [RunRecordInCheckpoint(resume.record), CheckpointsFollowTheirFolder()]
    describe(cfg, images, model)
    trainer = build_trainer(cfg, callbacks, model, resumed=resume.checkpoint is not None)
    with warnings.catch_warnings(), ctrl_c_stops_after_step(), slurm_usr1_requeues():
        # The frozen part's norm layers are in eval mode on purpose (fixed statistics, see docs/policies.md).
        warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")
        finder = instantiate_checked(cfg.tune, "tune") if cfg.get("tune") else None
        lr_find = finder.run(trainer, model, datamodule, run.path) if finder else None
        if finder is not None and lr_find is not None and not finder.apply:
            return _lr_find_only(cfg, lr_find, run, trainer)
        try:
            trainer.fit(model, datamodule=datamodule, ckpt_path=resume.checkpoint, weights_only=True)
        except SIGTERMException:
            _stopped_by_signal(cfg, trainer, run)
    results = fitted_results(cfg, trainer, model, images, resume, lr_find)
    # Temperature, "not sure" threshold and prediction sets, fitted on validation, written into the checkpoints before the test reads them.
    results.update(
        calibrate_run(
            trainer,
            model,
            datamodule,
            results["best_checkpoint"],
            str(checkpoint_dir) if checkpoint_dir else None,
            cfg.get("calibrate", True),
            cfg.get("abstain_target"),
            cfg.get("coverage"),
            plain_dict(cfg.conformal) if cfg.get("conformal") else None,
            cfg.seed,
        )
    )
    if cfg.get("test", True):
        metrics = trainer.test(model, datamodule=datamodule, ckpt_path=results["best_checkpoint"], verbose=False)[0]
        results.update({k: float(v) for k, v in metrics.items()}, **{"test/num_images": int(metrics["test/num_images"])})
    results["wall_time_s"] = round(time.time() - started, 1)
    if trainer.is_global_zero:  # under DDP every rank gets here with the same (synced) numbers
        report(run, results, images.files)
    return results


def check_settings(cfg: DictConfig) -> None:
    """Every setting no object checks, before anything is built (a preset's value the chosen policy does not
    use is dropped first; the user's own, on the command line, is refused)."""
    drop_unused_settings(cfg, job_overrides() if HydraConfig.initialized() else None)
    check_train_config(cfg)
    check_trainer(cfg.trainer)
    check_trust_settings(cfg.get("calibrate", True), cfg.get("abstain_target"))
    check_conformal_settings(cfg.get("coverage"), cfg.get("conformal"))


def build_callbacks(cfg: DictConfig) -> tuple[list[pl.Callback], str | Path | None]:
    """The configured callbacks (built before the loggers: KeepLoggedMetrics reads the earlier rows) and the
    folder of last.ckpt (the first ModelCheckpoint's, the trainer's checkpoint_callback), cleared of partial writes."""
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    checkpoint_dir = next((c.dirpath for c in callbacks if isinstance(c, ModelCheckpoint)), None)
    if checkpoint_dir and global_rank() == 0:
        remove_partial_writes(checkpoint_dir, "*.ckpt")  # left by a writer killed mid-file
    return callbacks, checkpoint_dir


def describe(cfg: DictConfig, images: PaintingDataModule, model: ArtClassifier) -> None:
    """The run's data, network and fine-tuning plan, in the log."""
    network = model.network
    log.info("data: %d classes, split sizes %s", len(images.classes), images.split_sizes())
    log.info(
        "backbone %s, head %s, weights: %s%s",
        cfg.backbone,
        network.spec["head"]["name"],
        network.weights_source,
        f" ({network.pretrained_cfg['tag_name']})" if network.pretrained_cfg else "",
    )
    log.info(model.finetuning.describe())


def build_trainer(cfg: DictConfig, callbacks: list[pl.Callback], model: ArtClassifier, resumed: bool) -> pl.Trainer:
    """Lightning's Trainer with the configured loggers; a resumed run logs into its earlier W&B run, and every
    logger gets the full config (the policy's settings as built, defaults filled in) for its run table."""
    loggers = [instantiate(lg) for lg in (cfg.get("logger") or {}).values()]
    for logger in loggers if resumed else ():
        if hasattr(logger, "continue_run"):  # W&B: log into the earlier attempt's run, not a new one
            logger.continue_run()
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    policy = model.finetuning.policy
    composed = {
        **plain_dict(cfg),
        "finetune": policy.settings,
        "unfreeze": getattr(policy, "unfreeze", None),
        "weights_source": model.network.weights_source,
    }
    for logger in loggers:
        logger.log_hyperparams(composed)  # parameter counts: W&B summary
    return trainer


def fitted_results(
    cfg: DictConfig, trainer: pl.Trainer, model: ArtClassifier, images: PaintingDataModule, resume: Resume, lr_find: dict | None
) -> dict:
    """What the run says about itself once fit ends (results.json before calibration and test)."""
    network, policy = model.network, model.finetuning.policy
    best_val = _finite_or_none(_optimized_value(trainer, "val/top1"))
    metric = cfg.get("optimized_metric", "val/top1")
    results = {
        "status": "ok",
        "backbone": cfg.backbone,
        "head": network.spec["head"],
        "unfreeze": getattr(policy, "unfreeze", None),
        "finetune": policy.settings,
        "pretrained": cfg.pretrained,
        "weights_source": network.weights_source,
        "pretrained_cfg": network.pretrained_cfg,
        "seed": cfg.seed,
        "data": {"source": cfg.data.source._target_, "root": cfg.data.root, "split_sizes": images.split_sizes()},
        "artist_overlap": images.artist_overlap,
        "num_classes": len(images.classes),
        "classes": images.classes,
        **model.finetuning.parameter_counts,
        "trained_layers": model.finetuning.plan.trained_layers,
        "total_layers": model.finetuning.plan.total_layers,
        "epochs": trainer.current_epoch,
        "attempts": resume.record["attempts"],
        "best_checkpoint": getattr(trainer.checkpoint_callback, "best_model_path", "") or None,
        "best_val/top1": best_val,
        "output_dir": str(Path(cfg.paths.output_dir)),
        "optimized_metric": metric,
        "optimized_value": best_val if metric == "val/top1" else _finite_or_none(_optimized_value(trainer, metric)),
    }
    if lr_find is not None:
        results.update(lr_find=lr_find, optimizer_lr=lr_find["suggested_lr"])
    return results


def report(run: RunFolder, results: dict, files: dict | None) -> None:
    """results.json, the test table, the run folder and the next command lines."""
    run.write_results(results)
    if "test/top1" in results:
        print(format_table(results), flush=True)
        if sets := sets_line(results):
            print(sets, flush=True)
    print(f"Outputs: {run.path}", flush=True)
    if results["best_checkpoint"]:
        print(next_commands(results["best_checkpoint"], files), flush=True)


def next_commands(checkpoint: str, files: dict | None) -> str:
    """The evaluate and predict command lines for the best checkpoint, ready to paste (predict on the
    first test painting, or a placeholder for generated data)."""
    example = str(files["test"][0][0]) if files and files.get("test") else "PATH/TO/PAINTINGS"
    ckpt = override("ckpt_path", str(Path(checkpoint).resolve()))
    return "\n".join(
        [
            "Next:",
            f"  python -m artmove.evaluate {ckpt}",
            f"  python -m artmove.predict {ckpt} {override('input', example)}",
        ]
    )


def override(key: str, value: str) -> str:
    """``key=value`` as a shell word Hydra parses back to ``value`` (quoted when it holds spaces, brackets…)."""
    if re.fullmatch(r"[\w/.\-+:@~%]+", value):
        return f"{key}={value}"
    return shlex.quote(f"{key}={json.dumps(value, ensure_ascii=False)}")


def _lr_find_only(cfg: DictConfig, lr_find: dict, run: RunFolder, trainer: pl.Trainer) -> dict:
    """``tune=lr``: the range test is the run; results.json holds its curve and suggestion."""
    results = {"status": "ok", "backbone": cfg.backbone, "seed": cfg.seed, "lr_find": lr_find, "output_dir": str(run.path)}
    if trainer.is_global_zero:
        run.write_results(results)
        suggestion = lr_find["suggested_lr"]
        print(
            f"Suggested learning rate: {suggestion:.3g} (plot: {lr_find['plot']})"
            if suggestion
            else f"No suggestion (too few finite losses): see {lr_find['plot']}",
            flush=True,
        )
        if suggestion:
            print(f"Train with it: add optimizer.lr={suggestion:.3g}, or run again with tune=lr_apply.", flush=True)
    return results


def _stopped_by_signal(cfg: DictConfig, trainer: pl.Trainer, run: RunFolder) -> None:
    """Say where the run stopped and how it continues; exit with EXIT_INTERRUPTED."""
    saved = next((c.path for c in trainer.callbacks if isinstance(c, CheckpointOnStop)), None)  # type: ignore[attr-defined]  # Trainer.callbacks is a property Lightning leaves untyped
    if trainer.is_global_zero:
        record_unfinished(run, "interrupted", cfg, epoch=trainer.current_epoch, step=trainer.global_step, checkpoint=saved)
        how = f"saved {saved}; to continue: python -m artmove.train resume={run.path}" if saved else "no checkpoint saved"
        print(
            f"artmove: stopped by a signal at epoch {trainer.current_epoch}, step {trainer.global_step}: {how}.",
            file=sys.stderr,
            flush=True,
        )
    raise SystemExit(EXIT_INTERRUPTED)


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _optimized_value(trainer: pl.Trainer, metric: str) -> float:
    """The best value when the checkpoint callback tracks ``metric``, else its last value (NaN: never logged)."""
    checkpoint = trainer.checkpoint_callback
    if isinstance(checkpoint, ModelCheckpoint) and checkpoint.monitor == metric and checkpoint.best_model_score is not None:
        return float(checkpoint.best_model_score)
    value = trainer.callback_metrics.get(metric)
    return float("nan") if value is None else float(value)


def _report_failure(cfg: DictConfig, error: BaseException) -> None:
    """Leave the error in the job's folder (results.json "status": "failed", traceback.txt) and say it once."""
    run = RunFolder(Path(HydraConfig.get().runtime.output_dir))
    if global_rank() == 0:
        record_failure(run, error, cfg)
    if isinstance(error, USER_ERRORS):
        say_user_error(error)
    else:
        log.error("job failed: %s: %s (traceback in %s)", type(error).__name__, error, run.traceback_file)


@accepts_resume_folder  # resume=<run folder>: that run's command line, then this one's overrides (artmove/runs/command_line.py)
@hydra.main(version_base="1.3", config_path="pkg://artmove.conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Return the optimised metric (``optimized_metric``, default val/top1) for sweepers.

    A failed single run stops (user errors: one line on stderr, exit code 2). A failed job
    of a sweep is recorded in its folder and returns None (Optuna marks the trial failed),
    so the other jobs still run; the sweep's summary (artmove.sweeps.summary) then ends
    with exit code 1.
    """
    try:
        results = run_in_own_process() if needs_own_process(cfg.trainer) else train(cfg)
        return results.get("optimized_value") if results.get("status") == "ok" else None  # None: never logged
    except Exception as raised:
        error = user_error_behind(raised)
        _report_failure(cfg, error)
        if not in_multirun():
            if isinstance(error, USER_ERRORS):
                raise SystemExit(2) from None
            raise
    gc.collect()  # the failed job's model and batches, before the next job starts
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return None


if __name__ == "__main__":
    main()
