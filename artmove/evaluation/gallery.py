"""The paintings to look at first: the highest-loss images of a split, each beside its Grad-CAM,
and one grid per most-confused class pair (``python -m artmove.evaluate … gallery=N``)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw

from artmove.evaluation.gradcam import grad_cam, overlay, to_pil

TILE = 224  # pixels per painting (and per heat map)
CAPTION = 44  # pixels of text under each tile
PAD = 6
PER_ROW = 4  # entries per row


def losses_of(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each image from its (TTA-averaged) probabilities: ``-log p(true class)``."""
    return -probs[torch.arange(len(labels)), labels].clamp_min(1e-12).log()


def top_losses(probs: torch.Tensor, labels: torch.Tensor, count: int, among: Sequence[int] | None = None) -> list[int]:
    """Positions of the ``count`` highest-loss images (of ``among``, default all), highest first."""
    candidates = torch.as_tensor(list(range(len(labels))) if among is None else list(among), dtype=torch.long)
    if not len(candidates):
        return []
    order = losses_of(probs, labels)[candidates].argsort(descending=True, stable=True)
    return candidates[order[:count]].tolist()


def caption(classes: Sequence[str], probs: torch.Tensor, label: int, loss: float) -> list[str]:
    predicted = int(probs.argmax())
    return [f"true: {classes[label]}", f"pred: {classes[predicted]} p={float(probs[predicted]):.2f} loss={loss:.2f}"]


def grid(entries: Sequence[tuple[list[Image.Image], list[str]]], path: Path) -> Path:
    """Entries (tiles side by side, caption lines under them), ``PER_ROW`` entries a row, as a PNG."""
    width = max(len(tiles) for tiles, _ in entries)
    cell_w, cell_h = width * TILE + (width - 1) * PAD, TILE + CAPTION
    columns, rows = min(PER_ROW, len(entries)), -(-len(entries) // PER_ROW)
    sheet = Image.new("RGB", (columns * (cell_w + PAD) + PAD, rows * (cell_h + PAD) + PAD), "white")
    draw = ImageDraw.Draw(sheet)
    for index, (tiles, lines) in enumerate(entries):
        left, top = PAD + index % PER_ROW * (cell_w + PAD), PAD + index // PER_ROW * (cell_h + PAD)
        for column, tile in enumerate(tiles):
            sheet.paste(tile.convert("RGB").resize((TILE, TILE)), (left + column * (TILE + PAD), top))
        for number, line in enumerate(lines):
            draw.text((left, top + TILE + 4 + 14 * number), line[: cell_w // 6], fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


def write_gallery(
    network,
    preprocessing: Mapping[str, Any],
    dataset,
    probs: torch.Tensor,
    labels: torch.Tensor,
    classes: Sequence[str],
    pairs: Sequence[dict],
    count: int,
    out: Path,
) -> list[Path]:
    """``top_losses.png`` (painting | Grad-CAM of the predicted class, highest loss first) and
    ``confused/<A>__<B>.png`` per most-confused pair (its images either way, highest loss first).

    ``dataset[i]`` is the i-th image through the eval transform (``preprocessing``'s), as ``(tensor, label)``."""
    device = next(network.parameters()).device
    losses = losses_of(probs, labels)
    worst = top_losses(probs, labels, count)
    images = torch.stack([dataset[i][0] for i in worst])
    cams = grad_cam(network, images.to(device), probs[worst].argmax(1).to(device))
    entries = []
    for i, image, cam in zip(worst, images, cams, strict=True):
        painting = to_pil(image, preprocessing["mean"], preprocessing["std"])
        entries.append(([painting, overlay(painting, cam)], caption(classes, probs[i], int(labels[i]), float(losses[i]))))
    written = [grid(entries, out / "top_losses.png")]
    predicted = probs.argmax(1)
    for pair in pairs:
        a, b = classes.index(pair["class_a"]), classes.index(pair["class_b"])
        mistaken = [i for i in range(len(labels)) if (int(labels[i]), int(predicted[i])) in ((a, b), (b, a))]
        chosen = top_losses(probs, labels, count, mistaken)
        if chosen:
            entries = [
                (
                    [to_pil(dataset[i][0], preprocessing["mean"], preprocessing["std"])],
                    caption(classes, probs[i], int(labels[i]), float(losses[i])),
                )
                for i in chosen
            ]
            written.append(grid(entries, out / "confused" / f"{_safe(pair['class_a'])}__{_safe(pair['class_b'])}.png"))
    return written


def _safe(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name)
