"""Setup at scale: time to the first training step on a generated folder of BENCH_SETUP_FILES (80,000)
small JPEGs in 25 class folders, a first run (every header read) and a second on the unchanged set
(the screening's results remembered, artmove/data/header_cache.py). Target: second run <= 5 s.

Both runs are in this process (imports done, page cache warm: the files were just written), so
the figure is the framework's setup: listing, screening, splitting, model, loaders, first step.
"""

from __future__ import annotations

import io
import os
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
from hydra.utils import instantiate
from PIL import Image

from artmove.train import build
from benchmarks.measure import peak_memory

FILES = int(os.environ.get("BENCH_SETUP_FILES", 80_000))
CLASSES = 25


class FirstStep(pl.Callback):
    def __init__(self):
        self.at = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.at = self.at or time.perf_counter()


def generate(root: Path, count: int) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (80, 64), (120, 80, 40)).save(buffer, "JPEG")
    data = buffer.getvalue()
    for c in range(CLASSES):
        (root / f"movement{c:02d}").mkdir(parents=True)
    for i in range(count):
        (root / f"movement{i % CLASSES:02d}" / f"painter{i % 997}_{i}.jpg").write_bytes(data)


def time_to_first_step(root: Path, prepared_dir: Path, output_dir: Path) -> float:
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="artmove.conf", version_base="1.3"):
        cfg = compose(
            "train",
            [
                "data=folder",
                f"data.root={root}",
                f"data.prepared_dir={prepared_dir}",
                f"paths.output_dir={output_dir}",
                "backbone=test_resnet",
                "pretrained=false",
                "image_size=32",
                "data.num_workers=0",
                "data.batch_size=16",
                "callbacks=none",
            ],
        )
    GlobalHydra.instance().clear()
    started = time.perf_counter()
    _, datamodule, model = build(cfg)
    first = FirstStep()
    trainer = instantiate(
        cfg.trainer,
        callbacks=[first],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        max_steps=1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, datamodule=datamodule)
    return round(first.at - started, 2)


def run() -> dict:
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        started = time.perf_counter()
        generate(work / "set", FILES)
        generated_s = round(time.perf_counter() - started, 1)
        rows = []
        for name in ("first run", "second run"):
            with peak_memory() as peak:
                seconds = time_to_first_step(work / "set", work / "cache", work / name.replace(" ", "_"))
            rows.append({"run": name, "files": FILES, "seconds_to_first_step": seconds, "peak_rss_mb": peak["peak_rss_mb"]})
    rows[1].update(target="<= 5 s", met=rows[1]["seconds_to_first_step"] <= 5)
    return {
        "settings": {
            "files": FILES,
            "classes": CLASSES,
            "image": "80x64 JPEG",
            "generated_in_s": generated_s,
            "model": "test_resnet 32 px, batch 16, workers 0",
        },
        "rows": rows,
        "summary": f"{FILES} files: first step after {rows[0]['seconds_to_first_step']} s (first run), "
        f"{rows[1]['seconds_to_first_step']} s (second run, screening remembered)",
    }
