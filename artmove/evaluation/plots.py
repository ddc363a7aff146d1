"""Figures written as PNG with matplotlib's object API: no pyplot state, no display, no backend switch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


def display_name(name: str) -> str:
    """``Mannerism_(Late_Renaissance)`` -> ``Mannerism (Late Renaissance)``."""
    return name.replace("_", " ")


def row_normalised(counts: np.ndarray) -> np.ndarray:
    """Each row divided by its total (the true class's images); rows without images stay 0."""
    totals = counts.sum(1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros(counts.shape, dtype=float), where=totals > 0)


def plot_confusion_matrix(counts: np.ndarray, class_names: Sequence[str], path: Path, title: str = "") -> Path:
    """Row-normalised confusion matrix: rows = true classes with images, columns = predicted classes.

    The figure grows with the number of classes so that 25+ names stay legible; each cell
    shows its percentage of the row.
    """
    counts = np.asarray(counts)
    rows = np.flatnonzero(counts.sum(1) > 0)
    shares = row_normalised(counts)[rows]
    n_rows, n_cols = shares.shape
    fig = Figure(figsize=(3.5 + 0.42 * n_cols, 2.5 + 0.42 * n_rows))
    ax = fig.subplots()
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0, aspect="equal")
    ax.set_xticks(range(n_cols), [display_name(n) for n in class_names], rotation=60, ha="right", rotation_mode="anchor", fontsize=8)
    ax.set_yticks(range(n_rows), [f"{display_name(class_names[r])} ({counts[r].sum()})" for r in rows], fontsize=8)
    ax.set_xlabel("predicted movement")
    ax.set_ylabel("true movement (images)")
    for (i, j), share in np.ndenumerate(shares):
        if share >= 0.005:
            ax.text(j, i, f"{100 * share:.0f}", ha="center", va="center", fontsize=7, color="white" if share > 0.5 else "black")
    fig.colorbar(image, ax=ax, fraction=0.03, pad=0.02, label="share of the true class")
    ax.set_title(title or "Confusion matrix (row-normalised, % of each true class)", fontsize=10)
    return save_png(fig, path, dpi=130)


#: A run's curves (the names its CSV logger writes), each with its panel, legend label and line style.
RUN_CURVES = {
    "train/loss_epoch": ("loss", "train", "-"),
    "val/loss": ("loss", "validation", "-"),
    "train/top1": ("accuracy", "train top-1", "-"),
    "val/top1": ("accuracy", "validation top-1", "-"),
    "val/top5": ("accuracy", "validation top-5", "--"),
}


def plot_run_curves(curves: Mapping[str, Sequence[tuple[int, float]]], path: Path, title: str = "") -> Path:
    """One run's loss and accuracy per epoch, training and validation, side by side (epochs counted from 1)."""
    fig = Figure(figsize=(11, 4.2))
    panels = dict(zip(("loss", "accuracy"), fig.subplots(1, 2)))
    for name, (panel, label, style) in RUN_CURVES.items():
        points = curves.get(name)
        if points:
            epochs, values = zip(*points)
            panels[panel].plot([e + 1 for e in epochs], values, style, marker="o", markersize=3, label=label)
    for name, ax in panels.items():
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    panels["accuracy"].set_ylim(-0.02, 1.02)
    fig.suptitle(title or "Learning curves")
    return save_png(fig, path)


def save_png(fig: Figure, path: Path, dpi: int = 120) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path
