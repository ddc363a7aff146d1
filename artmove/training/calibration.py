"""When training ends: temperature scaling (``calibrate=true``) and the "not sure" threshold
(``abstain_target=0.9``), fitted on the validation split and written into the checkpoints that ship.

Which checkpoints: the one the run tests (its best epoch, or its final weights with
``callbacks=final_weights``) and ``last.ckpt`` when it holds other weights (one fit per distinct
epoch and step). Each is fitted on the validation logits of its own weights, computed here with the
temperature at 1, then the fit goes into that checkpoint, before the test reads it.

Where it is kept: **inside the checkpoint file** (``checkpoint["artmove"]``: the network spec's
``temperature``, and the ``calibration`` and ``abstain`` records), not beside it. A checkpoint travels
alone (copied, moved, given to evaluate, predict, export or the demo page as a file); a record beside
it would be left behind, and the file would silently give uncalibrated probabilities. Rewriting is
safe at this point: the checkpoint callbacks have finished writing when fit returns, and each file is
rewritten atomically (read with ``weights_only``, the records set, written beside it, fsynced, then
renamed over it): a crash leaves the earlier, valid file, whose next run calibrates it again. Nothing
else in the file changes, so ``resume`` still continues from it.

A resumed run trains on raw logits (the temperature is no part of the state dict Lightning restores,
and a new network starts at 1) and is fitted again when it ends; a rerun of a finished run fits the
same weights again, to the same temperature.
"""

from __future__ import annotations

import itertools
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytorch_lightning as pl
import torch

from artmove.errors import ConfigError
from artmove.models import conformal
from artmove.models.calibration import calibration_scores, fit_temperature, guaranteed_threshold
from artmove.runs.folder import LAST_CHECKPOINT
from artmove.utils.config import is_number
from artmove.utils.io import atomic_write, read_checkpoint

if TYPE_CHECKING:  # the model this calibrates (imported for its type only: the classifier module is heavy)
    from artmove.models.classifier import ArtClassifier

log = logging.getLogger(__name__)


def check_trust_settings(calibrate: Any, abstain_target: Any) -> None:
    """``calibrate``: true or false; ``abstain_target``: null or a top-1 to reach, in (0, 1]."""
    if not isinstance(calibrate, bool):
        raise ConfigError(f"calibrate={calibrate!r}: give true (temperature scaling on the validation split) or false (raw logits).")
    if abstain_target is not None and (not is_number(abstain_target) or not 0 < abstain_target <= 1):
        raise ConfigError(
            f"abstain_target={abstain_target!r}: give the top-1 the kept answers must reach on validation, "
            "in (0, 1], e.g. 0.9, or null (no threshold)."
        )


def check_conformal_settings(coverage: Any, settings: Any) -> None:
    """``coverage``: null or a share in (0, 1); ``conformal``: its score, class_conditional, k_reg and lam (one line each)."""
    settings = dict(settings or {})
    conformal.check_settings(
        coverage,
        settings.get("score", "aps"),
        settings.get("class_conditional", False),
        settings.get("k_reg", 1),
        settings.get("lam", 0.0),
        "conformal.",
    )


