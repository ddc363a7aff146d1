"""Scores of a prediction matrix: the top-k table, per-class table, confusion matrix, confused pairs."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

from artmove.models.metrics import classification_metrics

PER_CLASS_COLUMNS = ("class", "support", "predicted", "accuracy", "top3_accuracy", "precision", "recall", "f1")


def summary_metrics(probs: torch.Tensor, labels: torch.Tensor, prefix: str) -> dict[str, float]:
    """``{prefix}/top1, top3, top5, top1_macro`` (the training run's metrics) and ``{prefix}/num_images``."""
    metrics = classification_metrics(probs.shape[1], f"{prefix}/")
    values = {key: float(value) for key, value in metrics(probs, labels).items()}
    values[f"{prefix}/num_images"] = len(labels)
    return values


@dataclass(frozen=True)
class Scores:
    """Everything the evaluate command and the W&B test logger report about one prediction matrix."""

    summary: dict[str, float]  # {prefix}/top1 ... /num_images
    counts: torch.Tensor  # confusion matrix: row = true class, column = top-1 prediction
    per_class: list[dict]
    most_confused: list[dict]


def score(probs: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str], prefix: str, top_confused: int) -> Scores:
    counts = confusion_matrix(probs, labels)
    return Scores(
        summary_metrics(probs, labels, prefix),
        counts,
        per_class_table(probs, labels, class_names, counts),
        most_confused_pairs(counts, class_names, top_confused),
    )


def confusion_matrix(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Counts: row = true class, column = top-1 prediction."""
    return MulticlassConfusionMatrix(num_classes=probs.shape[1])(probs, labels).long()


def per_class_table(
    probs: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str], counts: torch.Tensor | None = None
) -> list[dict]:
    """One row per class that has images or predictions.

    ``accuracy`` is the class's top-1 accuracy (the share of its images predicted as it, which is
    also its recall; top-1 macro is the mean of this column), ``top3_accuracy`` the share of its
    images with the class among the 3 best scores. Scores a class cannot have are NaN: accuracy
    and recall without images, precision without predictions.
    """
    num_classes = probs.shape[1]
    columns = {
        "top3_accuracy": MulticlassAccuracy(num_classes, top_k=min(3, num_classes), average="none"),
        "precision": MulticlassPrecision(num_classes, average="none"),
        "recall": MulticlassRecall(num_classes, average="none"),
        "f1": MulticlassF1Score(num_classes, average="none"),
    }
    values = {name: metric(probs, labels).tolist() for name, metric in columns.items()}
    counts = confusion_matrix(probs, labels) if counts is None else counts
    support, predicted = counts.sum(1).tolist(), counts.sum(0).tolist()
    rows = []
    for index, name in enumerate(class_names):
        if not support[index] and not predicted[index]:
            continue
        row = {"class": name, "support": support[index], "predicted": predicted[index]}
        row.update({key: column[index] for key, column in values.items()})
        row["accuracy"] = row["recall"]
        if not support[index]:
            row.update(accuracy=math.nan, top3_accuracy=math.nan, recall=math.nan)
        if not predicted[index]:
            row["precision"] = math.nan
        rows.append({key: row[key] for key in PER_CLASS_COLUMNS})
    return rows


def most_confused_pairs(counts: torch.Tensor, class_names: Sequence[str], top: int = 10) -> list[dict]:
    """Unordered class pairs by the number of images mistaken either way, most first.

    ``a_as_b`` counts images of ``a`` predicted as ``b``; shares are of each true class's images.
    """
    support = counts.sum(1)
    pairs: list[dict[str, Any]] = []
    for a in range(len(class_names)):
        for b in range(a + 1, len(class_names)):
            a_as_b, b_as_a = int(counts[a, b]), int(counts[b, a])
            if a_as_b + b_as_a:
                pairs.append(
                    {
                        "class_a": class_names[a],
                        "class_b": class_names[b],
                        "a_as_b": a_as_b,
                        "b_as_a": b_as_a,
                        "total": a_as_b + b_as_a,
                        "a_as_b_share": a_as_b / int(support[a]) if support[a] else math.nan,
                        "b_as_a_share": b_as_a / int(support[b]) if support[b] else math.nan,
                    }
                )
    pairs.sort(key=lambda pair: (-pair["total"], pair["class_a"], pair["class_b"]))
    return pairs[:top]
