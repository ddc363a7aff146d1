"""`python -m artmove.evaluate ckpt_path=…`: the top-1/3/5 table, per-class scores and confusions of a
checkpoint (or of an ensemble: ``ckpt_path=[a,b]``, a sweep folder with ``ensemble=all|top3``), how
calibrated its probabilities are (ECE, NLL, reliability diagram) and how accurate its most confident
answers are (coverage-accuracy); with ``gallery=N`` the N highest-loss paintings (with Grad-CAM) and a
grid per confused pair."""

from __future__ import annotations

import logging
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from artmove.data.sources.base import SPLITS
from artmove.data.transforms import decode_size, eval_input_size
from artmove.errors import ConfigError
from artmove.evaluation.classes import label_map, load_class_map
from artmove.evaluation.data import evaluation_data
from artmove.evaluation.gallery import write_gallery
from artmove.evaluation.inference import MappedViews, predict_split
from artmove.evaluation.metrics import PER_CLASS_COLUMNS, Scores, score
from artmove.evaluation.plots import plot_confusion_matrix, plot_reliability, plot_selective, plot_sets
from artmove.evaluation.tta import TTA_MODES, check_tta, eval_transform, views_transform
from artmove.models import conformal
from artmove.models.calibration import (
    accuracy_at_coverage,
    calibration_scores,
    check_threshold,
    ece_reference,
    kept_at,
    threshold_for_target,
)
from artmove.models.ensemble import TrainedEnsemble
from artmove.models.preprocessing import check_image_size
from artmove.runs.checkpoints import home_folder, open_run
from artmove.runs.results import format_table
from artmove.utils.cli import exit_on_user_error
from artmove.utils.config import check_whole, require_settings
from artmove.utils.io import write_json
from artmove.utils.limits import check_batch
from artmove.utils.tables import markdown_table, markdown_text, write_csv

log = logging.getLogger("artmove.evaluate")
PAIR_COLUMNS = ("class_a", "class_b", "a_as_b", "b_as_a", "total", "a_as_b_share", "b_as_a_share")
SELECTIVE_COLUMNS = ("coverage", "kept", "threshold", "top1")


def eval_dir(
    ckpt_path: str | None, split: str, tta: str, data: str | None = None, image_size: int | str | None = None, ensemble: str | None = None
) -> str:
    """``<run>/eval/test``, ``<run>/eval/test-wikiart-flip``, ``<run>/eval/test-288px``: evaluations live beside their run
    (a sweep folder's: beside the sweep; ``ensemble=top3`` of a sweep: ``<sweep>/eval/test-ensemble_top3``). Without
    an existing checkpoint (the command then stops with an error) or for a list ``ckpt_path=[a,b]``:
    ``outputs/evaluate/<time>``."""
    home = home_folder(ckpt_path)
    if home is None:
        return f"outputs/evaluate/{datetime.now():%Y-%m-%d/%H-%M-%S}"
    parts = [split] + ([data] if data not in (None, "None", "null") else []) + ([tta] if tta != "none" else [])
    parts += [f"{image_size}px"] if image_size not in (None, "None", "null") else []
    parts += [f"ensemble_{ensemble}"] if ensemble not in (None, "None", "null") else []
    return str(home / "eval" / "-".join(parts))


OmegaConf.register_new_resolver("artmove.eval_dir", eval_dir, replace=True)


def eval_preprocessing(preprocessing: dict | list[dict], image_size: int | None) -> dict | list[dict]:
    """The checkpoint's preprocessing (an ensemble's: each member's), evaluated at ``image_size`` when given
    (its own eval size otherwise)."""
    check_image_size("image_size", image_size, "the checkpoint's own")
    if image_size is None:
        return preprocessing
    if isinstance(preprocessing, list):
        return [{**member, "test_input_size": [3, image_size, image_size]} for member in preprocessing]
    return {**preprocessing, "test_input_size": [3, image_size, image_size]}


def model_threshold(trained, uncertain_below) -> dict | None:
    """The "not sure" threshold in force: ``uncertain_below=`` when given, else the one the checkpoint's run
    chose on validation (an ensemble's: its own, fitted when it was opened)."""
    if uncertain_below is not None:
        return {"threshold": float(uncertain_below), "target": None, "chosen_on": "uncertain_below="}
    return trained.abstain if trained.threshold is not None else None


