"""`python -m artmove.export ckpt_path=… [formats=onnx] [hub=user/repo]`: a checkpoint as a model others can use.

Writes the weights folder (config.json + model.safetensors: timm's own layout for a linear head,
artmove's for the style-aware heads), the chosen extra formats (ONNX, TorchScript, a torch.export
program), a model card (README.md) and export.json (the numeric check of every file against the
checkpoint), then optionally pushes the folder to the Hugging Face Hub.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig

from artmove.data.datamodule import PaintingDataModule
from artmove.data.images import UnreadableImageError, load_rgb
from artmove.data.inputs import list_inputs
from artmove.data.transforms import decode_size, eval_input_size
from artmove.errors import ConfigError, ExportCheckError
from artmove.evaluation.tta import eval_transform
from artmove.models.ensemble import TrainedEnsemble, eval_view
from artmove.models.trained import TrainedModel
from artmove.release.card import write_card
from artmove.release.check import compare, failures
from artmove.release.formats import WeightsFolder
from artmove.release.hub import check_hub_target, push
from artmove.runs.checkpoints import Checkpoint, OpenedRun, open_run
from artmove.runs.facts import RunFacts, test_artists
from artmove.utils.cli import exit_on_user_error
from artmove.utils.config import instantiate_checked, require_settings
from artmove.utils.io import write_json

log = logging.getLogger("artmove.export")
EXPORT_RECORD = "export.json"


def export(cfg: DictConfig) -> dict:
    """Export ``cfg.ckpt_path``; return what export.json records."""
    started = time.time()
    require_settings(cfg)
    opened = open_run(cfg.ckpt_path, cfg.get("ensemble"))
    checkpoints, checkpoint = list(opened.checkpoints), opened.checkpoints[0]
    out = Path(cfg.out) if cfg.out else opened.export_dir
    if out is None:
        raise ConfigError("ckpt_path=[…]: an ensemble of runs has no one folder to export beside: give out=DIR.")
    weights = WeightsFolder()
    formats = [weights, *(instantiate_checked(node, f"formats.{name}") for name, node in (cfg.formats or {}).items())]
    if cfg.hub:
        check_hub_target(cfg.hub)
    check_out_folder(out)
    trained = opened.load("cpu")
    preprocessing = one_input(trained)
    network, classes = trained.network, trained.class_names
    facts = RunFacts.of_ensemble(checkpoints, trained) if isinstance(trained, TrainedEnsemble) else RunFacts.of(checkpoint, trained)
    datamodule = None if cfg.check_input else run_data(opened, trained, preprocessing)  # the check's paintings, the card's artists
    facts.split_artists = test_artists(datamodule)
    images = check_images(cfg, preprocessing, datamodule, opened.run.path)

    staging = out.with_name(out.name + ".partial")  # written whole, then renamed over the previous export
    config = {"label_names": classes, "preprocessing": preprocessing, "calibration": calibration_config(trained)}
    files = write_formats(network, formats, staging, images, config)
    timm_layout = weights.layout == "timm"
    checks = compare(network, {fmt.name: fmt.runner(staging) for fmt in formats}, images) if len(images) else {}
    write_card(facts, staging, checks, files, cfg.hub, timm_layout)
    record = {
        **export_record(trained, checkpoints, config, timm_layout),
        "files": files,
        "checks": checks,
        "check_atol": cfg.check_atol,
        "wall_time_s": round(time.time() - started, 1),
    }
    write_json(staging / EXPORT_RECORD, record)
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    print_checks(out, checks)
    bad = failures(checks, cfg.check_atol)
    if bad:
        raise ExportCheckError(
            f"the export does not reproduce the checkpoint: {'; '.join(bad)}. Files kept in {out} (see {EXPORT_RECORD})."
        )
    if cfg.hub:
        record["hub"] = push(out, cfg.hub, private=cfg.private)
        print(f"Pushed to the Hub: {record['hub']}", flush=True)
    return record


def check_one_input(ensemble: TrainedEnsemble) -> None:
    """One exported graph takes one input: the members must share their eval transform (seeds of one recipe
    do); members that differ are refused, in one line."""
    views = [eval_view(member.preprocessing) for member in ensemble.members]
    if len(set(views)) > 1:
        differ = next(i for i, view in enumerate(views) if view != views[0])
        first, other = ensemble.members[0], ensemble.members[differ]
        raise ConfigError(
            f"the ensemble's members see paintings differently ({first.checkpoint.name}: {_view(views[0])}; "
            f"{other.checkpoint.name}: {_view(views[differ])}), and one exported graph takes one input: export "
            "members that share their preprocessing, or use the ensemble in Python (Predictor.from_checkpoint([...]) "
            "gives each member its own)."
        )


def _view(view: tuple) -> str:
    size, interpolation, mean, std, crop_pct, crop_mode = view
    return f"{size[1]}x{size[2]} px, {interpolation}, crop_pct {crop_pct} ({crop_mode}), mean {list(mean)}, std {list(std)}"


def calibration_config(trained: TrainedModel | TrainedEnsemble) -> dict | None:
    """What config.json (and the ONNX metadata) says of calibration: the temperature(s) the files apply and
    the "not sure" threshold (``uncertain_below``) with where it was chosen, and the prediction sets' record
    (``conformal``: the reader applies it to the probabilities); None for a network never calibrated and without sets."""
    sets = {"conformal": trained.conformal} if trained.conformal is not None else {}
    if isinstance(trained, TrainedEnsemble):
        config = {
            "temperatures": [float(member.network.temperature) for member in trained.members],
            "temperature": float(trained.network.temperature),
            "uncertain_below": trained.threshold,
            "output": "log-softmax of the log of the mean of the members' calibrated softmax probabilities, divided by "
            "the ensemble's own temperature (fitted on validation)",
        }
    elif trained.calibration is None and trained.abstain is None and not sets:
        return None
    else:
        config = {
            "temperature": float(trained.network.temperature),
            "applied": "the logits of every file are divided by it already",
            "uncertain_below": trained.threshold,
        }
    if trained.abstain is not None:
        config["threshold_chosen"] = {
            key: trained.abstain.get(key) for key in ("target", "reached", "chosen_on", "val/coverage", "val/top1", "guarantee")
        }
    return {**config, **sets}


def check_out_folder(out: Path) -> None:
    """``out`` is replaced as a whole: only an earlier export (or nothing) may be there."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / EXPORT_RECORD).is_file())):
        raise ConfigError(f"out={out} exists and is not an artmove export: choose another folder (it is replaced as a whole).")


