"""A checkpoint, a run folder, a sweep folder or a painting from someone else is data, never code, and
costs a bounded amount of memory: each case through the real command line (docs/reliability.md)."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
import zlib

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from conftest import NO_CALIBRATION, run_cli

COMMANDS = {
    "predict": ["ckpt_path={ckpt}", "input={image}"],
    "evaluate": ["ckpt_path={ckpt}"],
    "export": ["ckpt_path={ckpt}", "out={out}"],
    "demo": ["ckpt_path={ckpt}"],
}


@pytest.fixture
def no_serving(monkeypatch):
    """The demo command stops before serving (were a hostile file ever accepted, the test fails, not hangs)."""
    import uvicorn

    def serve(*args, **kwargs):
        raise AssertionError("the demo page was served")

    monkeypatch.setattr(uvicorn, "run", serve)


def run_command(command: str, ckpt, tmp_path):
    image = tmp_path / "painting.png"
    Image.new("RGB", (64, 48), "olive").save(image)
    args = [a.format(ckpt=ckpt, image=image, out=tmp_path / "export") for a in COMMANDS[command]]
    return run_cli(f"artmove.{command}", *args, f"hydra.run.dir={tmp_path / 'log'}")


def one_line(done) -> str:
    lines = [line for line in done.stderr.strip().splitlines() if line.startswith("artmove: error:")]
    assert done.returncode == 2 and len(lines) == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    return lines[0]


def crafted(path, marker, artmove_record=None):
    """What the issue's attacker wrote: weights_only-safe (strings and numbers only), yet naming code for
    instantiate in the hyper-parameters a format-1 reader rebuilt the model from."""
    payload = {"_target_": "os.makedirs", "name": str(marker)}  # creates the marker: the code ran
    checkpoint = {
        "state_dict": {"model.conv1.weight": torch.zeros(1)},
        "loops": {},
        "epoch": 0,
        "global_step": 0,
        "hyper_parameters": {
            "backbone": "test_resnet",
            "num_classes": 3,
            "class_names": ["a", "b", "c"],
            "preprocessing": {},
            "finetune": payload,
            "head": payload,
        },
    }
    if artmove_record is not None:
        checkpoint["artmove"] = artmove_record
    torch.save(checkpoint, path)
    return path


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize(
    "record",
    [
        None,
        {
            "format": 2,
            "inference_weights": "network",
            "network": {"backbone": "test_resnet", "num_classes": 3, "head": {"name": "os.makedirs"}},
        },
        {"format": 2, "inference_weights": "network", "network": {"backbone": "test_resnet", "num_classes": 3, "_target_": "os.makedirs"}},
    ],
    ids=["format 1", "head name", "spec key"],
)
def test_a_checkpoint_that_names_code_is_refused_and_nothing_runs(command, record, tmp_path, no_serving):
    marker = tmp_path / "PAYLOAD-RAN"
    ckpt = crafted(tmp_path / "crafted.ckpt", marker, record)
    line = one_line(run_command(command, ckpt, tmp_path))
    assert "crafted.ckpt" in line and (
        "not one of artmove's" in line or "artmove has no head" in line or "entries artmove does not write" in line
    )
    assert not marker.exists() and not (tmp_path / "export").exists()


@pytest.fixture
def run_with_foreign_config(tiny_run, tmp_path):
    """A copy of tiny_run whose saved config names other code for its data set."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    config = OmegaConf.load(run / ".hydra" / "config.yaml")
    config.data.source._target_ = "os.makedirs"
    config.data.source.name = str(tmp_path / "PAYLOAD-RAN")
    OmegaConf.save(config, run / ".hydra" / "config.yaml")
    return run


@pytest.mark.parametrize("command", COMMANDS)
def test_a_run_folder_whose_config_names_code_is_refused(command, run_with_foreign_config, tmp_path, no_serving):
    line = one_line(run_command(command, run_with_foreign_config, tmp_path))
    assert "names code artmove's own configs never name (data.source._target_='os.makedirs')" in line
    assert not (tmp_path / "PAYLOAD-RAN").exists() and not (tmp_path / "export").exists()


