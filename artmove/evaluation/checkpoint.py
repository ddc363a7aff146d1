"""A trained classifier back from its checkpoint, with no weight download; which checkpoint a
``ckpt_path`` means (a file, a run folder, a sweep folder)."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from artmove.errors import ConfigError, UnreadableCheckpoint
from artmove.models import ArtClassifier
from artmove.utils.io import read_checkpoint


def resolve_checkpoint(ckpt_path: str | Path) -> Path:
    """The checkpoint file ``ckpt_path`` means: the file itself; a training run folder's best checkpoint
    (the one its results.json names, else its only ``checkpoints/best*.ckpt``, else ``last.ckpt``);
    a sweep folder's best job by ``optimized_value`` (jobs with ``"status": "ok"`` only), then that
    job's best checkpoint."""
    path = Path(ckpt_path).expanduser()
    if path.is_file():
        return path
    if not path.is_dir():
        raise ConfigError(f"checkpoint not found: ckpt_path={ckpt_path} is no file or folder. {CKPT_PATH_FORMS}")
    if path.name == "checkpoints":
        return run_checkpoint(path.parent)
    if (path / "checkpoints").is_dir():
        return run_checkpoint(path)
    return run_checkpoint(best_job(path))


CKPT_PATH_FORMS = "Give a .ckpt file, a training run folder (with checkpoints/) or a sweep folder (multirun)."


def run_checkpoint(run: Path) -> Path:
    folder = run / "checkpoints"
    named = _results(run).get("best_checkpoint")
    if named and (folder / Path(named).name).is_file():  # by name: the run folder may have moved
        return folder / Path(named).name
    best = sorted(folder.glob("best*.ckpt"))
    if len(best) > 1:
        raise ConfigError(
            f"ckpt_path={run}: {len(best)} best*.ckpt checkpoints and no results.json naming one "
            f"({', '.join(p.name for p in best)}): give the file, e.g. ckpt_path={best[0]}."
        )
    if best:
        return best[0]
    if (folder / "last.ckpt").is_file():
        return folder / "last.ckpt"
    raise ConfigError(f"ckpt_path={run}: no checkpoint in {folder} (neither best*.ckpt nor last.ckpt).")


def best_job(sweep: Path) -> Path:
    """The sweep's job with the best ``optimized_value``: maximised, or minimised where the sweeper says
    so (``hydra.sweeper.direction``) or, without one, where the metric is a loss."""
    from artmove.report import find_runs  # matplotlib: only when a sweep folder is given

    jobs = [(job, _results(job)) for job in find_runs([sweep]) if job != sweep]
    scored = [(job, r) for job, r in jobs if r.get("status") == "ok" and r.get("optimized_value") is not None and (job / "checkpoints").is_dir()]
    if not scored:
        found = f"{len(jobs)} job folder(s), none finished with a score and checkpoints" if jobs else "no training run or job folders below it"
        raise ConfigError(f"ckpt_path={sweep}: {found}. {CKPT_PATH_FORMS}")
    metric = scored[0][1].get("optimized_metric", "")
    sign = -1 if _direction(scored[0][0], metric) == "minimize" else 1
    return max(scored, key=lambda item: sign * item[1]["optimized_value"])[0]


def _direction(job: Path, metric: str) -> str:
    hydra_file = job / ".hydra" / "hydra.yaml"
    if hydra_file.is_file():
        direction = OmegaConf.select(OmegaConf.load(hydra_file), "hydra.sweeper.direction", default=None)
        if direction in ("minimize", "maximize"):
            return direction
    return "minimize" if str(metric).endswith("loss") else "maximize"


def _results(run: Path) -> dict:
    path = run / "results.json"
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except json.JSONDecodeError:
        return {}


def load_classifier(ckpt_path: str | Path, device: str = "cpu") -> ArtClassifier:
    """The model of the checkpoint ``ckpt_path`` means (:func:`resolve_checkpoint`) in eval mode; its
    backbone, classes and transforms come from its hparams."""
    path = resolve_checkpoint(ckpt_path)
    try:
        checkpoint = read_checkpoint(path)  # tensors only: a file that would run code is refused, never executed
    except UnreadableCheckpoint as error:
        raise ConfigError(f"{error}. Give ckpt_path= a checkpoint an artmove training run wrote "
                          "(<run>/checkpoints/best-….ckpt or last.ckpt).") from None  # fmt: skip
    try:
        model = _classifier_from(checkpoint)
    except (KeyError, RuntimeError, TypeError) as error:
        raise ConfigError(f"{path} is not an artmove training checkpoint ({type(error).__name__}: {error}).") from None
    if not model.hparams.get("class_names"):
        model.hparams.class_names = [str(label) for label in range(model.hparams.num_classes)]
    return model.to(resolve_device(device)).eval()


def _classifier_from(checkpoint: dict) -> ArtClassifier:
    """What ``ArtClassifier.load_from_checkpoint`` does, on the checkpoint already read (it would read the
    file again): the saved hyperparameters the class still takes rebuild the network without ImageNet
    weights, then the checkpoint's weights load strictly. compile=False: evaluation runs once over a
    split, and hooks (Grad-CAM) need the eager module."""
    if not isinstance(checkpoint, dict):
        raise TypeError(f"it holds a {type(checkpoint).__name__}, not a training checkpoint's dict")
    accepted = inspect.signature(ArtClassifier.__init__).parameters
    saved = {key: value for key, value in checkpoint["hyper_parameters"].items() if key in accepted}
    model = ArtClassifier(**{**saved, "pretrained": False, "weights": None, "compile": False})
    model.on_load_checkpoint(checkpoint)
    model.load_state_dict(checkpoint["state_dict"])
    return model


def inference_network(model: ArtClassifier) -> torch.nn.Module:
    """The timm network the classifier predicts with: the EMA average when the run kept one. Only a
    linear head is a plain timm network; the style-aware heads (``head=multiscale|gram``) pool several
    stages or feature maps that a timm model's own forward does not."""
    if model.head.name != "linear":
        raise ConfigError(
            f"this checkpoint was trained with head={model.head.name}: export, the Python API and the demo page "
            "take a plain timm network (head=linear); evaluate and predict this one with python -m artmove.evaluate "
            "/ artmove.predict."
        )
    return (model.ema.module if model.ema is not None else model.model).eval()


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def run_dir(ckpt_path: str | Path) -> Path:
    """The training run a checkpoint belongs to: ``<run>/checkpoints/x.ckpt`` -> ``<run>``."""
    parent = resolve_checkpoint(ckpt_path).resolve().parent
    return parent.parent if parent.name == "checkpoints" else parent


def run_config(ckpt_path: str | Path) -> DictConfig | None:
    """The composed config of the run that wrote the checkpoint (``<run>/.hydra/config.yaml``), if kept."""
    path = run_dir(ckpt_path) / ".hydra" / "config.yaml"
    return OmegaConf.load(path) if path.is_file() else None
