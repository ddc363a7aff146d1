"""The model card (``README.md``) of an export: huggingface_hub's ``ModelCard``, its metadata
(``ModelCardData``: library, tags, base model, and the test scores as ``model-index`` evaluation results
the Hub displays) and a body from the run's results.json, saved config and evaluation."""

from __future__ import annotations

import csv
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from artmove.data.transforms import eval_input_size
from artmove.evaluation.plots import display_name
from artmove.models.conformal import describe as describe_sets
from artmove.runs.facts import RunFacts
from artmove.runs.plain import select
from artmove.runs.results import ROWS
from artmove.utils.tables import cell, markdown_table, markdown_text

CHECK_COLUMNS = ("format", "file", "images", "max_abs_logit_diff", "top1_agreement")
CHECK_HEADERS = ("format", "file", "images", "max abs logit diff", "top-1 identical")
PER_CLASS_COLUMNS = ("class", "support", "accuracy", "top3_accuracy", "precision", "recall", "f1")
PER_CLASS_HEADERS = ("movement", "test images", "accuracy", "top-3 accuracy", "precision", "recall", "F1")


def write_card(
    facts: RunFacts, out: Path, checks: Mapping[str, dict], files: Mapping[str, str], hub_repo: str | None, timm_layout: bool
) -> Path:
    """``out/README.md``, with the evaluation's confusion-matrix figure copied beside it; ``timm_layout``: the
    weights folder is timm's own (a linear head), which timm loads alone."""
    figure = None
    if facts.evaluation is not None and (facts.evaluation / "confusion_matrix.png").is_file():
        figure = shutil.copy(facts.evaluation / "confusion_matrix.png", out / "confusion_matrix.png")
    model = ensemble_section(facts) if facts.members else model_section(facts)
    sections = [
        title(facts),
        usage(hub_repo, timm_layout, files),
        model,
        data_section(facts),
        settings_section(facts),
        results_section(facts, figure is not None),
        trust_section(facts),
        checks_section(checks, files),
        limitations(facts),
    ]
    card = ModelCard(f"---\n{card_data(facts, timm_layout).to_yaml()}\n---\n\n" + "\n\n".join(sections) + "\n")
    path = out / "README.md"
    card.save(path)
    return path


def card_data(facts: RunFacts, timm_layout: bool) -> ModelCardData:
    """The card's metadata: timm's library tag when timm loads the folder alone, the ImageNet weights it
    started from, and the test scores as the Hub's ``model-index`` evaluation results."""
    metrics, _ = facts.test_metrics
    name = f"{facts.backbone} art movements ({markdown_text(data_name(facts))})"
    dataset = markdown_text(data_name(facts))
    results = [
        EvalResult(
            task_type="image-classification",
            dataset_type=dataset,
            dataset_name=dataset,
            dataset_split="test",
            metric_type=kind,
            metric_name=label,
            metric_value=round(float(metrics[f"test/{key}"]), 4),
        )
        for label, key, kind in METRIC_TYPES
        if f"test/{key}" in metrics
    ]
    return ModelCardData(
        library_name="timm" if timm_layout else None,
        pipeline_tag="image-classification",
        tags=["image-classification", *(["timm"] if timm_layout else []), "art", "artmove"],
        base_model=f"timm/{timm_tag(facts.backbone)}" if pretrained_weights(facts) == "timm" else None,
        model_name=name,
        eval_results=results or None,
    )


#: The test metrics as model-index results: (name, results.json key, Hub metric type).
METRIC_TYPES = (
    ("Top-1", "top1", "accuracy"),
    ("Top-3", "top3", "top_3_accuracy"),
    ("Top-5", "top5", "top_5_accuracy"),
    ("Top-1 macro (mean per-class)", "top1_macro", "balanced_accuracy"),
)


def _setting(facts: RunFacts, key: str, default: Any = None) -> Any:
    """A setting of the run's saved config as written (an interpolation, never resolved, reads as unknown)."""
    value = select(facts.config, key)
    return default if value is None or (isinstance(value, str) and "${" in value) else value


def data_name(facts: RunFacts) -> str:
    root = (facts.results.get("data") or {}).get("root") or _setting(facts, "data.root")
    source = (facts.results.get("data") or {}).get("source") or _setting(facts, "data.source._target_") or "?"
    return Path(str(root)).name if root else str(source).rsplit(".", 1)[-1]


