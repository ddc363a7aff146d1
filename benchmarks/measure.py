"""Measuring helpers shared by the benchmarks: peak memory during a measurement, medians, the
training step two ways (artmove's LightningModule under its Trainer, and a plain PyTorch loop), and
the training runs on the painting sets that benchmarks.compare_recipes and benchmarks.compare_trust share."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import nn

from artmove.data.transforms import normalize_uint8
from artmove.finetune import Fraction
from artmove.models import ArtClassifier, backbone_preprocessing, create_network
from benchmarks import DATA

WARMUP = 2  # steps (or batches) of each run left out of a rate


def setting(name: str, default: int) -> int:
    """A benchmark size, overridable from the environment as ``BENCH_<name>``."""
    return int(os.environ.get(f"BENCH_{name}", default))


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024


@contextmanager
def peak_memory(device: torch.device | str = "cpu"):
    """``{"peak_rss_mb": …}`` (and ``peak_gpu_mb`` on a GPU) of the process while the block runs."""
    peak = {"peak_rss_mb": rss_mb()}
    done = threading.Event()

    def sample():
        while not done.wait(0.01):
            peak["peak_rss_mb"] = max(peak["peak_rss_mb"], rss_mb())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    try:
        yield peak
    finally:
        done.set()
        sampler.join()
        peak["peak_rss_mb"] = round(max(peak["peak_rss_mb"], rss_mb()), 1)
        if cuda:
            peak["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)


def median(values: Sequence[float]) -> float:
    return round(statistics.median(values), 2)


def classifier(
    backbone: str, unfreeze: float, image_size: int, num_classes: int = 25, head: dict | None = None, **settings
) -> ArtClassifier:
    """An ArtClassifier as a run builds it, random init (no download), no scheduler."""
    network = create_network(backbone, num_classes, head, pretrained=False)
    return ArtClassifier(
        network,
        Fraction(unfreeze),
        class_names=[str(i) for i in range(num_classes)],
        preprocessing=backbone_preprocessing(backbone, image_size),
        **settings,
    )


def synthetic_batches(count: int, batch_size: int, image_size: int, num_classes: int = 25, device="cpu"):
    """uint8 image batches with labels, in memory (as the loader delivers them)."""
    generator = torch.Generator().manual_seed(0)
    return [
        (
            torch.randint(0, 256, (batch_size, 3, image_size, image_size), dtype=torch.uint8, generator=generator).to(device),
            torch.randint(0, num_classes, (batch_size,), generator=generator).to(device),
        )
        for _ in range(count)
    ]


class StepClock(pl.Callback):
    """The time at the end of every training batch (what a loop between steps costs is included)."""

    def __init__(self):
        self.ends: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()
        self.ends.append(time.perf_counter())


class Batches:
    """An iterable over ready batches (a plain list would be read by Lightning as a list of loaders)."""

    def __init__(self, batches):
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        return iter(self.batches)


class InMemory(pl.LightningDataModule):
    """Batches already in memory, normalised on the device like PaintingDataModule's uint8 batches."""

    def __init__(self, batches, mean, std):
        super().__init__()
        self.batches, self.mean, self.std = batches, mean, std

    def train_dataloader(self):
        return Batches(self.batches)

    def on_after_batch_transfer(self, batch, dataloader_idx):
        images, labels = batch
        return normalize_uint8(images, self.mean, self.std), labels


def rate(ends: Sequence[float], batch_size: int, warmup: int) -> float:
    """Images per second between the end of the warm-up steps and the last step."""
    return batch_size * (len(ends) - 1 - warmup) / (ends[-1] - ends[warmup])


