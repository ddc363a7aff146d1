"""A trained network back from its training checkpoint, with no weight download and no code from the file.

The checkpoint is read as tensors and plain containers only (``weights_only=True``); what it says
is data: the network is rebuilt by :func:`~artmove.models.network.create_network` from the spec it
records (backbone by timm name, head by artmove's registry name), then its weights load strictly.
Checkpoints of format 1 (artmove before the one-network redesign: the head inside the timm model,
classes named by ``_target_``) are read too, their names mapped to the registry's.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch

from artmove.errors import ConfigError, UnreadableCheckpoint
from artmove.models.conformal import checked_record
from artmove.models.heads import HEADS
from artmove.models.network import ArtNetwork, create_network
from artmove.models.preprocessing import checked_preprocessing
from artmove.models.timm_compat import rename_format1_keys
from artmove.utils.io import read_checkpoint

#: The version of what ``ArtClassifier.on_save_checkpoint`` writes (3: the network spec may hold a
#: ``temperature``, and the record ``calibration`` and ``abstain``; 4: and ``conformal``, the prediction sets);
#: formats 1 and 2 are read too (temperature 1), 1 to 3 without prediction sets.
CHECKPOINT_FORMAT = 4
FORMATS_READ = (1, 2, 3, CHECKPOINT_FORMAT)
#: Where a checkpoint keeps its run's record (``artmove.runs.resume``): the settings that define the run, its
#: classes, its data set (``artmove.data.settings``) and its attempts.
RUN_RECORD = "artmove_run"
log = logging.getLogger(__name__)
_SAID_NO_SETS: set[int] = set()  # the checkpoint formats whose "no prediction sets" was logged (once a process)
NOT_ARTMOVE = (
    "is not a checkpoint of an artmove training run ({}): give ckpt_path= a run folder or its checkpoints/best-….ckpt or last.ckpt"
)


@dataclass
class TrainedModel:
    """The network (eval mode, the EMA's weights when the run kept them) and what it was trained to see."""

    network: ArtNetwork
    class_names: list[str]
    preprocessing: dict[str, Any]
    checkpoint: Path
    hparams: dict[str, Any]  # the training settings the run recorded (optimizer, label smoothing…), for model cards
    finetune: dict[str, Any]  # the fine-tuning policy's settings, as recorded
    calibration: dict[str, Any] | None = None  # temperature scaling as fitted at the end of training (None: not calibrated)
    abstain: dict[str, Any] | None = None  # the "not sure" threshold chosen on validation (None: none chosen)
    run_record: dict[str, Any] | None = None  # the run's record (RUN_RECORD), plain data, checked by whoever reads it
    conformal: dict[str, Any] | None = None  # the prediction sets' record fitted on validation (None: no sets)

    @property
    def threshold(self) -> float | None:
        """Answers whose top-1 probability is below this are marked uncertain (None: never)."""
        return None if self.abstain is None else self.abstain.get("threshold")

    @property
    def backbone(self) -> str:
        return self.network.spec["backbone"]

    @property
    def head(self) -> str:
        return self.network.spec["head"]["name"]

    def to(self, device: str | torch.device) -> TrainedModel:
        self.network.to(resolve_device(device))
        return self


def load_trained(path: str | os.PathLike, device: str = "cpu") -> TrainedModel:
    """The trained network of the checkpoint file ``path`` on ``device`` (``auto``: the GPU when there is one)."""
    path = Path(path)
    try:
        checkpoint = read_checkpoint(path)
    except UnreadableCheckpoint as error:
        raise UnreadableCheckpoint(f"{error}. Give ckpt_path= a run folder or its checkpoints/best-….ckpt or last.ckpt.") from None
    if (
        not isinstance(checkpoint, dict)
        or not isinstance(checkpoint.get("hyper_parameters"), dict)
        or not isinstance(checkpoint.get("state_dict"), dict)
    ):
        raise ConfigError(f"{path} {NOT_ARTMOVE.format('no hyper_parameters and state_dict')}.")
    record = checkpoint.get("artmove") if "artmove" in checkpoint else _format1_record(checkpoint, path)
    spec, prefix = _checked_record(record, path)
    assert isinstance(record, dict)  # _checked_record refused anything else
    hparams = checkpoint["hyper_parameters"]
    class_names = hparams.get("class_names") or [str(label) for label in range(spec["num_classes"])]
    preprocessing = hparams.get("preprocessing")
    if not isinstance(preprocessing, dict) or not isinstance(class_names, list) or len(class_names) != spec["num_classes"]:
        raise ConfigError(f"{path} {NOT_ARTMOVE.format('its classes or preprocessing are missing')}.")
    preprocessing = checked_preprocessing(preprocessing, path)
    network = create_network(**spec, pretrained=False)
    weights = {key[len(prefix) :]: value for key, value in checkpoint["state_dict"].items() if key.startswith(prefix)}
    try:
        network.load_state_dict(weights)
    except RuntimeError as error:
        raise ConfigError(f"{path}: its weights do not fit the network it records ({str(error).splitlines()[0]}).") from None
    network.pretrained_cfg = record.get("pretrained_cfg")
    network.weights_source = f"checkpoint {path.name}"
    run_record = checkpoint.get(RUN_RECORD)
    if run_record is not None and not isinstance(run_record, dict):
        raise ConfigError(f"{path}: its run record is not one artmove writes: refused.")
    trained = TrainedModel(
        network.eval(),
        [str(name) for name in class_names],
        preprocessing,
        path,
        dict(hparams),
        dict(record.get("finetune") or {}),
        *trust_records(record, path),
        run_record,
        checked_record(record.get("conformal"), path, spec["num_classes"]),
    )
    if record["format"] < 4 and record["format"] not in _SAID_NO_SETS:
        _SAID_NO_SETS.add(record["format"])
        log.info(
            "%s is a checkpoint of format %d (before prediction sets): it gives no sets (coverage=); retrain, or fit them "
            "with evaluate … split=val conformal.fit=true and give predict conformal=<eval>/conformal.json",
            path,
            record["format"],
        )
    return trained.to(device)


#: The numbers each trust record must hold (None: a share no answer was kept for), as ``artmove.training.calibration`` writes them.
TRUST_NUMBERS = {
    "calibration": ("temperature", "images", "val/ece_before", "val/ece_after", "val/nll_before", "val/nll_after"),
    "abstain": ("target", "threshold", "images", "val/coverage", "val/top1"),
}


def trust_records(record: dict[str, Any], where: Path) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(calibration, abstain) records of a checkpoint (``artmove.training.calibration`` writes them): the
    numbers they must hold, plain values besides, or a ConfigError. Checkpoints from before calibration have neither."""
    found: list[dict[str, Any] | None] = []
    for key, numbers in TRUST_NUMBERS.items():
        value = record.get(key)
        if value is None:
            found.append(None)
            continue
        plain = isinstance(value, dict) and all(
            isinstance(k, str) and (v is None or isinstance(v, (str, int, float, bool))) for k, v in value.items()
        )
        if not plain or not all(
            k in value and (value[k] is None or (isinstance(value[k], (int, float)) and not isinstance(value[k], bool))) for k in numbers
        ):
            raise ConfigError(f"{where}: its {key} record is not one artmove writes: refused.")
        found.append(dict(value))
    threshold = (found[1] or {}).get("threshold")
    if found[1] is not None and (threshold is None or not 0 <= threshold <= 1):
        raise ConfigError(f"{where}: its abstain threshold {threshold!r} is not a probability: refused.")
    if found[0] is not None and (found[0]["temperature"] is None or not 0 < found[0]["temperature"] < float("inf")):
        raise ConfigError(f"{where}: its calibration records the temperature {found[0]['temperature']!r}, not a number > 0: refused.")
    return found[0], found[1]


def _checked_record(record: Any, path: Path) -> tuple[dict[str, Any], str]:
    """The network spec and the state-dict prefix of the inference weights."""
    if not isinstance(record, dict) or record.get("format") not in FORMATS_READ:
        raise ConfigError(f"{path} {NOT_ARTMOVE.format('no artmove record of a format this version reads')}.")
    prefix = record.get("inference_weights")
    if prefix not in ("network", "ema.module"):
        raise ConfigError(f"{path} {NOT_ARTMOVE.format(f'inference_weights={prefix!r}')}.")
    return checked_spec(record.get("network"), path), f"{prefix}."


def checked_spec(spec: Any, where: Path) -> dict[str, Any]:
    """A network spec read from a file (a checkpoint, an export's config.json): plain values under the
    names :func:`~artmove.models.network.create_network` takes, or a ConfigError. The head is then
    built by its registry name, never imported."""
    allowed: dict[str, type | tuple[type, ...]] = {
        "backbone": str,
        "num_classes": int,
        "head": dict,
        "drop_rate": (int, float),
        "drop_path_rate": (int, float),
        "temperature": (int, float),
    }
    if not isinstance(spec, dict):
        raise ConfigError(f"{where} records no network: it was not written by artmove (give a run folder, a checkpoint or an export).")
    wrong = sorted(
        str(key) for key, value in spec.items() if key not in allowed or not isinstance(value, allowed[key]) or isinstance(value, bool)
    )
    if wrong or not {"backbone", "num_classes"} <= set(spec):
        raise ConfigError(
            f"{where}: its network record has entries artmove does not write ({', '.join(wrong or sorted(map(str, spec)))}): refused."
        )
    check_file_backbone(spec["backbone"], where)
    if not 0 < spec.get("temperature", 1.0) < float("inf"):
        raise ConfigError(f"{where}: its network records the temperature {spec['temperature']!r}, not a number > 0: refused.")
    head = spec.get("head", {}).get("name", "linear")
    if head not in HEADS.names:
        raise ConfigError(
            f"{where} names the head {head!r}, which is not one of artmove's ({', '.join(HEADS.names)}): a file may "
            "name only artmove's own heads (nothing a file names is imported or run)."
        )
    return spec


def check_file_backbone(name: str, where: Path) -> None:
    """A backbone a file names: one of timm's registered architectures (``hf-hub:``/``local-dir:`` names, which
    a user may give on the command line, would have timm fetch or read a model config the file chose)."""
    if not timm.is_model(name):
        raise ConfigError(f"{where} names the backbone {name!r}, which is not one of timm's registered models: refused.")


# --- format 1 ----------------------------------------------------------------------------------
#: Format 1 named its heads and policies by class path; only these are read (data, never imported).
FORMAT1_HEADS = {
    "artmove.models.heads.LinearHead": "linear",
    "artmove.models.heads.MultiscaleHead": "multiscale",
    "artmove.models.heads.GramHead": "gram",
}
FORMAT1_POLICIES = {f"artmove.finetune.policies.{name}": name.lower() for name in ("Fraction", "Stages", "Discriminative", "Gradual")}


def _format1_record(checkpoint: dict[str, Any], path: Path) -> dict[str, Any]:
    """A format-1 checkpoint's record; its state dict renamed in place to format 2's keys."""
    hparams = checkpoint["hyper_parameters"]
    head = dict(hparams.get("head") or {"_target_": "artmove.models.heads.LinearHead"})
    policy = dict(hparams.get("finetune") or {"_target_": "artmove.finetune.policies.Fraction"})
    head_target, policy_target = head.pop("_target_", None), policy.pop("_target_", None)
    for what, target, known in (("head", head_target, FORMAT1_HEADS), ("fine-tuning policy", policy_target, FORMAT1_POLICIES)):
        if not isinstance(target, str) or target not in known:
            raise ConfigError(
                f"{path} names the {what} {target!r}, which is not one of artmove's: a checkpoint may name "
                "only artmove's own heads and policies (nothing a file names is imported or run)."
            )
    backbone, num_classes = hparams.get("backbone"), hparams.get("num_classes")
    if not isinstance(backbone, str) or isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"{path} {NOT_ARTMOVE.format('no backbone or num_classes')}.")
    check_file_backbone(backbone, path)
    head_name = FORMAT1_HEADS[head_target]
    rename_format1_keys(checkpoint["state_dict"], backbone, num_classes, head_name, path)
    ema = bool(hparams.get("ema_decay")) and any(key.startswith("ema.module.") for key in checkpoint["state_dict"])
    network = {
        "backbone": backbone,
        "num_classes": num_classes,
        "head": {"name": head_name, **head},
        "drop_rate": hparams.get("drop_rate", 0.0),
        "drop_path_rate": hparams.get("drop_path_rate", 0.0),
    }
    return {
        "format": 1,
        "network": network,
        "inference_weights": "ema.module" if ema else "network",
        "finetune": {"name": FORMAT1_POLICIES[policy_target], **policy},
        "pretrained_cfg": checkpoint.get("pretrained_cfg"),
    }


def resolve_device(device: str | torch.device) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def check_same_classes(expected: Sequence[str], given: Sequence[str], context: str, advice: str) -> None:
    """``given`` names ``expected``'s classes in the same order (an ensemble's members, a resumed run's data
    set and its checkpoint), or one line: ``context``, how the two differ, and ``advice``."""
    if list(expected) == list(given):
        return
    differ = sorted(set(expected) ^ set(given))
    shown = f"{', '.join(differ[:5])}{' …' if len(differ) > 5 else ''}"
    how = f"{len(differ)} class(es) in one and not the other: {shown}" if differ else "the same classes in another order"
    raise ConfigError(f"{context} ({len(given)} classes and {len(expected)}; {how}). {advice}")
