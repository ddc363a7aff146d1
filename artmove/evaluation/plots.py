"""Figures written as PNG with matplotlib's object API: no pyplot state, no display, no backend switch."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure


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


def save_png(fig: Figure, path: Path, dpi: int = 120) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path
