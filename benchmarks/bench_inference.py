"""Inference: evaluate, predict and feature extraction images/s vs a plain torch.inference_mode() loop.

The same files (wikipaintings_small's val split), model (tf_efficientnet_lite0, random init),
transform, batch size and loader workers; artmove's loops (artmove/evaluation/inference.py,
artmove/features/cache.py: progress bar included) and the plain loop take turns, repeat by
repeat; the first pass warms up (page cache, allocator) and is left out; the median counts.
Target: each >= 0.9 of the plain loop. BENCH_IMAGE_SIZE (128), BENCH_BATCH (32), BENCH_REPEATS (3).
"""

from __future__ import annotations

import time

import torch
from torch.utils.data import DataLoader

from artmove.data import PaintingDataModule
from artmove.data.sources import RastaWikiPaintings
from artmove.data.transforms import decode_size
from artmove.evaluation.inference import ImageFiles, MappedViews, predict_files, predict_split
from artmove.evaluation.tta import tta_transform
from artmove.features.cache import extract
from benchmarks import DATA
from benchmarks.measure import classifier, median, peak_memory, setting

IMAGE_SIZE = setting("IMAGE_SIZE", 128)
BATCH = setting("BATCH", 32)
REPEATS = setting("REPEATS", 3)
WORKERS = setting("WORKERS", 1)
ROOT = DATA / "wikipaintings_small"


def run() -> dict:
    model = classifier("tf_efficientnet_lite0", 0.0, IMAGE_SIZE).eval()
    datamodule = PaintingDataModule(RastaWikiPaintings, model.preprocessing, root=str(ROOT), num_workers=0, prepared_dir=None)
    split = datamodule.images("val", use_cache=False)
    paths = [path for path, _ in split.samples]
    views = tta_transform(model.preprocessing, "none")
    evaluation = MappedViews(split, views, list(range(len(datamodule.classes))))
    files = ImageFiles(paths, views, decode_size(model.preprocessing))
    features = datamodule.evaluation_dataset("val")

    @torch.inference_mode()
    def plain_loop():
        for images, _ in DataLoader(features, batch_size=BATCH, num_workers=WORKERS):
            model(images).softmax(-1)

    @torch.inference_mode()
    def plain_features():
        for images, _ in DataLoader(features, batch_size=BATCH, num_workers=WORKERS):
            model.network.pooled(images)

    loops = {
        "evaluate": lambda: predict_split(model.network, evaluation, BATCH, WORKERS),
        "predict": lambda: predict_files(model.network, files, BATCH, WORKERS),
        "plain_predict": plain_loop,
        "feature_extraction": lambda: extract(model.network, features, BATCH, WORKERS, torch.device("cpu")),
        "plain_features": plain_features,
    }
    seconds = {name: [] for name in loops}
    peaks = {}
    for repeat in range(REPEATS + 1):
        for name, loop in loops.items():
            with peak_memory() as peak:
                started = time.perf_counter()
                loop()
                elapsed = time.perf_counter() - started
            if repeat:  # the first pass warms up
                seconds[name].append(elapsed)
                peaks[name] = max(peaks.get(name, 0.0), peak["peak_rss_mb"])
    rate = {name: len(paths) / median(times) for name, times in seconds.items()}
    baseline = {"evaluate": "plain_predict", "predict": "plain_predict", "feature_extraction": "plain_features"}
    rows = [
        {
            "loop": name,
            "images_per_s": round(rate[name], 1),
            "plain_images_per_s": round(rate[plain], 1),
            "ratio": round(rate[name] / rate[plain], 3),
            "peak_rss_mb": peaks[name],
            "target": ">= 0.9",
            "met": rate[name] / rate[plain] >= 0.9,
        }
        for name, plain in baseline.items()
    ]
    return {
        "data": str(ROOT / "wikipaintings_val"),
        "settings": {"images": len(paths), "image_size": IMAGE_SIZE, "batch_size": BATCH, "workers": WORKERS, "repeats": REPEATS},
        "rows": rows,
        "summary": "; ".join(f"{r['loop']}: {r['images_per_s']} img/s, {r['ratio']} of the plain loop" for r in rows),
    }
