"""A crash, a signal or a full disk costs minutes, never the run; nothing unsafe is unpickled
(docs/reliability.md)."""

import csv
import errno
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from PIL import Image

from artmove.errors import ConfigError, UnreadableCheckpoint
from artmove.models import load_trained
from artmove.train import train
from artmove.training.interrupts import EXIT_ABORTED, EXIT_INTERRUPTED
from artmove.training.trainer import AtomicCheckpointIO
from artmove.utils.io import remove_partial_writes
from conftest import Done, compose_config, run_cli

# A tiny model on a few synthetic paintings: an epoch takes well under a second.
TINY = [
    "backbone=test_resnet",
    "pretrained=false",
    "image_size=32",
    "data.batch_size=2",
    "data.num_workers=0",
    "data.source.train_per_class=2",
    "data.source.val_per_class=1",
    "data.source.test_per_class=1",
    "data.source.canvas_size=32",
]


def command(module: str, *args: str) -> Done:
    """An error path through the real command line, in this process (run_cli)."""
    return run_cli(module, *args)


def start_training(run_dir: Path, *args: str, stdout=subprocess.PIPE) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "artmove.train", *TINY, *args, f"hydra.run.dir={run_dir}"], stdout=stdout, stderr=subprocess.PIPE, text=True
    )


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while not path.is_file():
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.1)


def saved_at(path: Path) -> tuple[int, int]:
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    return checkpoint["epoch"], checkpoint["global_step"]


# --- last.ckpt ----------------------------------------------------------------------------------
def test_last_checkpoint_is_written_every_epoch_even_when_the_best_does_not_change(compose_train, tmp_path):
    # A learning rate this small leaves val/top1 at its epoch-0 value: the best checkpoint never changes.
    results = train(compose_train(*TINY, "trainer.max_epochs=3", "optimizer.lr=1e-12", "test=false"))
    assert Path(results["best_checkpoint"]).name.startswith("best-epoch000")
    assert saved_at(tmp_path / "checkpoints" / "last.ckpt") == (2, 30)  # after epoch 2: 3 epochs x 10 steps
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [Path(results["best_checkpoint"]).name, "last.ckpt"]


class RecordingCheckpointIO(AtomicCheckpointIO):
    saved: ClassVar[list[tuple[str, int]]] = []  # every instance's saves, read by the test

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        self.saved.append((Path(path).name, checkpoint["global_step"]))
        super().save_checkpoint(checkpoint, path, storage_options)


