"""`python -m artmove.train backbone=resnet50 unfreeze=0.2`: fit, test the best checkpoint, report."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import hydra
import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from artmove.checks import ConfigError, check_train_config
from artmove.data.sources import DataSetupError
from artmove.models.pretrained import PretrainedWeightsError
from artmove.reporting import format_table, write_json

log = logging.getLogger("artmove.train")
USER_ERRORS = (ConfigError, DataSetupError, PretrainedWeightsError)


def train(cfg: DictConfig) -> dict:
    """Run one training job; return its results (also written to ``<output_dir>/results.json``)."""
    started = time.time()
    check_train_config(cfg)
    output_dir = Path(cfg.paths.output_dir)
    pl.seed_everything(cfg.seed, workers=True)

    datamodule = instantiate(cfg.data)
    classes = datamodule.classes
    model = instantiate(cfg.model, num_classes=len(classes), class_names=classes, _convert_="all")
    datamodule.use_data_config(model.data_config)
    sizes = datamodule.split_sizes()
    log.info("data: %d classes, split sizes %s", len(classes), sizes)
    log.info("backbone %s, weights: %s", cfg.backbone, model.weights_source)
    log.info(model.describe_trainable())

    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    loggers = [instantiate(lg) for lg in (cfg.get("logger") or {}).values()]
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    for logger in loggers:
        logger.log_hyperparams({**model.parameter_counts, "weights_source": model.weights_source})
    trainer.fit(model, datamodule=datamodule)

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
        "best_val/top1": _best_score(trainer),
        "output_dir": str(output_dir),
    }
    if cfg.get("test", True):
        metrics = trainer.test(model, datamodule=datamodule, ckpt_path=checkpoint, verbose=False)[0]
        results.update({k: float(v) for k, v in metrics.items()})
        results["test/num_images"] = int(results["test/num_images"])
    results["wall_time_s"] = round(time.time() - started, 1)
    write_json(output_dir / "results.json", results)
    if "test/top1" in results:
        print(format_table(results), flush=True)
    print(f"Outputs: {output_dir}", flush=True)
    return results


def _best_score(trainer: pl.Trainer) -> float | None:
    score = getattr(trainer.checkpoint_callback, "best_model_score", None)
    return None if score is None else float(score)


@hydra.main(version_base="1.3", config_path="pkg://artmove.conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        results = train(cfg)
    except USER_ERRORS as error:
        log.error("%s", error)
        print(f"artmove: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    return results.get("best_val/top1")


if __name__ == "__main__":
    main()