def describe_model(trained) -> dict:
    """What metrics.json says of the model: one checkpoint's network, or each member of an ensemble."""
    if isinstance(trained, TrainedEnsemble):
        members = trained.members
        return {
            "checkpoint": [str(path.resolve()) for path in trained.checkpoints],
            "backbone": trained.backbone,
            "head": trained.heads,
            "unfreeze": [m.finetune.get("unfreeze") for m in members],
            "weights_source": [m.network.weights_source for m in members],
            "pretrained_cfg": [m.network.pretrained_cfg for m in members],
            "ensemble": {
                "members": len(members),
                "temperatures": [float(m.network.temperature) for m in members],
                "averaged": "calibrated probabilities",
                "temperature": float(trained.network.temperature),
            },
        }
    return {
        "checkpoint": str(trained.checkpoint.resolve()),
        "backbone": trained.backbone,
        "head": trained.network.spec["head"],
        "unfreeze": trained.finetune.get("unfreeze"),
        "weights_source": trained.network.weights_source,
        "pretrained_cfg": trained.network.pretrained_cfg,
    }


def trust_results(trained, probs, labels, split: str, tta: str, threshold: dict | None, target: float | None) -> dict:
    """ECE (with what a calibrated model would show on these images) and NLL (and of the raw logits, for one
    calibrated network without TTA), the selective table,
    the coverage and top-1 at the threshold in force, and the threshold this split would choose for ``target``."""
    results: dict[str, Any] = {f"{split}/{key}": value for key, value in calibration_scores(probs, labels).items()}
    results.update({f"{split}/{key}": value for key, value in ece_reference(probs, labels).items()})
    temperature = float(trained.network.temperature)  # an ensemble's own: "uncalibrated" is then the plain average
    if trained.calibration:
        results["calibration"] = trained.calibration
    if temperature != 1.0 and tta == "none":  # softmax(T log p) is the raw softmax, exactly, for one view
        raw = calibration_scores((temperature * probs.clamp_min(1e-38).log()).softmax(1), labels)
        results.update({f"{split}/{key}_uncalibrated": value for key, value in raw.items()})
    results["selective"] = accuracy_at_coverage(probs, labels)
    if threshold is not None:
        kept = kept_at(probs, labels, threshold["threshold"])
        results.update(
            {"abstain": threshold, f"{split}/abstain_coverage": kept["coverage"], f"{split}/abstain_top1": _finite(kept["top1"])}
        )
    if target is not None:
        chosen = threshold_for_target(probs, labels, float(target))
        results["threshold_for_target"] = {**{key: _finite(value) for key, value in chosen.items()}, "chosen_on": split}
    return results


def set_results(trained, probs, labels, split: str, settings: dict, per_class: list[dict], seed) -> dict:
    """The prediction sets on this split: fitted here (``conformal.fit=true``, then in-sample: the coverage is the
    fit's, not a test of it) or the model's record; coverage with its exact binomial 95 % interval, set sizes,
    coverage per class (into ``per_class``, ``set_coverage``) and the worst class, and the smallest fixed top-k
    that covers as often. {} without sets."""
    if settings.get("fit", False):
        record = conformal.fit(
            probs,
            labels,
            float(settings.get("coverage", 0.9)),
            settings.get("score", "aps"),
            bool(settings.get("class_conditional", False)),
            int(settings.get("k_reg", 1)),
            float(settings.get("lam", 0.0)),
            split,
            int(seed) if seed is not None else 0,
        )
    else:
        record = trained.conformal
    if record is None:
        return {}
    metrics = conformal.set_metrics(conformal.prediction_sets(probs, record), labels, probs)
    classes = trained.class_names
    coverage = dict(zip(classes, metrics["per_class"], strict=True))
    for row in per_class:  # the table's rows: only classes with images or predictions, so matched by name
        row["set_coverage"] = coverage[row["class"]]
    return {
        "conformal": record,
        "conformal_fitted_here": bool(settings.get("fit", False)),
        f"{split}/set_coverage": metrics["coverage"],
        f"{split}/set_coverage_low": metrics["coverage_low"],
        f"{split}/set_coverage_high": metrics["coverage_high"],
        f"{split}/set_size": metrics["mean_size"],
        f"{split}/set_fixed_k": metrics["fixed_k"],
        f"{split}/set_worst_coverage": metrics["worst_coverage"],
        "set_worst_class": None if metrics["worst_class"] is None else classes[metrics["worst_class"]],
        "set_sizes": metrics["size_histogram"],
    }


