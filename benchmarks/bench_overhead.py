"""Framework overhead: training images/s of ArtClassifier under a Lightning Trainer vs a plain PyTorch loop.

The same model, optimizer (the policy's AdamW groups) and in-memory uint8 batches, normalised
the same way; the two loops take turns, repeat by repeat, so a busy neighbour slows them alike;
the first steps of each run (warm-up) are left out; the median over repeats counts. Target:
Lightning / plain >= 0.95. Sizes are small for a 2-core CPU: BENCH_IMAGE_SIZE (64), BENCH_BATCH (16),
BENCH_STEPS (10), BENCH_REPEATS (3).
"""

from __future__ import annotations

from benchmarks.measure import WARMUP, classifier, lightning_rate, median, peak_memory, plain_rate, setting, synthetic_batches

IMAGE_SIZE = setting("IMAGE_SIZE", 64)
BATCH = setting("BATCH", 16)
STEPS = setting("STEPS", 10)
REPEATS = setting("REPEATS", 3)
CASES = [(backbone, unfreeze) for backbone in ("resnet50", "tf_efficientnet_lite0") for unfreeze in (0.2, 1.0)]


def run() -> dict:
    batches = synthetic_batches(STEPS + WARMUP, BATCH, IMAGE_SIZE)
    rows, runs = [], {}
    for backbone, unfreeze in CASES:
        model = classifier(backbone, unfreeze, IMAGE_SIZE)
        rates, peaks = {"lightning": [], "plain": []}, {}
        for _ in range(REPEATS):
            with peak_memory() as peak:
                rates["lightning"].append(lightning_rate(model, batches, WARMUP))
            peaks["lightning"] = peak
            with peak_memory() as peak:
                rates["plain"].append(plain_rate(model, batches, WARMUP))
            peaks["plain"] = peak
        runs[f"{backbone} unfreeze={unfreeze}"] = rates  # every repeat: how noisy the machine was
        lightning, plain = median(rates["lightning"]), median(rates["plain"])
        rows.append(
            {
                "backbone": backbone,
                "unfreeze": unfreeze,
                "lightning_images_per_s": lightning,
                "plain_images_per_s": plain,
                "ratio": round(lightning / plain, 3),
                "lightning_peak_rss_mb": peaks["lightning"]["peak_rss_mb"],
                "plain_peak_rss_mb": peaks["plain"]["peak_rss_mb"],
                "target": ">= 0.95",
                "met": lightning / plain >= 0.95,
            }
        )
    return {
        "settings": {"image_size": IMAGE_SIZE, "batch_size": BATCH, "steps": STEPS, "warmup_steps": WARMUP, "repeats": REPEATS},
        "rows": rows,
        "runs_images_per_s": runs,
        "summary": "; ".join(f"{r['backbone']} unfreeze={r['unfreeze']}: Lightning/plain {r['ratio']}" for r in rows),
    }