def lightning_rate(
    model: ArtClassifier,
    batches,
    warmup: int,
    accelerator: str = "cpu",
    precision: str = "32-true",
    callbacks: Sequence[pl.Callback] = (),
    datamodule: pl.LightningDataModule | None = None,
    epochs: int = 1,
) -> float:
    """Training images/s of the LightningModule under a Lightning Trainer (no logger, checkpoint or bar),
    over in-memory ``batches`` or, given, a ``datamodule``'s train loader (``batches``: one for its size)."""
    clock = StepClock()
    trainer = pl.Trainer(
        accelerator=accelerator,
        devices=1,
        precision=precision,
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[clock, *callbacks],
    )
    trainer.fit(model, datamodule=datamodule or InMemory(batches, model.preprocessing["mean"], model.preprocessing["std"]))
    return rate(clock.ends, len(batches[0][1]), warmup)


def plain_step(model: ArtClassifier, dtype: torch.dtype | None = None, channels_last: bool = False, compile: bool = False) -> Callable:
    """A hand-written training step on the same network, loss and optimizer (the policy's AdamW groups)."""
    network: nn.Module = model.network
    if channels_last:
        network.to(memory_format=torch.channels_last)
    forward = torch.compile(network) if compile else network
    optimizer = model.configure_optimizers()
    mean, std = model.preprocessing["mean"], model.preprocessing["std"]
    device = next(network.parameters()).device

    def step(images, labels):
        images = normalize_uint8(images, mean, std)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = model.criterion(forward(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def plain_rate(model: ArtClassifier, batches, warmup: int, **settings) -> float:
    """Training images/s of :func:`plain_step` over the batches."""
    model.train()
    step = plain_step(model, **settings)
    ends = []
    for images, labels in batches:
        step(images, labels)
        if images.is_cuda:
            torch.cuda.synchronize()
        ends.append(time.perf_counter())
    return rate(ends, len(batches[0][1]), warmup)


@contextmanager
def serving_in_thread(app):
    """``app`` (ASGI) served by uvicorn on a free loopback port, in a thread of this process: its URL."""
    import socket

    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            raise RuntimeError("the server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


# --- training runs on the painting sets (benchmarks.compare_recipes and benchmarks.compare_trust) ------
REPO = Path(__file__).resolve().parents[1]
DATA_SETS = {
    # ArtGAN's official val images are the test split; 10 % of train is carved off for validation.
    "wikiart_sample": ["data=wikiart", "data.source.test_from=val"],
    "wikipaintings_small": ["data=rasta"],
}
BASELINE = ["backbone=tf_efficientnet_lite0", "pretrained=true"]
SETTINGS = (
    ("head-only probe", [*BASELINE, "unfreeze=0"]),
    # The same probe on features extracted once (no augmentation): minutes instead of epochs of forward passes.
    ("head-only probe, cached features", [*BASELINE, "unfreeze=0", "features=cached"]),
    ("plain unfreeze=0.2", [*BASELINE, "unfreeze=0.2"]),
    # What the recipe's evaluation alone (final weights, tested at 256 px) does for plain fine-tuning.
    ("plain unfreeze=0.2, final weights at 256 px", [*BASELINE, "unfreeze=0.2", "callbacks=final_weights", "test_image_size=256"]),
    ("recipe", ["experiment=paintings"]),
    ("recipe + random erasing + flip TTA", ["experiment=paintings", "data.augment.random_erasing=0.25", "model.flip_tta=true"]),
    ("recipe, head=linear", ["experiment=paintings", "head=linear"]),
    ("recipe, head=gram", ["experiment=paintings", "head=gram"]),
    ("recipe, tf_efficientnet_lite2", ["experiment=paintings", "backbone=tf_efficientnet_lite2", "image_size=260"]),
    ("recipe at 288 px", ["experiment=paintings", "image_size=288"]),
)
SEEDS = (1, 2, 3)


def run_dir(out: Path, data: str, name: str, seed: int) -> Path:
    slug = name.replace(", ", "_").replace(" ", "_").replace("=", "")
    return out / data / slug / f"seed{seed}"


def train_run(job: tuple[str, str, list[str], int], out: Path, extra: list[str], threads: int, accelerator: str) -> dict:
    """`python -m artmove.train` of one (data set, setting, overrides, seed) into a fresh run folder: its row."""
    data, name, overrides, seed = job
    folder = run_dir(out, data, name, seed)
    command = [
        sys.executable,
        "-m",
        "artmove.train",
        *DATA_SETS[data],
        f"data.root={DATA / data}",
        *overrides,
        f"seed={seed}",
        f"trainer.accelerator={accelerator}",
        *extra,
        f"hydra.run.dir={folder}",
    ]
    shutil.rmtree(folder, ignore_errors=True)  # a fresh run: never resume an earlier one's checkpoints
    started = time.time()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "ARTMOVE_CACHE": str(out / "cache")}
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{data} / {name} / seed {seed} failed:\n{done.stderr[-3000:]}")
    row = row_of(job, json.loads((folder / "results.json").read_text()), round(time.time() - started, 1))
    print(
        f"{data} / {name} / seed {seed}: val {row['best_val/top1']:.3f} test {row['test/top1']:.3f} ({row['wall_time_s']:.0f} s)",
        flush=True,
    )
    return row


def row_of(job: tuple[str, str, list[str], int], results: dict, wall_time_s: float) -> dict:
    """The measurement's row for one run, from its results.json."""
    data, name, overrides, seed = job
    keys = (
        "best_val/top1",
        "test/top1",
        "test/top3",
        "test/top1_macro",
        "test/top1_ci95_low",
        "test/top1_ci95_high",
        "test/num_images",
        "trainable_params",
        "epochs",
    )
    return {
        "data": data,
        "name": name,
        "overrides": overrides,
        "seed": seed,
        **{k: results.get(k) for k in keys},
        "wall_time_s": wall_time_s,
    }


def add_measurement_arguments(
    parser: argparse.ArgumentParser, out: Path, settings: list[str] | None, settings_help: str, results: Path
) -> None:
    """What every measurement here takes: seeds, data sets, settings, overrides for every run, how runs share the machine, where they go."""
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--data", nargs="+", choices=list(DATA_SETS), default=list(DATA_SETS))
    parser.add_argument(
        "--settings", nargs="+", choices=[name for name, _ in SETTINGS], default=settings, metavar="NAME", help=settings_help
    )
    parser.add_argument(
        "--set",
        dest="extra",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an override for every run, e.g. --set trainer.max_epochs=2 (a reduced scale, stated in the doc)",
    )
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (a GPU or many cores)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per run")
    parser.add_argument("--accelerator", default="cpu", help="trainer.accelerator of every run (cpu, gpu, auto)")
    parser.add_argument("--out", type=Path, default=out, help="where the runs go")
    parser.add_argument("--results", type=Path, default=results)


def section_file(results: Path) -> Path:
    """Where benchmarks.compare_trust keeps the Markdown section rendered from ``results`` (beside it, ``.md``), which
    benchmarks.compare_recipes places in docs/recipes.md: the two scripts share files, not imports."""
    return results.with_suffix(".md")


def stalled_upload(url: str, timeout: float = 60) -> dict:
    """A client of the demo page that sends the headers and the start of a multipart upload, then nothing; a
    thread reads what the server answers until it closes the connection: ``{"reply": bytes, "seconds": from the
    start to the close, "thread"}`` (the load benchmark and tests/test_demo_page.py)."""
    import socket

    host, port = url.removeprefix("http://").split(":")
    connection = socket.create_connection((host, int(port)), timeout=timeout)
    part = 'Content-Disposition: form-data; name="file"; filename="p.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
    started = time.perf_counter()
    connection.sendall(
        (
            f"POST /predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            f"Content-Length: 1000000\r\n\r\n--b\r\n{part}"
        ).encode()
        + b"\xff\xd8"
    )
    outcome: dict = {"reply": b""}

    def read() -> None:
        with connection:
            while chunk := connection.recv(4096):
                outcome["reply"] += chunk
        outcome["seconds"] = time.perf_counter() - started

    outcome["thread"] = threading.Thread(target=read, daemon=True)
    outcome["thread"].start()
    return outcome
