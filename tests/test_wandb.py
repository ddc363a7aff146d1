"""W&B with the real wandb package, offline: what a run's files hold."""

import json
import math
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict
from PIL import Image
from wandb.proto import wandb_internal_pb2

from artmove.train import train
from artmove.training.logger import ArtmoveWandbLogger, choose_mode, sweep_group_and_name
from conftest import LEAN, compose_config

TINY = [
    "backbone=resnet18",
    "pretrained=false",
    "debug=limit",
    "image_size=32",
    "data.batch_size=8",
    "data.source.train_per_class=2",
    "data.source.val_per_class=1",
    "data.source.test_per_class=2",
    *LEAN,
]


def wandb_records(run_file: Path):
    """The records of an offline run's ``run-<id>.wandb`` file (W&B's leveldb-style log: 32 KiB
    blocks of chunks with a 7-byte header: checksum, length, type full/first/middle/last)."""
    data = run_file.read_bytes()
    assert data[:4] == b":W&B"
    position, pending = 7, b""
    while position + 7 <= len(data):
        if 32768 - position % 32768 < 7:  # block trailer too short for a header: padding
            position += 32768 - position % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        chunk = data[position + 7 : position + 7 + length]
        position += 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


def read_offline_run(job_dir: Path) -> dict:
    """Config, history (per key, the logged values in order), summary, run group/tags and artifacts."""
    (run_file,) = job_dir.glob("wandb/offline-run-*/run-*.wandb")
    run = {"config": {}, "history": {}, "summary": {}, "artifacts": {}}
    for record in wandb_records(run_file):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.update(group=record.run.run_group, tags=list(record.run.tags))
        elif kind == "config":
            run["config"].update({item.key: json.loads(item.value_json) for item in record.config.update if item.key})
        elif kind == "history":
            for item in record.history.item:
                run["history"].setdefault(item.key or "/".join(item.nested_key), []).append(json.loads(item.value_json))
        elif kind == "summary":
            run["summary"].update({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.summary.update})
        elif kind == "artifact":
            run["artifacts"][record.artifact.name] = [entry.path for entry in record.artifact.manifest.contents]
    return run


@pytest.fixture
def no_credentials(monkeypatch, tmp_path):
    """No API key, an empty netrc, no WANDB_MODE: the situation of a fresh machine."""
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "netrc").write_text("")
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    return tmp_path


def test_online_only_with_credentials(no_credentials, monkeypatch):
    assert choose_mode() == "offline"
    (no_credentials / "netrc").write_text("machine api.wandb.ai\n  login user\n  password " + "0" * 40 + "\n")
    assert choose_mode() == "online"
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert choose_mode() == "offline"
    monkeypatch.setenv("WANDB_MODE", "dryrun")
    assert choose_mode() == "offline" and choose_mode("disabled") == "disabled"
    with pytest.raises(ValueError, match="use online, offline or disabled"):
        choose_mode("sometimes")


def test_an_online_start_that_fails_logs_offline(no_credentials, monkeypatch):
    import wandb

    real_init = wandb.init

    def init(**kwargs):
        if kwargs.get("mode") == "online":
            raise wandb.errors.CommError("no route to api.wandb.ai")
        return real_init(**kwargs)

    monkeypatch.setattr(wandb, "init", init)
    logger = ArtmoveWandbLogger(save_dir=str(no_credentials / "run"), mode="online")
    assert logger.experiment.settings.mode == "offline" and logger.wandb_mode == "offline"
    logger.finish_run()
    assert list((no_credentials / "run" / "wandb").glob("offline-run-*/run-*.wandb"))


def test_a_run_left_open_by_a_previous_job_is_closed_first(no_credentials, capsys):
    first = ArtmoveWandbLogger(save_dir=str(no_credentials / "job0"))
    first_id = first.experiment.id
    second = ArtmoveWandbLogger(save_dir=str(no_credentials / "job1"))
    assert second.experiment.id != first_id and first._experiment is None
    second.finish_run()
    assert capsys.readouterr().out.count("wandb sync") == 2


@pytest.mark.parametrize("flip_tta", [False, True], ids=["one view", "flip_tta: two views, one row"])
def test_run_files_hold_the_config_metrics_and_test_tables(no_credentials, capsys, flip_tta):
    out = no_credentials / "run"
    results = train(compose_config("train", f"paths.output_dir={out}", "logger=wandb", *TINY, f"model.flip_tta={flip_tta}"))
    assert capsys.readouterr().out.count(f"wandb sync {out / 'wandb'}") == 1  # said once
    run = read_offline_run(out)
    # The full composed config, the trainable parameter count, metrics and learning rates.
    assert run["config"]["backbone"] == "resnet18" and run["config"]["unfreeze"] == 0.2
    assert run["config"]["data"]["source"]["test_per_class"] == 2 and run["config"]["trainer"]["max_epochs"] == 1
    assert run["summary"]["trainable_params"] == results["trainable_params"]
    assert run["history"]["test/top1"] == [pytest.approx(results["test/top1"])]
    assert run["history"]["val/top1"] and any(key.startswith("lr-") for key in run["history"])
    # The test table, per-class scores, confusion matrix and sample predictions with images.
    assert run["history"]["test/table/nrows"] == [4] and run["history"]["test/per_class/nrows"] == [10]
    assert run["history"]["test/predictions/nrows"] == [16]  # limit_test_batches=2 of 8 images
    assert "test/confusion_matrix_table/nrows" in run["history"] and "test/confusion_matrix_image/path" in run["history"]
    predictions = next(paths for name, paths in run["artifacts"].items() if "testpredictions" in name)
    assert sum(path.endswith(".png") for path in predictions) == 16
    assert run["tags"] == ["resnet18"] and run["config"]["finetune"]["unfreeze"] == 0.2 and run["group"] == ""  # a single run: no group
    table = logged_table(out, "test/predictions")  # highest loss first
    losses = [row[table["columns"].index("loss")] for row in table["data"]]
    p_true = [row[table["columns"].index("p_true")] for row in table["data"]]
    assert len(losses) == 16 and losses == sorted(losses, reverse=True)
    assert losses == [pytest.approx(-math.log(p), rel=1e-3) for p in p_true]
    per_class = logged_table(out, "test/per_class")
    assert sum(row[per_class["columns"].index("support")] for row in per_class["data"]) == results["test/num_images"] == 16
    assert sum(row[per_class["columns"].index("predicted")] for row in per_class["data"]) == 16  # one prediction per painting


