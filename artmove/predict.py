"""`python -m artmove.predict ckpt_path=… input=PATH`: the top-k movements of new paintings, each marked
uncertain when its top probability is below the model's "not sure" threshold (or ``uncertain_below=``).
``ckpt_path=[a,b]`` or a sweep folder with ``ensemble=all|top3``: an ensemble's averaged probabilities."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from artmove.data.inputs import list_inputs
from artmove.data.transforms import decode_size, eval_input_size
from artmove.errors import ConfigError
from artmove.evaluation.gradcam import grad_cam, overlay, to_pil
from artmove.evaluation.inference import ImageFiles, predict_files
from artmove.evaluation.tta import TTA_MODES, check_tta, eval_transform, views_transform
from artmove.models import conformal
from artmove.models.calibration import check_threshold
from artmove.runs.checkpoints import open_run
from artmove.utils.cli import exit_on_user_error
from artmove.utils.config import check_whole, require_settings
from artmove.utils.io import printable, write_json
from artmove.utils.limits import check_batch
from artmove.utils.tables import write_csv

log = logging.getLogger("artmove.predict")


def predict(cfg: DictConfig) -> dict:
    """Predict every readable input: check the settings, open the run, predict, print, save; return
    ``{"predictions": [...], "skipped": [...]}``."""
    check_settings(cfg)
    paths = list_inputs(cfg.input)
    opened = open_run(cfg.ckpt_path, cfg.get("ensemble"))
    if cfg.explain and opened.is_ensemble:
        raise ConfigError("explain=true draws one network's Grad-CAM: predict with a member of the ensemble for it.")
    trained = opened.load(cfg.device)
    network, preprocessing, classes = trained.network, trained.preprocessing, trained.class_names
    views = TTA_MODES[cfg.tta] * (len(preprocessing) if isinstance(preprocessing, list) else 1)
    check_batch("batch_size", cfg.batch_size, max(max(eval_input_size(p)[1:]) for p in _each(preprocessing)), views)
    threshold = cfg.get("uncertain_below") if cfg.get("uncertain_below") is not None else trained.threshold
    sets_record = conformal.read_file(cfg.conformal, len(classes)) if cfg.get("conformal") else trained.conformal
    dataset = ImageFiles(paths, views_transform(preprocessing, cfg.tta), decode_size(preprocessing))
    probs, readable, errors = predict_files(network, dataset, cfg.batch_size, cfg.num_workers)
    predictions = answers(probs, [paths[index] for index in readable], classes, int(cfg.top_k), threshold, sets_record)
    skipped = [{"path": str(paths[index]), "error": message} for index, message in sorted(errors.items())]
    out = Path(cfg.output_dir)
    if cfg.explain and predictions and isinstance(preprocessing, dict):  # one network (an ensemble was refused above)
        targets = probs.argmax(1)
        explain(network, preprocessing, [paths[i] for i in readable], targets, out / "explain", cfg.batch_size)
        for item, name in zip(predictions, _unique_names([paths[i] for i in readable]), strict=True):
            item["explanation"] = str(out / "explain" / f"{name}.gradcam.png")
    print_predictions(predictions, skipped, threshold, sets_record)
    if not predictions:
        raise ConfigError(f"none of the {len(paths)} input file(s) could be read as an image (see above).")
    if cfg.save == "csv":
        save_csv(out / "predictions.csv", predictions)
    elif cfg.save == "json":
        sets_from = None if sets_record is None else (str(cfg.conformal) if cfg.get("conformal") else "the checkpoint's")
        members = [str(path) for path in opened.files]
        payload = {
            "checkpoint": members[0] if len(members) == 1 else members,
            "tta": cfg.tta,
            "uncertain_below": threshold,
            "threshold_from": threshold_source(trained, cfg.get("uncertain_below")),
            "conformal": sets_record,
            "sets_from": sets_from,
            "predictions": predictions,
            "skipped": skipped,
        }
        write_json(out / "predictions.json", payload)
        print(f"Predictions: {out / 'predictions.json'}")
    return {"predictions": predictions, "skipped": skipped}


def save_csv(path: Path, predictions: list[dict[str, Any]]) -> None:
    """predictions.csv: a row per painting and rank, its movement and probability, "not sure" and the set."""
    rows = [
        {
            "path": p["path"],
            "rank": rank,
            **top,
            "uncertain": _flag(p.get("uncertain")),
            "set": "; ".join(p["set"]) if "set" in p else None,
        }
        for p in predictions
        for rank, top in enumerate(p["top"], start=1)
    ]
    print(f"Predictions: {write_csv(path, rows, ['path', 'rank', 'movement', 'probability', 'uncertain', 'set'])}")


def check_settings(cfg: DictConfig) -> None:
    """Every setting of the command, one line each, before the inputs are listed or the checkpoint read."""
    require_settings(cfg)
    check_tta(cfg.tta)
    if cfg.save not in (None, "csv", "json"):
        raise ConfigError(f"save={cfg.save!r}: use csv, json or null.")
    check_batch("batch_size", cfg.batch_size, None)
    check_whole("num_workers", cfg.num_workers, minimum=0)
    check_whole("top_k", cfg.top_k)
    check_threshold("uncertain_below", cfg.get("uncertain_below"))


def answers(
    probs: torch.Tensor, paths: list[Path], classes: list[str], top_k: int, threshold: float | None, sets_record: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """Each painting's top-k movements, whether it is "not sure" (below ``threshold``) and its prediction set."""
    best = probs.topk(max(1, min(top_k, len(classes))), dim=1)
    mask = conformal.prediction_sets(probs, sets_record) if sets_record is not None else None
    return [
        {
            "path": str(path),
            "top": [
                {"movement": classes[c], "probability": float(p)}
                for c, p in zip(best.indices[row].tolist(), best.values[row].tolist(), strict=True)
            ],
            **({"uncertain": bool(best.values[row, 0] < threshold)} if threshold is not None else {}),
            **({"set": conformal.movements(mask[row], probs[row], classes)} if mask is not None else {}),
        }
        for row, path in enumerate(paths)
    ]