def timm_tag(backbone: str) -> str:
    """The exact timm weights a backbone name means: ``resnet50`` -> ``resnet50.a1_in1k``."""
    import timm

    try:
        config = timm.models.get_pretrained_cfg(backbone)
    except RuntimeError:
        config = None
    if config is None or not getattr(config, "tag", None):
        return backbone
    architecture = backbone.split(".", 1)[0]
    return f"{architecture}.{config.tag}"


def title(facts: RunFacts) -> str:
    count = len(facts.class_names)
    if facts.members:
        return (
            f"# {facts.backbone}: art movement of a painting ({count} movements, {markdown_text(data_name(facts))})\n\n"
            f"{len(facts.members)} networks fine-tuned with artmove to name the art movement of a painting among the {count} "
            f"movements of the {markdown_text(data_name(facts))} data set, their calibrated probabilities averaged."
        )
    return (
        f"# {facts.backbone}: art movement of a painting ({count} movements, {markdown_text(data_name(facts))})\n\n"
        f"A {facts.backbone} fine-tuned with artmove to name the art movement of a painting "
        f"among the {count} movements of the {markdown_text(data_name(facts))} data set, "
        f"trained from checkpoint {markdown_text(facts.checkpoint.name)}."
    )


def usage(hub_repo: str | None, timm_layout: bool, files: Mapping[str, str]) -> str:
    where = f"hf-hub:{hub_repo}" if hub_repo else "local-dir:PATH/TO/THIS/FOLDER"
    artmove = f'With artmove (top-k, test-time augmentation, Grad-CAM): `Predictor.from_export("{where.split(":", 1)[1]}")`.'
    onnx = (
        f" Without Python, `{files['onnx']}` runs in onnxruntime (input: the preprocessed image, as in `config.json`)."
        if "onnx" in files
        else ""
    )
    if not timm_layout:
        return f"""## How to use

This network's head (pools several stages, or second-order statistics) is artmove's, not timm's: load the folder
with artmove, which rebuilds it from `config.json` alone. {artmove}{onnx}"""
    return f"""## How to use

With timm alone (the class names and the preprocessing are in `config.json`):

```python
import timm, torch
from PIL import Image

model = timm.create_model("{where}", pretrained=True).eval()
transform = timm.data.create_transform(**timm.data.resolve_model_data_config(model))
with torch.no_grad():
    probs = model(transform(Image.open("painting.jpg").convert("RGB"))[None]).softmax(-1)[0]
print(model.pretrained_cfg["label_names"][int(probs.argmax())], float(probs.max()))
```

{artmove}{onnx}"""


def pretrained_weights(facts: RunFacts) -> str:
    """``timm`` (ImageNet weights as timm names them), ``file``, ``none`` or ``unknown``: the run's settings
    (a loaded checkpoint's hparams say pretrained=false, as loading it needs no weights)."""
    weights = facts.results.get("weights_source") or ""
    pretrained = facts.results.get("pretrained", _setting(facts, "pretrained"))
    if weights.startswith("file") or _setting(facts, "weights"):
        return "file"
    if weights == "random init" or pretrained is False:
        return "none"
    return "timm" if pretrained or weights else "unknown"


def model_section(facts: RunFacts) -> str:
    results, pre = facts.results, facts.preprocessing
    size = eval_input_size(pre)
    weights = {
        "file": f"from a file ({results.get('weights_source') or _setting(facts, 'weights')})",
        "none": "none (random initialisation)",
        "timm": f"ImageNet, timm `{timm_tag(facts.backbone)}`"
        + (f" (loaded from: {results['weights_source']})" if results.get("weights_source") else ""),
        "unknown": "unknown (the run folder has neither results.json nor .hydra/config.yaml)",
    }[pretrained_weights(facts)]
    policy, unfreeze = facts.finetune.get("name", "?"), facts.finetune.get("unfreeze")
    head = facts.spec["head"]
    rows = [
        ("Backbone", f"`{facts.backbone}` (timm)"),
        ("Head", f"{head['name']}" + "".join(f", {key}={value}" for key, value in head.items() if key != "name")),
        ("Pretrained weights", weights),
        (
            "Fine-tuning",
            f"{policy}"
            + (f", unfreeze={unfreeze}" if unfreeze is not None else "")
            + (
                f": {results['trained_layers']} of {results['total_layers']} weighted layers trained" if "trained_layers" in results else ""
            ),
        ),
        ("Parameters", f"{results['total_params']:,} ({results['trainable_params']:,} trained)" if "total_params" in results else "–"),
        (
            "Input",
            f"{size[1]}x{size[2]} RGB, resize ({pre['interpolation']}) to input / crop_pct "
            f"{pre['crop_pct']} then centre crop, mean {list(pre['mean'])}, std {list(pre['std'])}"
            + (f" (trained on {pre['input_size'][1]}x{pre['input_size'][2]} crops)" if list(size) != list(pre["input_size"]) else ""),
        ),
        ("Output", f"{len(facts.class_names)} logits, one per movement (`label_names` in config.json)"),
    ]
    return "## Model\n\n" + _pairs(rows)


