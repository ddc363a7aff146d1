"""The numeric check of an export: each written file run on real paintings against the PyTorch model."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from artmove.release.formats import Runner


@torch.no_grad()
def compare(network: nn.Module, runners: Mapping[str, Runner], images: torch.Tensor, batch_size: int = 8) -> dict[str, dict]:
    """For each format: images, max abs logit difference and top-1 agreement with ``network``.

    Batches of ``batch_size`` (and a shorter last one) also exercise the exported batch dimension.
    """
    batches = images.split(batch_size)
    reference = torch.cat([network(batch) for batch in batches]).numpy()
    results = {}
    for name, run in runners.items():
        logits = np.concatenate([run(batch) for batch in batches])
        agree = logits.argmax(1) == reference.argmax(1)
        results[name] = {
            "images": len(images),
            "max_abs_logit_diff": float(np.abs(logits - reference).max()),
            "top1_agreement": float(agree.mean()),
            "top1_disagreements": int((~agree).sum()),
        }
    return results


def failures(checks: Mapping[str, dict], atol: float) -> list[str]:
    """One phrase per format whose top-1 differs on any image or whose logits differ by more than ``atol``."""
    return [
        f"{name}: top-1 differs on {row['top1_disagreements']} of {row['images']} images, "
        f"max abs logit diff {row['max_abs_logit_diff']:.2e}"
        for name, row in checks.items()
        if row["top1_disagreements"] or row["max_abs_logit_diff"] > atol
    ]
