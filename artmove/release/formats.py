"""Export formats: each writes the network to one file and runs that file back for the numeric check.

Every export first writes timm's own folder (:class:`TimmFolder`: ``config.json`` with the class names
and preprocessing, ``model.safetensors``), which ``timm.create_model("local-dir:DIR", pretrained=True)``
rebuilds without artmove; ``formats=onnx`` / ``formats=torchscript`` add a file beside it.
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
import torch
from torch import nn

from artmove.errors import ConfigError

Runner = Callable[[torch.Tensor], np.ndarray]  # a batch of preprocessed images -> logits


class ExportFormat:
    """Writes ``network`` (eval mode) to ``folder / filename`` and loads the file back as a :data:`Runner`."""

    name: str
    filename: str

    def write(self, network: nn.Module, folder: Path, example: torch.Tensor, config: Mapping[str, Any]) -> Path:
        raise NotImplementedError

    def runner(self, folder: Path) -> Runner:
        raise NotImplementedError


class TimmFolder(ExportFormat):
    """timm's Hugging Face layout, written by ``timm.models.save_for_hf``."""

    name, filename = "safetensors", "model.safetensors"

    def write(self, network, folder, example, config):
        from timm.models import save_for_hf

        save_for_hf(network, folder, model_config={"label_names": list(config["label_names"])},
                    data_config=dict(config["preprocessing"]), safe_serialization=True)  # fmt: skip
        return folder / self.filename

    def runner(self, folder):
        import timm

        model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()  # pretrained: load the file

        def run(images: torch.Tensor) -> np.ndarray:
            with torch.no_grad():
                return model(images).numpy()

        return run


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
            torch.onnx.export(network, (example,), str(path), dynamo=True, input_names=["input"], output_names=["logits"],
                              dynamic_shapes=({0: batch},), external_data=False, verbose=False)  # fmt: skip
        model = onnx.load(str(path))
        for key in ("label_names", "preprocessing"):
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
        return [importlib.import_module(name) for name in modules][0]
    except ModuleNotFoundError as error:
        raise ConfigError(f"this export format needs {error.name}: pip install 'artmove[export]' (onnx, onnxruntime, onnxscript).") from None
