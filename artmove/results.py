"""The end of a run: the seed's table on the console and results.json on disk."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

ROWS = (("Top-1", "top1"), ("Top-3", "top3"), ("Top-5", "top5"), ("Top-1 macro (mean per-class)", "top1_macro"))


def format_table(results: dict[str, Any], split: str = "test") -> str:
    """The seed's table from ``{split}/top1`` … keys (train's results.json, evaluate's metrics.json)."""
    images = results[f"{split}/num_images"]
    lines = [
        f"{split.capitalize()} split: {images} images, {results['num_classes']} classes; backbone {results['backbone']}, "
        f"unfreeze={results['unfreeze']}, weights: {results['weights_source']}",
        f"  {'Metric':<30}{'Accuracy':>9}{'Images':>9}",
    ]
    lines += [f"  {label:<30}{results[f'{split}/{key}']:>9.4f}{images:>9d}" for label, key in ROWS]
    return "\n".join(lines)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write atomically: a crash never leaves a half-written results file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)