def test_last_checkpoint_every_n_steps_on_request(compose_train):
    cfg = compose_train(*TINY, "trainer.max_epochs=1", "test=false", "callbacks.last_steps.every_n_train_steps=4")
    cfg.trainer.plugins = [{"_target_": f"{__name__}.RecordingCheckpointIO"}]
    RecordingCheckpointIO.saved.clear()
    train(cfg)
    assert [step for name, step in RecordingCheckpointIO.saved if name == "last.ckpt"] == [4, 8, 10]  # and the epoch's end


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"epoch": 1, "w": torch.ones(1000)}, path)

    def disk_full(obj, file):
        file.write(b"x" * 1000)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        io.save_checkpoint({"epoch": 2, "w": torch.zeros(1000)}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no partial file left
    assert path.stat().st_mode & 0o777 == 0o644


@pytest.fixture
def small_disk(tmp_path):
    """A real file system of 9 MB (tmpfs): room for two checkpoints of the TINY model, not three."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=9m", "tmpfs", str(disk)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    yield disk
    subprocess.run(["umount", str(disk)], check=True)


@pytest.mark.slow
def test_a_full_disk_keeps_the_previous_checkpoint_and_the_rerun_resumes_from_it(small_disk):
    run_dir = small_disk / "run"
    full = command("artmove.train", *TINY, "trainer.max_epochs=3", f"hydra.run.dir={run_dir}")
    assert full.returncode == 2, full.stderr[-3000:]
    assert full.stderr.strip().splitlines()[-1].startswith(f"artmove: error: No space left on device for {run_dir / 'checkpoints'}")
    assert "Traceback" not in full.stderr
    assert saved_at(run_dir / "checkpoints" / "last.ckpt") == (0, 10)  # epoch 0's, whole
    assert not list(run_dir.rglob("*.tmp"))  # the failed write cleaned up after itself
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "failed" and "No space left on device" in results["error"]

    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)  # the user frees space
    done = command("artmove.train", *TINY, "trainer.max_epochs=3", f"hydra.run.dir={run_dir}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resuming from {run_dir / 'checkpoints' / 'last.ckpt'}" in (run_dir / "train.log").read_text()
    assert json.loads((run_dir / "results.json").read_text())["status"] == "ok"
    assert [row[0] for row in epoch_rows(run_dir)] == ["0", "1", "2"]


def test_partial_writes_of_a_killed_writer_are_removed(tmp_path):
    (tmp_path / ".last.ckpt.ab12cd.tmp").write_bytes(b"half")
    (tmp_path / "last.ckpt").write_bytes(b"kept")
    assert [p.name for p in remove_partial_writes(tmp_path)] == [".last.ckpt.ab12cd.tmp"]
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


@pytest.mark.parametrize("trainer", ["default", "cpu", "gpu", "ddp", "ddp_cpu"])
def test_every_trainer_config_writes_checkpoints_atomically(trainer):
    plugins = compose_config("train", f"trainer={trainer}").trainer.plugins
    assert "artmove.training.trainer.AtomicCheckpointIO" in [p["_target_"] for p in plugins]


# --- signals and resume -------------------------------------------------------------------------
@pytest.mark.slow  # a real process stopped by a real signal: about 20 s
def test_sigterm_saves_a_checkpoint_exits_143_and_the_rerun_resumes(tmp_path):
    run = start_training(tmp_path, "trainer.max_epochs=1000")
    wait_for(tmp_path / "checkpoints" / "last.ckpt", run)  # epoch 0 is done: stop it during epoch 1+
    run.send_signal(signal.SIGTERM)
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == EXIT_INTERRUPTED == 143, stderr[-3000:]
    epoch, step = saved_at(tmp_path / "checkpoints" / "last.ckpt")
    assert step >= 10 and f"stopped by a signal at epoch {epoch}, step {step}" in stderr  # after epoch 0, at a step boundary
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["status"] == "interrupted" and (results["epoch"], results["step"]) == (epoch, step)

    done = command("artmove.train", *TINY, f"trainer.max_epochs={epoch + 2}", f"hydra.run.dir={tmp_path}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resuming from {tmp_path / 'checkpoints' / 'last.ckpt'}" in (tmp_path / "train.log").read_text()
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["status"] == "ok" and results["epochs"] == epoch + 2
    with (tmp_path / "csv" / "metrics.csv").open() as file:
        rows = [row for row in csv.DictReader(file) if row.get("val/top1")]
    assert [row["epoch"] for row in rows] == [str(e) for e in range(epoch + 2)]  # each epoch once


@pytest.mark.slow
def test_slurm_usr1_saves_a_checkpoint_exits_143_and_requeues_the_job(tmp_path):
    bin_dir, calls = tmp_path / "bin", tmp_path / "scontrol-calls"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (bin_dir / "scontrol").chmod(0o755)
    slurm = {
        "SLURM_JOB_ID": "4242",
        "SLURM_NTASKS": "1",
        "SLURM_JOB_NAME": "paintings",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "0",
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
    }
    run_dir = tmp_path / "run"
    run = subprocess.Popen(
        [sys.executable, "-m", "artmove.train", *TINY, "trainer.max_epochs=1000", f"hydra.run.dir={run_dir}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **slurm},
    )
    wait_for(run_dir / "checkpoints" / "last.ckpt", run)
    run.send_signal(signal.SIGUSR1)
    stderr = run.communicate(timeout=120)[1]
    assert run.returncode == EXIT_INTERRUPTED, stderr[-3000:]
    _, step = saved_at(run_dir / "checkpoints" / "last.ckpt")
    assert step >= 10 and json.loads((run_dir / "results.json").read_text())["status"] == "interrupted"
    assert calls.read_text() == "requeue 4242\n"  # once, after the checkpoint
    assert not list(run_dir.glob("hpc_ckpt_*.ckpt"))  # Lightning's own mid-step handler never ran
    assert "requeued SLURM job 4242" in (run_dir / "train.log").read_text()


def epoch_rows(run_dir: Path) -> list[tuple[str, str, str]]:
    """(epoch, training loss, val top-1) of each epoch in metrics.csv, in order."""
    with (run_dir / "csv" / "metrics.csv").open() as file:
        rows = list(csv.DictReader(file))
    losses = {row["epoch"]: row["train/loss_epoch"] for row in rows if row.get("train/loss_epoch")}
    return [(row["epoch"], losses.get(row["epoch"]), row["val/top1"]) for row in rows if row.get("val/top1")]


@pytest.mark.slow
def test_sigkill_at_a_random_point_resumes_to_the_same_weights_as_an_uninterrupted_run(tmp_path):
    deterministic = ["trainer.max_epochs=5", "trainer.deterministic=true", "data.num_workers=1", "image_size=48"]
    straight = command("artmove.train", *TINY, *deterministic, f"hydra.run.dir={tmp_path / 'straight'}")
    assert straight.returncode == 0, straight.stderr[-3000:]

    killed = tmp_path / "killed"
    run = start_training(killed, *deterministic, stdout=subprocess.DEVNULL)
    wait_for(killed / "checkpoints" / "last.ckpt", run)  # epoch 0 done
    seed = int.from_bytes(os.urandom(2), "little")
    time.sleep(0.05 + (seed % 1000) / 1000)  # somewhere in epoch 1 or 2 (an epoch lasts about a second)
    run.kill()
    run.communicate(timeout=60)
    epoch, step = saved_at(killed / "checkpoints" / "last.ckpt")
    assert epoch < 4, f"killed too late to test a resume (after epoch {epoch}; sleep seed {seed})"

    resumed = command("artmove.train", *TINY, *deterministic, f"hydra.run.dir={killed}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in (killed / "train.log").read_text()
    rows = epoch_rows(killed)
    assert [row[0] for row in rows] == ["0", "1", "2", "3", "4"], rows  # each epoch once, ending at the right one
    assert rows == epoch_rows(tmp_path / "straight"), f"killed after epoch {epoch}, step {step} (sleep seed {seed})"
    results = [json.loads((d / "results.json").read_text()) for d in (tmp_path / "straight", killed)]
    assert [r["test/top1"] for r in results[:1]] == [r["test/top1"] for r in results[1:]]
    weights = [torch.load(d / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"] for d in (tmp_path / "straight", killed)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


@pytest.mark.slow
def test_ctrl_c_once_saves_and_exits_143_twice_quits_at_once(tmp_path):
    for presses, code in ((1, EXIT_INTERRUPTED), (2, EXIT_ABORTED)):
        run_dir = tmp_path / str(presses)
        # Larger images: a step lasts long enough for the second Ctrl-C to come while the first is pending.
        run = start_training(run_dir, "trainer.max_epochs=1000", "image_size=160", stdout=subprocess.DEVNULL)
        wait_for(run_dir / "checkpoints" / "last.ckpt", run)
        run.send_signal(signal.SIGINT)
        if presses == 2:
            while "Ctrl-C: saving a checkpoint after this step" not in run.stderr.readline():
                pass
            run.send_signal(signal.SIGINT)
        stderr = run.communicate(timeout=120)[1]
        assert run.returncode == code, stderr[-3000:]
        results = run_dir / "results.json"
        assert (json.loads(results.read_text())["status"] if results.exists() else None) == ("interrupted" if presses == 1 else None)
        assert saved_at(run_dir / "checkpoints" / "last.ckpt")[1] >= 10  # loadable either way


def test_a_damaged_last_checkpoint_is_one_line_and_keeps_the_finished_results(compose_train, tmp_path):
    train(compose_train(*TINY, "trainer.max_epochs=1", "test=false"))
    finished = (tmp_path / "results.json").read_text()
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:5000])  # a write cut short

    done = command("artmove.train", *TINY, "trainer.max_epochs=2", f"hydra.run.dir={tmp_path}")
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"artmove: error: cannot resume: {last} is not a readable checkpoint: the file (5000 bytes) is truncated or "
        "damaged. Start over with resume=false, or continue from another checkpoint with resume=PATH "
        "(e.g. the best-….ckpt beside it)."
    )
    assert (tmp_path / "results.json").read_text() == finished  # still the finished run's
    assert json.loads((tmp_path / "failed.json").read_text())["status"] == "failed"


# --- nothing unsafe is unpickled ------------------------------------------------------------------
class Payload:
    """Unpickling this creates ``marker``: what a hostile checkpoint would do instead."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


@pytest.fixture
def hostile_checkpoint(tmp_path) -> tuple[Path, Path]:
    marker = tmp_path / "PAYLOAD-RAN"
    path = tmp_path / "hostile.ckpt"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}, "loops": {}, "hyper_parameters": Payload(marker)}, path)
    return path, marker


