"""`python -m benchmarks.bench_gpu [--smoke]`: resnet50 training images/s on one GPU (a few minutes).

On synthetic uint8 batches in GPU memory (224 px, batch 256), artmove's LightningModule under
its Trainer: full fine-tuning in fp32, bf16-mixed, bf16 + channels-last (the ``trainer=gpu``
defaults), + ``model.compile``; unfreeze=0.2 (bf16 + channels-last); the plain PyTorch loop with
the same settings (bf16 autocast + channels-last, and + torch.compile). Then one end-to-end epoch
of Lightning reading wikipaintings_small replicated to >= 20,000 training images from the
prepared 256 px npy cache (loader workers, uint8 augmentation, pinned memory) against the same
settings on in-memory batches. Peak GPU memory and host RSS beside each figure.

Targets on one H200: bf16 + channels-last full fine-tuning >= 5,000 images/s and >= 0.95 of the
plain loop; unfreeze=0.2 >= 1.8x full; end-to-end >= 0.9 of in-memory.

``--smoke``: tiny sizes (timm's test_resnet, 32 px, batch 4, 64 training images, no compile), on
the CPU when there is no GPU: checks that the script runs, measures nothing worth keeping.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import torch

from artmove.data import PaintingDataModule
from artmove.data.datamodule import auto_workers
from artmove.data.prepare import prepare
from artmove.data.sources import ImageFolderSplits, RastaWikiPaintings
from artmove.data.tools import all_files
from artmove.models import backbone_preprocessing
from artmove.training.callbacks import GpuSpeedups
from artmove.training.trainer import mixed_precision
from benchmarks import DATA
from benchmarks.measure import classifier, lightning_rate, peak_memory, plain_rate, synthetic_batches
from benchmarks.run import write_results

NEEDS_GPU = True
FULL = {"backbone": "resnet50", "image_size": 224, "batch_size": 256, "steps": 30, "warmup": 5, "train_images": 20_000, "compile": True}
SMOKE = {"backbone": "test_resnet", "image_size": 32, "batch_size": 4, "steps": 3, "warmup": 1, "train_images": 64, "compile": False}
ROOT = DATA / "wikipaintings_small"


def replicate(source: Path, target: Path, train_images: int) -> int:
    """Class folders of symbolic links to wikipaintings_small's images, copied until the train split
    (80 %: ImageFolderSplits holds out 10 % val, 10 % test) has ``train_images``; returns the file count."""
    files = all_files(PaintingDataModule(RastaWikiPaintings, root=str(source), prepared_dir=None))
    needed = math.ceil(train_images / 0.75)  # per-class rounding of the held-out splits
    files = files[:: max(1, len(files) // needed)]  # fewer than all (smoke): every class still there
    copies = math.ceil(needed / len(files))
    for copy in range(copies):
        for path in files:
            folder = target / path.parent.name
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"c{copy}_{path.name}").symlink_to(path)
    return copies * len(files)


def measure(name: str, device: torch.device, function) -> dict:
    with peak_memory(device) as peak:
        images_per_s = function()
    row = {"case": name, "images_per_s": round(images_per_s, 1), **peak}
    print(f"  {name:<45} {images_per_s:10.1f} img/s   peak GPU {peak.get('peak_gpu_mb', '-')} MB, RSS {peak['peak_rss_mb']} MB", flush=True)
    return row


def run(smoke: bool = False) -> dict:
    settings = dict(SMOKE if smoke else FULL)
    if not torch.cuda.is_available() and not smoke:
        raise SystemExit("bench_gpu needs a CUDA GPU (or --smoke for a tiny run on the CPU).")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    mixed = mixed_precision() if device.type == "cuda" else "bf16-mixed"
    autocast = torch.bfloat16 if mixed == "bf16-mixed" else torch.float16
    size, batch, warmup = settings["image_size"], settings["batch_size"], settings["warmup"]
    batches = synthetic_batches(settings["steps"] + warmup, batch, size, device=device)
    settings.update(device=str(device), precision=mixed)

    def model(unfreeze: float = 1.0, compile: bool = False):
        return classifier(settings["backbone"], unfreeze, size, compile=compile).to(device)

    def lightning(precision: str, speedups: GpuSpeedups, unfreeze: float = 1.0, compile: bool = False):
        return lambda: lightning_rate(model(unfreeze, compile), batches, warmup, accelerator, precision, [speedups])

    no_channels_last = GpuSpeedups(channels_last=False)
    cases = [
        ("full, fp32", lightning("32-true", GpuSpeedups(channels_last=False, tf32=False))),
        (f"full, {mixed}", lightning(mixed, no_channels_last)),
        (f"full, {mixed} + channels-last (trainer=gpu)", lightning(mixed, GpuSpeedups())),
        ("unfreeze=0.2, same settings", lightning(mixed, GpuSpeedups(), unfreeze=0.2)),
        ("plain loop, full, same settings", lambda: plain_rate(model(), batches, warmup, dtype=autocast, channels_last=True)),
    ]
    if settings["compile"]:
        cases += [
            ("full, + model.compile", lightning(mixed, GpuSpeedups(), compile=True)),
            (
                "plain loop, full, + torch.compile",
                lambda: plain_rate(model(), batches, warmup, dtype=autocast, channels_last=True, compile=True),
            ),
        ]
    rows = [measure(name, device, function) for name, function in cases]
    by_name = {row["case"]: row["images_per_s"] for row in rows}
    full_fast = by_name[f"full, {mixed} + channels-last (trainer=gpu)"]

    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        started = time.perf_counter()
        count = replicate(ROOT, work / "set", settings["train_images"])
        datamodule = PaintingDataModule(
            ImageFolderSplits,
            backbone_preprocessing(settings["backbone"], size),
            root=str(work / "set"),
            batch_size=batch,
            num_workers="auto",
            prepared_dir=str(work / "cache"),
        )
        prepare([path for split in datamodule.files.values() for path, _ in split], work / "cache", 256, auto_workers())
        settings.update(replicated_files=count, prepare_s=round(time.perf_counter() - started, 1))
        datamodule.setup("fit")
        train_images = len(datamodule.datasets["train"])

        def end_to_end():
            return lightning_rate(model(), [batches[0]], warmup, accelerator, mixed, [GpuSpeedups()], datamodule=datamodule)

        rows.append(measure(f"end-to-end epoch, {train_images} images from the cache", device, end_to_end))
    end_to_end_rate = rows[-1]["images_per_s"]
    ratios = {
        "lightning_vs_plain": round(full_fast / by_name["plain loop, full, same settings"], 3),
        "unfreeze_0.2_vs_full": round(by_name["unfreeze=0.2, same settings"] / full_fast, 2),
        "end_to_end_vs_in_memory": round(end_to_end_rate / full_fast, 3),
    }
    if settings["compile"]:
        ratios["compiled_lightning_vs_compiled_plain"] = round(
            by_name["full, + model.compile"] / by_name["plain loop, full, + torch.compile"], 3
        )
    return {
        "settings": settings,
        "rows": rows,
        "ratios": ratios,
        "targets": {
            "full_fast_at_least_5000": full_fast >= 5000,
            "lightning_at_least_0.95_of_plain": ratios["lightning_vs_plain"] >= 0.95,
            "unfreeze_0.2_at_least_1.8x": ratios["unfreeze_0.2_vs_full"] >= 1.8,
            "end_to_end_at_least_0.9": ratios["end_to_end_vs_in_memory"] >= 0.9,
        },
        "summary": f"{settings['backbone']} {size} px batch {batch} on {device}: {full_fast} img/s full {mixed} + channels-last; "
        + ", ".join(f"{k} {v}" for k, v in ratios.items()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes; runs on the CPU without a GPU")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results", help="folder for gpu.json and gpu.md")
    parser.add_argument("--note", default="")
    args = parser.parse_args()
    started = time.time()
    numbers = run(smoke=args.smoke)
    command = "python -m benchmarks.bench_gpu" + (" --smoke" if args.smoke else "")
    path = write_results("gpu_smoke" if args.smoke else "gpu", numbers, time.time() - started, command, args.note, args.out)
    print(f"{numbers['summary']}\n-> {path}", flush=True)


if __name__ == "__main__":
    main()