def generated(facts: RunFacts) -> bool:
    """Trained on images the data source draws (synthetic), not on files: no artists, no paintings."""
    data = facts.results.get("data") or {}
    return not (data.get("root") or _setting(facts, "data.root")) and (bool(data) or facts.config is not None)


def ensemble_section(facts: RunFacts) -> str:
    """An ensemble's members, one row each, and what the files compute."""
    assert facts.members is not None  # the card writes this section for an ensemble only
    rows = [
        {
            "checkpoint": f"`{Path(m['checkpoint']).parent.parent.name}/{Path(m['checkpoint']).name}`",
            "backbone": m["backbone"],
            "head": m["head"]["name"],
            "seed": m["seed"],
            "temperature": m["temperature"],
            "val": m["best_val/top1"],
        }
        for m in facts.members
    ]
    return (
        "## Model\n\nAn ensemble: each member divides its logits by its own temperature (fitted on validation when it was "
        "trained), the softmax probabilities are averaged, and the files output the log of that average divided by the "
        "ensemble's own temperature, log-softmaxed (its softmax is the calibrated average; its argmax the answer).\n\n"
        + markdown_table(
            rows,
            ("checkpoint", "backbone", "head", "seed", "temperature", "val"),
            ("member", "backbone", "head", "seed", "temperature", "best validation top-1"),
        )
    )


def trust_section(facts: RunFacts) -> str:
    """Calibration (temperature, ECE and NLL before and after), the "not sure" threshold and the prediction
    sets, chosen on validation and measured on test."""
    metrics, _ = facts.test_metrics
    rows = []
    calibration = facts.calibration
    if calibration:
        divided = "the log of the members' averaged probabilities" if facts.members else "the logits"
        rows += [
            (
                "Temperature",
                f"{calibration['temperature']:.3f}: fitted on {calibration['images']} validation paintings (LBFGS on the "
                f"NLL, Guo et al. 2017); {divided} of every file here are divided by it",
            ),
            ("Validation ECE (15 bins)", f"{_n(calibration['val/ece_before'])} before, {_n(calibration['val/ece_after'])} after"),
            ("Validation NLL", f"{_n(calibration['val/nll_before'])} before, {_n(calibration['val/nll_after'])} after"),
        ]
    if facts.members:
        rows.append(("Temperatures", ", ".join(f"{m['temperature']:.3f}" for m in facts.members) + " (each member's own)"))
    if metrics.get("test/ece") is not None:
        raw, before = metrics.get("test/ece_uncalibrated"), "the plain average" if facts.members else "raw logits"
        rows.append(("Test ECE (15 bins)", f"{metrics['test/ece']:.4f}" + (f" ({before}: {raw:.4f})" if raw is not None else "")))
        floor, p = metrics.get("test/ece_floor"), metrics.get("test/ece_p")
        if floor is not None and p is not None:
            rows.append(
                (
                    "Test ECE of a calibrated model",
                    f"{floor:.4f} on as many paintings with the same confidences (mean of 1000 "
                    f"draws); {100 * p:.0f} % of those draws reach the ECE above",
                )
            )
    abstain = facts.abstain
    if abstain and abstain.get("threshold") is not None:
        if abstain.get("reached"):
            coverage = abstain["val/coverage"]
            chosen = (
                f"p < {abstain['threshold']:.3f}: the lowest top-1 probability at which the validation answers kept reach top-1 "
                f"{_n(abstain['target'], '.2f')} ({_n(None if coverage is None else 100 * coverage, '.0f')} % of {abstain['images']} "
                "validation paintings kept)"
            )
        else:
            chosen = (
                f"no threshold reaches top-1 {_n(abstain['target'], '.2f')} on validation: every answer short of p=1 is marked not sure"
            )
        rows.append(('"Not sure" threshold', chosen))
        coverage, top1 = metrics.get("test/abstain_coverage"), metrics.get("test/abstain_top1")
        if coverage is not None:
            kept = f"top-1 {top1:.4f}" if top1 is not None and top1 == top1 else "no answer kept"
            rows.append(
                (
                    "Test, answers at or above it",
                    f"{100 * coverage:.1f} % of the test paintings, {kept} (measured on test, "
                    "after the threshold was chosen on validation)",
                )
            )
        if abstain.get("guarantee"):
            rows.append(('"Not sure" guarantee', abstain["guarantee"]))
    if facts.conformal:
        rows.append(
            (
                "Prediction sets",
                f"{describe_sets(facts.conformal)}: on paintings drawn like the {facts.conformal['split']} split "
                "(exchangeable), the set holds the true movement at least that often",
            )
        )
        coverage, size = metrics.get("test/set_coverage"), metrics.get("test/set_size")
        if coverage is not None and size is not None:
            rows.append(("Test, prediction sets", f"coverage {100 * coverage:.1f} %, mean size {size:.2f} movements (measured on test)"))
    if not rows:
        return (
            "## Calibration\n\nNot calibrated (trained with `calibrate=false`, or before artmove calibrated): "
            "the probabilities are the raw softmax."
        )
    return '## Calibration and "not sure"\n\n' + _pairs(rows)


