"""Evaluation cost of test-time augmentation on wikipaintings_small's test split.

Seconds per image for `python -m artmove.evaluate`'s prediction loop (decode, eval transform
and views, tf_efficientnet_lite0 forward at 224 px, batch 32, two loader workers) with
tta=none, flip, five_crop and ten_crop, measured side by side in one run. The model is built
without training (random head over the packaged ImageNet backbone): speed does not depend on
the weights, and no checkpoint has to be trained first.
"""

from __future__ import annotations

import time

import torch

from artmove.data.sources import RastaWikiPaintings
from artmove.data.transforms import decode_size
from artmove.evaluation.inference import MappedViews, predict_split
from artmove.evaluation.tta import TTA_MODES, tta_transform
from artmove.models import ArtClassifier, backbone_preprocessing
from benchmarks import DATA


def run() -> dict:
    source = RastaWikiPaintings(DATA / "wikipaintings_small")
    model = ArtClassifier(
        "tf_efficientnet_lite0",
        num_classes=len(source.classes),
        class_names=source.classes,
        preprocessing=backbone_preprocessing("tf_efficientnet_lite0"),
    ).eval()
    split = source.split("test", decode_size(model.preprocessing))
    identity = list(range(len(source.classes)))
    seconds = {}
    for mode in TTA_MODES:
        dataset = MappedViews(split, tta_transform(model.preprocessing, mode), identity)
        started = time.perf_counter()
        with torch.inference_mode():
            predict_split(model, dataset, batch_size=32, num_workers=2)
        seconds[mode] = (time.perf_counter() - started) / len(dataset)
    ratios = {mode: round(value / seconds["none"], 2) for mode, value in seconds.items()}
    return {
        "images": len(split),
        "seconds_per_image": {mode: round(value, 4) for mode, value in seconds.items()},
        "cost_vs_none": ratios,
        "summary": ", ".join(f"{mode} {seconds[mode] * 1000:.0f} ms/image (x{ratios[mode]})" for mode in TTA_MODES),
    }
