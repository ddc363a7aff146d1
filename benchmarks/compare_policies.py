"""`python -m benchmarks.compare_policies`: the fine-tuning policies on real paintings -> docs/policies.md.

Runs `python -m artmove.train` once per policy on ../shared/data/wikiart_sample (ARTMOVE_DATA)
with tf_efficientnet_lite0 and its packaged ImageNet weights, the same settings otherwise,
and writes every run's test top-1/3/5 and wall time to benchmarks/results/policies.json
and the table in docs/policies.md. Nothing in that table is typed by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import DATA
from benchmarks.run import machine

REPO = Path(__file__).resolve().parents[1]
WIKIART = DATA / "wikiart_sample"
RUNS = (
    ("head only", ["unfreeze=0"]),
    ("head only, cached features", ["unfreeze=0", "features=cached"]),
    ("fraction unfreeze=0.2", ["unfreeze=0.2"]),
    ("gradual to unfreeze=0.2", ["finetune=gradual", "unfreeze=0.2"]),
    ("gradual, norm statistics updated", ["finetune=gradual", "unfreeze=0.2", "finetune.freeze_norm_stats=frozen"]),
    (
        "gradual, norm statistics updated, lr_decay=1",
        ["finetune=gradual", "unfreeze=0.2", "finetune.freeze_norm_stats=frozen", "finetune.lr_decay=1"],
    ),
    ("discriminative, unfreeze=1", ["finetune=discriminative", "unfreeze=1"]),
    # Augmentation on top of fraction unfreeze=0.2 (colour operations may erase style cues).
    ("unfreeze=0.2 + RandAugment", ["unfreeze=0.2", "data.augment.rand_augment={num_ops: 2, magnitude: 9}"]),
    ("unfreeze=0.2 + TrivialAugment", ["unfreeze=0.2", "data.augment.trivial_augment=true"]),
    ("unfreeze=0.2 + RandomErasing", ["unfreeze=0.2", "data.augment.random_erasing=0.25"]),
)

TEMPLATE = """# Fine-tuning policies on real paintings

Produced by `{command}` (do not edit by hand: run it again). Data: `wikiart_sample`
(ArtGAN's WikiArt style split, 11 styles; `data=wikiart data.source.test_from=val`: the
{images} official val images are the test split, 10% of train is carved off for validation).
Backbone `tf_efficientnet_lite0` with its packaged ImageNet weights, {image_size} px, {epochs}
epochs, AdamW lr 1e-3, cosine schedule with one warm-up epoch, batch 32, seed 42, the default
train augmentation (random-resized crop, flips) except for the cached probe (eval transform).
Short runs for a shared 2-core CPU ({cpus} CPUs seen, {threads} torch thread(s) per run, {date}; other
jobs were running at the same time, so wall times are only roughly comparable within this table). Every run:
`python -m artmove.train {shared}` plus its overrides below; wall time includes loading, validation and the test.

{table}

{findings}

## What each policy trains

- `fraction` (default): the top `unfreeze` share of the backbone's weighted layers, snapped to
  timm's blocks, all at one learning rate.
- `stages`: the last `finetune.stages` of timm's coarse layer groups.
- `gradual`: head only in epoch 0, then one more block per epoch (`finetune.every_epochs`)
  down to the `unfreeze` floor; the k-th block trains at `lr_decay**k` x the head's learning
  rate (in the optimizer from the start, frozen until its epoch); the norm statistics of
  unfrozen blocks stay fixed by default (`finetune.freeze_norm_stats=all`).
- `discriminative`: the `unfreeze` share (here everything) with timm's layer-wise LR decay
  (`finetune.layer_decay`=0.75 per block from the head down).

## What was found on the way

