"""Export formats: each writes the network to one file and runs that file back for the numeric check.

Every export first writes the weights folder (:class:`WeightsFolder`: ``config.json`` with the class
names and preprocessing, ``model.safetensors``): timm's own layout for a linear head, which
``timm.create_model("local-dir:DIR", pretrained=True)`` rebuilds without artmove, else artmove's,
which :func:`load_weights_folder` rebuilds with the network factory alone (no training code, nothing
imported because a file says so). ``formats=onnx|torchscript|torch_export`` add a file beside it.

A calibrated network's temperature is in every file: ONNX, TorchScript and torch.export trace the
network, which divides its logits by it; artmove's layout records it in the network's spec; timm's
layout (a plain timm model, which knows nothing of temperatures) has it folded into its linear
classifier, weight and bias divided by T (exact: ``(W x + b) / T = (W / T) x + b / T``). An ensemble
(:class:`~artmove.models.ensemble.Ensemble`) is written in artmove's layout (each member's spec under
``"ensemble"``, its own temperature under ``"ensemble_temperature"``) and traced as one graph; its output
is the log-softmax of the log of the averaged probabilities divided by the ensemble's temperature.
``config.json``'s ``"calibration"`` (and the ONNX metadata's) says what the files apply: the
temperature(s) and the "not sure" threshold (``uncertain_below``) with where it was chosen, and the
prediction sets' record (``conformal``: ``artmove.models.conformal``), which the files leave to their reader.
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from torch import nn

from artmove.errors import ConfigError
from artmove.models.ensemble import Ensemble
from artmove.models.heads import TimmModel
from artmove.models.network import ArtNetwork, create_network
from artmove.models.preprocessing import checked_preprocessing
from artmove.models.timm_compat import as_timm_model
from artmove.utils.io import write_json

Runner = Callable[[torch.Tensor], np.ndarray]  # a batch of preprocessed images -> logits


class ExportFormat:
    """Writes ``network`` (eval mode) to ``folder / filename`` and loads the file back as a :data:`Runner`."""

    name: str
    filename: str

    def write(self, network: nn.Module, folder: Path, example: torch.Tensor, config: Mapping[str, Any]) -> Path:
        raise NotImplementedError

    def runner(self, folder: Path) -> Runner:
        raise NotImplementedError


class WeightsFolder(ExportFormat):
    """``config.json`` + ``model.safetensors``: timm's layout (``timm.models.save_for_hf``) when the network is
    a timm model with a linear classifier (:func:`~artmove.models.timm_compat.as_timm_model`), else
    artmove's (the network's spec under ``"artmove"`` in config.json, its own state dict)."""

    name, filename = "safetensors", "model.safetensors"
    layout: str | None = None  # "timm" or "artmove", once written

    def write(self, network, folder, example, config):
        from timm.models import save_for_hf

        timm_model = None if isinstance(network, Ensemble) else as_timm_model(network)
        self.layout = "artmove" if timm_model is None else "timm"
        calibration = {"calibration": dict(config["calibration"])} if config.get("calibration") else {}
        if timm_model is not None:
            save_for_hf(
                timm_model,
                folder,
                model_config={"label_names": list(config["label_names"])},
                data_config=dict(config["preprocessing"]),
                safe_serialization=True,
            )
            if calibration:  # beside timm's keys, which timm reads; it ignores this one
                timm_config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
                write_json(folder / "config.json", {**timm_config, **calibration})
            return folder / self.filename
        from safetensors.torch import save_file

        save_file(
            {key: value.contiguous() for key, value in network.state_dict().items()}, folder / self.filename, metadata={"format": "pt"}
        )
        record = network.record if isinstance(network, Ensemble) else {"network": network.spec}
        write_json(
            folder / "config.json",
            {
                "artmove": {"format": ARTMOVE_FOLDER_FORMAT, **record},
                "label_names": list(config["label_names"]),
                "pretrained_cfg": dict(config["preprocessing"]),
                **calibration,
            },
        )
        return folder / self.filename

    def runner(self, folder):
        model = load_weights_folder(folder)[0].eval()

        def run(images: torch.Tensor) -> np.ndarray:
            with torch.no_grad():
                return model(images).numpy()

        return run


#: The version of the artmove layout of a weights folder (config.json "artmove" -> "format").
ARTMOVE_FOLDER_FORMAT = 1


def load_weights_folder(folder: str | Path) -> tuple[nn.Module, list[str], dict[str, Any]]:
    """(network, class names, preprocessing) of a weights folder in either layout. artmove's: the network
    (or each member of an ensemble) rebuilt by name from the spec in config.json (checked as a
    checkpoint's is), its safetensors loaded strictly; timm's: ``timm.create_model("local-dir:…")``."""
    from timm.data import resolve_model_data_config

    folder = Path(folder)
    config_file = folder / "config.json"
    config = _read_config(folder)
    if "artmove" not in config:
        check_timm_config(config, config_file)
        try:  # timm builds what the file names among its own architectures; whatever else goes wrong is the file's
            model: TimmModel = timm.create_model(f"local-dir:{folder}", pretrained=True)
            data_config = resolve_model_data_config(model)
        except Exception as error:  # noqa: BLE001 - timm raises TypeError/KeyError/ValueError/RuntimeError for a malformed config
            raise ConfigError(
                f"{config_file}: timm cannot build the model it records ({type(error).__name__}: "
                f"{str(error).splitlines()[0] if str(error) else 'no message'}): export the checkpoint again."
            ) from None
        names = model.pretrained_cfg.get("label_names") or [str(i) for i in range(model.num_classes)]
        if model.pretrained_cfg.get("test_input_size"):  # test_image_size=: the size the checkpoint evaluated at
            data_config["test_input_size"] = model.pretrained_cfg["test_input_size"]
        timm_preprocessing = {key: list(value) if isinstance(value, tuple) else value for key, value in data_config.items()}
        return model, checked_names(names, model.num_classes, config_file), checked_preprocessing(timm_preprocessing, config_file)
    from safetensors.torch import load_file

    from artmove.models.trained import checked_spec

    record = config["artmove"]
    network: Ensemble | ArtNetwork
    if isinstance(record, dict) and isinstance(record.get("ensemble"), list) and len(record["ensemble"]) >= 2:
        temperature = record.get("ensemble_temperature", 1.0)
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 < temperature < float("inf"):
            raise ConfigError(f"{config_file}: its ensemble_temperature {temperature!r} is not a number > 0: refused.")
        network = Ensemble(
            [create_network(**checked_spec(spec, config_file), pretrained=False) for spec in record["ensemble"]], temperature
        )
    else:
        network = create_network(**checked_spec(record.get("network") if isinstance(record, dict) else None, config_file), pretrained=False)
    try:
        network.load_state_dict(load_file(folder / "model.safetensors"))
    except (RuntimeError, OSError) as error:
        raise ConfigError(
            f"{folder / 'model.safetensors'} does not fit the network {config_file} records ({str(error).splitlines()[0]})."
        ) from None
    names, preprocessing = config.get("label_names"), config.get("pretrained_cfg")
    if not isinstance(names, list) or not isinstance(preprocessing, dict):
        raise ConfigError(f"{config_file} lacks label_names or pretrained_cfg: export the checkpoint again.")
    return network.eval(), checked_names(names, network.num_classes, config_file), checked_preprocessing(preprocessing, config_file)


#: What timm's pretrained_cfg holds of the preprocessing (the rest: its tag, source, licence…).
PREPROCESSING_KEYS = ("input_size", "test_input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")


def check_timm_config(config: dict[str, Any], config_file: Path) -> None:
    """A timm-layout config.json names one of timm's registered architectures and plain model arguments:
    what it names is looked up, never fetched (no ``hf-hub:``), and its sizes are checked before timm builds."""
    architecture, arguments = config.get("architecture"), config.get("model_args", {})
    if not isinstance(architecture, str) or not timm.is_model(architecture):
        raise ConfigError(f"{config_file} names the architecture {architecture!r}, which is not one of timm's registered models: refused.")
    if not isinstance(arguments, dict) or not all(isinstance(v, (str, int, float, bool, type(None))) for v in arguments.values()):
        raise ConfigError(f"{config_file}: its model_args {arguments!r} are not plain settings: refused.")
    classes = config.get("num_classes", 1)
    if isinstance(classes, bool) or not isinstance(classes, int) or not 1 <= classes <= 100_000:
        raise ConfigError(f"{config_file}: num_classes={classes!r} is not a number of classes from 1 to 100000: refused.")
    pretrained_cfg = config.get("pretrained_cfg")
    if isinstance(pretrained_cfg, dict) and "input_size" in pretrained_cfg:
        checked_preprocessing({key: pretrained_cfg[key] for key in PREPROCESSING_KEYS if key in pretrained_cfg}, config_file)


def checked_names(names: Any, count: int, config_file: Path) -> list[str]:
    """The class names a file records: one string per output."""
    if not isinstance(names, (list, tuple)) or len(names) != count or not all(isinstance(name, (str, int)) for name in names):
        raise ConfigError(f"{config_file}: its label_names are not {count} names, one per output: refused.")
    return [str(name) for name in names]


def _read_config(folder: Path) -> dict[str, Any]:
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ConfigError(f"{folder} is not an export folder (no config.json): give the out= folder of python -m artmove.export.")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except ValueError as error:
        raise ConfigError(f"{config_file} is not JSON ({error}).") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{config_file} holds no export config.")
    return config


def export_threshold(folder: str | Path) -> float | None:
    """The "not sure" threshold an export folder's config.json records (``calibration.uncertain_below``), or None."""
    config_file = Path(folder) / "config.json"
    calibration = _read_config(Path(folder)).get("calibration")
    threshold = calibration.get("uncertain_below") if isinstance(calibration, dict) else None
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1):
        raise ConfigError(f"{config_file}: calibration.uncertain_below={threshold!r} is not a probability: refused.")
    return threshold