def logged_table(run_dir: Path, key: str) -> dict:
    """A table as the offline run keeps it in its files (media/table/<key>_<step>_<hash>.table.json)."""
    (path,) = run_dir.glob(f"wandb/offline-run-*/files/media/table/{key}_*.table.json")
    return json.loads(path.read_text(encoding="utf-8"))


def test_jobs_of_a_multirun_share_the_sweep_folder_as_group(no_credentials):
    cfg = compose_config_with_hydra("hydra.mode=MULTIRUN", f"hydra.sweep.dir={no_credentials}/sweep", "hydra.job.num=3")
    with open_dict(cfg):
        cfg.hydra.job.override_dirname = "backbone=resnet18,unfreeze=0"
    HydraConfig.instance().set_config(cfg)
    try:
        assert sweep_group_and_name() == (f"{no_credentials}/sweep", "backbone=resnet18,unfreeze=0")
        logger = ArtmoveWandbLogger(save_dir=str(no_credentials / "job"))
        assert logger._wandb_init["group"] == f"{no_credentials}/sweep" and logger._wandb_init["mode"] == "offline"
    finally:
        HydraConfig.instance().cfg = None
    assert sweep_group_and_name() == (None, None)


def compose_config_with_hydra(*overrides: str):
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module="artmove.conf", version_base="1.3"):
            return compose(config_name="train", overrides=list(overrides), return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()


@pytest.mark.slow
def test_multirun_jobs_log_offline_into_one_group(no_credentials):
    sweep = no_credentials / "sweep"
    done = subprocess.run(
        [sys.executable, "-m", "artmove.train", "-m", "logger=wandb", "unfreeze=0,1", *TINY, f"hydra.sweep.dir={sweep}"],
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ),
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    runs = {job: read_offline_run(sweep / job) for job in ("0", "1")}
    for job, run in runs.items():
        assert done.stdout.count(f"wandb sync {sweep / job / 'wandb'}") == 1  # said once per job
        assert run["history"]["test/top1"] and run["tags"] == ["resnet18"]
        assert run["config"]["finetune"]["unfreeze"] == int(job)  # each job's own setting, as the policy has it
    assert runs["0"]["group"] == runs["1"]["group"] == str(sweep)


@pytest.mark.slow
def test_under_ddp_the_test_tables_cover_every_rank(no_credentials):
    """trainer=ddp_cpu: each of 2 processes tests its own share; the W&B tables hold all 5 images."""
    rng = np.random.default_rng(0)
    for split, counts in {"train": (4, 4), "val": (1, 1), "test": (3, 2)}.items():
        for name, count in zip(("Plain", "Striped"), counts, strict=True):
            (no_credentials / "data" / split / name).mkdir(parents=True)
            for i in range(count):
                pixels = (rng.random((24, 24, 3)) * 255).astype(np.uint8)
                pixels[:: 4 if name == "Striped" else 24] = 255
                Image.fromarray(pixels).save(no_credentials / "data" / split / name / f"{i}.png")
    out = no_credentials / "run"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "artmove.train",
            "logger=wandb",
            "trainer=ddp_cpu",
            "data=folder",
            f"data.root={no_credentials / 'data'}",
            "backbone=test_resnet",
            "pretrained=false",
            "debug=limit",
            "image_size=32",
            "data.batch_size=2",
            "trainer.limit_val_batches=1.0",
            "trainer.limit_test_batches=1.0",
            f"hydra.run.dir={out}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ),
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    per_class = logged_table(out, "test/per_class")
    assert sum(row[per_class["columns"].index("support")] for row in per_class["data"]) == 5


@pytest.mark.slow
def test_a_resumed_run_logs_into_the_same_wandb_run(no_credentials):
    """Through the command line: a run stopped after epoch 0, continued in its folder, is one W&B run."""
    run_dir = no_credentials / "run"

    def attempt(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "artmove.train", "logger=wandb", *TINY, "test=false", f"hydra.run.dir={run_dir}", *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=os.environ.copy())
        assert done.returncode == 0, done.stderr[-3000:]
        return done

    attempt("trainer.max_epochs=1")
    (first,) = run_dir.glob("wandb/offline-run-*")
    attempt("trainer.max_epochs=2")  # resume=true: continues from checkpoints/last.ckpt
    ids = sorted(path.name.rsplit("-", 1)[1] for path in run_dir.glob("wandb/offline-run-*"))
    assert len(ids) == 2 and ids[0] == ids[1] == first.name.rsplit("-", 1)[1]  # two attempts, one run id
    attempt("trainer.max_epochs=1", "resume=false")  # starting over: a new W&B run
    assert len({path.name.rsplit("-", 1)[1] for path in run_dir.glob("wandb/offline-run-*")}) == 2
