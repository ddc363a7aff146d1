"""`python -m artmove.evaluate ckpt_path=…`: the top-1/3/5 table, per-class scores and confusions of a
checkpoint; with ``gallery=N`` the N highest-loss paintings (with Grad-CAM) and a grid per confused pair."""

from __future__ import annotations

import logging
import time
from datetime import datetime
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from artmove.data.sources.base import SPLITS
from artmove.data.transforms import eval_input_size
from artmove.errors import ConfigError
from artmove.evaluation.classes import label_map, load_class_map
from artmove.evaluation.data import evaluation_data
from artmove.evaluation.gallery import write_gallery
from artmove.evaluation.inference import MappedViews, predict_split
from artmove.evaluation.metrics import PER_CLASS_COLUMNS, Scores, score
from artmove.evaluation.plots import plot_confusion_matrix
from artmove.evaluation.tables import markdown_table, write_csv
from artmove.evaluation.tta import TTA_MODES, check_tta, eval_transform, tta_transform
from artmove.models.preprocessing import check_image_size
from artmove.models.trained import load_trained
from artmove.runs.checkpoints import evaluation_folder, resolve_checkpoint
from artmove.runs.results import format_table
from artmove.utils.cli import exit_on_user_error
from artmove.utils.config import check_whole, require_settings
from artmove.utils.io import write_json

log = logging.getLogger("artmove.evaluate")
PAIR_COLUMNS = ("class_a", "class_b", "a_as_b", "b_as_a", "total", "a_as_b_share", "b_as_a_share")


def eval_dir(ckpt_path: str | None, split: str, tta: str, data: str | None = None, image_size: int | None = None) -> str:
    """``<run>/eval/test``, ``<run>/eval/test-wikiart-flip``, ``<run>/eval/test-288px``: evaluations live beside their run
    (a sweep folder's: beside the sweep). Without an existing checkpoint (the command then stops with an
    error): ``outputs/evaluate/<time>``."""
    folder = evaluation_folder(ckpt_path)
    if folder is None:
        return f"outputs/evaluate/{datetime.now():%Y-%m-%d/%H-%M-%S}"
    parts = [split] + ([data] if data not in (None, "None", "null") else []) + ([tta] if tta != "none" else [])
    parts += [f"{image_size}px"] if image_size not in (None, "None", "null") else []
    return str(folder / "-".join(parts))


OmegaConf.register_new_resolver("artmove.eval_dir", eval_dir, replace=True)


def eval_preprocessing(preprocessing: dict, image_size: int | None) -> dict:
    """The checkpoint's preprocessing, evaluated at ``image_size`` when given (its own eval size otherwise)."""
    check_image_size("image_size", image_size, "the checkpoint's own")
    if image_size is None:
        return preprocessing
    return {**preprocessing, "test_input_size": [3, image_size, image_size]}


def split_overlap(datamodule, split: str) -> dict | None:
    """The evaluated split's overlap with the training artists (None for train and generated data)."""
    overlap = datamodule.artist_overlap
    if overlap is None or split == "train":
        return None
    return overlap if "unknown" in overlap else {split: overlap[split]}


