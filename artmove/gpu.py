"""The fast path on a CUDA GPU: mixed precision, channels-last, cuDNN autotuning, TF32 matmuls.

``trainer=gpu`` and ``trainer=ddp`` take their precision from :func:`mixed_precision` (the
``${artmove.mixed_precision:}`` resolver), and :class:`GpuSpeedups` (``conf/callbacks/default.yaml``)
sets the rest once the trainer knows its device. :func:`check_trainer` runs before any data is
read: a GPU trainer without a GPU stops, a GPU left in fp32 is named in one log line.
"""

from __future__ import annotations

import logging

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from torch import nn

from artmove.checks import ConfigError

log = logging.getLogger(__name__)
GPU_ACCELERATORS = ("gpu", "cuda")
FULL_PRECISIONS = ("32", "32-true", "64", "64-true")


def bf16_supported() -> bool:
    """bf16 tensor cores: compute capability 8.0 or higher (A100, H100, RTX 30xx…)."""
    return torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 8


def mixed_precision() -> str:
    """bf16-mixed where the GPU has bf16, else 16-mixed (Lightning adds a gradient scaler)."""
    return "bf16-mixed" if bf16_supported() else "16-mixed"


def check_trainer(trainer: DictConfig) -> None:
    """Stop a GPU trainer on a machine without one; say how to get the fast settings when ``accelerator=auto``
    finds a GPU and would train on it in fp32 (an fp32 precision chosen with ``trainer=gpu`` is left alone)."""
    accelerator = str(trainer.get("accelerator", "auto"))
    if accelerator in GPU_ACCELERATORS and not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.accelerator={accelerator} but PyTorch sees no CUDA GPU on this machine: "
            "use trainer=cpu (or trainer=ddp_cpu), or run where a GPU is visible (CUDA_VISIBLE_DEVICES, nvidia-smi)."
        )
    if accelerator == "auto" and torch.cuda.is_available() and str(trainer.get("precision")) in FULL_PRECISIONS:
        log.warning(
            "a GPU trains here in %s precision: add trainer=gpu (or trainer=ddp) for %s, channels-last and TF32.",
            trainer.get("precision"), mixed_precision(),
        )  # fmt: skip


def is_convolutional(model: nn.Module) -> bool:
    return any(isinstance(module, nn.Conv2d) for module in model.modules())


class GpuSpeedups(pl.Callback):
    """On a CUDA device: the model in channels-last memory format (convolutional backbones: tensor
    cores read NHWC without transposes; the first convolution converts the input), cuDNN autotuning
    (the fastest kernel per input shape, found once) and TF32 for float32 matmuls and convolutions.
    Nothing changes on a CPU."""

    def __init__(self, channels_last: bool = True, cudnn_benchmark: bool = True, tf32: bool = True):
        self.channels_last, self.cudnn_benchmark, self.tf32 = channels_last, cudnn_benchmark, tf32

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if trainer.strategy.root_device.type != "cuda":
            return
        if self.cudnn_benchmark:
            torch.backends.cudnn.benchmark = True
        if self.tf32:
            torch.set_float32_matmul_precision("high")
            torch.backends.cudnn.allow_tf32 = True
        if self.channels_last and is_convolutional(pl_module):
            pl_module.to(memory_format=torch.channels_last)
        log.info(
            "GPU settings: %s precision, channels-last %s, cuDNN benchmark %s, TF32 %s",
            trainer.precision, self.channels_last and is_convolutional(pl_module), self.cudnn_benchmark, self.tf32,
        )  # fmt: skip
