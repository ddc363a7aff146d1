"""`python -m artmove.predict ckpt_path=… input=PATH`: the top-k movements of new paintings."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from artmove.data.images import IMAGE_EXTENSIONS, is_image_file
from artmove.data.sources.base import images_in
from artmove.data.transforms import decode_size
from artmove.errors import ConfigError
from artmove.evaluation.checkpoint import inference_network, load_classifier, resolve_checkpoint
from artmove.evaluation.gradcam import grad_cam, overlay, to_pil
from artmove.evaluation.inference import ImageFiles, predict_files
from artmove.evaluation.tables import printable, write_csv
from artmove.evaluation.tta import check_tta, eval_transform, tta_transform
from artmove.utils.cli import exit_on_user_error
from artmove.utils.config import require_settings
from artmove.utils.io import write_json

log = logging.getLogger("artmove.predict")


def list_inputs(input_path: str | Path) -> list[Path]:
    """The image files behind ``input``: the image itself, a folder's images (recursive) or a list file's paths."""
    path = Path(input_path)
    if path.is_dir():
        paths = images_in(path)
        if not paths:
            raise ConfigError(f"input={path}: no image files in this folder or below it.")
        return paths
    if not path.is_file():
        raise ConfigError(f"input={path}: no such file or folder. Give an image, a folder or a text file of paths.")
    if is_image_file(path):
        return [path]
    data = path.read_bytes()
    not_a_list = (f"input={path}: neither an image artmove reads ({', '.join(IMAGE_EXTENSIONS)}) nor a text file "
                  "of image paths, one per line")  # fmt: skip
    if b"\0" in data:
        raise ConfigError(f"{not_a_list} (it holds binary data).")
    lines = [line.strip() for line in data.decode("utf-8", "surrogateescape").splitlines()]  # any file name's bytes
    paths = [Path(line) for line in lines if line and not line.startswith("#")]
    if not paths:
        raise ConfigError(f"input={path}: the list file names no images.")
    paths = [p if p.is_absolute() else path.parent / p for p in paths]
    if not any(p.exists() for p in paths):
        raise ConfigError(f"{not_a_list}: none of the {len(paths)} paths it would list exists (the first: {printable(str(paths[0]))}).")
    return paths


def predict(cfg: DictConfig) -> dict:
    """Predict every readable input; return ``{"predictions": [...], "skipped": [...]}``."""
    require_settings(cfg)
    check_tta(cfg.tta)
    if cfg.save not in (None, "csv", "json"):
        raise ConfigError(f"save={cfg.save!r}: use csv, json or null.")
    paths = list_inputs(cfg.input)
    checkpoint = resolve_checkpoint(cfg.ckpt_path)
    model = load_classifier(checkpoint, cfg.device)
    if cfg.explain and model.head.name != "linear":
        raise ConfigError(f"explain=true: Grad-CAM reads the last feature map through timm's own head; this model "
                          f"was trained with head={model.head.name}. Predict without explain.")  # fmt: skip
    classes = list(model.hparams.class_names)
    top_k = max(1, min(int(cfg.top_k), len(classes)))
    dataset = ImageFiles(paths, tta_transform(model.preprocessing, cfg.tta), decode_size(model.preprocessing))
    probs, readable, errors = predict_files(model, dataset, cfg.batch_size, cfg.num_workers)

    best = probs.topk(top_k, dim=1)
    predictions = [
        {"path": str(paths[index]),
         "top": [{"movement": classes[c], "probability": float(p)} for c, p in zip(best.indices[row].tolist(), best.values[row].tolist())]}
        for row, index in enumerate(readable)
    ]  # fmt: skip
    skipped = [{"path": str(paths[index]), "error": message} for index, message in sorted(errors.items())]
    out = Path(cfg.output_dir)
    if cfg.explain and predictions:
        explain(model, [paths[i] for i in readable], best.indices[:, 0], out / "explain", cfg.batch_size)
        for item, name in zip(predictions, _unique_names([paths[i] for i in readable])):
            item["explanation"] = str(out / "explain" / f"{name}.gradcam.png")
    print_predictions(predictions, skipped)
    if not predictions:
        raise ConfigError(f"none of the {len(paths)} input file(s) could be read as an image (see above).")
    if cfg.save == "csv":
        rows = [{"path": p["path"], "rank": rank, **top} for p in predictions for rank, top in enumerate(p["top"], start=1)]
        print(f"Predictions: {write_csv(out / 'predictions.csv', rows, ['path', 'rank', 'movement', 'probability'])}")
    elif cfg.save == "json":
        payload = {"checkpoint": str(checkpoint), "tta": cfg.tta, "predictions": predictions, "skipped": skipped}
        write_json(out / "predictions.json", payload)
        print(f"Predictions: {out / 'predictions.json'}")
    return {"predictions": predictions, "skipped": skipped}


def print_predictions(predictions: list[dict], skipped: list[dict]) -> None:
    for item in predictions:
        print(printable(item["path"]))
        for rank, top in enumerate(item["top"], start=1):
            print(f"  {rank}. {top['movement']:<32}{top['probability']:.4f}")
    for item in skipped:
        print(f"skipped (unreadable) {printable(item['error'])}", file=sys.stderr)
    print(f"{len(predictions)} image(s) predicted, {len(skipped)} skipped (unreadable).", flush=True)


def explain(model, paths: list[Path], targets: torch.Tensor, folder: Path, batch_size: int) -> None:
    """A Grad-CAM overlay PNG per image, for its top-1 class, on the eval crop the model saw."""
    folder.mkdir(parents=True, exist_ok=True)
    preprocessing = model.preprocessing
    dataset = ImageFiles(paths, eval_transform(preprocessing), decode_size(preprocessing))
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=lambda batch: torch.stack([image for image, _ in batch]))
    names, device = iter(_unique_names(paths)), next(model.parameters()).device
    network = inference_network(model)
    for start, images in zip(range(0, len(paths), batch_size), loader):
        cams = grad_cam(network, images.to(device), targets[start : start + len(images)].to(device))
        for image, cam in zip(images, cams):
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