**The fresh head's initialisation.** (Numbers in this section come from earlier runs of the
comparison that are not kept in policies.json.) The first run of this comparison gave the head-only probe a
test top-1 of 0.175 (chance: 0.091) with a mean training loss of 7.5 in the first epoch (ln 11 =
2.4): timm initialises an EfficientNet classifier uniformly in +-1/sqrt(classes), which is +-0.3
for 11 classes (+-0.03 for ImageNet's 1000), so the first logits were large and four epochs at
lr 1e-3 did not recover. The new head now starts at zero (as BiT does): uniform first
predictions whatever the scale of the features. The table above is measured with it.

**Gradual unfreezing and norm statistics.** With the norm statistics of each newly unfrozen
block switching to batch statistics (`freeze_norm_stats=frozen`, the other policies' default),
gradual unfreezing stayed near the head-only probe, with `lr_decay=0.5` or 1 alike (rows
"norm statistics updated"), well below gradual with fixed statistics: the learning rate was not the cause. Its training accuracy in the
epoch the first block was unfrozen fell below the head-only run's: the block's BatchNorm layers then normalise with each batch's
statistics and update ImageNet's running ones, which shifts the features the head has just been
fitted to, a shift that the short run at falling learning rates does not undo. Keeping those
statistics fixed while the block's weights (norm weights included) train is now gradual's
default (first gradual row).

**Frozen norm layers in Lightning.** Lightning never calls `train()` on a LightningModule: it builds it in training mode and, after
each validation, restores every submodule's mode as it was. Until this change the frozen
BatchNorm layers were therefore never put in eval mode during `fit`: their running statistics
drifted towards each training batch while their weights stayed frozen, so a "head only" probe
was not a fixed feature extractor (in the cache-equivalence test on synthetic paintings the
first training loss on images and on cached features differed 4-fold). The
classifier now sets the modes at construction and at the start of every epoch (after gradual
unfreezing), and `tests/test_finetune.py` checks in a real Lightning run that frozen norm
statistics stay put.
"""


def common(epochs: int, image_size: int) -> list[str]:
    return [
        "data=wikiart",
        f"data.root={WIKIART}",
        "data.source.test_from=val",
        "backbone=tf_efficientnet_lite0",
        "pretrained=true",
        f"image_size={image_size}",
        f"trainer.max_epochs={epochs}",
        "trainer.accelerator=cpu",
        "seed=42",
        # The splits the committed table was measured with: validation carved from train by image, as
        # before artist-disjoint splitting became wikiart's default (the test split, the published val, is the same).
        "data.group_by=null",
    ]


def train(name: str, overrides: list[str], out: Path, threads: int) -> dict:
    run_dir = out / name.replace(" ", "_").replace(",", "").replace("=", "")
    command = [sys.executable, "-m", "artmove.train", *overrides, f"hydra.run.dir={run_dir}"]
    shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run: never resume an earlier one's checkpoints
    started = time.time()
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": str(threads), "ARTMOVE_CACHE": str(out / "cache")},
    )
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
    results = json.loads((run_dir / "results.json").read_text())
    log = (run_dir / "train.log").read_text() if (run_dir / "train.log").is_file() else ""
    trainable = next((line.split(": ", 1)[1] for line in log.splitlines() if "retraining" in line), "")
    return {
        "name": name,
        "overrides": overrides,
        "wall_time_s": round(time.time() - started, 1),
        "trainable": trainable.split("; trainable modules")[0],
        **{
            k: results[k]
            for k in ("test/top1", "test/top3", "test/top5", "test/top1_macro", "test/num_images", "trainable_params", "total_params")
        },
    }


def table(rows: list[dict], shared: list[str]) -> str:
    """One row per run; the overrides shown are the run's own (``shared`` ones are listed above the table)."""
    lines = [
        "| policy | overrides | trainable params (at the end) | top-1 | top-3 | top-5 | top-1 macro | wall time |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | `{' '.join(o for o in r['overrides'] if o not in shared)}` | {r['trainable_params']:,} | "
            f"{r['test/top1']:.3f} | "
            f"{r['test/top3']:.3f} | {r['test/top5']:.3f} | {r['test/top1_macro']:.3f} | {r['wall_time_s']:.0f} s |"
        )
    return "\n".join(lines)


def findings(rows: list[dict]) -> str:
    by = {r["name"]: r for r in rows}
    probe = by["head only"]["test/top1"]
    lines = []
    for r in rows[2:]:
        delta = 100 * (r["test/top1"] - probe)
        lines.append(f"- {r['name']}: top-1 {'+' if delta >= 0 else ''}{delta:.1f} points against the head-only probe.")
    cached = by["head only, cached features"]
    lines.append(
        f"- The cached probe (eval transform, no augmentation) took {cached['wall_time_s']:.0f} s against "
        f"{by['head only']['wall_time_s']:.0f} s on images (feature extraction included; a second run reuses the cache)."
    )
    return "\n".join(lines)


def render(record: dict) -> str:
    rows = record["runs"]
    return TEMPLATE.format(
        command=f"python -m benchmarks.compare_policies --epochs {record['epochs']} --image-size {record['image_size']} "
        f"--threads {record.get('threads', 1)}",
        threads=record.get("threads", 1),
        epochs=record["epochs"],
        image_size=record["image_size"],
        images=rows[0]["test/num_images"],
        table=table(rows, record["common"]),
        shared=" ".join(record["common"]),
        findings=findings(rows),
        date=record["date"],
        cpus=record["machine"]["cpu_count"],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "policies")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (1: no oversubscription on a shared CPU)")
    parser.add_argument("--render", action="store_true", help="only rewrite docs/policies.md from benchmarks/results/policies.json")
    parser.add_argument("--runs", nargs="+", metavar="NAME", help="run only these rows and keep the others' results from the JSON")
    args = parser.parse_args()
    results = REPO / "benchmarks" / "results" / "policies.json"
    if args.render:
        record = json.loads(results.read_text())
    else:
        if not WIKIART.is_dir():
            raise SystemExit(f"wikiart_sample not found at {WIKIART}: set ARTMOVE_DATA to the folder holding it.")
        kept = {r["name"]: r for r in json.loads(results.read_text())["runs"]} if args.runs else {}
        rows = []
        for name, overrides in RUNS:
            if args.runs and name not in args.runs:
                rows.append(kept[name])
                continue
            rows.append(train(name, [*common(args.epochs, args.image_size), *overrides], args.out, args.threads))
            print(f"{name}: top-1 {rows[-1]['test/top1']:.3f} in {rows[-1]['wall_time_s']:.0f} s", flush=True)
        record = {
            "date": time.strftime("%Y-%m-%d"),
            "machine": machine(),
            "epochs": args.epochs,
            "threads": args.threads,
            "image_size": args.image_size,
            "common": common(args.epochs, args.image_size),
            "runs": rows,
        }
        results.write_text(json.dumps(record, indent=2) + "\n")
    (REPO / "docs" / "policies.md").write_text(render(record))
    print("-> docs/policies.md, benchmarks/results/policies.json", flush=True)


if __name__ == "__main__":
    main()