@pytest.mark.parametrize(
    "module,args",
    [
        ("artmove.train", ["weights={ckpt}", "pretrained=true"]),
        ("artmove.train", ["resume={ckpt}"]),
        ("artmove.evaluate", ["ckpt_path={ckpt}"]),
        ("artmove.predict", ["ckpt_path={ckpt}", "input={image}"]),
    ],
)
def test_a_hostile_checkpoint_is_refused_and_never_runs(hostile_checkpoint, tmp_path, module, args):
    ckpt, marker = hostile_checkpoint
    image = tmp_path / "painting.png"
    Image.new("RGB", (8, 8)).save(image)
    settings = TINY if module == "artmove.train" else []
    done = command(module, *settings, *[a.format(ckpt=ckpt, image=image) for a in args], f"hydra.run.dir={tmp_path / 'run'}")
    assert done.returncode == 2, done.stderr[-3000:]
    assert f"{ckpt} is not a readable checkpoint: it holds Python objects besides tensors" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "weights_only=False" not in done.stderr
    assert not marker.exists()


def test_a_file_that_is_not_a_checkpoint_is_one_line_naming_it(tmp_path):
    ckpt = tmp_path / "photo.ckpt"
    ckpt.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(600))  # a JPEG renamed
    done = command("artmove.evaluate", f"ckpt_path={ckpt}", f"hydra.run.dir={tmp_path / 'run'}")
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"artmove: error: {ckpt} is not a readable checkpoint: the file (611 bytes) is not a PyTorch checkpoint. "
        "Give ckpt_path= a run folder or its checkpoints/best-….ckpt or last.ckpt."
    )