def export_conformal(folder: str | Path, num_classes: int | None = None) -> dict[str, Any] | None:
    """The prediction sets' record an export folder's config.json holds (``calibration.conformal``), checked as data; None: no sets."""
    from artmove.models.conformal import checked_record

    calibration = _read_config(Path(folder)).get("calibration")
    return checked_record(
        calibration.get("conformal") if isinstance(calibration, dict) else None, Path(folder) / "config.json", num_classes
    )


class Onnx(ExportFormat):
    """``model.onnx`` from torch's dynamo exporter (needs onnxscript): one file, dynamic batch size,
    the class names and preprocessing in its metadata (``label_names``, ``preprocessing``)."""

    name, filename = "onnx", "model.onnx"

    def __init__(self, max_batch: int = 1024):
        self.max_batch = max_batch

    def write(self, network, folder, example, config):
        onnx = _require("onnx", "onnxscript")
        path = folder / self.filename
        batch = torch.export.Dim("batch", min=1, max=self.max_batch)
        with warnings.catch_warnings(), _quiet("onnx_ir", "onnxscript", "torch.onnx"):
            warnings.simplefilter("ignore")  # the exporter's own FutureWarnings and progress notes
            torch.onnx.export(
                network,
                (example,),
                str(path),
                dynamo=True,
                input_names=["input"],
                output_names=["logits"],
                dynamic_shapes=({0: batch},),
                external_data=False,
                verbose=False,
            )
        model = onnx.load(str(path))
        for key in ("label_names", "preprocessing", "calibration"):
            if config.get(key) is None:
                continue
            entry = model.metadata_props.add()
            entry.key, entry.value = key, json.dumps(config[key])
        onnx.checker.check_model(model)
        onnx.save(model, str(path))
        return path

    def runner(self, folder):
        _require("onnxruntime")
        import onnxruntime

        session = onnxruntime.InferenceSession(str(folder / self.filename), providers=["CPUExecutionProvider"])
        return lambda images: session.run(None, {"input": images.numpy()})[0]