def sets_line(results: dict) -> str:
    """The prediction sets in one line: coverage (interval), mean size against fixed top-k, the worst class."""
    split, record = results["split"], results["conformal"]
    worst = results[f"{split}/set_worst_coverage"]
    line = (
        f"  {conformal.label(record)}s ({record['score']}{', per movement' if record['class_conditional'] else ''}, fitted on "
        f"{record['split']}{' — this split: in-sample' if results['conformal_fitted_here'] else ''}): coverage "
        f"{100 * results[f'{split}/set_coverage']:.1f} % (95 % CI {100 * results[f'{split}/set_coverage_low']:.1f}-"
        f"{100 * results[f'{split}/set_coverage_high']:.1f}), mean size {results[f'{split}/set_size']:.2f} "
        f"(fixed top-{results[f'{split}/set_fixed_k']} covers as often)"
    )
    if worst is not None:
        line += f"; worst movement {results['set_worst_class']} {100 * worst:.1f} %"
    sizes = results["set_sizes"]
    return line + "\n  set sizes: " + ", ".join(f"{size}: {count}" for size, count in enumerate(sizes) if count)


def _finite(value):
    """NaN (no answer kept) as None: metrics.json holds plain JSON numbers."""
    return None if isinstance(value, float) and value != value else value


def split_overlap(datamodule, split: str) -> dict | None:
    """The evaluated split's overlap with the training artists (None for train and generated data)."""
    overlap = datamodule.artist_overlap
    if overlap is None or split == "train":
        return None
    return overlap if "unknown" in overlap else {split: overlap[split]}


def evaluate(cfg: DictConfig) -> dict:
    """Evaluate ``cfg.ckpt_path`` on one split: check the settings, open the run, predict the split, score it,
    write the tables and figures to ``cfg.output_dir`` and print the summary."""
    started = time.time()
    sets_cfg = check_settings(cfg)
    opened = open_run(cfg.ckpt_path, cfg.get("ensemble"))
    if cfg.gallery and opened.is_ensemble:
        raise ConfigError("gallery= explains one network's mistakes with Grad-CAM: evaluate a member of the ensemble for it.")
    trained = opened.load(cfg.device)
    preprocessing = eval_preprocessing(trained.preprocessing, cfg.image_size)
    reading = preprocessing if isinstance(preprocessing, dict) else max(preprocessing, key=decode_size)
    members = len(preprocessing) if isinstance(preprocessing, list) else 1
    check_batch("batch_size", cfg.batch_size, max(eval_input_size(reading)[1:]), TTA_MODES[cfg.tta] * members)
    datamodule = evaluation_data(cfg, opened, trained, reading)  # the data set (and its split seed) of the first member's run
    mapping = label_map(datamodule.classes, trained.class_names, load_class_map(cfg.class_map))
    # The split as training saw it (screened, grouped by artist); originals, so predictions.csv names them.
    split = datamodule.images(cfg.split, use_cache=False)
    dataset = MappedViews(split, views_transform(preprocessing, cfg.tta), mapping)
    log.info("%s split: %d images (%d dropped by class_map), tta=%s", cfg.split, len(dataset), len(split) - len(dataset), cfg.tta)
    if not len(dataset):
        raise ConfigError(f"the {cfg.split} split has no images to evaluate ({len(split)} before class_map): choose another split=.")
    probs, labels = predict_split(trained.network, dataset, cfg.batch_size, cfg.num_workers)
    scores = score(probs, labels, trained.class_names, cfg.split, cfg.top_confused)
    results = {
        **describe_model(trained),
        **what_was_evaluated(cfg, preprocessing, datamodule, mapping, trained.class_names),
        **scores.summary,
        **trust_results(
            trained, probs, labels, cfg.split, cfg.tta, model_threshold(trained, cfg.get("uncertain_below")), cfg.get("abstain_target")
        ),
        **set_results(trained, probs, labels, cfg.split, sets_cfg, scores.per_class, cfg.get("seed")),
        "dropped_images": len(split) - len(dataset),
        "most_confused": scores.most_confused,
        "wall_time_s": round(time.time() - started, 1),
    }
    write_outputs(Path(cfg.output_dir), results, scores, probs, labels, dataset)
    figures = []
    if cfg.gallery and isinstance(preprocessing, dict):  # one network (an ensemble's gallery was refused above)
        images = MappedViews(split, eval_transform(preprocessing), mapping)  # the crops the model saw, one view
        pairs = scores.most_confused[: cfg.gallery_pairs]
        figures = write_gallery(
            trained.network, preprocessing, images, probs, labels, trained.class_names, pairs, cfg.gallery, Path(cfg.output_dir)
        )
    print_summary(results, figures, Path(cfg.output_dir))
    return results