def _each(preprocessing: dict | list[dict]) -> list[dict]:
    return preprocessing if isinstance(preprocessing, list) else [preprocessing]


def threshold_source(trained, uncertain_below) -> str | None:
    """Where the "not sure" threshold comes from, in words (None: there is none)."""
    if uncertain_below is not None:
        return "uncertain_below="
    if trained.threshold is None:
        return None
    abstain = trained.abstain
    return (
        f"chosen on validation for top-1 {abstain['target']} (abstain_target)" if abstain.get("target") is not None else "the checkpoint's"
    )


def _flag(uncertain: bool | None) -> int | None:
    return None if uncertain is None else int(uncertain)


def print_predictions(predictions: list[dict], skipped: list[dict], threshold: float | None = None, sets: dict | None = None) -> None:
    for item in predictions:
        note = f"   (not sure: below p={threshold:.3f})" if item.get("uncertain") else ""
        print(printable(item["path"]) + note)
        for rank, top in enumerate(item["top"], start=1):
            print(f"  {rank}. {top['movement']:<32}{top['probability']:.4f}")
        if sets is not None:
            print(f"  {conformal.label(sets)}: {', '.join(item['set']) or '(empty: no movement conforms)'}")
    for item in skipped:
        print(f"skipped (unreadable) {printable(item['error'])}", file=sys.stderr)
    unsure = sum(1 for item in predictions if item.get("uncertain"))
    marked = f"; {unsure} marked not sure (top probability below {threshold:.3f})" if threshold is not None else ""
    print(f"{len(predictions)} image(s) predicted, {len(skipped)} skipped (unreadable){marked}.", flush=True)


def explain(network, preprocessing: dict, paths: list[Path], targets: torch.Tensor, folder: Path, batch_size: int) -> None:
    """A Grad-CAM overlay PNG per image, for its top-1 class, on the eval crop the network saw."""
    folder.mkdir(parents=True, exist_ok=True)
    dataset = ImageFiles(paths, eval_transform(preprocessing), decode_size(preprocessing))
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=lambda batch: torch.stack([image for image, _ in batch]))
    names, device = iter(_unique_names(paths)), next(network.parameters()).device
    for start, images in zip(range(0, len(paths), batch_size), loader, strict=True):
        cams = grad_cam(network, images.to(device), targets[start : start + len(images)].to(device))
        for image, cam in zip(images, cams, strict=True):
            overlay(to_pil(image, preprocessing["mean"], preprocessing["std"]), cam).save(folder / f"{next(names)}.gradcam.png")


def _unique_names(paths: list[Path]) -> list[str]:
    seen: dict[str, int] = {}
    names = []
    for path in paths:
        count = seen[path.stem] = seen.get(path.stem, 0) + 1
        names.append(path.stem if count == 1 else f"{path.stem}-{count}")
    return names


@hydra.main(version_base="1.3", config_path="pkg://artmove.conf", config_name="predict")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    predict(cfg)


if __name__ == "__main__":
    main()