@pytest.mark.slow  # a process of its own
def test_a_painting_of_an_extreme_aspect_ratio_costs_bounded_memory(tiny_run, tmp_path):
    """A 20000 x 1 PNG (under 200 bytes) was enlarged to 20000 x 224 per view: 3.9 GB. Measured as the
    peak resident memory of the command's process (and its loader workers)."""
    wide = tmp_path / "wide.png"
    Image.new("RGB", (20000, 1), "red").save(wide)
    command = [
        sys.executable,
        "-m",
        "artmove.predict",
        f"ckpt_path={tiny_run}",
        f"input={wide}",
        "tta=flip",
        f"hydra.run.dir={tmp_path / 'log'}",
    ]
    # A process of its own that runs the command and reports its peak (RUSAGE_CHILDREN: the command and its loader workers).
    measure = (
        "import json, resource, subprocess, sys; done = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
        "print(json.dumps([done.returncode, done.stdout, done.stderr, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss]))"
    )
    measured = subprocess.run([sys.executable, "-c", measure, *command], capture_output=True, text=True, timeout=300)
    returncode, stdout, stderr, peak_kb = json.loads(measured.stdout)
    assert returncode == 0, stderr[-3000:]
    assert "1 image(s) predicted" in stdout and "20000 x 1 pixels, cut to its central 10 x 1" in stdout + stderr
    assert peak_kb / 2**20 < 1.5, f"peak {peak_kb / 2**20:.2f} GB"


def test_pils_own_warning_never_reaches_the_user(tmp_path, recwarn):
    from artmove.data.images import MAX_PIXELS, open_image

    huge = tmp_path / "huge.png"  # a 1 x 1 PNG whose header claims 30000 x 30000 (900 Mpx)
    Image.new("RGB", (1, 1)).save(huge)
    data = bytearray(huge.read_bytes())
    data[16:24] = (30000).to_bytes(4, "big") * 2  # IHDR's width and height, then its CRC
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    huge.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=f"30000 x 30000 pixels is over the {MAX_PIXELS // 1_000_000} Mpx limit"):
        open_image(huge)
    assert not [w for w in recwarn if "DecompressionBomb" in type(w.message).__name__]


