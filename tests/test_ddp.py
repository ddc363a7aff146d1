"""DDP on CPU (trainer=ddp_cpu, 2 processes, gloo): every test image counted exactly once, the same
top-1 as one process on the same checkpoint, and DDP jobs inside a Hydra multirun."""

import copy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf
from PIL import Image
from timm.layers import BatchNormAct2d, SyncBatchNormAct

from artmove.sweeps.ddp_jobs import relaunches_command
from artmove.train import train
from artmove.training.trainer import TimmSyncBatchNorm

# test: 5 images (odd), so a padded DistributedSampler would evaluate 6 on 2 processes.
SPLITS = {"train": (4, 4), "val": (2, 1), "test": (3, 2)}
METRICS = ("test/top1", "test/top3", "test/top5", "test/top1_macro", "test/num_images")


@pytest.fixture(scope="module")
def odd_folder(tmp_path_factory) -> Path:
    """Two classes of 24 px noise, stripes or not, in root/{train,val,test}/<Class>/."""
    root, rng = tmp_path_factory.mktemp("odd"), np.random.default_rng(0)
    for split, counts in SPLITS.items():
        for name, count in zip(("Plain", "Striped"), counts, strict=True):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                pixels = (rng.random((24, 24, 3)) * 255).astype(np.uint8)
                pixels[:: 4 if name == "Striped" else 24] = 255
                Image.fromarray(pixels).save(root / split / name / f"painter{i}_work{i}.png")
    return root


@pytest.fixture(scope="module")
def ddp_sweep(tmp_path_factory, odd_folder):
    """A checkpoint trained here in one process, then two DDP jobs (`-m trainer=ddp_cpu data.batch_size=2,3`)
    that resume from it: training is done, so they test that checkpoint on 2 processes."""
    base = tmp_path_factory.mktemp("ddp")
    settings = [
        f"data.root={odd_folder}",
        "data=folder",
        "backbone=test_resnet",
        "pretrained=false",
        "debug=limit",
        "image_size=32",
        "trainer.limit_val_batches=1.0",
        "trainer.limit_test_batches=1.0",
    ]
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="artmove.conf", version_base="1.3"):
        single = train(
            compose(config_name="train", overrides=[f"paths.output_dir={base / 'single'}", "trainer=cpu", "data.batch_size=2", *settings])
        )
    GlobalHydra.instance().clear()
    (base / "cwd").mkdir()
    command = [
        sys.executable,
        "-m",
        "artmove.train",
        "-m",
        *settings,
        "trainer=ddp_cpu",
        "data.batch_size=2,3",
        f"resume={base / 'single' / 'checkpoints' / 'last.ckpt'}",
        f"hydra.sweep.dir={base / 'sweep'}",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=base / "cwd")
    assert done.returncode == 0, done.stderr[-3000:]
    jobs = {}
    for job in sorted((base / "sweep").iterdir()):
        if job.is_dir():
            batch = next(o for o in OmegaConf.load(job / ".hydra" / "overrides.yaml") if o.startswith("data.batch_size="))
            jobs[int(batch.split("=")[1])] = job
    return base, single, jobs, done.stdout + done.stderr


def results(job: Path) -> dict:
    return OmegaConf.to_container(OmegaConf.load(job / "results.json"))


@pytest.mark.slow  # a sweep of DDP jobs, two processes each: about a minute
def test_ddp_cpu_test_metrics_equal_one_process_on_the_same_checkpoint(ddp_sweep):
    _, single, jobs, output = ddp_sweep
    assert output.count("Starting with 2 processes") == 2 and "distributed_backend=gloo" in output
    assert single["test/num_images"] == 5
    for batch_size, job in jobs.items():  # 3 images on rank 0, 2 on rank 1: in 2+1 and 2, or 3 and 2
        assert (job / "train_ddp_process_1.log").is_file()  # rank 1 ran this job, in its folder
        two_processes = results(job)
        assert two_processes["test/num_images"] == 5  # no padded duplicate
        for metric in METRICS:
            assert two_processes[metric] == pytest.approx(single[metric], abs=1e-6), (batch_size, metric)
        # The same checkpoint: resumed jobs test the checkpoint the first run chose as best, copied into their own folder.
        assert Path(two_processes["best_checkpoint"]).name == Path(single["best_checkpoint"]).name
        assert (job / two_processes["best_checkpoint"]).is_file()


@pytest.mark.slow
def test_ddp_inside_a_multirun_runs_each_job_once_in_its_own_folder(ddp_sweep):
    base, _, jobs, output = ddp_sweep
    assert sorted(jobs) == [2, 3]
    assert sorted(p.name for p in (base / "sweep").iterdir() if p.is_dir()) == ["0", "1"]
    assert output.count("Launching 2 jobs") == 1  # no second sweep started by the DDP processes
    assert len(list(base.rglob("multirun.yaml"))) == 1 and not (base / "cwd" / "outputs").exists()
    for name, job in jobs.items():
        assert results(job)["status"] == "ok" and (job / results(job)["best_checkpoint"]).is_file(), name  # written in its own folder


def test_sync_batchnorm_keeps_timm_norm_activations():
    """Lightning's default conversion (and its revert after fit) drops BatchNormAct2d's activation."""
    model, images = timm.create_model("test_efficientnet", pretrained=False).eval(), torch.randn(2, 3, 64, 64)
    expected, plugin = model(images), TimmSyncBatchNorm(enabled=True)
    synced = plugin.apply(copy.deepcopy(model)).eval()
    assert sum(isinstance(m, SyncBatchNormAct) for m in synced.modules()) == 13
    reverted = plugin.revert(synced).eval()
    assert sum(isinstance(m, BatchNormAct2d) for m in reverted.modules()) == 13
    assert torch.allclose(synced(images), expected) and torch.allclose(reverted(images), expected)
    assert TimmSyncBatchNorm(enabled=False).apply(model) is model


@pytest.mark.parametrize(
    ("strategy", "relaunches"),
    [
        ("ddp", True),
        ("ddp_find_unused_parameters_true", True),
        ("fsdp", True),
        ("ddp_spawn", False),
        ("ddp_notebook", False),
        ("auto", False),
        (None, False),
        ({"_target_": "pytorch_lightning.strategies.DDPStrategy"}, True),
        ({"_target_": "pytorch_lightning.strategies.DDPStrategy", "start_method": "spawn"}, False),
        ({"_target_": "pytorch_lightning.strategies.SingleDeviceStrategy", "device": "cpu"}, False),
    ],
)
def test_which_strategies_restart_the_command_line(strategy, relaunches):
    """Those need a process of their own inside a sweep (named or configured with _target_)."""
    assert relaunches_command(OmegaConf.create({"s": strategy}).s) is relaunches
