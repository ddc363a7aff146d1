"""Sweeps: failed jobs recorded while the others run, the report and exit code, Optuna, submitit,
GPU slots for parallel local sweeps, resuming a requeued job."""

import csv
import json
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from artmove.errors import ConfigError
from artmove.runs.folder import RunFolder
from artmove.runs.results import record_failure
from artmove.runs.resume import checkpoint_to_resume
from artmove.sweeps.devices import DeviceSlots, claim_slot, gpu_slots
from artmove.sweeps.summary import failed_jobs
from artmove.train import train
from artmove.training.callbacks import FailOnNonFiniteLoss, NonFiniteLossError
from conftest import LEAN, run_cli

# Tiny real runs: 10 synthetic styles x 1 image per split, 32 px, a 30-layer test ResNet (TINY_RUN: with
# what a run does after fit, which tests/test_trust.py checks; TINY: without).
TINY_RUN = [
    "backbone=test_resnet",
    "pretrained=false",
    "debug=limit",
    "image_size=32",
    "data.batch_size=4",
    "data.source.train_per_class=1",
    "data.source.val_per_class=1",
    "data.source.test_per_class=1",
    "data.source.canvas_size=32",
]
TINY = [*TINY_RUN, *LEAN]
FIXED = {override.split("=")[0] for override in TINY}


def sweep_cli(cwd: Path, *args: str, monkeypatch=None, timeout: int = 600):
    """``python -m artmove.train -m …`` from ``cwd``: in this process (with ``monkeypatch`` to change into
    ``cwd``), or in a new one without."""
    flags = [a for a in args if a.startswith("-")]  # Hydra's flags (-m) go before the overrides
    overrides = [a for a in args if not a.startswith("-")]
    arguments = [*flags, *TINY, f"hydra.sweep.dir={cwd / 'sweep'}", *overrides]
    if monkeypatch is not None:
        monkeypatch.chdir(cwd)
        return run_cli("artmove.train", *arguments)
    return subprocess.run([sys.executable, "-m", "artmove.train", *arguments], capture_output=True, text=True, timeout=timeout, cwd=cwd)


def jobs(sweep_dir: Path) -> dict[str, dict]:
    """Each job's overrides (as one string) -> its results.json."""
    found = {}
    for job in sorted(p for p in sweep_dir.iterdir() if (p / ".hydra").is_dir()):
        overrides = " ".join(o for o in OmegaConf.load(job / ".hydra" / "overrides.yaml") if o.split("=")[0] not in FIXED)
        found[overrides] = json.loads((job / "results.json").read_text()) | {"dir": job}
    return found


# --- sweeps end to end ---------------------------------------------------------------------------
def test_failed_jobs_are_recorded_the_others_run_and_the_sweep_exits_1(tmp_path, monkeypatch):
    # Jobs 0-1: a bad combination (unfreeze=7); job 2: fine, after the failures; job 3: fails mid-training
    # (a learning rate past float32's range overflows in the optimizer step).
    done = sweep_cli(tmp_path, "-m", "unfreeze=7,1", "optimizer.lr=0.001,1e38", "scheduler=none", monkeypatch=monkeypatch)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "3 job(s) of the sweep failed" in done.stdout
    results = jobs(tmp_path / "sweep")
    assert len(results) == 4
    ok = results["unfreeze=1 optimizer.lr=0.001 scheduler=none"]
    assert ok["status"] == "ok" and 0 <= ok["test/top1"] <= 1
    logged = [float(row["val/top1"]) for row in csv.DictReader((ok["dir"] / "csv" / "metrics.csv").open()) if row.get("val/top1")]
    assert ok["optimized_metric"] == "val/top1" and ok["optimized_value"] == pytest.approx(max(logged))
    crashed = results["unfreeze=1 optimizer.lr=1e+38 scheduler=none"]
    assert crashed["status"] == "failed" and crashed["error"].startswith("RuntimeError: value cannot be converted")
    assert "RuntimeError" in (crashed["dir"] / "traceback.txt").read_text()
    for lr in ("0.001", "1e+38"):
        bad = results[f"unfreeze=7 optimizer.lr={lr} scheduler=none"]
        assert bad["status"] == "failed" and "unfreeze=7 must be a number in [0, 1]" in bad["error"]
        assert bad["unfreeze"] == 7 and bad["backbone"] == "test_resnet"  # which combination failed
    report = (tmp_path / "sweep" / "report.md").read_text()
    assert "4 run(s), 3 failed" in report and "RuntimeError: value cannot be converted" in report
    assert not (tmp_path / "outputs").exists()  # everything went to the sweep's folder


