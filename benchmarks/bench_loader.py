"""Train-loader throughput on wikipaintings_small: originals vs the prepared cache vs a training step.

Images per second the train DataLoader delivers (RASTA layout, tf_efficientnet_lite0
transforms: decode >= 256 px, random-resized-crop 224) read from the originals (up to
4000 px JPEGs) and from copies prepared at 256 px, measured side by side in one run;
and the images per second a tf_efficientnet_lite0 training step (forward, backward,
AdamW update) consumes on this machine, at the default unfreeze=0.2 and at unfreeze=1.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import torch
from timm.optim import create_optimizer_v2

from artmove.data import PaintingDataModule
from artmove.data.cache import cache_path
from artmove.data.datamodule import auto_workers
from artmove.data.images import load_rgb
from artmove.data.prepare import prepare
from artmove.data.sources import RastaWikiPaintings
from artmove.data.tools import all_files
from artmove.data.transforms import build_transforms, decode_size
from artmove.models.classifier import ArtClassifier

DATA = Path(os.environ.get("ARTMOVE_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
BATCH = 32
EPOCHS = 3  # the first includes worker start-up; the rest are steady state


def loader_rate(root: Path, data_config: dict, cache_dir: Path | None) -> dict:
    datamodule = PaintingDataModule(
        RastaWikiPaintings, root=str(root), batch_size=BATCH, num_workers="auto", prefetch_factor=4,
        cache_dir=str(cache_dir) if cache_dir else None,
    )  # fmt: skip
    datamodule.use_data_config(data_config)
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    rates = []
    for _ in range(EPOCHS):
        started, images = time.perf_counter(), 0
        for batch, _ in loader:
            images += len(batch)
        rates.append(images / (time.perf_counter() - started))
    steady = rates[1:]
    return {"images_per_s": round(sum(steady) / len(steady), 1), "first_epoch_images_per_s": round(rates[0], 1)}


def per_image_ms(paths: list[Path], data_config: dict, count: int = 60, draft: bool = True) -> dict:
    """Single-threaded cost of one image: decoding vs the train transform (crop, resize, normalise).

    ``draft=False`` decodes at full resolution, as a loader without JPEG draft mode would.
    """
    train_transform, _ = build_transforms(data_config)
    min_size = decode_size(data_config) if draft else None
    started = time.perf_counter()
    images = [load_rgb(path, min_size) for path in paths[:: max(1, len(paths) // count)][:count]]  # every class
    decoded = time.perf_counter()
    for image in images:
        train_transform(image)
    done = time.perf_counter()
    n = len(images)
    return {"decode_ms": round(1000 * (decoded - started) / n, 2), "transform_ms": round(1000 * (done - decoded) / n, 2)}


def step_rate(unfreeze: float, steps: int = 4) -> float:
    model = ArtClassifier("tf_efficientnet_lite0", num_classes=25, unfreeze=unfreeze, pretrained=False)
    model.train()
    optimizer = create_optimizer_v2(model.model, opt="adamw", lr=1e-4)
    images = torch.randn(BATCH, 3, 224, 224)
    labels = torch.randint(0, 25, (BATCH,))
    timings = []
    for _ in range(steps + 1):  # the first step warms up
        started = time.perf_counter()
        loss = model.criterion(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        timings.append(time.perf_counter() - started)
    return round(BATCH * steps / sum(timings[1:]), 1)


def run() -> dict:
    root = DATA / "wikipaintings_small"
    model = ArtClassifier("tf_efficientnet_lite0", num_classes=25, pretrained=False)
    data_config = model.data_config
    with tempfile.TemporaryDirectory() as cache:
        started = time.perf_counter()
        probe = PaintingDataModule(RastaWikiPaintings, root=str(root))
        prepare(all_files(probe), Path(cache), 256, auto_workers())
        prepare_s = time.perf_counter() - started
        originals = loader_rate(root, data_config, None)
        cached = loader_rate(root, data_config, Path(cache))
        train_files = sorted(path for path, _ in probe.source.split("train").samples)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as in a loader worker
        originals["per_image"] = per_image_ms(train_files, data_config)
        cached["per_image"] = per_image_ms([cache_path(Path(cache), p, 256) for p in train_files], data_config)
        full_decode = per_image_ms(train_files, data_config, draft=False)
        torch.set_num_threads(threads)
    steps = {f"unfreeze={u}": step_rate(u) for u in (0.2, 1.0)}
    speedup = cached["images_per_s"] / originals["images_per_s"]
    per_image = {name: sum(d["per_image"].values()) for name, d in (("originals", originals), ("cache", cached))}
    return {
        "data": str(root / "wikipaintings_train"),
        "batch_size": BATCH,
        "loader_workers": auto_workers(),
        "input": "tf_efficientnet_lite0 train transform: decode >= 256 px, random-resized-crop 224",
        "prepare_256px_s": round(prepare_s, 1),
        "loader_originals": originals,
        "loader_cache_256px": cached,
        "cache_speedup": round(speedup, 2),
        "originals_full_decode_per_image": full_decode,
        "cache_speedup_vs_full_decode_per_image": round(sum(full_decode.values()) / per_image["cache"], 2),
        "transform_share_of_cached_image_ms": round(cached["per_image"]["transform_ms"] / per_image["cache"], 2),
        "train_step_images_per_s": steps,
        "targets": {
            "cache_at_least_5x_originals": speedup >= 5,
            "cached_loader_faster_than_step": cached["images_per_s"] > max(steps.values()),
            "original_loader_faster_than_step": originals["images_per_s"] > max(steps.values()),
        },
        "note": "measured on a CPU shared with other jobs (loader and step measured one after the other, "
        "each with the whole machine)",
        "summary": (
            f"train loader {originals['images_per_s']} img/s from originals, {cached['images_per_s']} img/s from "
            f"the 256 px cache ({speedup:.1f}x); a tf_efficientnet_lite0 training step consumes "
            f"{steps['unfreeze=0.2']} img/s (unfreeze=0.2), {steps['unfreeze=1.0']} img/s (unfreeze=1)"
        ),
    }
