"""Linear-probe epoch time on wikiart_sample with and without the feature cache (tf_efficientnet_lite0).

The same head-only job (packaged ImageNet weights, 224 px, batch 32) is run side by side:
on images (every epoch runs the frozen backbone; train augmentation on) and from cached
pooled features (``features=cached``: the first run extracts every split once
with the eval transform, the epochs after that only run the head). Epoch time = training
plus validation of one epoch, from Lightning's epoch hooks.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra

from artmove.train import build
from benchmarks import DATA

IMAGE_EPOCHS, CACHED_EPOCHS = 2, 5


class EpochTimer(pl.Callback):
    def __init__(self):
        self.seconds = []

    def on_train_epoch_start(self, trainer, pl_module):
        self._started = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):  # after the epoch's validation
        self.seconds.append(time.perf_counter() - self._started)


def compose_probe(output_dir: str, *overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="artmove.conf", version_base="1.3"):
        return compose(
            config_name="train",
            overrides=[
                f"paths.output_dir={output_dir}",
                "data=wikiart",
                f"data.root={DATA / 'wikiart_sample'}",
                "backbone=tf_efficientnet_lite0",
                "unfreeze=0",
                "scheduler=none",
                "trainer.accelerator=cpu",
                *overrides,
            ],
        )


def timed_fit(cfg, cached: bool) -> tuple[list[float], float]:
    """Epoch times of one fit, and the seconds spent getting the features (0 on images)."""
    pl.seed_everything(cfg.seed)
    _, datamodule, model = build(cfg)
    started = time.perf_counter()
    datamodule.setup("fit")  # extracts the features, or reads them from the cache
    features_s = time.perf_counter() - started if cached else 0.0
    timer = EpochTimer()
    trainer = pl.Trainer(
        max_epochs=cfg.trainer.max_epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    trainer.fit(model, datamodule=datamodule)
    return timer.seconds, features_s


def run() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        images, _ = timed_fit(compose_probe(tmp, f"trainer.max_epochs={IMAGE_EPOCHS}"), cached=False)
        cached_cfg = compose_probe(
            tmp, f"trainer.max_epochs={CACHED_EPOCHS}", "features=cached", f"features.cache_dir={Path(tmp) / 'features'}"
        )
        first_epochs, extract_s = timed_fit(cached_cfg, cached=True)
        reuse_epochs, reuse_s = timed_fit(cached_cfg, cached=True)
    image_epoch = statistics.median(images)
    cached_epoch = statistics.median(first_epochs[1:] + reuse_epochs)
    speedup = image_epoch / cached_epoch
    return {
        "data": "wikiart_sample (data=wikiart), tf_efficientnet_lite0 packaged weights, 224 px, batch 32, head only",
        "image_epoch_s": [round(s, 2) for s in images],
        "feature_extraction_s": round(extract_s, 1),
        "cached_epoch_s_first_run": [round(s, 3) for s in first_epochs],
        "cache_reuse_load_s": round(reuse_s, 2),
        "cached_epoch_s_second_run": [round(s, 3) for s in reuse_epochs],
        "image_epoch_median_s": round(image_epoch, 2),
        "cached_epoch_median_s": round(cached_epoch, 3),
        "speedup": round(speedup, 1),
        "target_speedup": 20,
        "meets_target": speedup >= 20,
        "summary": f"epoch on images {image_epoch:.1f} s, from cached features {cached_epoch:.3f} s: {speedup:.0f}x "
        f"(target 20x); extracting all splits once {extract_s:.1f} s, reusing the cache {reuse_s:.2f} s",
    }
