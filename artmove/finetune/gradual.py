"""ULMFiT-style gradual unfreezing as a Lightning ``BaseFinetuning`` callback."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BaseFinetuning

from artmove.finetune.policies import set_trainable

if TYPE_CHECKING:
    from artmove.finetune.policies import Gradual

log = logging.getLogger(__name__)


class GradualUnfreezing(BaseFinetuning):
    """Head only first; every ``every_epochs`` epochs the next block down starts training.

    The blocks' parameters are in the optimizer from the first step, each group at its
    ``lr_scale`` (``lr_decay**k`` for the k-th block from the top, :class:`~artmove.finetune.Gradual`):
    unfreezing only turns ``requires_grad`` on, and a parameter without a gradient is not stepped
    (nor decayed). So the learning rates follow the schedule throughout, and a resumed run
    recomputes the epoch's trainable set from the epoch number.
    """

    def __init__(self, policy: Gradual):
        super().__init__()
        self.policy = policy

    def freeze_before_training(self, pl_module: pl.LightningModule) -> None:
        set_trainable(pl_module.model, pl_module.policy.initial_trainable(pl_module.plan) | self._norms(pl_module))

    def finetune_function(self, pl_module: pl.LightningModule, epoch: int, optimizer: torch.optim.Optimizer) -> None:
        plan = pl_module.plan
        depth = self.policy.blocks_unfrozen_at(plan, epoch)
        names = frozenset(plan.head).union(*plan.blocks[len(plan.blocks) - depth :]) | self._norms(pl_module)
        newly = {n for n, p in pl_module.model.named_parameters() if n in names and not p.requires_grad}
        set_trainable(pl_module.model, names)
        if newly:
            log.info("epoch %d: %d of %d block(s) training (block k from the top at lr x %s^k)",
                     epoch, depth, plan.trained_blocks, self.policy.lr_decay)  # fmt: skip

    def _norms(self, pl_module: pl.LightningModule) -> frozenset[str]:
        """With ``train_bn``: every norm layer's parameters train from the start."""
        return self.policy.trainable(pl_module.model, pl_module.plan) - pl_module.plan.trainable