def test_an_empty_or_truncated_checkpoint_says_so(tmp_path):
    empty = tmp_path / "empty.ckpt"
    empty.touch()
    with pytest.raises(UnreadableCheckpoint, match=f"{empty} is not a readable checkpoint: the file is empty"):
        load_trained(empty)
    truncated = tmp_path / "cut.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1000)}}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:3000])
    with pytest.raises(
        UnreadableCheckpoint, match=r"cut.ckpt is not a readable checkpoint: the file \(3000 bytes\) is truncated or damaged"
    ):
        load_trained(truncated)


def test_a_readable_checkpoint_that_artmove_did_not_write_says_so(tmp_path):
    weights_only = tmp_path / "weights.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(3)}}, weights_only)  # no hyperparameters to rebuild a network from
    with pytest.raises(
        ConfigError, match=r"weights.ckpt is not a checkpoint of an artmove training run \(no hyper_parameters and state_dict\)"
    ):
        load_trained(weights_only)
    bare = tmp_path / "tensor.ckpt"
    torch.save(torch.zeros(3), bare)
    with pytest.raises(ConfigError, match=r"tensor.ckpt is not a checkpoint of an artmove training run"):
        load_trained(bare)


# --- one run per folder ---------------------------------------------------------------------------
@pytest.mark.slow
def test_a_second_run_into_a_busy_folder_refuses_and_a_dead_owner_is_taken_over(tmp_path):
    first = start_training(tmp_path, "trainer.max_epochs=1000")
    wait_for(tmp_path / ".hydra" / "overrides.yaml", first)
    overrides = (tmp_path / ".hydra" / "overrides.yaml").read_text()
    owner = json.loads((tmp_path / ".lock.owner").read_text())
    assert owner["pid"] == first.pid

    second = command("artmove.train", *TINY, "seed=7", f"hydra.run.dir={tmp_path}")
    assert second.returncode == 2
    assert second.stderr.strip() == (
        f"artmove: error: folder {tmp_path} is in use by pid {first.pid} on {owner['host']} since {owner['since']}: "
        "choose another hydra.run.dir (or hydra.sweep.dir), or wait for that run to end."
    )
    assert (tmp_path / ".hydra" / "overrides.yaml").read_text() == overrides  # the first run's files untouched

    first.kill()  # SIGKILL: no clean-up; the kernel releases the lock with the process
    first.communicate(timeout=60)
    third = command("artmove.train", *TINY, "debug=fast_dev_run", "resume=false", f"hydra.run.dir={tmp_path}")
    assert third.returncode == 0, third.stderr[-3000:]