@pytest.mark.slow  # three trials
def test_optuna_study_maximises_val_top1_offline(tmp_path, monkeypatch):
    done = sweep_cli(
        tmp_path, "hparams_search=optuna", "hydra.sweeper.n_trials=3", "test=false", monkeypatch=monkeypatch
    )  # no -m: MULTIRUN
    assert done.returncode == 0, done.stderr[-3000:]
    results = jobs(tmp_path / "sweep")
    assert len(results) == 3
    searched = ("optimizer.lr=", "optimizer.weight_decay=", "unfreeze=", "model.label_smoothing=")
    assert all(all(key in overrides for key in searched) for overrides in results)
    assert len({overrides.split()[0] for overrides in results}) == 3  # three different learning rates
    best = OmegaConf.load(tmp_path / "sweep" / "optimization_results.yaml")
    assert set(best.best_params) == {key.rstrip("=") for key in searched}
    values = [r["optimized_value"] for r in results.values()]
    assert all(r["status"] == "ok" and r["optimized_metric"] == "val/top1" for r in results.values())
    assert best.best_value == pytest.approx(max(values))
    assert OmegaConf.load(tmp_path / "sweep" / "0" / ".hydra" / "hydra.yaml").hydra.sweeper.sampler.seed == 1234


@pytest.mark.slow  # submitit starts a process per job: about 25 s
def test_submitit_local_sweep_is_submitted_and_completes(tmp_path):
    done = sweep_cli(tmp_path, "-m", "hydra/launcher=submitit_local", "unfreeze=0,1")
    assert done.returncode == 0, done.stderr[-3000:]
    results = jobs(tmp_path / "sweep")
    assert sorted(results) == ["unfreeze=0", "unfreeze=1"]
    assert all(r["status"] == "ok" and "test/top1" in r for r in results.values())
    # Both jobs went through submitit: one folder per submitted job, each with its pickled result.
    assert len(list((tmp_path / "sweep" / ".submitit").glob("*/*_result.pkl"))) == 2
    assert (tmp_path / "sweep" / "report.md").is_file()