def what_was_evaluated(cfg: DictConfig, preprocessing: dict | list[dict], datamodule, mapping: list, classes: list[str]) -> dict:
    """The split, its views and image size, the data set and its artist overlap with train, the classes and their map."""
    sizes = [eval_input_size(p)[1] for p in ([preprocessing] if isinstance(preprocessing, dict) else preprocessing)]
    return {
        "split": cfg.split,
        "tta": cfg.tta,
        "image_size": sizes[0] if isinstance(preprocessing, dict) else sizes,
        "views_per_image": TTA_MODES[cfg.tta],
        "data": {"source": type(datamodule.source).__name__, "root": datamodule.root},
        "artist_overlap": split_overlap(datamodule, cfg.split),
        "num_classes": len(classes),
        "classes": classes,
        "class_map": {name: None if target is None else classes[target] for name, target in zip(datamodule.classes, mapping, strict=True)},
    }


def check_settings(cfg: DictConfig) -> dict:
    """Every setting of the command, one line each, before the checkpoint is read; returns the ``conformal`` settings."""
    require_settings(cfg)
    check_tta(cfg.tta)
    if cfg.split not in SPLITS:
        raise ConfigError(f"split={cfg.split!r}: use one of {', '.join(SPLITS)}.")
    check_batch("batch_size", cfg.batch_size, cfg.image_size)
    check_whole("num_workers", cfg.num_workers, minimum=0)
    check_whole("gallery", cfg.gallery, minimum=0)
    check_threshold("uncertain_below", cfg.get("uncertain_below"))
    if cfg.get("abstain_target") is not None:
        check_threshold("abstain_target", cfg.abstain_target)
    sets_cfg = dict(cfg.get("conformal") or {})
    if not isinstance(sets_cfg.get("fit", False), bool):
        raise ConfigError(
            f"conformal.fit={sets_cfg.get('fit')!r}: give true (fit the prediction sets on this split, into conformal.json) or false."
        )
    conformal.check_settings(
        sets_cfg.get("coverage", 0.9),
        sets_cfg.get("score", "aps"),
        sets_cfg.get("class_conditional", False),
        sets_cfg.get("k_reg", 1),
        sets_cfg.get("lam", 0.0),
        "conformal.",
    )
    return sets_cfg


def print_summary(results: dict, figures: list[Path], out: Path) -> None:
    """The table, the test-time augmentation, the most confident answers, the prediction sets, the most confused pair."""
    split, pairs = results["split"], results["most_confused"]
    print(format_table(results, split=split), flush=True)
    print(f"  test-time augmentation: {results['tta']} ({results['views_per_image']} view(s) per image)", flush=True)
    print(selective_line(results), flush=True)
    if results.get("conformal"):
        print(sets_line(results), flush=True)
    if pairs:
        top = pairs[0]
        print(f"  most confused: {top['class_a']} <-> {top['class_b']} ({top['a_as_b']} + {top['b_as_a']} images)")
    if figures:
        print(f"  gallery: {', '.join(str(path.relative_to(out)) for path in figures)}")
    print(f"Outputs: {out}", flush=True)


def selective_line(results: dict) -> str:
    """The selective table in one line, and the threshold this split would choose for abstain_target."""
    rows = ", ".join(f"{100 * row['coverage']:.0f} % {row['top1']:.3f}" for row in results["selective"])
    line = f"  top-1 of the most confident answers, by coverage: {rows}"
    chosen = results.get("threshold_for_target")
    if chosen and chosen["reached"]:
        line += (
            f"\n  on this split ({chosen['chosen_on']}), answers at p >= {chosen['threshold']:.3f} reach top-1 {chosen['target']:.2f} "
            f"({100 * chosen['coverage']:.1f} % kept)" + ("" if chosen["chosen_on"] == "val" else ": choose a threshold on split=val")
        )
    elif chosen:
        line += f"\n  on this split, no threshold reaches top-1 {chosen['target']:.2f}"
    return line


def write_outputs(out: Path, results: dict, scores: Scores, probs: torch.Tensor, labels: torch.Tensor, dataset: MappedViews) -> None:
    """metrics.json, the tables (CSV), the figures and per_class.md in ``out``."""
    write_json(out / "metrics.json", results)
    write_tables(out, results, scores, probs, labels, dataset)
    write_figures(out, results, scores, probs, labels)
    write_markdown(out, results, scores.per_class)


def per_class_columns(results: dict) -> tuple[str, ...]:
    return PER_CLASS_COLUMNS + (("set_coverage",) if results.get("conformal") else ())


