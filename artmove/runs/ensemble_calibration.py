"""An ensemble calibrated as one model: its own temperature, prediction sets and "not sure" threshold.

The members' calibrated probabilities, averaged, are under-confident (members that disagree flatten the
mean), and the members' thresholds and sets were fitted for themselves, not for the average. So when an
ensemble is opened (``OpenedRun.load``), it is fitted as one model on the validation split of its first
member's run (the data set that run recorded, rebuilt with its split seed): the temperature on the log of
the averaged probabilities (valid logits), then the sets (the first member's conformal settings, else
``aps`` at 0.9) and, when the members had an ``abstain_target``, the guaranteed threshold, on the
probabilities after that temperature: the same fit as a run's end of training (``artmove.training.calibration.fit``).

The fit is cached as ``<sweep>/eval/ensemble_<all|topK>/calibration.json``, keyed by the members' files
and their modification times (a retrained member is fitted again), and read back as data. A list
``ckpt_path=[a,b]`` has no folder of its own: it is fitted in memory each time. An export keeps the fit
in its config.json (``Predictor.from_export`` reads it there).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from artmove.errors import ConfigError
from artmove.evaluation.classes import label_map
from artmove.evaluation.inference import MappedViews, predict_split
from artmove.evaluation.tta import views_transform
from artmove.models.conformal import checked_record
from artmove.models.ensemble import TrainedEnsemble
from artmove.models.trained import trust_records
from artmove.training.calibration import describe, fit
from artmove.utils.io import write_json

if TYPE_CHECKING:  # artmove.runs.checkpoints imports this module when an ensemble needs it
    from artmove.runs.checkpoints import OpenedRun

log = logging.getLogger(__name__)
CACHE = "calibration.json"
#: The sets an ensemble gets when its first member has none recorded.
DEFAULT_SETS = {"coverage": 0.9, "score": "aps", "class_conditional": False, "k_reg": 1, "lam": 0.0, "seed": 0}


def calibrate_ensemble(trained: TrainedEnsemble, opened: OpenedRun, batch_size: int = 32) -> TrainedEnsemble:
    """``trained`` with its own temperature (in its network), calibration, abstain and conformal records:
    from the cache when it matches these members, else fitted on the first member's validation split."""
    cache = None if opened.home is None or opened.ensemble is None else opened.home / "eval" / f"ensemble_{opened.ensemble}" / CACHE
    key = members_key(trained)
    fitted = read_cache(cache, key, len(trained.class_names)) if cache is not None else None
    if fitted is None:
        fitted = fit_on_validation(trained, opened, batch_size)
        if fitted is None:
            return trained
        if cache is None:
            log.info(
                "the ensemble's temperature, sets and threshold were fitted in memory (a list ckpt_path=[…] has no folder to "
                "keep them in): they are fitted again each time"
            )
        else:
            write_json(cache, {"members": key, **fitted})
            log.info("the ensemble's own calibration is kept in %s", cache)
    apply(trained, fitted)
    return trained


def members_key(trained: TrainedEnsemble) -> list[dict[str, Any]]:
    """The members' files and modification times: what a cached fit belongs to."""
    return [{"file": str(path.resolve()), "mtime_ns": path.stat().st_mtime_ns} for path in trained.checkpoints]


def read_cache(path: Path, key: list[dict[str, Any]], num_classes: int) -> dict[str, Any] | None:
    """The cached fit of these very members, checked as data; None when there is none or it is of other members."""
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        log.warning("%s cannot be read (%s): the ensemble is fitted again", path, error)
        return None
    if not isinstance(value, dict) or value.get("members") != key:
        return None
    calibration, abstain = trust_records(value, path)
    if calibration is None:
        raise ConfigError(f"{path} records no ensemble temperature: it is not one artmove writes; delete it to fit again.")
    return {"calibration": calibration, "abstain": abstain, "conformal": checked_record(value.get("conformal"), path, num_classes)}


def fit_on_validation(trained: TrainedEnsemble, opened: OpenedRun, batch_size: int) -> dict[str, Any] | None:
    """The records, fitted on the first member's validation split (None: no data set recorded, or no images)."""
    settings = opened.data_settings(trained)
    if settings is None:
        log.warning(
            "%s records no data set: the ensemble is not calibrated as one model (temperature 1, no sets or threshold of its own)",
            opened.run.path,
        )
        return None
    datamodule = settings.build(trained.largest_preprocessing)
    split = datamodule.images("val", use_cache=False)
    dataset = MappedViews(split, views_transform(trained.preprocessing, "none"), label_map(datamodule.classes, trained.class_names))
    trained.network.set_temperature(1.0)
    probs, labels = predict_split(trained.network, dataset, batch_size, 0)
    logits = probs.clamp_min(torch.finfo(torch.float32).tiny).log()  # the log of the averaged probabilities: valid logits
    first = trained.members[0]
    targets = [member.abstain["target"] for member in trained.members if member.abstain and member.abstain.get("target") is not None]
    sets = {key: first.conformal[key] for key in DEFAULT_SETS} if first.conformal else dict(DEFAULT_SETS)
    fitted = fit(logits, labels, True, targets[0] if targets else None, sets)
    if fitted is None:
        log.warning("the validation split of %s has no images: the ensemble is not calibrated as one model", opened.run.path)
        return None
    fitted["calibration"]["method"] += ", on the log of the members' averaged probabilities"
    describe(fitted)
    return fitted


def apply(trained: TrainedEnsemble, fitted: dict[str, Any]) -> None:
    trained.network.set_temperature(fitted["calibration"]["temperature"])
    trained.calibration, trained.abstain, trained.conformal = fitted["calibration"], fitted["abstain"], fitted["conformal"]