def write_formats(network: torch.nn.Module, formats: list, staging: Path, images: torch.Tensor, config: dict[str, Any]) -> dict[str, str]:
    """Each format's file in a fresh ``staging`` folder (traced on two of the check's paintings when there are):
    ``{format: file name}``."""
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    example = images[:2] if len(images) >= 2 else torch.zeros(2, *eval_input_size(config["preprocessing"]))
    files = {}
    for fmt in formats:
        files[fmt.name] = fmt.write(network, staging, example, config).name
        log.info("wrote %s (%s)", staging / files[fmt.name], fmt.name)
    return files


def export_record(
    trained: TrainedModel | TrainedEnsemble, checkpoints: list[Checkpoint], config: dict[str, Any], timm_layout: bool
) -> dict:
    """What export.json says of the model: its checkpoint(s), backbone, head(s), layout, classes, preprocessing, calibration."""
    ensemble = isinstance(trained, TrainedEnsemble)
    return {
        "checkpoint": [str(c.file.resolve()) for c in checkpoints] if ensemble else str(checkpoints[0].file.resolve()),
        "backbone": trained.backbone,
        "head": trained.heads if isinstance(trained, TrainedEnsemble) else trained.network.spec["head"],
        "layout": "timm" if timm_layout else "artmove",
        "classes": config["label_names"],
        "preprocessing": config["preprocessing"],
        "calibration": config["calibration"],
    }


def one_input(trained: TrainedModel | TrainedEnsemble) -> dict[str, Any]:
    """The one preprocessing every exported graph reads: an ensemble's members must share theirs (else one line)."""
    if isinstance(trained, TrainedEnsemble):
        check_one_input(trained)
    preprocessing = trained.preprocessing
    assert isinstance(preprocessing, dict)  # one network's, or the members' shared one once checked
    return preprocessing


def run_data(opened: OpenedRun, trained: TrainedModel | TrainedEnsemble, preprocessing: dict[str, Any]) -> PaintingDataModule | None:
    """The run's own data set, its splits as training made them (None when the run does not record it)."""
    settings = opened.data_settings(trained)  # read once: its record, checked
    return None if settings is None else settings.build(preprocessing)


def check_images(cfg: DictConfig, preprocessing: dict[str, Any], datamodule: PaintingDataModule | None, run: Path) -> torch.Tensor:
    """``check_images`` paintings, evenly spread over the run's test split (or ``check_input``), as the
    network's eval transform makes them."""
    count = int(cfg.check_images)
    transform = eval_transform(preprocessing)
    if cfg.check_input:
        pictures = []
        for path in list_inputs(cfg.check_input)[:count]:
            try:
                pictures.append(transform(load_rgb(path, decode_size(preprocessing))))
            except UnreadableImageError as error:
                log.warning("check_input: %s skipped (%s)", path, error)
        return torch.stack(pictures) if pictures else torch.empty(0)
    if not count:
        return torch.empty(0)
    if datamodule is None:
        raise ConfigError(
            f"the numeric check needs paintings and {run} does not record the data set it trained on: "
            "give check_input=FOLDER (or check_images=0 to skip the check)."
        )
    split = datamodule.images("test", use_cache=False)
    if not len(split):
        raise ConfigError("the run's test split has no images for the numeric check: give check_input=FOLDER or check_images=0.")
    step = max(1, len(split) // count)
    return torch.stack([transform(split[index][0]) for index in range(0, len(split), step)[:count]])


def print_checks(out: Path, checks: dict) -> None:
    for name, row in checks.items():
        print(
            f"  {name:<12} max abs logit diff {row['max_abs_logit_diff']:.2e}, top-1 agreement "
            f"{row['top1_agreement']:.0%} on {row['images']} images",
            flush=True,
        )
    print(f"Export: {out}", flush=True)


@hydra.main(version_base="1.3", config_path="pkg://artmove.conf", config_name="export")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    export(cfg)


if __name__ == "__main__":
    main()
