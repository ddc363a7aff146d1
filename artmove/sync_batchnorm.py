"""``trainer.sync_batchnorm`` for timm backbones (a Lightning layer-sync plugin, ``conf/trainer/ddp.yaml``)."""

from __future__ import annotations

from pytorch_lightning.plugins.layer_sync import TorchSyncBatchNorm
from timm.layers import BatchNormAct2d, SyncBatchNormAct, convert_sync_batchnorm
from torch import nn


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
        reverted = BatchNormAct2d(model.num_features, model.eps, model.momentum, model.affine, model.track_running_stats)
        reverted.act, reverted.drop = model.act, model.drop
        if model.affine:
            reverted.weight, reverted.bias = model.weight, model.bias
        reverted.running_mean, reverted.running_var = model.running_mean, model.running_var
        reverted.num_batches_tracked = model.num_batches_tracked
        return reverted
