"""`python -m artmove.train backbone=resnet50 unfreeze=0.2`: fit, test the best checkpoint, report."""

from __future__ import annotations

import gc
import logging
import math
import time
import warnings
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only

from artmove.checks import check_train_config
from artmove.cli import USER_ERRORS, say_user_error, user_error_behind
from artmove.distributed import in_multirun, needs_own_process, run_in_own_process
from artmove.features import cached_features
from artmove.features.cache import feature_device
from artmove.finetune.settings import check_finetune_config
from artmove.results import format_table, write_json
from artmove.sweeps.failures import FailOnNonFiniteLoss, record_failure
from artmove.sweeps.resume import keep_logged_metrics, resume_checkpoint

log = logging.getLogger("artmove.train")
# The frozen part's norm layers are in eval mode on purpose (fixed statistics, see README).
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")


def train(cfg: DictConfig) -> dict:
    """Run one training job; return its results (also written to ``<output_dir>/results.json``)."""
    started = time.time()
    check_train_config(cfg)
    check_finetune_config(cfg)
    output_dir = Path(cfg.paths.output_dir)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)

    datamodule = instantiate(cfg.data)
    classes = datamodule.classes
    model = instantiate(
        cfg.model, num_classes=len(classes), class_names=classes, class_weights=datamodule.class_weights(), _convert_="all"
    )
    datamodule.use_data_config(model.data_config)
    sizes = datamodule.split_sizes()
    log.info("data: %d classes, split sizes %s", len(classes), sizes)
    log.info("backbone %s, weights: %s", cfg.backbone, model.weights_source)
    log.info(model.describe_trainable())
    if model.finetune.cache_features:  # head only: train on the frozen backbone's cached features
        data = OmegaConf.to_container(cfg.data, resolve=True)
        device = feature_device(cfg.trainer.get("accelerator"))
        datamodule = cached_features(datamodule, model, model.finetune.cache_dir or "~/.cache/artmove/features", data, device)

    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()] + [FailOnNonFiniteLoss()]
    loggers = [instantiate(lg) for lg in (cfg.get("logger") or {}).values()]
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    checkpoint_dir = getattr(trainer.checkpoint_callback, "dirpath", None)
    resume_from = resume_checkpoint(cfg.get("resume", True), checkpoint_dir)
    if resume_from:
        keep_logged_metrics(loggers)
    composed = OmegaConf.to_container(cfg, resolve=True)  # the full config, for W&B's run table
    for logger in loggers:
        logger.log_hyperparams({**composed, "weights_source": model.weights_source})  # parameter counts: W&B summary
    trainer.fit(model, datamodule=datamodule, ckpt_path=resume_from)

    checkpoint = getattr(trainer.checkpoint_callback, "best_model_path", "") or None
    results = {
        "status": "ok",
        "backbone": cfg.backbone,
        "unfreeze": cfg.unfreeze,
        "pretrained": cfg.pretrained,
        "weights_source": model.weights_source,
        "seed": cfg.seed,
        "data": {"source": cfg.data.source._target_, "root": cfg.data.root, "split_sizes": sizes},
        "num_classes": len(classes),
        "classes": classes,
        **model.parameter_counts,
        "trained_layers": model.plan.trained_layers,
        "total_layers": model.plan.total_layers,
        "epochs": trainer.current_epoch,
        "best_checkpoint": checkpoint,
        "best_val/top1": _finite_or_none(_optimized_value(trainer, "val/top1")),
        "output_dir": str(output_dir),
    }
    metric = cfg.get("optimized_metric", "val/top1")
    optimized = results["best_val/top1"] if metric == "val/top1" else _finite_or_none(_optimized_value(trainer, metric))
    results.update(optimized_metric=metric, optimized_value=optimized)
    if cfg.get("test", True):
        metrics = trainer.test(model, datamodule=datamodule, ckpt_path=checkpoint, verbose=False)[0]
        results.update({k: float(v) for k, v in metrics.items()})
        results["test/num_images"] = int(results["test/num_images"])
    results["wall_time_s"] = round(time.time() - started, 1)
    if trainer.is_global_zero:  # under DDP every rank gets here with the same (synced) numbers
        write_json(output_dir / "results.json", results)
        if "test/top1" in results:
            print(format_table(results), flush=True)
        print(f"Outputs: {output_dir}", flush=True)
    return results


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _optimized_value(trainer: pl.Trainer, metric: str) -> float:
    """The best value when the checkpoint callback tracks ``metric``, else its last value (NaN: never logged)."""
    checkpoint = trainer.checkpoint_callback
    if checkpoint is not None and checkpoint.monitor == metric and checkpoint.best_model_score is not None:
        return float(checkpoint.best_model_score)
    value = trainer.callback_metrics.get(metric)
    return float("nan") if value is None else float(value)


def _report_failure(cfg: DictConfig, error: Exception) -> None:
    """Leave the error in the job's folder (results.json "status": "failed", traceback.txt) and say it once."""
    output_dir = Path(HydraConfig.get().runtime.output_dir)
    if rank_zero_only.rank == 0:
        record_failure(output_dir, error, cfg)
    if isinstance(error, USER_ERRORS):
        say_user_error(error)
    else:
        log.error("job failed: %s: %s (traceback in %s)", type(error).__name__, error, output_dir / "traceback.txt")


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
