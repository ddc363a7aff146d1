"""Train-loader throughput on wikipaintings_small: originals vs the prepared cache vs a training step.

Images per second the train DataLoader delivers (RASTA layout, tf_efficientnet_lite0
train transform: decode >= 256 px, random-resized-crop 224, flip; uint8 batches) read
from the originals (up to 4000 px JPEGs) and from copies prepared at 256 px as uint8
arrays (npy) and as JPEGs; the three loaders take turns epoch by epoch, so a busy
neighbour slows them alike, and the median epoch counts. The steady rate leaves out each
epoch's first batch: the start-up wait that a 249-image epoch (8 batches) repeats often
and a full data set's epoch (thousands of batches) pays once. Then the images per second a tf_efficientnet_lite0 training
step (normalise, forward, backward, AdamW update) consumes on this machine, at the
default unfreeze=0.2 and at unfreeze=1.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch
from timm.optim import create_optimizer_v2

from artmove.data import PaintingDataModule
from artmove.data.datamodule import auto_workers
from artmove.data.images import load_image
from artmove.data.prepare import prepare
from artmove.data.prepared import cache_path
from artmove.data.sources import RastaWikiPaintings
from artmove.data.tools import all_files
from artmove.data.transforms import build_train_transform, decode_size, normalize_uint8
from artmove.models import backbone_preprocessing
from benchmarks import DATA
from benchmarks.measure import classifier

BATCH = 32
EPOCHS = 20  # per loader; the first starts the workers and is left out
SIZE = 256


def train_loader(root: Path, preprocessing: dict, prepared_dir: Path | None):
    datamodule = PaintingDataModule(
        RastaWikiPaintings,
        preprocessing,
        root=str(root),
        batch_size=BATCH,
        num_workers="auto",
        prefetch_factor=4,
        prepared_dir=str(prepared_dir) if prepared_dir else None,
    )
    datamodule.setup("fit")
    return datamodule.train_dataloader()


def epoch_rates(loader) -> tuple[float, float]:
    """Images per second over one epoch: after its first batch arrived (steady), and in all."""
    started, images = time.perf_counter(), []
    for batch, _ in loader:
        images.append((len(batch), time.perf_counter()))
    first_count, first_at = images[0]
    total = sum(count for count, _ in images)
    return (total - first_count) / (images[-1][1] - first_at), total / (images[-1][1] - started)


def loader_rates(loaders: dict) -> dict:
    """Epochs of each loader in turn; median images per second of the epochs after the first."""
    rates: dict[str, list[tuple[float, float]]] = {name: [] for name in loaders}
    for _ in range(EPOCHS):
        for name, loader in loaders.items():
            rates[name].append(epoch_rates(loader))
    return {
        name: {
            "images_per_s": round(statistics.median(steady for steady, _ in r[1:]), 1),
            "whole_epoch_images_per_s": round(statistics.median(whole for _, whole in r[1:]), 1),
            "first_epoch_images_per_s": round(r[0][1], 1),
        }
        for name, r in rates.items()
    }


def per_image_ms(paths: list[Path], preprocessing: dict, count: int = 60, draft: bool = True) -> dict:
    """Single-threaded cost of one image: reading (decoding) it vs the train transform.

    ``draft=False`` decodes at full resolution, as a loader without JPEG draft mode would.
    """
    transform = build_train_transform(preprocessing)
    min_size = decode_size(preprocessing, training=True) if draft else None
    started = time.perf_counter()
    images = [load_image(path, min_size) for path in paths[:: max(1, len(paths) // count)][:count]]  # every class
    decoded = time.perf_counter()
    for image in images:
        transform(image)
    done = time.perf_counter()
    n = len(images)
    return {"decode_ms": round(1000 * (decoded - started) / n, 2), "transform_ms": round(1000 * (done - decoded) / n, 2)}


def step_rate(unfreeze: float, steps: int = 4) -> float:
    model = classifier("tf_efficientnet_lite0", unfreeze, 224)
    model.train()
    optimizer = create_optimizer_v2(model.network, opt="adamw", lr=1e-4)
    images = torch.randint(0, 256, (BATCH, 3, 224, 224), dtype=torch.uint8)
    labels = torch.randint(0, 25, (BATCH,))
    mean, std = model.preprocessing["mean"], model.preprocessing["std"]
    timings = []
    for _ in range(steps + 1):  # the first step warms up
        started = time.perf_counter()
        loss = model.criterion(model(normalize_uint8(images, mean, std)), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        timings.append(time.perf_counter() - started)
    return round(BATCH * steps / sum(timings[1:]), 1)


def run() -> dict:
    root = DATA / "wikipaintings_small"
    preprocessing = backbone_preprocessing("tf_efficientnet_lite0")
    with tempfile.TemporaryDirectory() as npy_cache, tempfile.TemporaryDirectory() as jpeg_cache:
        files = all_files(PaintingDataModule(RastaWikiPaintings, root=str(root)))
        prepare_s = {}
        for fmt, cache in (("npy", npy_cache), ("jpeg", jpeg_cache)):
            started = time.perf_counter()
            prepare(files, Path(cache), SIZE, auto_workers(), fmt)
            prepare_s[fmt] = round(time.perf_counter() - started, 1)
        disk_mb = {
            fmt: round(sum(p.stat().st_size for p in Path(cache).rglob("*.*")) / 1e6, 1)
            for fmt, cache in (("npy", npy_cache), ("jpeg", jpeg_cache))
        }
        loaders = {
            "originals": train_loader(root, preprocessing, None),
            "cache_jpeg": train_loader(root, preprocessing, Path(jpeg_cache)),
            "cache_npy": train_loader(root, preprocessing, Path(npy_cache)),
        }
        rates = loader_rates(loaders)
        del loaders
        train_files = sorted(path for path, _ in RastaWikiPaintings(root).split("train").samples)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as in a loader worker
        per_image = {
            "originals": per_image_ms(train_files, preprocessing),
            "originals_full_resolution_decode": per_image_ms(train_files, preprocessing, draft=False),
            "cache_jpeg": per_image_ms([cache_path(Path(jpeg_cache), p, SIZE, "jpeg") for p in train_files], preprocessing),
            "cache_npy": per_image_ms([cache_path(Path(npy_cache), p, SIZE, "npy") for p in train_files], preprocessing),
        }
        torch.set_num_threads(threads)
    steps = {f"unfreeze={u}": step_rate(u) for u in (0.2, 1.0)}
    speedup = {name: round(rates[name]["images_per_s"] / rates["originals"]["images_per_s"], 2) for name in rates}
    whole_speedup = {
        name: round(rates[name]["whole_epoch_images_per_s"] / rates["originals"]["whole_epoch_images_per_s"], 2) for name in rates
    }
    fastest_step = max(steps.values())
    return {
        "data": str(root / "wikipaintings_train"),
        "batch_size": BATCH,
        "loader_workers": auto_workers(),
        "input": f"tf_efficientnet_lite0 train transform: decode >= {SIZE} px, random-resized-crop 224 + flip, uint8",
        "prepare_s": prepare_s,
        "cache_disk_mb": disk_mb,
        "loader": rates,
        "loader_speedup_vs_originals": speedup,
        "loader_speedup_vs_originals_whole_epoch": whole_speedup,
        "per_image_single_thread_ms": per_image,
        "train_step_images_per_s": steps,
        "targets": {
            "npy_cache_at_least_5x_originals": speedup["cache_npy"] >= 5,
            "every_loader_faster_than_step": all(r["images_per_s"] > fastest_step for r in rates.values()),
        },
        "summary": (
            f"train loader {rates['originals']['images_per_s']} img/s from originals, "
            f"{rates['cache_jpeg']['images_per_s']} from the 256 px JPEG cache ({speedup['cache_jpeg']:.1f}x), "
            f"{rates['cache_npy']['images_per_s']} from the 256 px npy cache ({speedup['cache_npy']:.1f}x); "
            f"a tf_efficientnet_lite0 training step consumes {steps['unfreeze=0.2']} img/s (unfreeze=0.2), "
            f"{steps['unfreeze=1.0']} img/s (unfreeze=1)"
        ),
    }