class TorchScript(ExportFormat):
    """``model.torchscript.pt`` traced in eval mode (the batch size stays free); ``config.json`` travels
    inside it (``torch.jit.load(path, _extra_files={"config.json": ""})``)."""

    name, filename = "torchscript", "model.torchscript.pt"

    def write(self, network, folder, example, config):
        path = folder / self.filename
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in favour of torch.export
            traced = torch.jit.trace(network, example)
            torch.jit.save(traced, str(path), _extra_files={"config.json": json.dumps(dict(config))})
        return path

    def runner(self, folder):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            model = torch.jit.load(str(folder / self.filename)).eval()

        def run(images: torch.Tensor) -> np.ndarray:
            with torch.no_grad():
                return model(images).numpy()

        return run


class TorchExport(ExportFormat):
    """``model.pt2``: a ``torch.export`` program (the successor of TorchScript), dynamic batch size;
    ``config.json`` travels inside it (``torch.export.load(path, extra_files={"config.json": ""})``)."""

    name, filename = "torch_export", "model.pt2"

    def __init__(self, max_batch: int = 1024):
        self.max_batch = max_batch

    def write(self, network, folder, example, config):
        path = folder / self.filename
        batch = torch.export.Dim("batch", min=1, max=self.max_batch)
        program = torch.export.export(network, (example,), dynamic_shapes=({0: batch},))
        torch.export.save(program, path, extra_files={"config.json": json.dumps(dict(config))})
        return path

    def runner(self, folder):
        model = torch.export.load(folder / self.filename).module()

        def run(images: torch.Tensor) -> np.ndarray:
            with torch.no_grad():
                return model(images).numpy()

        return run


@contextlib.contextmanager
def _quiet(*loggers: str):
    """The exporter's INFO lines (one per graph rewrite) kept out of the run's log."""
    levels = {name: logging.getLogger(name).level for name in loggers}
    for name in loggers:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def _require(*modules: str):
    """The first module, after checking that all import: a missing one is a user error naming the extra."""
    import importlib

    try:
        imported = [importlib.import_module(name) for name in modules]  # every one, not only the first (RUF015's next())
    except ModuleNotFoundError as error:
        raise ConfigError(
            f"this export format needs {error.name}: pip install 'artmove[export]' (onnx, onnxruntime, onnxscript)."
        ) from None
    return imported[0]