def test_a_dangling_link_is_listed_as_skipped_not_dropped(tiny_run, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.new("RGB", (64, 48), "olive").save(folder / "a.png")
    (folder / "b.png").symlink_to(tmp_path / "gone.png")
    done = run_cli("artmove.predict", f"ckpt_path={tiny_run}", f"input={folder}", "num_workers=0", f"hydra.run.dir={tmp_path / 'log'}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "1 image(s) predicted, 1 skipped (unreadable)" in done.stdout and "b.png" in done.stderr


@pytest.mark.parametrize(
    "command, setting, message",
    [
        ("train", "optimizer.lr=nan", "optimizer.lr=nan: give a learning rate > 0"),
        ("train", "optimizer.lr=inf", "optimizer.lr=inf: give a learning rate > 0"),
        ("train", "seed=abc", "seed='abc': give a whole number >= 0"),
        ("train", "model.label_smoothing=2", r"model.label_smoothing=2: give a share in \[0, 1\)"),
        ("predict", "batch_size=0", "batch_size=0: give a whole number of images from 1 to 4096"),
        ("demo", "port=99999", "port=99999: give a TCP port from 1 to 65535"),
        ("demo", "max_upload_mb=-1", "max_upload_mb=-1: give a limit > 0"),
    ],
)
def test_a_bad_number_is_one_line_and_exit_2(command, setting, message, tmp_path, no_serving):
    extra = {"train": ["data=rasta", f"data.root={tmp_path / 'absent'}"], "predict": ["ckpt_path=x", "input=y"], "demo": ["ckpt_path=x"]}
    done = run_cli(f"artmove.{command}", *extra[command], setting, f"hydra.run.dir={tmp_path / 'log'}")
    assert re.search(message, one_line(done))


# --- resuming ------------------------------------------------------------------------------------
TINY = [
    "backbone=test_resnet",
    "pretrained=false",
    "image_size=32",
    "data.batch_size=4",
    "data.num_workers=0",
    "data=folder",
    "+trainer.limit_val_batches=1",
    "data.source.val_fraction=0.25",
    "data.source.test_fraction=0.25",
    "test=false",
]


def paintings(root, shade=0):
    for label, name in enumerate(("baroque", "cubism")):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(8):
            Image.new("RGB", (40, 30), (shade + 90 * label, 20 * i, 90)).save(root / name / f"painter{i % 4}_{name}{i}.png")
    return root


def test_a_rerun_with_other_defining_settings_is_refused_naming_each(tmp_path):
    data, other = paintings(tmp_path / "data"), paintings(tmp_path / "other", shade=10)
    run = tmp_path / "run"
    first = run_cli("artmove.train", *TINY, f"data.root={data}", "trainer.max_epochs=1", f"hydra.run.dir={run}")
    assert first.returncode == 0, first.stderr[-3000:]
    config = (run / ".hydra" / "config.yaml").read_text()
    for setting, named in (
        (["image_size=48"], "image_size=48 (the checkpoint's: 32)"),
        ([f"data.root={other}"], f"data.root='{other}' (the checkpoint's: '{data}')"),
    ):
        done = run_cli("artmove.train", *TINY, f"data.root={data}", *setting, "trainer.max_epochs=2", f"hydra.run.dir={run}")
        line = one_line(done)
        assert line.startswith(f"artmove: error: cannot continue {run / 'checkpoints' / 'last.ckpt'} with other settings") and named in line
    assert json.loads((run / "results.json").read_text())["epochs"] == 1  # the finished run's results untouched...
    assert (run / ".hydra" / "config.yaml").read_text() == config  # ...and its saved config: what its checkpoint trained with


def test_a_rerun_with_more_epochs_continues_and_keeps_the_history_of_attempts(tmp_path):
    data, run = paintings(tmp_path / "data"), tmp_path / "run"
    assert run_cli("artmove.train", *TINY, f"data.root={data}", "trainer.max_epochs=1", f"hydra.run.dir={run}").returncode == 0
    done = run_cli("artmove.train", *TINY, f"data.root={data}", "trainer.max_epochs=2", "data.num_workers=1", f"hydra.run.dir={run}")
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((run / "results.json").read_text())
    first, second = results["attempts"]
    assert first["attempt"] == 1 and first["resumed_from"] is None
    assert second["attempt"] == 2 and second["resumed_from"]["epoch"] == 0 and second["resumed_from"]["global_step"] > 0  # saved in epoch 0
    assert second["changed"] == {"trainer.max_epochs": [1, 2], "data.num_workers": [0, 1]}
    assert results["epochs"] == 2


# --- sweeps --------------------------------------------------------------------------------------
@pytest.mark.slow  # a process of its own
def test_a_second_sweep_into_a_folder_in_use_is_refused_and_the_first_keeps_its_jobs(tmp_path):
    sweep = tmp_path / "sweep"
    first = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "artmove.train",
            "-m",
            "backbone=test_resnet",
            "pretrained=false",
            "image_size=32",
            "data.num_workers=0",
            "data.source.train_per_class=2",
            "data.source.val_per_class=1",
            "data.source.test_per_class=1",
            "trainer.max_epochs=1000",
            "seed=1,2",
            f"hydra.sweep.dir={sweep}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 240
        while not (sweep / "0" / ".hydra" / "overrides.yaml").is_file():
            assert first.poll() is None and time.time() < deadline, first.stderr.read()[-3000:]
            time.sleep(0.2)
        done = run_cli("artmove.train", "-m", "backbone=test_resnet", "seed=7,8", f"hydra.sweep.dir={sweep}")
        assert one_line(done).startswith(f"artmove: error: folder {sweep} is in use by pid {first.pid}")
        assert "seed=1" in OmegaConf.load(sweep / "0" / ".hydra" / "overrides.yaml")  # job 0 is still the first sweep's
    finally:
        first.kill()
        first.wait(60)
    assert not (sweep / "2").exists()  # the second sweep made no job folder


def test_a_sweep_counts_only_its_own_jobs_and_each_one_missing_its_results_as_failed(tmp_path):
    from artmove.sweeps.summary import STARTED, failed_jobs

    def job(name, status):
        (tmp_path / name / ".hydra").mkdir(parents=True)
        (tmp_path / name / ".hydra" / "config.yaml").write_text("task_name: train\n")
        (tmp_path / name / "results.json").write_text(json.dumps({"status": status}))

    job("0", "ok")  # the earlier sweep's job 0 finished...
    os.utime(tmp_path / "0" / "results.json", (time.time() - 100, time.time() - 100))
    (tmp_path / STARTED).touch()  # ...then this sweep started, rewrote job 0's folder and died before its results
    os.utime(tmp_path / "0" / ".hydra", None)
    job("1", "ok")
    assert failed_jobs(tmp_path) == ["0"]


# --- sizes a setting or a file asks for: bounded before anything is allocated ------------------------
def peak_of(command: list[str], limit_file_bytes: int | None = None) -> tuple[int, str, str, float]:
    """(exit code, stdout, stderr, peak resident GB) of ``command`` in a process of its own (and its children)."""
    measure = (
        "import json, resource, subprocess, sys; limit = int(sys.argv[1]); "
        "limits = (lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))) if limit else None; "
        "done = subprocess.run(sys.argv[2:], capture_output=True, text=True, preexec_fn=limits); "
        "print(json.dumps([done.returncode, done.stdout, done.stderr, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss]))"
    )
    measured = subprocess.run(
        [sys.executable, "-c", measure, str(limit_file_bytes or 0), *command], capture_output=True, text=True, timeout=300
    )
    returncode, stdout, stderr, peak_kb = json.loads(measured.stdout)
    return returncode, stdout, stderr, peak_kb / 2**20


def only_line(returncode: int, stderr: str) -> str:
    return one_line(type("Done", (), {"returncode": returncode, "stderr": stderr})())


@pytest.mark.slow  # a process of its own
def test_a_huge_image_size_is_one_line_before_anything_is_allocated(tmp_path):
    returncode, _, stderr, peak_gb = peak_of(
        [
            sys.executable,
            "-m",
            "artmove.train",
            "backbone=test_resnet",
            "pretrained=false",
            "image_size=100000",
            f"hydra.run.dir={tmp_path / 'run'}",
        ]
    )
    assert "image_size=100000: give a whole number of pixels from 16 to 2048" in only_line(returncode, stderr)
    assert peak_gb < 2, f"peak {peak_gb:.2f} GB"


def with_preprocessing(tiny_run, tmp_path, **changes):
    """A copy of tiny_run's best checkpoint whose recorded preprocessing is changed (None: the key removed)."""
    from artmove.runs.checkpoints import open_run

    checkpoint = torch.load(open_run(tiny_run).files[0], map_location="cpu", weights_only=True)
    preprocessing = checkpoint["hyper_parameters"]["preprocessing"]
    for key, value in changes.items():
        preprocessing.pop(key) if value is None else preprocessing.__setitem__(key, value)
    path = tmp_path / "changed.ckpt"
    torch.save(checkpoint, path)
    return path


@pytest.mark.slow  # a process of its own
def test_a_checkpoint_asking_for_a_30000_pixel_input_is_one_line_before_anything_is_allocated(tiny_run, tmp_path):
    ckpt = with_preprocessing(tiny_run, tmp_path, input_size=[3, 30000, 30000])
    image = tmp_path / "painting.png"
    Image.new("RGB", (64, 48), "olive").save(image)
    returncode, _, stderr, peak_gb = peak_of(
        [sys.executable, "-m", "artmove.predict", f"ckpt_path={ckpt}", f"input={image}", f"hydra.run.dir={tmp_path / 'log'}"]
    )
    line = only_line(returncode, stderr)
    assert "changed.ckpt: its preprocessing is not one artmove can use (input_size" in line and "from 16 to 2048 pixels" in line
    assert peak_gb < 2, f"peak {peak_gb:.2f} GB"


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"input_size": None}, "(input_size: Field required)"),
        ({"interpolation": {"a": 1}}, "(interpolation: Input should be 'bilinear'"),
        ({"mean": [0.5, "x", 0.5]}, "(mean.1: Input should be a valid number"),
        ({"std": [0.5, 0.0, 0.5]}, "three finite numbers > 0"),
    ],
)
def test_a_checkpoint_with_broken_preprocessing_is_one_line(changes, message, tiny_run, tmp_path):
    ckpt = with_preprocessing(tiny_run, tmp_path, **changes)
    line = one_line(run_command("predict", ckpt, tmp_path))
    assert "its preprocessing is not one artmove can use" in line and message in line


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda config: config.update(model_args={"num_classes": "x"}), "timm cannot build the model it records (TypeError"),
        (lambda config: config.update(model_args={"block_args": {"a": 1}}), "its model_args"),
        (lambda config: config.update(architecture="hf-hub:someone/model"), "not one of timm's registered models"),
        (lambda config: config["pretrained_cfg"].update(input_size=[3, 30000, 30000]), "from 16 to 2048 pixels"),
        (lambda config: config["pretrained_cfg"].pop("interpolation"), "(interpolation: Field required)"),
        (lambda config: config.update(label_names=["a"]), "its label_names are not 25 names"),
    ],
)
def test_a_malformed_export_config_is_one_error_of_artmoves_own(edit, message, exported, tmp_path):
    from artmove.errors import ConfigError
    from artmove.serving.predictor import Predictor

    folder = shutil.copytree(exported[0], tmp_path / "export")
    config = json.loads((folder / "config.json").read_text())
    edit(config)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=re.escape(message)) as raised:
        Predictor.from_export(folder)
    assert "\n" not in str(raised.value)


