"""The end of a run: the test table on the console, and results.json for a run that did not finish."""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from artmove.data.splits import describe_overlap
from artmove.runs.folder import RunFolder
from artmove.utils.io import write_text

ROWS = (("Top-1", "top1"), ("Top-3", "top3"), ("Top-5", "top5"), ("Top-1 macro (mean per-class)", "top1_macro"))


def format_table(results: dict[str, Any], split: str = "test") -> str:
    """The test table from ``{split}/top1`` … keys (train's results.json, evaluate's metrics.json)."""
    images = results[f"{split}/num_images"]
    lines = [
        f"{split.capitalize()} split: {images} images, {results['num_classes']} classes; backbone {results['backbone']}, "
        f"unfreeze={results['unfreeze']}, weights: {results['weights_source']}",
        f"  {'Metric':<30}{'Accuracy':>9}{'Images':>9}",
    ]
    lines += [f"  {label:<30}{results[f'{split}/{key}']:>9.4f}{images:>9d}" for label, key in ROWS]
    low, high = results.get(f"{split}/top1_ci95_low"), results.get(f"{split}/top1_ci95_high")
    if low is not None and high is not None:
        lines.append(f"  Top-1 bootstrap 95% interval [{low:.4f}, {high:.4f}] (resampling the {images} test images)")
    lines += trust_lines(results, split)
    overlap = results.get("artist_overlap")
    if overlap and "unknown" in overlap:
        lines.append(f"  Artist overlap with train: unknown ({overlap['unknown']})")
    elif overlap and split in overlap:
        lines.append(f"  Artist overlap with train, {describe_overlap(split, overlap[split])}")
    return "\n".join(lines)


def trust_lines(results: dict[str, Any], split: str) -> list[str]:
    """Calibration (ECE over 15 bins of top-1 confidence, NLL; before temperature scaling too) and the
    answers kept at the "not sure" threshold, when the results have them."""
    lines = []
    ece, nll = results.get(f"{split}/ece"), results.get(f"{split}/nll")
    if ece is not None and nll is not None:
        floor, p = results.get(f"{split}/ece_floor"), results.get(f"{split}/ece_p")
        reference = f"; a calibrated model shows {floor:.4f} on these images, p={p:.2f}" if floor is not None and p is not None else ""
        line = f"  Calibration: ECE {ece:.4f} (15 bins{reference}), NLL {nll:.4f}"
        temperature = (results.get("calibration") or {}).get("temperature")
        raw_ece, raw_nll = results.get(f"{split}/ece_uncalibrated"), results.get(f"{split}/nll_uncalibrated")
        if temperature is not None and raw_ece is not None and raw_nll is not None:
            line += f"; raw logits: ECE {raw_ece:.4f}, NLL {raw_nll:.4f} (temperature {temperature:.3f}, fitted on validation)"
        lines.append(line)
    abstain, coverage, top1 = results.get("abstain") or {}, results.get(f"{split}/abstain_coverage"), results.get(f"{split}/abstain_top1")
    if abstain.get("threshold") is not None and coverage is not None:
        kept = f"top-1 of the kept answers {top1:.4f}" if top1 is not None and top1 == top1 else "no answer kept"
        chosen = f"chosen on validation for top-1 {abstain['target']:.2f}" if abstain.get("target") is not None else "given"
        lines.append(f"  Not sure below p={abstain['threshold']:.3f} ({chosen}): {split} coverage {100 * coverage:.1f} %, {kept}")
        if abstain.get("reached") is False and abstain.get("target") is not None:
            lines.append(
                f"    no threshold certifies top-1 {abstain['target']:.2f} on the {abstain.get('images', '?')} validation paintings: every "
                "answer is marked not sure; lower abstain_target (e.g. abstain_target=0.8), validate on more paintings, "
                "or abstain_target=null"
            )
    return lines


def sets_line(results: dict[str, Any], split: str = "test") -> str | None:
    """The run's prediction sets on ``split`` in one line (evaluate prints its own, with the interval), None without sets."""
    sets, coverage, size = results.get("conformal") or {}, results.get(f"{split}/set_coverage"), results.get(f"{split}/set_size")
    if not sets or coverage is None or size is None:
        return None
    return (
        f"  {100 * sets['coverage']:.0f} % prediction sets ({sets['score']}, fitted on {sets['images']} {sets['split']} paintings): "
        f"{split} coverage {100 * coverage:.1f} %, mean size {size:.2f} movements"
    )


def job_settings(cfg: DictConfig) -> dict[str, Any]:
    """The settings that tell jobs of a sweep apart (read defensively: the config may be the error)."""
    settings = {
        key: OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False)
        for key in ("backbone", "unfreeze", "pretrained", "seed", "data.root")
    }
    source = OmegaConf.select(cfg, "data.source._target_", default=None, throw_on_resolution_failure=False)
    root = settings.pop("data.root")
    return {**settings, "data": {"source": source, "root": root}, "overrides": job_overrides()}


def job_overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def record_failure(run: RunFolder, error: BaseException, cfg: DictConfig) -> Path:
    """Write ``results.json`` with ``"status": "failed"`` and the error, and the traceback beside it."""
    write_text(run.traceback_file, "".join(traceback.format_exception(error)))
    return record_unfinished(run, "failed", cfg, error=f"{type(error).__name__}: {error}", traceback=run.traceback_file.name)


def record_unfinished(run: RunFolder, status: str, cfg: DictConfig, **details: Any) -> Path:
    """Write ``results.json`` with this ``status`` ("failed", "interrupted") and ``details``; a folder
    whose results.json already holds a finished run's results keeps them, and gets ``<status>.json``."""
    results = {"status": status, **details, **job_settings(cfg), "output_dir": str(run.path)}
    return run.write_results(results, status_file=run.finished)