def test_a_folder_locked_by_another_process_is_refused_until_that_process_ends(tmp_path):
    from artmove.runs.lock import RunFolderInUse, lock_folder

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from artmove.runs.lock import lock_folder; "
            f"lock = lock_folder({str(tmp_path)!r}); print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunFolderInUse, match=f"folder {tmp_path} is in use by pid {holder.pid} on {socket.gethostname()} since"):
            lock_folder(tmp_path)
    finally:
        holder.kill()
        holder.wait(30)
    lock = lock_folder(tmp_path)  # its owner is gone: free
    assert lock_folder(tmp_path) is lock  # this process's own earlier run (a tool run twice in a notebook): taken again
    lock.release()
    lock.release()


# --- bad settings before compute -----------------------------------------------------------------
@pytest.mark.parametrize(
    "setting,message",
    [
        ("data.batch_size=0", "data.batch_size=0: give a whole number of images from 1 to 4096"),  # checked on the composed config
        ("optimizer.lr=-0.1", "optimizer.lr=-0.1: give a learning rate > 0"),  # checked on the composed config
    ],
)
def test_a_bad_number_is_one_line_before_data_is_read(tmp_path, setting, message):
    # The data folder does not exist: the setting's message coming first shows nothing was read.
    done = command(
        "artmove.train",
        "data=rasta",
        f"data.root={tmp_path / 'absent'}",
        "backbone=test_resnet",
        setting,
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert done.returncode == 2
    assert done.stderr.startswith(f"artmove: error: {message}") and len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "setting,message",
    [
        ("optimizer.weight_decay=-1", "optimizer.weight_decay=-1: give a number >= 0"),
        ("trainer.max_epochs=-3", "trainer.max_epochs=-3: give a whole number of epochs >= 1"),
        ("trainer.max_epochs=0", "trainer.max_epochs=0: give a whole number of epochs >= 1"),
        ("data.max_bad_fraction=1.5", "data.max_bad_fraction=1.5: give a fraction in [0, 1]"),
        ("data.batch_size=2.5", "data.batch_size=2.5: give a whole number of images from 1 to 4096"),
        ("data.batch_size=64", "data.batch_size=64 at 2048 px is 3.0 GiB of float32 input alone, over the 1.5 GiB"),
    ],
)
def test_other_bad_numbers_fail_the_same_way(compose_train, tmp_path, setting, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        train(compose_train("data=rasta", f"data.root={tmp_path / 'absent'}", "backbone=test_resnet", "image_size=2048", setting))


# --- CSV manifests: a label with no training row ------------------------------------------------
def manifest_with_a_typo(folder: Path) -> Path:
    rows = [
        ("a.png", "Impressionism", "train"),
        ("b.png", "Cubism", "train"),
        ("c.png", "Cubism", "val"),
        ("d.png", "Impresionism", "test"),
        ("e.png", "Impressionism", "test"),
    ]
    for name, _, _ in rows:
        Image.new("RGB", (40, 30), "white").save(folder / name)
    (folder / "list.csv").write_text("path,label,split\n" + "".join(f"{','.join(row)}\n" for row in rows))
    return folder / "list.csv"


def test_a_label_only_in_test_rows_is_an_error_naming_its_line(tmp_path):
    manifest = manifest_with_a_typo(tmp_path)
    done = command("artmove.train", "data=csv", f"data.root={manifest}", *TINY[:3], f"hydra.run.dir={tmp_path / 'run'}")
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"artmove: error: {manifest}: labels with no training row: 'Impresionism' on line 5. Correct them "
        "(a typo?), or drop those rows with data.source.unknown_labels=drop."
    )


