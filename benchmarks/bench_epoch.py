"""The loader is not the bottleneck: training epochs read from the prepared cache vs from in-memory tensors.

tf_efficientnet_lite0 (unfreeze=0.2, random init) trains under the Lightning Trainer on
wikipaintings_small's train split, (1) through PaintingDataModule reading the 256 px npy
cache written by artmove.data.prepare (loader workers, uint8 augmentation, normalised after
transfer), (2) on the same number of uint8 batches already in memory. The two take turns;
the first steps (worker start, warm-up) are left out; the median counts. Target: cache >= 0.9 of
in-memory. BENCH_IMAGE_SIZE (128), BENCH_BATCH (32), BENCH_EPOCHS (2 per fit), BENCH_REPEATS (3).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from artmove.data import PaintingDataModule
from artmove.data.datamodule import auto_workers
from artmove.data.prepare import prepare
from artmove.data.sources import RastaWikiPaintings
from artmove.data.tools import all_files
from benchmarks import DATA
from benchmarks.measure import WARMUP, classifier, lightning_rate, median, peak_memory, setting

IMAGE_SIZE = setting("IMAGE_SIZE", 128)
BATCH = setting("BATCH", 32)
EPOCHS = setting("EPOCHS", 2)
REPEATS = setting("REPEATS", 3)
ROOT = DATA / "wikipaintings_small"


def run() -> dict:
    model = classifier("tf_efficientnet_lite0", 0.2, IMAGE_SIZE)
    with tempfile.TemporaryDirectory() as cache:
        prepare(all_files(PaintingDataModule(RastaWikiPaintings, root=str(ROOT), prepared_dir=None)), Path(cache), 256, auto_workers())
        datamodule = PaintingDataModule(
            RastaWikiPaintings, model.preprocessing, root=str(ROOT), batch_size=BATCH, num_workers="auto", prepared_dir=cache
        )
        datamodule.setup("fit")
        batches = [(images, labels) for images, labels in datamodule.train_dataloader()] * EPOCHS  # one epoch's batches
        rates, peaks = {"prepared_cache": [], "in_memory": []}, {}
        for _ in range(REPEATS):
            for name in rates:
                with peak_memory() as peak:
                    rates[name].append(
                        lightning_rate(
                            model,
                            batches,
                            WARMUP,
                            datamodule=datamodule if name == "prepared_cache" else None,
                            epochs=EPOCHS if name == "prepared_cache" else 1,
                        )
                    )
                peaks[name] = max(peaks.get(name, 0.0), peak["peak_rss_mb"])
    cache_rate, memory_rate = median(rates["prepared_cache"]), median(rates["in_memory"])
    ratio = round(cache_rate / memory_rate, 3)
    return {
        "data": str(ROOT / "wikipaintings_train"),
        "settings": {
            "image_size": IMAGE_SIZE,
            "batch_size": BATCH,
            "epochs_per_fit": EPOCHS,
            "loader_workers": datamodule.num_workers,
            "warmup_steps": WARMUP,
            "repeats": REPEATS,
            "cache": "npy, short side 256",
        },
        "rows": [
            {
                "source": "prepared_cache",
                "images_per_s": cache_rate,
                "peak_rss_mb": peaks["prepared_cache"],
                "ratio": ratio,
                "target": ">= 0.9",
                "met": ratio >= 0.9,
            },
            {"source": "in_memory", "images_per_s": memory_rate, "peak_rss_mb": peaks["in_memory"]},
        ],
        "summary": f"training from the prepared cache {cache_rate} img/s, from memory {memory_rate} img/s: {ratio}",
    }