def _n(value: Any, spec: str = ".4f") -> str:
    """A number of a record read from a file, or "–" where it holds none."""
    return "–" if value is None else format(value, spec)


def data_section(facts: RunFacts) -> str:
    data = facts.results.get("data") or {}
    sizes = data.get("split_sizes") or {}
    source = str(data.get("source") or _setting(facts, "data.source._target_")).rsplit(".", 1)[-1]
    name = data_name(facts)
    if generated(facts):
        by_artist = "not applicable: generated images, no artists"
    elif _setting(facts, "data.group_by") == "artist":
        by_artist = "yes: each artist in one split (data.group_by=artist)"
    else:
        by_artist = "no: the data set's own split, an artist can be in training and test"
    rows = [
        ("Data set", name if name == source else f"{name} (`{source}`)")
        if not generated(facts)
        else ("Data set", f"{name} (generated by artmove, no files)"),
        ("Split sizes", ", ".join(f"{split} {count}" for split, count in sizes.items()) or "–"),
        ("Split by artist", by_artist),
    ]
    if facts.split_artists:
        shared, total = facts.split_artists["shared_with_train"], facts.split_artists["test_artists"]
        rows.append(("Test artists also in training", f"{shared} of {total}"))
    movements = ", ".join(markdown_text(display_name(name)) for name in facts.class_names)
    return "## Training data\n\n" + _pairs(rows) + f"\n\nMovements (as the data set spells them): {movements}."


def settings_section(facts: RunFacts) -> str:
    hp, results = facts.hparams, facts.results
    optimizer = hp.get("optimizer") or {}
    scheduler = hp.get("scheduler") or {}
    rows = [
        ("Optimizer", ", ".join(f"{k}={v}" for k, v in optimizer.items()) or "–"),
        ("Scheduler", ", ".join(f"{k}={v}" for k, v in scheduler.items()) or "–"),
        ("Epochs", results.get("epochs", _setting(facts, "trainer.max_epochs", "–"))),
        ("Batch size", _setting(facts, "data.batch_size", "–")),
        ("Seed", results.get("seed", _setting(facts, "seed", "–"))),
    ]
    for key, value in [
        *((key, hp.get(key)) for key in ("label_smoothing", "mixup", "cutmix", "ema_decay")),
        *((key, facts.spec.get(key)) for key in ("drop_rate", "drop_path_rate")),
    ]:
        if value:
            rows.append((key, value))
    if results.get("best_val/top1") is not None:
        rows.append(("Best validation top-1", f"{results['best_val/top1']:.4f}"))
    return "## Training settings\n\n" + _pairs(rows)


