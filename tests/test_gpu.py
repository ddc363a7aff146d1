"""The GPU path (precision, channels-last, cuDNN/TF32 flags, checks) and model.compile, tested on CPU."""

import logging
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from artmove.errors import ConfigError
from artmove.training.callbacks import GpuSpeedups
from artmove.training.trainer import check_trainer
from conftest import classifier, compose_config, run_cli


def fake_gpu(monkeypatch, capability=(9, 0)):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)


def test_trainer_gpu_without_a_gpu_stops_before_the_data_in_one_line(tmp_path, monkeypatch):
    started = time.time()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as CUDA_VISIBLE_DEVICES="" (this machine may have one)
    done = run_cli("artmove.train", "trainer=gpu", "data=rasta", f"data.root={tmp_path / 'absent'}", f"hydra.run.dir={tmp_path / 'run'}")
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and "trainer.accelerator=gpu" in errors[0] and "trainer=cpu" in errors[0]
    assert "absent" not in done.stderr and "Traceback" not in done.stderr  # stopped before the data
    assert time.time() - started < 120


@pytest.mark.parametrize("trainer", ["gpu", "ddp"])
@pytest.mark.parametrize(("capability", "precision"), [((9, 0), "bf16-mixed"), ((8, 0), "bf16-mixed"), ((7, 5), "16-mixed")])
def test_gpu_trainers_take_bf16_where_the_gpu_has_it(monkeypatch, trainer, capability, precision):
    fake_gpu(monkeypatch, capability)
    cfg = compose_config("train", f"trainer={trainer}")
    assert cfg.trainer.precision == precision
    assert (
        OmegaConf.to_container(compose_config("train", f"trainer={trainer}", "trainer.precision=32-true").trainer)["precision"] == "32-true"
    )


def test_a_gpu_left_in_fp32_is_named_in_one_log_line(monkeypatch, caplog):
    fake_gpu(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="artmove.training.trainer"):
        check_trainer(compose_config("train").trainer)  # accelerator=auto, precision=32-true
    assert len(caplog.records) == 1 and "trainer=gpu" in caplog.records[0].getMessage()
    assert "bf16-mixed" in caplog.records[0].getMessage()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="artmove.training.trainer"):
        check_trainer(compose_config("train", "trainer=gpu").trainer)
        check_trainer(compose_config("train", "trainer=gpu", "trainer.precision=32-true").trainer)  # chosen
        check_trainer(compose_config("train", "trainer=cpu").trainer)
    assert caplog.records == []


def test_no_gpu_no_advice_and_cpu_trainers_pass(monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level(logging.WARNING, logger="artmove.training.trainer"):
        check_trainer(compose_config("train").trainer)
        check_trainer(compose_config("train", "trainer=ddp_cpu").trainer)
    assert caplog.records == []
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        check_trainer(compose_config("train", "trainer=ddp").trainer)


def _trainer_on(device: str):
    return SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device(device)), precision="bf16-mixed")


@pytest.fixture
def restore_backend_flags(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", torch.backends.cudnn.benchmark)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", torch.backends.cudnn.allow_tf32)
    precision = torch.get_float32_matmul_precision()
    yield
    torch.set_float32_matmul_precision(precision)


def test_gpu_speedups_on_a_cuda_device(restore_backend_flags):
    torch.backends.cudnn.benchmark = False
    torch.set_float32_matmul_precision("highest")
    model = classifier("test_resnet", 3, image_size=32)
    GpuSpeedups().setup(_trainer_on("cuda"), model, "fit")
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    assert torch.backends.cudnn.benchmark is True and torch.get_float32_matmul_precision() == "high"
    before = {k: v.clone() for k, v in classifier("test_resnet", 3, image_size=32).state_dict().items()}
    assert set(model.state_dict()) == set(before)  # same keys; a checkpoint loads into a contiguous model
    classifier("test_resnet", 3, image_size=32).load_state_dict(model.state_dict())


def test_gpu_speedups_change_nothing_on_a_cpu(restore_backend_flags):
    torch.backends.cudnn.benchmark = False
    torch.set_float32_matmul_precision("highest")
    model = classifier("test_resnet", 3, image_size=32)
    GpuSpeedups().setup(_trainer_on("cpu"), model, "fit")
    assert all(p.is_contiguous() for p in model.parameters())
    assert torch.backends.cudnn.benchmark is False and torch.get_float32_matmul_precision() == "highest"


def test_gpu_speedups_are_a_default_callback():
    callbacks = compose_config("train").callbacks
    assert callbacks.gpu_speedups._target_ == "artmove.training.callbacks.GpuSpeedups" and callbacks.gpu_speedups.channels_last


# --- model.compile ---------------------------------------------------------------------------


def test_compile_failure_says_one_line_and_runs_eager(monkeypatch, caplog):
    calls = []

    def broken_compile(function, mode):
        def compiled(*inputs):
            calls.append(mode)
            raise RuntimeError("inductor: no C++ compiler found\nmore detail")

        return compiled

    monkeypatch.setattr(torch, "compile", broken_compile)
    model = classifier("test_resnet", 3, image_size=32, compile=True, compile_mode="max-autotune").eval()
    images = torch.randn(2, 3, 32, 32)
    with caplog.at_level(logging.WARNING, logger="artmove.models.compiled"):
        logits = model(images)
        again = model(images)
    assert calls == ["max-autotune"]  # tried once, then eager
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert "torch.compile failed" in message and "no C++ compiler" in message and "more detail" not in message
    assert torch.allclose(logits, model.network(images)) and torch.allclose(again, logits)


def test_compiled_model_keeps_plain_checkpoint_keys(monkeypatch):
    compiled_functions = []
    monkeypatch.setattr(torch, "compile", lambda function, mode: compiled_functions.append(function) or function)
    model = classifier("test_resnet", 3, image_size=32, compile=True)
    plain = classifier("test_resnet", 3, image_size=32)
    (compiled,) = compiled_functions  # the network's forward: the backbone and its head, one function
    assert compiled == model.network.forward
    assert list(model.state_dict()) == list(plain.state_dict())
    assert not any("_orig_mod" in key for key in model.state_dict())


def test_unknown_compile_mode_is_a_config_error():
    with pytest.raises(ConfigError, match=r"model.compile_mode='fastest'"):
        classifier("test_resnet", 3, image_size=32, compile=True, compile_mode="fastest")


@pytest.mark.slow
def test_real_compile_trains_and_its_checkpoint_loads_without_compile(tmp_path):
    """A real torch.compile (inductor on CPU: about 1.5 min on 2 cores) through the command line."""
    from artmove.models import load_trained

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "artmove.train",
            "backbone=test_resnet",
            "pretrained=false",
            "image_size=32",
            "unfreeze=1",
            "model.compile=true",
            "trainer.max_epochs=1",
            "data.batch_size=4",
            "data.source.train_per_class=2",
            "data.source.val_per_class=1",
            "data.source.test_per_class=1",
            "data.num_workers=0",
            f"hydra.run.dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "torch.compile failed" not in done.stderr
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert checkpoint["state_dict"] and not any("_orig_mod" in key for key in checkpoint["state_dict"])
    network = load_trained(tmp_path / "checkpoints" / "last.ckpt").network
    assert network(torch.randn(1, 3, 32, 32)).shape == (1, 10)
