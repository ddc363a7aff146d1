"""ULMFiT-style gradual unfreezing, on Lightning's BaseFinetuning (which restores added groups on resume)."""

from __future__ import annotations

import logging

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BaseFinetuning

from artmove.finetune.policies import apply_plan, initial_plan, weight_decay_groups
from artmove.finetune.settings import FinetuneSettings
from artmove.models.freezing import UnfreezePlan

log = logging.getLogger(__name__)


class GradualUnfreezing(BaseFinetuning):
    """Head only first; every ``every_epochs`` epochs the next block down starts training.

    The k-th block unfrozen (k = 1 for the top one) joins the optimizer as new param groups at
    ``lr_decay**k`` x the head's learning rate (``lr_scale``, which the module's timm scheduler
    applies), until the plan's floor is reached. Blocks are the ``unfreeze`` policy's blocks.
    """

    def __init__(self, plan: UnfreezePlan, settings: FinetuneSettings, weight_decay: float = 0.0):
        super().__init__()
        self.plan, self.settings, self.weight_decay = plan, settings, weight_decay

    def blocks_unfrozen_at(self, epoch: int) -> int:
        return min(self.plan.trained_blocks, epoch // self.settings.every_epochs)

    def freeze_before_training(self, pl_module: pl.LightningModule) -> None:
        apply_plan(pl_module.model, initial_plan(self.plan, self.settings), self.settings)

    def finetune_function(self, pl_module: pl.LightningModule, epoch: int, optimizer: torch.optim.Optimizer) -> None:
        in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
        parameters = dict(pl_module.model.named_parameters())
        no_weight_decay = getattr(pl_module.model, "no_weight_decay", set)()
        top = len(self.plan.blocks) - 1
        added = []
        for depth in range(1, self.blocks_unfrozen_at(epoch) + 1):
            names = self.plan.blocks[top - depth + 1]
            for name in names:
                parameters[name].requires_grad_(True)
            new = [(n, parameters[n]) for n in names if id(parameters[n]) not in in_optimizer]
            for group in weight_decay_groups(new, self.weight_decay, no_weight_decay):
                group.update(lr_scale=self.settings.lr_decay**depth)
                optimizer.add_param_group(group)
                added.append(depth)
        if added:
            pl_module.refresh_lr_schedule(optimizer)
            log.info("epoch %d: unfroze block(s) %s of %d (lr scale %s)", epoch, sorted(set(added)),
                     self.plan.trained_blocks, [round(self.settings.lr_decay**d, 6) for d in sorted(set(added))])  # fmt: skip