def test_max_epochs_minus_one_with_a_schedule_is_one_line(tmp_path):
    done = run_cli(
        "artmove.train", "backbone=test_resnet", "pretrained=false", "trainer.max_epochs=-1", f"hydra.run.dir={tmp_path / 'run'}"
    )
    assert (
        "trainer.max_epochs=-1 trains without an epoch limit, and the learning-rate schedule (scheduler=cosine) needs a length"
        in one_line(done)
    )


@pytest.mark.slow  # a process of its own, under a file-size limit
def test_a_checkpoint_over_the_file_size_limit_is_one_line_and_keeps_the_previous_one(tmp_path):
    run = tmp_path / "run"
    settings = [
        "backbone=test_resnet",
        "pretrained=false",
        "image_size=32",
        "data.num_workers=0",
        "data.source.train_per_class=1",
        "data.source.val_per_class=1",
        "data.source.test_per_class=1",
        "data.source.canvas_size=32",
        *NO_CALIBRATION,
    ]
    first = run_cli("artmove.train", *settings, "trainer.max_epochs=1", f"hydra.run.dir={run}")
    assert first.returncode == 0, first.stderr[-3000:]
    before = {path.name: path.read_bytes() for path in (run / "checkpoints").iterdir()}
    size = max(len(data) for data in before.values())
    returncode, _, stderr, _ = peak_of([sys.executable, "-m", "artmove.train", f"resume={run}", "trainer.max_epochs=2"], size // 2)
    line = only_line(returncode, stderr)
    assert "does not fit under this process's file-size limit (ulimit -f" in line and "is kept" in line
    assert {path.name: path.read_bytes() for path in (run / "checkpoints").iterdir()} == before  # intact, no partial file left
