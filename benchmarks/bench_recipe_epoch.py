"""The recipe's training epoch with each split decoded at the size its own transform needs, against the
decoding every split shared before (the larger of the training and evaluation sizes).

``experiment=paintings`` trains on 224-px random crops and evaluates at 256 px: the training images
were decoded (JPEG draft mode, then the crop's resize) from a short side of ceil(256 / 0.875) = 293 px;
now from ceil(224 / 0.875) = 256 px. Measured side by side on wikipaintings_small's train split (the
original JPEGs, up to 4000 px): (1) one image's decode and train transform, single-threaded; (2) a
training epoch of the recipe's network and policy (tf_efficientnet_lite0, multiscale head, top half
retrained with layer decay) under the Lightning Trainer with the data module's loader workers. The
two decodings take turns, repeat by repeat; the median counts. BENCH_REPEATS (2).
"""

from __future__ import annotations

import math
import time
from unittest import mock

import pytorch_lightning as pl

import artmove.data.datamodule
from artmove.data import PaintingDataModule
from artmove.data.images import load_image
from artmove.data.sources import RastaWikiPaintings
from artmove.data.transforms import build_train_transform, decode_size, eval_input_size
from artmove.finetune import Discriminative
from artmove.models import ArtClassifier, backbone_preprocessing, create_network
from benchmarks import DATA
from benchmarks.measure import median, peak_memory, setting

REPEATS = setting("REPEATS", 2)
ROOT = DATA / "wikipaintings_small"


def shared_decode_size(preprocessing, training: bool = False) -> int:
    """The decoding before each split had its own: the larger of the training and evaluation sizes."""
    sizes = [*preprocessing["input_size"][1:], *eval_input_size(preprocessing)[1:]]
    return math.ceil(max(sizes) / preprocessing["crop_pct"])


def per_image_ms(paths, preprocessing, min_size: int) -> float:
    transform = build_train_transform(preprocessing, {"scale": (0.35, 1.0)})
    started = time.perf_counter()
    for path in paths:
        transform(load_image(path, min_size))
    return round(1000 * (time.perf_counter() - started) / len(paths), 2)


def epoch_seconds(preprocessing) -> float:
    """One training epoch of the recipe (no validation), data loading included."""
    datamodule = PaintingDataModule(
        RastaWikiPaintings,
        preprocessing,
        root=str(ROOT),
        batch_size=32,
        num_workers="auto",
        augment={"scale": (0.35, 1.0)},
        prepared_dir=None,
    )
    network = create_network(
        "tf_efficientnet_lite0", len(datamodule.classes), {"name": "multiscale", "stages": 3}, pretrained=False, drop_rate=0.2
    )
    model = ArtClassifier(
        network,
        Discriminative(0.5, layer_decay=0.8, freeze_norm_stats="all"),
        datamodule.classes,
        preprocessing,
        label_smoothing=0.1,
        optimizer={"opt": "adamw", "lr": 2e-3, "weight_decay": 0.05},
        scheduler={"sched": "none"},
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    started = time.perf_counter()
    trainer.fit(model, datamodule=datamodule)
    return round(time.perf_counter() - started, 1)


def run() -> dict:
    preprocessing = backbone_preprocessing("tf_efficientnet_lite0", 224, 256)  # experiment=paintings
    paths = [path for path, _ in RastaWikiPaintings(ROOT).split_samples["train"]]
    sizes = {"per split (now)": decode_size(preprocessing, training=True), "shared (before)": shared_decode_size(preprocessing)}
    decode = {name: [] for name in sizes}
    epochs = {name: [] for name in sizes}
    peaks = {}
    for _ in range(REPEATS):
        for name, size in sizes.items():
            decode[name].append(per_image_ms(paths, preprocessing, size))
            rule = decode_size if name == "per split (now)" else shared_decode_size
            with mock.patch.object(artmove.data.datamodule, "decode_size", rule), peak_memory() as peak:
                epochs[name].append(epoch_seconds(preprocessing))
            peaks[name] = peak["peak_rss_mb"]
    now, before = median(epochs["per split (now)"]), median(epochs["shared (before)"])
    rows = [
        {
            "train decode": name,
            "short side px": size,
            "decode+transform ms/image": median(decode[name]),
            "epoch s (249 paintings)": median(epochs[name]),
            "peak_rss_mb": peaks[name],
        }
        for name, size in sizes.items()
    ]
    rows[0]["epoch ratio now/before"] = round(now / before, 3)
    return {
        "data": str(ROOT / "wikipaintings_train"),
        "settings": {
            "recipe": "experiment=paintings (224 px train, 256 px test)",
            "repeats": REPEATS,
            "epochs": epochs,
            "decode_ms": decode,
        },
        "rows": rows,
        "summary": f"recipe epoch {now} s with per-split decoding vs {before} s shared ({now / before:.3f}x); "
        f"decode+transform {median(decode['per split (now)'])} vs {median(decode['shared (before)'])} ms/image",
    }