def results_section(facts: RunFacts, with_figure: bool) -> str:
    metrics, source = facts.test_metrics
    if "test/top1" not in metrics:
        return "## Results\n\nNot tested: the run has no test scores (`test=false`) and no `python -m artmove.evaluate` output beside it."
    images = metrics.get("test/num_images")
    rows = [{"metric": label, "value": metrics[f"test/{key}"]} for label, key in ROWS]
    text = [f"## Results on the test split\n\n{images} test images; scores from {source}.\n", markdown_table(rows, ("metric", "value"))]
    per_class = facts.evaluation / "per_class.csv" if facts.evaluation is not None else None
    if per_class is not None and per_class.is_file():
        with per_class.open(encoding="utf-8") as handle:
            table = [{**{k: _number(v) for k, v in row.items()}, "class": display_name(row["class"])} for row in csv.DictReader(handle)]
        text += [
            "\n### Per movement\n\n`accuracy` is the movement's top-1 accuracy (its recall); their mean is top-1 macro.\n",
            markdown_table(table, PER_CLASS_COLUMNS, PER_CLASS_HEADERS),
        ]
    if with_figure:
        text.append("\n![Confusion matrix on the test split](confusion_matrix.png)")
    return "\n".join(text)


def checks_section(checks: Mapping[str, dict], files: Mapping[str, str]) -> str:
    if not checks:
        return "## Export checks\n\nNot run (check_images=0)."
    rows = [
        {
            "format": name,
            "file": f"`{files[name]}`",
            "images": row["images"],
            "max_abs_logit_diff": f"{row['max_abs_logit_diff']:.1e}",
            "top1_agreement": f"{row['top1_agreement']:.0%}",
        }
        for name, row in checks.items()
    ]
    first = next(iter(checks.values()))
    return (
        f"## Export checks\n\nEach file run on {first['images']} test paintings against the PyTorch checkpoint "
        "(max abs logit difference, share of images with the same top-1):\n\n" + markdown_table(rows, CHECK_COLUMNS, CHECK_HEADERS)
    )


def limitations(facts: RunFacts) -> str:
    name, count = markdown_text(data_name(facts)), len(facts.class_names)
    if generated(facts):
        return f"""## Intended use and limitations

- A demonstration: trained on artmove's generated images ({name}), not on paintings. Its answers on real
  paintings mean little; train on a painting data set (e.g. data=rasta) for a model to use.
- It always answers one of its {count} classes, however unlike them the image is."""
    return f"""## Intended use and limitations

- For exploring and cataloguing collections: a first suggestion of a painting's movement, to be checked by a person.
- The labels are movements as {name} spells and assigns them (one per painting); movements overlap,
  an artist's work spans several, and the boundaries are the data set's, not a consensus of art history.
- {artist_overlap(facts)}
- It has seen only the {name} images (for WikiArt-based sets: reproductions of mostly Western
  paintings); photographs, drawings and other traditions are outside them, and it always answers one of its
  {count} movements, however unlike them the image is.
- Check the licences of the training images before any commercial use."""


def artist_overlap(facts: RunFacts) -> str:
    """What the split's artists mean for the scores: measured from the file names where possible."""
    inflated = "so the scores above partly measure recognising an artist's hand and overstate accuracy on unseen artists."
    if _setting(facts, "data.group_by") == "artist":
        return "The test split keeps each artist apart from training (data.group_by=artist): the scores are for unseen artists."
    if facts.split_artists is None:
        return f"The split does not keep artists apart: the same artist may appear in training and test, {inflated}"
    shared, total = facts.split_artists["shared_with_train"], facts.split_artists["test_artists"]
    if not shared:
        return f"None of the {total} test artists appears in training: the scores are for unseen artists."
    return f"{shared} of the {total} test artists also appear in training, {inflated}"


def _pairs(rows) -> str:
    return markdown_table([{"k": k, "v": cell(v)} for k, v in rows], ("k", "v"), headers=("", ""))


def _number(value: str) -> Any:
    try:
        return int(value)
    except ValueError:
        try:
            return float(value) if value else None
        except ValueError:
            return value
