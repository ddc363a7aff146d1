"""Partial fine-tuning pays: resnet50 training-step images/s at unfreeze=0, 0.2 and 1, with peak memory.

A plain training step (forward, loss, backward, AdamW) on in-memory batches; the fractions take
turns repeat by repeat and the median counts. Target: unfreeze=0.2 >= 1.8x unfreeze=1 (no
autograd graph through the frozen part), lower peak memory. The forward pass alone (train mode,
no gradient) is timed beside them: every fraction pays it, so full step time / forward time is
the most any partial fine-tuning can gain. BENCH_IMAGE_SIZE (64), BENCH_BATCH (16),
BENCH_STEPS (10), BENCH_REPEATS (3).
"""

from __future__ import annotations

import gc
import time

import torch

from artmove.data.transforms import normalize_uint8
from benchmarks.measure import WARMUP, classifier, median, peak_memory, plain_rate, rate, setting, synthetic_batches

IMAGE_SIZE = setting("IMAGE_SIZE", 64)
BATCH = setting("BATCH", 16)
STEPS = setting("STEPS", 10)
REPEATS = setting("REPEATS", 3)
FRACTIONS = (0.0, 0.2, 1.0)
BACKBONE = "resnet50"


def forward_rate(model, batches, warmup: int) -> float:
    """Images/s of the training-mode forward pass alone (no gradient): the part no fraction saves."""
    model.train()
    mean, std = model.preprocessing["mean"], model.preprocessing["std"]
    ends = []
    with torch.no_grad():
        for images, _ in batches:
            model.network(normalize_uint8(images, mean, std))
            ends.append(time.perf_counter())
    return rate(ends, len(batches[0][1]), warmup)


def run() -> dict:
    batches = synthetic_batches(STEPS + WARMUP, BATCH, IMAGE_SIZE)
    rates = {u: [] for u in FRACTIONS}
    peaks = {u: 0.0 for u in FRACTIONS}
    forward = []
    for _ in range(REPEATS):
        for unfreeze in FRACTIONS:
            model = classifier(BACKBONE, unfreeze, IMAGE_SIZE)
            gc.collect()
            with peak_memory() as peak:
                rates[unfreeze].append(plain_rate(model, batches, WARMUP))
            peaks[unfreeze] = max(peaks[unfreeze], peak["peak_rss_mb"])
            if unfreeze == 1.0:
                forward.append(forward_rate(model, batches, WARMUP))
            del model
    full = median(rates[1.0])
    ceiling = round(median(forward) / full, 2)
    rows = [
        {
            "backbone": BACKBONE,
            "unfreeze": u,
            "images_per_s": median(rates[u]),
            "speedup_vs_unfreeze_1": round(median(rates[u]) / full, 2),
            "peak_rss_mb": peaks[u],
        }
        for u in FRACTIONS
    ]
    rows.append(
        {
            "backbone": BACKBONE,
            "unfreeze": "forward only",
            "images_per_s": median(forward),
            "speedup_vs_unfreeze_1": ceiling,
            "peak_rss_mb": None,
        }
    )
    speedup = rows[1]["speedup_vs_unfreeze_1"]
    return {
        "settings": {"image_size": IMAGE_SIZE, "batch_size": BATCH, "steps": STEPS, "warmup_steps": WARMUP, "repeats": REPEATS},
        "rows": rows,
        "targets": {"unfreeze_0.2_at_least_1.8x_unfreeze_1": speedup >= 1.8},
        "summary": f"{BACKBONE} step "
        + ", ".join(f"unfreeze={r['unfreeze']}: {r['images_per_s']} img/s ({r['speedup_vs_unfreeze_1']}x)" for r in rows)
        + f"; the forward pass alone caps any partial fine-tuning at {ceiling}x",
    }
