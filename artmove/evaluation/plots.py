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


def plot_text(name: str) -> str:
    """A class name as a figure shows it literally: ``$`` would start matplotlib's math mode."""
    return display_name(name).replace("$", r"\$")


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
    ax.set_xticks(range(n_cols), [plot_text(n) for n in class_names], rotation=60, ha="right", rotation_mode="anchor", fontsize=8)
    ax.set_yticks(range(n_rows), [f"{plot_text(class_names[int(r)])} ({counts[r].sum()})" for r in rows], fontsize=8)
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
    panels = dict(zip(("loss", "accuracy"), fig.subplots(1, 2), strict=True))
    for name, (panel, label, style) in RUN_CURVES.items():
        points = curves.get(name)
        if points:
            epochs, values = zip(*points, strict=True)
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


def plot_reliability(probs, labels, path: Path, title: str = "", bins: int = 15) -> Path:
    """Reliability diagram: per equal-width bin of top-1 confidence, the accuracy of its answers against
    the diagonal (a calibrated model's bars touch it; the ECE is the gaps weighted by the bins' images),
    and below, how many answers fall in each bin."""
    from artmove.models.calibration import expected_calibration_error

    confidence, predicted = (np.asarray(t) for t in probs.max(1))
    correct = predicted == np.asarray(labels)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    accuracy = np.divide(np.bincount(index, weights=correct, minlength=bins), counts, out=np.zeros(bins), where=counts > 0)
    mean_conf = np.divide(np.bincount(index, weights=confidence, minlength=bins), counts, out=np.zeros(bins), where=counts > 0)
    centres, width = (edges[:-1] + edges[1:]) / 2, 1.0 / bins
    fig = Figure(figsize=(5.2, 6.2))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    shown = counts > 0
    top.bar(centres[shown], accuracy[shown], width=width * 0.95, color="#4f7cc1", edgecolor="white", label="top-1 accuracy of the bin")
    top.bar(
        centres[shown],
        (mean_conf - accuracy)[shown],
        bottom=accuracy[shown],
        width=width * 0.95,
        color="none",
        edgecolor="#c0392b",
        hatch="//",
        linewidth=0.8,
        label="gap to the bin's mean confidence",
    )
    top.plot([0, 1], [0, 1], linestyle="--", color="#333", linewidth=1, label="calibrated")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.legend(loc="upper left", fontsize=8)
    ece = expected_calibration_error(probs, labels, bins)
    top.set_title(f"{title}\nECE {ece:.4f} ({bins} bins, top-1 confidence)" if title else f"ECE {ece:.4f} ({bins} bins)", fontsize=10)
    bottom.bar(centres, counts, width=width * 0.95, color="#888")
    bottom.set_xlabel("top-1 probability (confidence)")
    bottom.set_ylabel("images")
    return save_png(fig, path)


def plot_selective(probs, labels, path: Path, title: str = "", threshold: float | None = None) -> Path:
    """Coverage-accuracy curve: the top-1 of the answers kept when the least confident are set aside,
    against the share kept; a dot at the model's "not sure" threshold when it has one."""
    from artmove.models.calibration import coverage_curve, kept_at

    coverage, accuracy, _ = (np.asarray(t) for t in coverage_curve(probs, labels))
    fig = Figure(figsize=(5.2, 4.2))
    ax = fig.subplots()
    ax.plot(100 * coverage, accuracy, color="#4f7cc1", linewidth=1.8, label="answers kept, most confident first")
    if len(accuracy):
        ax.axhline(accuracy[-1], color="#888", linestyle=":", linewidth=1, label=f"all answers: top-1 {accuracy[-1]:.3f}")
    if threshold is not None:
        kept = kept_at(probs, labels, threshold)
        if kept["kept"]:
            ax.scatter(
                [100 * kept["coverage"]],
                [kept["top1"]],
                color="#e07a5f",
                zorder=3,
                label=f"not sure below p={threshold:.2f}: {100 * kept['coverage']:.0f} % kept, top-1 {kept['top1']:.3f}",
            )
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("coverage (% of answers kept)")
    ax.set_ylabel("top-1 of the kept answers")
    ax.legend(loc="best", fontsize=8)
    ax.set_title(title or "Selective prediction", fontsize=10)
    return save_png(fig, path)


def plot_sets(probs, labels, path: Path, record: Mapping, title: str = "") -> Path:
    """Mean set size against coverage: the conformal sets of ``record``'s score at levels 50-99 % (thresholds
    taken on these images, so the curve describes them and guarantees nothing), the record's own sets (its
    threshold as fitted), and fixed top-k, k = 1…5."""
    import torch

    from artmove.models.conformal import fit, fixed_k, prediction_sets, set_metrics

    settings = {key: record[key] for key in ("score", "class_conditional", "k_reg", "lam", "seed")}
    curve = [
        set_metrics(prediction_sets(probs, fit(probs, labels, level, split="", **settings)), labels)
        for level in (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.99)
    ]
    own = set_metrics(prediction_sets(probs, dict(record), torch.Generator().manual_seed(record["seed"])), labels)
    fixed = fixed_k(probs, labels)
    fig = Figure(figsize=(5.2, 4.2))
    ax = fig.subplots()
    ax.plot(
        [100 * m["coverage"] for m in curve],
        [m["mean_size"] for m in curve],
        color="#4f7cc1",
        marker=".",
        label=f"{record['score']} sets, thresholds on these images",
    )
    ax.plot(
        [100 * row["coverage"] for row in fixed], [row["k"] for row in fixed], color="#888", marker="s", linestyle="--", label="fixed top-k"
    )
    ax.scatter(
        [100 * own["coverage"]],
        [own["mean_size"]],
        color="#e07a5f",
        zorder=3,
        label=f"{100 * record['coverage']:g} % sets fitted on {record['split']}: "
        f"{100 * own['coverage']:.1f} %, size {own['mean_size']:.2f}",
    )
    ax.axvline(100 * record["coverage"], color="#e07a5f", linestyle=":", linewidth=1)
    ax.set_xlabel("coverage (% of sets holding the true movement)")
    ax.set_ylabel("mean set size (movements)")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(loc="best", fontsize=8)
    ax.set_title(title or "Prediction sets", fontsize=10)
    return save_png(fig, path)