def test_unknown_labels_drop_keeps_the_other_rows_with_a_warning(tmp_path, caplog):
    from artmove.data.sources import CsvManifest

    with caplog.at_level("WARNING"):
        source = CsvManifest(manifest_with_a_typo(tmp_path), unknown_labels="drop")
    assert source.classes == ["Cubism", "Impressionism"]
    assert {split: len(samples) for split, samples in source.split_samples.items()} == {"train": 2, "val": 1, "test": 1}
    assert "dropped the rows of labels with no training row: 'Impresionism' on line 5" in caplog.text


# --- file names that are not UTF-8 ----------------------------------------------------------------
def not_utf8(folder: Path, color: str = "red") -> Path:
    """A painting named with the Latin-1 byte 0xE9 (``café.png`` as an old Windows tool wrote it)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = Path(os.fsdecode(os.fsencode(folder) + b"/caf\xe9.png"))
    Image.new("RGB", (40, 30), color).save(path)
    return path


def test_non_utf8_names_pass_through_predict_csv_and_json(compose_train, tmp_path):
    train(compose_train(*TINY, "debug=limit", "test=false"))
    painting = not_utf8(tmp_path / "new")
    for save in ("csv", "json"):
        done = command(
            "artmove.predict",
            f"ckpt_path={tmp_path / 'checkpoints' / 'last.ckpt'}",
            f"input={painting.parent}",
            f"save={save}",
            "num_workers=0",
            f"hydra.run.dir={tmp_path / save}",
        )
        assert done.returncode == 0, done.stderr[-3000:]
    rows = list(csv.DictReader((tmp_path / "csv" / "predictions.csv").open(encoding="utf-8")))  # strict UTF-8
    assert {row["path"] for row in rows} == {f"{painting.parent}/caf\\xe9.png"}  # the byte, shown
    saved = json.loads((tmp_path / "json" / "predictions.json").read_text(encoding="utf-8"))
    assert [p["path"] for p in saved["predictions"]] == [str(painting)]  # the same name back, byte for byte


@pytest.mark.slow
def test_non_utf8_names_are_prepared_and_trained_from_the_cache(tmp_path):
    for style, color in (("cubism", "red"), ("baroque", "blue")):
        (tmp_path / "set" / style).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (40, 30), color).save(tmp_path / "set" / style / f"{i}.png")
        not_utf8(tmp_path / "set" / style, color)
    data = ["data=folder", f"data.root={tmp_path / 'set'}", f"data.prepared_dir={tmp_path / 'cache'}", "data.num_workers=0"]
    done = command("artmove.data.prepare", *data, "size=32", "workers=1", f"hydra.run.dir={tmp_path / 'prep'}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 8
    done = command("artmove.train", *data, *TINY[:3], "debug=fast_dev_run", f"hydra.run.dir={tmp_path / 'run'}")
    assert done.returncode == 0, done.stderr[-3000:]
