"""The trainer's plug-ins and checks (``conf/trainer``): mixed precision where the GPU has it, atomic
checkpoint files, timm-aware synchronised batch norm, and what fails before any data is read.

``trainer=gpu`` and ``trainer=ddp`` take their precision from :func:`mixed_precision` (the
``${artmove.mixed_precision:}`` resolver); :func:`check_trainer` runs before any data is read: a GPU
trainer without a GPU stops, a GPU left in fp32 is named in one log line.
"""

from __future__ import annotations

import errno
import logging
import os
import resource
import shutil
from pathlib import Path
from typing import Any, cast

import torch
from omegaconf import DictConfig
from pytorch_lightning.plugins.io import TorchCheckpointIO
from pytorch_lightning.plugins.layer_sync import TorchSyncBatchNorm
from timm.layers import BatchNormAct2d, SyncBatchNormAct, convert_sync_batchnorm
from torch import nn

from artmove.errors import ConfigError, DiskFullError, FileSizeLimitError
from artmove.utils.io import atomic_write

log = logging.getLogger(__name__)
GPU_ACCELERATORS = ("gpu", "cuda")
FULL_PRECISIONS = ("32", "32-true", "64", "64-true")
#: Free space below which a failed checkpoint write is reported as a full disk.
DISK_FULL_BYTES = 4 * 2**20


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
            trainer.get("precision"),
            mixed_precision(),
        )


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written beside their target, fsynced and renamed over it (``artmove.utils.io.atomic_write``).

    Lightning's default writer builds the file in ``$TMPDIR`` and, when that is another file system
    (a local /tmp, a run folder on NFS or Lustre), copies it into place: a full disk or a kill then
    leaves a truncated ``last.ckpt`` as the only copy. Here the previous checkpoint stays until the
    new one is complete, and a full disk is one line that says so.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options (got {storage_options!r})")
        path = Path(path).absolute()
        try:
            with atomic_write(path, "wb", durable=True) as file:
                torch.save(checkpoint, file)
        except Exception as error:
            free = shutil.disk_usage(path.parent).free
            if free < DISK_FULL_BYTES or (isinstance(error, OSError) and error.errno == errno.ENOSPC):
                # torch's zip writer reports a short write as "unexpected pos …": say what happened.
                raise DiskFullError(
                    errno.ENOSPC,
                    f"No space left on device for {path} ({free / 2**20:.1f} MiB free); "
                    f"the previous {path.name} is kept: free some space and rerun the same command "
                    "(resume=true continues from the last checkpoint)",
                ) from error
            limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
            if (limit != resource.RLIM_INFINITY and isinstance(error, (RuntimeError, OSError))) or getattr(
                error, "errno", None
            ) == errno.EFBIG:
                shown = "unlimited" if limit == resource.RLIM_INFINITY else f"{limit / 2**20:.1f} MiB"
                raise FileSizeLimitError(
                    errno.EFBIG,
                    f"{path} does not fit under this process's file-size limit (ulimit -f: {shown}); "
                    f"the previous {path.name} is kept: raise the limit (ulimit -f unlimited) and rerun the same "
                    "command (resume=true continues from the last checkpoint)",
                ) from error
            raise


class TimmSyncBatchNorm(TorchSyncBatchNorm):
    """``trainer.sync_batchnorm=true`` for timm backbones: batch-norm statistics over all ranks.

    timm's conversion keeps ``BatchNormAct2d``'s activation (EfficientNet, RegNet, …); torch's
    conversion, and Lightning's revert after ``fit``, would turn it into a plain BatchNorm and
    silently drop the activation. Disabled, it leaves the model alone.
    """

    def __init__(self, enabled: bool = False):
        self.enabled = enabled

    def apply(self, model: nn.Module) -> nn.Module:
        return convert_sync_batchnorm(model) if self.enabled else model

    def revert(self, model: nn.Module) -> nn.Module:
        if not self.enabled:
            return model
        if not isinstance(model, SyncBatchNormAct):
            return super().revert(model)  # recurses into the children through this method
        # timm annotates momentum as float, but hands it to BatchNorm2d, which takes None (a cumulative average)
        reverted = BatchNormAct2d(model.num_features, model.eps, model.momentum, model.affine, model.track_running_stats)  # type: ignore[arg-type]
        # timm's conversion sets them on the SyncBatchNormAct: modules, which nn.Module's lookup types as ``Tensor | Module``
        reverted.act, reverted.drop = cast(nn.Module, model.act), cast(nn.Module, model.drop)
        if model.affine:
            reverted.weight, reverted.bias = model.weight, model.bias
        reverted.running_mean, reverted.running_var = model.running_mean, model.running_var
        reverted.num_batches_tracked = model.num_batches_tracked
        return reverted