def evaluate(cfg: DictConfig) -> dict:
    """Evaluate ``cfg.ckpt_path`` on one split; write the tables and figure to ``cfg.output_dir``."""
    started = time.time()
    require_settings(cfg)
    check_tta(cfg.tta)
    if cfg.split not in SPLITS:
        raise ConfigError(f"split={cfg.split!r}: use one of {', '.join(SPLITS)}.")
    check_whole("batch_size", cfg.batch_size)
    check_whole("num_workers", cfg.num_workers, minimum=0)
    check_whole("gallery", cfg.gallery, minimum=0)
    checkpoint = resolve_checkpoint(cfg.ckpt_path)
    trained = load_trained(checkpoint.file, cfg.device)
    preprocessing = eval_preprocessing(trained.preprocessing, cfg.image_size)
    classes = trained.class_names
    datamodule = evaluation_data(cfg, checkpoint.run, preprocessing)
    mapping = label_map(datamodule.classes, classes, load_class_map(cfg.class_map))
    # The split as training saw it (screened, grouped by artist); originals, so predictions.csv names them.
    split = datamodule.images(cfg.split, use_cache=False)
    dataset = MappedViews(split, tta_transform(preprocessing, cfg.tta), mapping)
    log.info("%s split: %d images (%d dropped by class_map), tta=%s", cfg.split, len(dataset), len(split) - len(dataset), cfg.tta)
    if not len(dataset):
        raise ConfigError(f"the {cfg.split} split has no images to evaluate ({len(split)} before class_map): choose another split=.")
    probs, labels = predict_split(trained.network, dataset, cfg.batch_size, cfg.num_workers)

    scores = score(probs, labels, classes, cfg.split, cfg.top_confused)
    pairs = scores.most_confused
    results = {
        "checkpoint": str(checkpoint.file.resolve()),
        "backbone": trained.backbone,
        "head": trained.network.spec["head"],
        "unfreeze": trained.finetune.get("unfreeze"),
        "weights_source": trained.network.weights_source,
        "pretrained_cfg": trained.network.pretrained_cfg,
        "split": cfg.split,
        "tta": cfg.tta,
        "image_size": eval_input_size(preprocessing)[1],
        "views_per_image": TTA_MODES[cfg.tta],
        "data": {"source": type(datamodule.source).__name__, "root": datamodule.root},
        "artist_overlap": split_overlap(datamodule, cfg.split),
        "num_classes": len(classes),
        "classes": classes,
        "class_map": {name: None if target is None else classes[target] for name, target in zip(datamodule.classes, mapping)},
        **scores.summary,
        "dropped_images": len(split) - len(dataset),
        "most_confused": pairs,
        "wall_time_s": round(time.time() - started, 1),
    }
    write_outputs(Path(cfg.output_dir), results, scores, probs, labels, dataset)
    figures = []
    if cfg.gallery:
        images = MappedViews(split, eval_transform(preprocessing), mapping)  # the crops the model saw, one view
        figures = write_gallery(trained.network, preprocessing, images, probs, labels, classes, pairs[: cfg.gallery_pairs], cfg.gallery,
                                Path(cfg.output_dir))  # fmt: skip
    print(format_table(results, split=cfg.split), flush=True)
    print(f"  test-time augmentation: {cfg.tta} ({TTA_MODES[cfg.tta]} view(s) per image)", flush=True)
    if pairs:
        top = pairs[0]
        print(f"  most confused: {top['class_a']} <-> {top['class_b']} ({top['a_as_b']} + {top['b_as_a']} images)")
    if figures:
        print(f"  gallery: {', '.join(str(path.relative_to(cfg.output_dir)) for path in figures)}")
    print(f"Outputs: {cfg.output_dir}", flush=True)
    return results


def write_outputs(out: Path, results: dict, scores: Scores, probs, labels, dataset: MappedViews) -> None:
    classes, split, counts, per_class = results["classes"], results["split"], scores.counts, scores.per_class
    write_json(out / "metrics.json", results)
    write_csv(out / "per_class.csv", per_class, PER_CLASS_COLUMNS)
    write_csv(out / "confused_pairs.csv", results["most_confused"], PAIR_COLUMNS)
    write_csv(out / "confusion_matrix.csv", [{"true": name, **dict(zip(classes, row))} for name, row in zip(classes, counts.tolist())], ["true", *classes])
    top = probs.max(1)
    predictions = [
        {"path": dataset.path(i), "true": classes[label], "predicted": classes[pred], "p_predicted": float(p),
         "p_true": float(probs[i, label]), "correct": int(label == pred)}
        for i, (label, pred, p) in enumerate(zip(labels.tolist(), top.indices.tolist(), top.values.tolist()))
    ]  # fmt: skip
    write_csv(out / "predictions.csv", predictions, ["path", "true", "predicted", "p_predicted", "p_true", "correct"])
    title = f"{results['backbone']} on {split} ({results[f'{split}/num_images']} images), tta={results['tta']}: % of each true class"
    plot_confusion_matrix(counts.numpy(), classes, out / "confusion_matrix.png", title)
    markdown = [
        f"# Evaluation of {results['checkpoint']}", "", "```", format_table(results, split=split), "```", "",
        "## Per class", "", "`accuracy` is the class's top-1 accuracy (= recall); top-1 macro is its mean.", "",
        markdown_table(per_class, PER_CLASS_COLUMNS), "",
        "## Most confused pairs", "", "Images of A predicted as B and of B predicted as A.", "",
        markdown_table(results["most_confused"], PAIR_COLUMNS), "", "![confusion matrix](confusion_matrix.png)", "",
    ]  # fmt: skip
    (out / "per_class.md").write_text("\n".join(markdown), encoding="utf-8")


@hydra.main(version_base="1.3", config_path="pkg://artmove.conf", config_name="evaluate")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