def write_tables(out: Path, results: dict, scores: Scores, probs: torch.Tensor, labels: torch.Tensor, dataset: MappedViews) -> None:
    """per_class, confused_pairs, confusion_matrix (counts), predictions (with "not sure" when a threshold is in
    force), probabilities and selective, as CSV."""
    classes, counts = results["classes"], scores.counts.tolist()
    write_csv(out / "per_class.csv", scores.per_class, per_class_columns(results))
    write_csv(out / "confused_pairs.csv", results["most_confused"], PAIR_COLUMNS)
    matrix = [{"true": name, **dict(zip(classes, row, strict=True))} for name, row in zip(classes, counts, strict=True)]
    write_csv(out / "confusion_matrix.csv", matrix, ["true", *classes])
    top = probs.max(1)
    threshold = (results.get("abstain") or {}).get("threshold")
    rows = zip(labels.tolist(), top.indices.tolist(), top.values.tolist(), strict=True)
    predictions = [
        {
            "path": dataset.path(i),
            "true": classes[label],
            "predicted": classes[pred],
            "p_predicted": float(p),
            "p_true": float(probs[i, label]),
            "correct": int(label == pred),
            **({"uncertain": int(p < threshold)} if threshold is not None else {}),
        }
        for i, (label, pred, p) in enumerate(rows)
    ]
    columns = ["path", "true", "predicted", "p_predicted", "p_true", "correct"] + (["uncertain"] if threshold is not None else [])
    write_csv(out / "predictions.csv", predictions, columns)
    probabilities = [
        {"path": dataset.path(i), "true": classes[label], **{c: f"{p:.9g}" for c, p in zip(classes, row, strict=True)}}
        for i, (label, row) in enumerate(zip(labels.tolist(), probs.tolist(), strict=True))
    ]
    write_csv(out / "probabilities.csv", probabilities, ["path", "true", *classes])
    write_csv(out / "selective.csv", results["selective"], SELECTIVE_COLUMNS)


def write_figures(out: Path, results: dict, scores: Scores, probs: torch.Tensor, labels: torch.Tensor) -> None:
    """The confusion matrix, the reliability diagram, coverage and accuracy, the prediction sets (and the sets
    fitted here, conformal.json)."""
    split, classes = results["split"], results["classes"]
    what = f"{results['backbone']} on {split} ({results[f'{split}/num_images']} images)"
    plot_confusion_matrix(
        scores.counts.numpy(), classes, out / "confusion_matrix.png", f"{what}, tta={results['tta']}: % of each true class"
    )
    plot_reliability(probs, labels, out / "calibration.png", f"Reliability: {what}")
    plot_selective(probs, labels, out / "selective.png", f"Coverage and accuracy: {what}", (results.get("abstain") or {}).get("threshold"))
    sets = results.get("conformal")
    if sets:
        plot_sets(probs, labels, out / "sets.png", sets, f"Prediction sets: {what}")
        if results["conformal_fitted_here"]:
            write_json(out / "conformal.json", {"conformal": sets, "checkpoint": results["checkpoint"], "classes": classes})


def write_markdown(out: Path, results: dict, per_class: list[dict]) -> None:
    """per_class.md: the table, per class, the most confused pairs, calibration, the most confident answers, the sets."""
    split = results["split"]
    selective_headers = ("coverage", "answers kept", "lowest probability kept", "top-1")
    markdown = f"""# Evaluation of {markdown_text(results["checkpoint"])}

```
{format_table(results, split=split)}
```

## Per class

`accuracy` is the class's top-1 accuracy (= recall); top-1 macro is its mean.

{markdown_table(per_class, per_class_columns(results))}

## Most confused pairs

Images of A predicted as B and of B predicted as A.

{markdown_table(results["most_confused"], PAIR_COLUMNS)}

![confusion matrix](confusion_matrix.png)

## Calibration

ECE {results[f"{split}/ece"]:.4f} (15 equal-width bins of top-1 confidence), NLL {results[f"{split}/nll"]:.4f}.

![reliability diagram](calibration.png)

## The most confident answers

Top-1 of the answers kept when the least confident are set aside.

{markdown_table(results["selective"], SELECTIVE_COLUMNS, selective_headers)}

![coverage and accuracy](selective.png)
"""
    if results.get("conformal"):
        markdown += f"""
## Prediction sets

{sets_line(results).strip()}

`set_coverage` (per class above): the share of the class's paintings whose set holds it.

![prediction sets](sets.png)
"""
    (out / "per_class.md").write_text(markdown, encoding="utf-8")


@hydra.main(version_base="1.3", config_path="pkg://artmove.conf", config_name="evaluate")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