def calibrate_run(
    trainer: pl.Trainer,
    model: ArtClassifier,
    datamodule: pl.LightningDataModule,
    tested: str | None,
    checkpoint_dir: str | None,
    calibrate: bool,
    abstain_target: float | None,
    coverage: float | None = None,
    sets: dict[str, Any] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Fit and record; the model is left with the tested weights' temperature and threshold (the test
    reloads those weights). Returns results.json's ``calibration``, ``abstain`` and ``conformal`` of the tested
    weights (``coverage``: the prediction sets' level, None for none; ``sets``: the ``conformal`` settings)."""
    if not calibrate and abstain_target is None and coverage is None:
        return {}
    settings = {"coverage": coverage, "seed": seed, **dict(sets or {})}
    last = Path(checkpoint_dir) / LAST_CHECKPOINT if checkpoint_dir else None
    files: list[Path | None] = [Path(tested) if tested else None]
    if last is not None and last.is_file() and (tested is None or last.resolve() != Path(tested).resolve()):
        files.append(last)
    fits: dict[Any, dict[str, Any] | None] = {}
    tested_fit: dict[str, Any] | None = None
    # No tested checkpoint: the test reads the weights in memory, which fitting last.ckpt would replace.
    in_memory = {key: value.clone() for key, value in model.state_dict().items()} if tested is None and len(files) > 1 else None
    for path in files:
        checkpoint = read_checkpoint(path) if path is not None else None
        key = "in memory" if checkpoint is None else (checkpoint.get("epoch"), checkpoint.get("global_step"))
        if key not in fits:
            if checkpoint is not None:
                model.load_state_dict(checkpoint["state_dict"])
            logits, labels = validation_logits(trainer, model, datamodule)
            fits[key] = trainer.strategy.broadcast(fit(logits, labels, calibrate, abstain_target, settings), src=0)
        fitted = fits[key]
        if fitted is None:
            log.warning("the validation split has no images: calibration, abstain threshold and prediction sets not fitted")
            return {}
        if path is not None and checkpoint is not None and trainer.is_global_zero:  # a checkpoint is read from a path
            write_into(path, checkpoint, fitted)
        tested_fit = tested_fit or fitted
    assert tested_fit is not None  # files holds the tested weights at least: the loop fitted them or returned
    trainer.strategy.barrier()
    if in_memory is not None:
        model.load_state_dict(in_memory)
    model.set_temperature(tested_fit["calibration"]["temperature"] if tested_fit["calibration"] else 1.0)
    model.calibration, model.abstain, model.conformal = tested_fit["calibration"], tested_fit["abstain"], tested_fit["conformal"]
    describe(tested_fit)
    return {key: value for key, value in tested_fit.items() if value is not None}


@torch.no_grad()
def validation_logits(trainer: pl.Trainer, model: ArtClassifier, datamodule) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw logits (temperature 1) of the validation split as the run validates it (``limit_val_batches``
    honoured), one view each, on the run's device and precision."""
    model.set_temperature(1.0)
    device = trainer.strategy.root_device
    model.to(device).eval()
    loader = datamodule.val_dataloader()
    limit, batches = trainer.limit_val_batches, len(loader)
    if isinstance(limit, int):
        batches = min(batches, limit)
    elif limit is not None:
        batches = int(batches * limit) if limit < 1 else batches
    logits, labels = [], []
    with trainer.precision_plugin.forward_context():
        for images, targets in itertools.islice(loader, batches):
            logits.append(model(images.to(device)).float().cpu())
            labels.append(targets)
    if not logits:
        return torch.empty(0, 0), torch.empty(0, dtype=torch.long)
    return torch.cat(logits), torch.cat(labels).long()


def fit(
    logits: torch.Tensor, labels: torch.Tensor, calibrate: bool, abstain_target: float | None, sets: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """``{"calibration": …, "abstain": …, "conformal": …}`` from raw validation logits (None: no images); ``sets``:
    coverage (None: no prediction sets), seed and the ``conformal`` settings."""
    if not len(labels):
        return None
    calibration = None
    temperature = 1.0
    if calibrate:
        temperature = fit_temperature(logits, labels)
        before, after = calibration_scores(logits.softmax(1), labels), calibration_scores((logits / temperature).softmax(1), labels)
        calibration = {
            "temperature": temperature,
            "method": "temperature scaling, LBFGS on the validation NLL",
            "fitted_on": "val",
            "images": len(labels),
            "val/ece_before": before["ece"],
            "val/ece_after": after["ece"],
            "val/nll_before": before["nll"],
            "val/nll_after": after["nll"],
        }
    abstain = None
    if abstain_target is not None:
        chosen = guaranteed_threshold((logits / temperature).softmax(1), labels, float(abstain_target))
        abstain = {
            "target": chosen["target"],
            "threshold": chosen["threshold"],
            "reached": chosen["reached"],
            "chosen_on": "val",
            "images": len(labels),
            "val/coverage": chosen["coverage"],
            "val/top1": chosen["top1"],
            "rule": "Learn then Test: fixed-sequence, one-sided Clopper-Pearson bound of the kept answers' error",
            "level": chosen["level"],
            "val/error_upper": chosen["error_upper"],
            "guarantee": guarantee(chosen),
        }
    records = {
        key: None if record is None else {k: _finite(v) for k, v in record.items()}
        for key, record in (("calibration", calibration), ("abstain", abstain))
    }
    sets = sets or {}
    records["conformal"] = None
    if sets.get("coverage") is not None:
        records["conformal"] = conformal.fit(
            (logits / temperature).softmax(1),
            labels,
            float(sets["coverage"]),
            sets.get("score", "aps"),
            bool(sets.get("class_conditional", False)),
            int(sets.get("k_reg", 1)),
            float(sets.get("lam", 0.0)),
            "val",
            int(sets.get("seed", 0)),
        )
    return records


def guarantee(chosen: dict[str, Any]) -> str:
    """The abstain threshold's guarantee, in words (or why there is none)."""
    if not chosen["reached"]:
        return (
            f"none: no threshold's kept answers have a {100 * chosen['level']:.0f} % bound within top-1 {chosen['target']:g} on validation"
        )
    return (
        f"with probability >= {100 * chosen['level']:.0f} % over the validation draw, the answers at p >= {chosen['threshold']:.2f} "
        f"reach top-1 >= {chosen['target']:g} on paintings drawn like it"
    )


def _finite(value: Any) -> Any:
    """NaN (no answer kept) as None: results.json and the checkpoint hold plain JSON numbers."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def write_into(path: Path, checkpoint: dict[str, Any], fitted: dict[str, Any]) -> None:
    """The fit into the checkpoint's artmove record, the file replaced atomically (and durably)."""
    record = checkpoint.get("artmove")
    if not isinstance(record, dict) or not isinstance(record.get("network"), dict):
        log.warning("%s has no artmove record: not calibrated", path)
        return
    network = dict(record["network"])
    temperature = fitted["calibration"]["temperature"] if fitted["calibration"] else 1.0
    if temperature == 1:
        network.pop("temperature", None)
    else:
        network["temperature"] = temperature
    record["network"] = network
    for key in ("calibration", "abstain", "conformal"):
        if fitted[key] is None:
            record.pop(key, None)
        else:
            record[key] = fitted[key]
    try:
        with atomic_write(path, "wb", durable=True) as handle:
            torch.save(checkpoint, handle)
    except OSError as error:  # the run's results come first: the file stays as it was, whole
        log.error(
            "could not write the calibration into %s (%s): it keeps the raw logits; rerun the same command to calibrate it",
            path,
            error.strerror or error,
        )


def describe(fitted: dict[str, Any]) -> None:
    calibration, abstain, sets = fitted["calibration"], fitted["abstain"], fitted["conformal"]
    if calibration:
        log.info(
            "temperature scaling on %d validation images: T=%.3f, ECE %.4f -> %.4f, NLL %.4f -> %.4f",
            calibration["images"],
            calibration["temperature"],
            calibration["val/ece_before"],
            calibration["val/ece_after"],
            calibration["val/nll_before"],
            calibration["val/nll_after"],
        )
    if abstain:
        if abstain["reached"]:
            log.info(
                "not sure below p=%.3f: on validation, %.1f%% of the answers reach top-1 %.3f (target %.2f); guarantee: %s",
                abstain["threshold"],
                100 * abstain["val/coverage"],
                abstain["val/top1"],
                abstain["target"],
                abstain["guarantee"],
            )
        else:
            log.warning(
                "abstain_target=%s: no threshold's kept answers reach it with %.0f %% confidence on validation; every answer "
                "short of p=1 is marked not sure",
                abstain["target"],
                100 * abstain["level"],
            )
    if sets:
        log.info(conformal.describe(sets))
