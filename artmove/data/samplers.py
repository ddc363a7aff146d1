"""Which images each loader draws: class-balanced training, and evaluation that counts each image once under DDP."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sized

import torch
import torch.distributed as dist
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import Sampler, WeightedRandomSampler


def balanced_sampler(labels: list[int], seed: int) -> WeightedRandomSampler:
    """Draws every class equally often (``data.balance=sampler``): weight 1/count, with replacement."""
    counts = Counter(labels)
    weights = [1.0 / counts[label] for label in labels]
    generator = torch.Generator().manual_seed(seed)
    return WeightedRandomSampler(weights, len(weights), replacement=True, generator=generator)


def eval_sampler(dataset: Sized) -> Sampler | None:
    """Each rank gets every world-size-th image, without the padding of ``DistributedSampler``.

    Lightning's default sampler repeats images so that every rank has as many as the
    others, which counts them twice in the validation/test metrics. Here the ranks differ
    by at most one image and the torchmetrics states, summed across ranks, cover the split
    exactly once. None outside a multi-process run (Lightning keeps a sequential loader).
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    return UnrepeatedDistributedSampler(dataset, shuffle=False)
