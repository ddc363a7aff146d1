"""Top-k accuracies (micro) and mean per-class accuracy (macro top-1) with torchmetrics; a bootstrap
interval on top-1 from per-image correctness."""

from __future__ import annotations

import torch
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

TOP_K = (1, 3, 5)


class MeanPerClassAccuracy(MulticlassConfusionMatrix):
    """Top-1 recall averaged over the classes present in the targets (sklearn's balanced accuracy).

    torchmetrics' ``average="macro"`` also averages in, as 0, classes that are predicted
    but absent from the targets, which understates a partial or imbalanced test set. The
    state is the confusion matrix (synchronised across processes like any torchmetrics state).
    """

    def compute(self) -> torch.Tensor:
        counts = super().compute()
        support = counts.sum(1)
        present = support > 0
        return (counts.diagonal()[present].float() / support[present]).mean()


def classification_metrics(num_classes: int, prefix: str) -> MetricCollection:
    """``{prefix}top1/top3/top5`` (micro) and ``{prefix}top1_macro`` (mean per-class accuracy).

    With fewer classes than k, top-k is computed with k = num_classes (always 1.0).
    No compute groups: torchmetrics merges metrics whose states are equal after the first
    update and then updates one of them only, which made top-5 a copy of top-3.
    """
    metrics: dict[str, Metric | MetricCollection] = {
        f"top{k}": MulticlassAccuracy(num_classes=num_classes, top_k=min(k, num_classes), average="micro") for k in TOP_K
    }
    metrics["top1_macro"] = MeanPerClassAccuracy(num_classes)
    return MetricCollection(metrics, prefix=prefix, compute_groups=False)


def bootstrap_interval(correct: torch.Tensor, level: float = 0.95, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-image 0/1 correctness: the test images drawn
    again with replacement ``resamples`` times (a fixed seed: the same run gives the same interval)."""
    correct = correct.detach().float().flatten().cpu()
    if correct.numel() == 0:
        return float("nan"), float("nan")
    generator = torch.Generator().manual_seed(seed)
    draws = torch.randint(len(correct), (resamples, len(correct)), generator=generator)
    means = correct[draws].mean(dim=1)
    tail = (1 - level) / 2
    low, high = torch.quantile(means, torch.tensor([tail, 1 - tail])).tolist()
    return low, high