@pytest.mark.slow
def test_parallel_local_sweep_gives_each_worker_its_own_slot(tmp_path):
    """hydra/launcher=local_gpus end to end; two "GPUs" named by CUDA_VISIBLE_DEVICES, training on CPU."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "0,1"}
    command = [
        sys.executable,
        "-m",
        "artmove.train",
        "-m",
        "hydra/launcher=local_gpus",
        "trainer=cpu",
        *TINY,
        "unfreeze=0,0.2,0.5,1",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in done.stdout  # one worker per slot
    slots = {}
    for log in (tmp_path / "sweep").glob("*/train.log"):
        line = next(x for x in log.read_text().splitlines() if "runs on GPU(s)" in x)
        slot, worker = line.split("runs on GPU(s) ")[1].split(" (worker process ")
        slots.setdefault(worker, set()).add(slot)
    assert sum(1 for _ in (tmp_path / "sweep").glob("*/train.log")) == 4
    assert all(len(s) == 1 for s in slots.values()) and len(set.union(*slots.values())) == len(slots)


# --- pieces --------------------------------------------------------------------------------------
def test_record_failure_writes_status_error_and_traceback(tmp_path, compose_train):
    try:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    except torch.OutOfMemoryError as error:
        path = record_failure(RunFolder(tmp_path / "job"), error, compose_train("backbone=convnext_tiny", "unfreeze=0.5"))
    saved = json.loads(path.read_text())
    assert saved["status"] == "failed" and saved["error"].startswith("OutOfMemoryError: CUDA out of memory")
    assert saved["backbone"] == "convnext_tiny" and saved["unfreeze"] == 0.5
    assert "raise torch.OutOfMemoryError" in (tmp_path / "job" / saved["traceback"]).read_text()


def test_failed_jobs_counts_missing_results_as_failed(tmp_path):
    for job, status in (("0", "ok"), ("1", "failed"), ("2", None)):
        (tmp_path / job / ".hydra").mkdir(parents=True)
        (tmp_path / job / ".hydra" / "config.yaml").write_text("task_name: train\n")
        if status:
            (tmp_path / job / "results.json").write_text(json.dumps({"status": status}))
    assert failed_jobs(tmp_path) == ["1", "2"]


def test_non_finite_loss_stops_the_job_at_the_next_check_without_a_sync_every_step():
    trainer = SimpleNamespace(world_size=1, current_epoch=0, global_step=7, log_every_n_steps=3, is_last_batch=False)
    guard = FailOnNonFiniteLoss()
    for batch_idx, loss in enumerate([2.3, 2.2, 2.1, float("inf"), float("nan")]):  # checked after steps 3 and 6
        guard.on_train_batch_end(trainer, None, {"loss": torch.tensor(loss)}, None, batch_idx)
    with pytest.raises(NonFiniteLossError, match=r"loss is inf by epoch 0, step 7: lower optimizer.lr"):
        guard.on_train_batch_end(trainer, None, torch.tensor(1.0), None, 5)  # the first bad loss is named


def test_a_bad_loss_after_the_last_check_stops_the_job_when_training_ends():
    trainer = SimpleNamespace(world_size=1, current_epoch=0, global_step=3, log_every_n_steps=50, is_last_batch=False)
    guard = FailOnNonFiniteLoss()
    for batch_idx, loss in enumerate([2.3, float("nan"), 2.1]):  # max_steps=3 ends the epoch early
        guard.on_train_batch_end(trainer, None, torch.tensor(loss), None, batch_idx)
    with pytest.raises(NonFiniteLossError, match="loss is nan by epoch 0, step 3"):
        guard.on_train_end(trainer, None)
    guard.on_train_end(trainer, None)  # nothing pending: nothing to read


def test_resume_continues_from_last_checkpoint_when_there_is_one(tmp_path):
    assert checkpoint_to_resume(True, tmp_path) is None  # first attempt: nothing to resume
    torch.save({"loops": {}, "state_dict": {}}, tmp_path / "last.ckpt")
    assert checkpoint_to_resume(True, tmp_path) == tmp_path / "last.ckpt"  # requeued: continue
    assert checkpoint_to_resume(False, tmp_path) is None
    assert checkpoint_to_resume(str(tmp_path / "last.ckpt"), None) == tmp_path / "last.ckpt"
    with pytest.raises(ConfigError, match="no such checkpoint file"):
        checkpoint_to_resume(str(tmp_path / "absent.ckpt"), None)


def test_a_requeued_run_continues_where_it_stopped(compose_train, tmp_path, caplog):
    """A requeued SLURM job re-runs in the same folder: it resumes from checkpoints/last.ckpt."""
    first = train(compose_train(*TINY))
    assert first["epochs"] == 1 and (tmp_path / "checkpoints" / "last.ckpt").is_file()
    with caplog.at_level("INFO"):
        again = train(compose_train(*TINY, "trainer.max_epochs=2"))  # a 2-epoch job requeued after epoch 1
    assert f"resuming from {tmp_path / 'checkpoints' / 'last.ckpt'}" in caplog.text
    assert "Restored all states from the checkpoint" in caplog.text  # Lightning continued from epoch 1
    assert again["epochs"] == 2
    with (tmp_path / "csv" / "metrics.csv").open() as file:  # the first attempt's epoch is still logged
        epochs = {row["epoch"] for row in csv.DictReader(file) if row.get("val/top1")}
    assert epochs == {"0", "1"}


def test_gpu_slots_are_disjoint_groups():
    assert gpu_slots(["0", "1", "2", "3"], 1) == ["0", "1", "2", "3"]
    assert gpu_slots(["0", "1", "2", "3", "4"], 2) == ["0,1", "2,3"]  # GPU 4 left over
    assert gpu_slots(["0"], 2) == []
    with pytest.raises(ValueError):
        gpu_slots(["0"], 0)


def test_gpu_slots_resolver_sizes_the_parallel_launcher(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    assert OmegaConf.create({"n": "${gpu_slots:2}"}).n == 2
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert OmegaConf.create({"n": "${gpu_slots:1}"}).n == 1  # no GPU: one worker


def _job_in_worker(callbacks: DeviceSlots, config, seen, release) -> None:
    """A joblib worker process: runs two jobs, reports the GPUs each saw, then waits."""
    for _ in range(2):
        callbacks.on_job_start(config)
        seen.put((os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES")))
    release.wait(30)


def test_parallel_workers_get_their_own_gpus(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5,6,7")
    config = OmegaConf.create(
        {
            "hydra": {
                "launcher": {"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"},
                "sweep": {"dir": str(tmp_path)},
                "job": {"num": 0},
            }
        }
    )
    slots = DeviceSlots(devices_per_job=2)
    slots.on_multirun_start(config)
    assert slots.slots == ["3,5", "6,7"]
    fork = multiprocessing.get_context("fork")
    seen, release = fork.Queue(), fork.Event()
    workers = [fork.Process(target=_job_in_worker, args=(slots, config, seen, release)) for _ in range(2)]
    for worker in workers:
        worker.start()
    got = [seen.get(timeout=30) for _ in range(4)]
    release.set()
    for worker in workers:
        worker.join(30)
    by_worker = {}
    for pid, gpus in got:
        by_worker.setdefault(pid, set()).add(gpus)
    assert all(len(gpus) == 1 for gpus in by_worker.values())  # a worker keeps its slot job after job
    assert sorted(gpus.pop() for gpus in by_worker.values()) == ["3,5", "6,7"]  # and shares it with no one


def test_a_third_worker_waits_for_a_free_slot(tmp_path):
    fork = multiprocessing.get_context("fork")
    claimed, release = fork.Event(), fork.Event()

    def hold() -> None:
        claim_slot(tmp_path, ["0"], timeout_s=5, poll_s=0.05)
        claimed.set()
        release.wait(30)

    holder = fork.Process(target=hold)
    holder.start()
    assert claimed.wait(30)
    result = fork.Queue()
    waiter = fork.Process(target=lambda: result.put(_try_claim(tmp_path, 0.5)))
    waiter.start()
    assert result.get(timeout=30) == "TimeoutError"  # slot 0 is held
    release.set()
    holder.join(30)
    waiter.join(30)
    assert _claim_in_child(tmp_path) == "0"  # freed when its holder exited


def _try_claim(lock_dir: Path, timeout_s: float) -> str:
    try:
        return claim_slot(lock_dir, ["0"], timeout_s=timeout_s, poll_s=0.05)
    except TimeoutError:
        return "TimeoutError"


def _claim_in_child(lock_dir: Path) -> str:
    fork = multiprocessing.get_context("fork")
    result = fork.Queue()
    child = fork.Process(target=lambda: result.put(_try_claim(lock_dir, 5)))
    child.start()
    child.join(30)
    return result.get(timeout=5)


def test_basic_launcher_leaves_devices_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    config = OmegaConf.create(
        {
            "hydra": {
                "launcher": {"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"},
                "sweep": {"dir": str(tmp_path)},
                "job": {"num": 0},
            }
        }
    )
    slots = DeviceSlots()
    slots.on_multirun_start(config)
    slots.on_job_start(config)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1" and not any(tmp_path.iterdir())
