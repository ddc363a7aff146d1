"""Between artmove's network and timm's own models: where a timm model keeps its classifier, a
linear-head network as a plain timm model (what export writes as timm's folder), and the keys of
format-1 checkpoints (the head inside the timm model, under the classifier's name)."""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from torch import nn

from artmove.errors import ConfigError
from artmove.models.heads import LinearHead, TimmModel
from artmove.models.network import ArtNetwork


def classifier_names(model: TimmModel) -> list[str]:
    """The module name(s) of a timm model's classifier: what ``get_classifier()`` returns (a pair for
    distilled DeiT and LeViT) and what its pretrained config names (VOLO's ``aux_head`` too); a head
    inside another one counts as part of it."""
    returned = model.get_classifier()
    returned = returned if isinstance(returned, tuple) else (returned,)
    modules = dict(model.named_modules())
    by_id = {id(module): name for name, module in modules.items()}
    configured = getattr(model, "pretrained_cfg", {}).get("classifier") or ()
    names = [by_id[id(head)] for head in returned if id(head) in by_id] + (
        [configured] if isinstance(configured, str) else list(configured)
    )
    names = [name for name in dict.fromkeys(names) if name in modules]
    return [name for name in names if not any(name.startswith(f"{other}.") for other in names)]


def as_timm_model(network: ArtNetwork) -> nn.Module | None:
    """``network`` as timm's own model, its linear head as timm's classifier(s) (a distilled model's two
    heads both get it: timm averages them at inference, as the network averages their tokens), the
    network's temperature folded into it (timm's model gives the calibrated logits). None unless the
    head is linear and the backbone's classifiers are plain linear layers."""
    if network.spec["head"]["name"] != "linear" or not isinstance(network.head, LinearHead):  # the same: narrows the type
        return None
    model = timm.create_model(network.spec["backbone"], pretrained=False, num_classes=network.num_classes)
    names, modules = classifier_names(model), dict(model.named_modules())
    if not names or not all(type(modules[name]) is nn.Linear for name in names):
        return None
    # A calibrated network's temperature folded into the classifier: (W x + b) / T = (W / T) x + b / T.
    head = {key: value / network.temperature for key, value in network.head.fc.state_dict().items()}
    state = {**network.backbone.state_dict(), **{f"{name}.{key}": value for name in names for key, value in head.items()}}
    try:
        model.load_state_dict(state)
    except RuntimeError:
        return None
    return model.eval()


def rename_format1_keys(state: dict[str, torch.Tensor], backbone: str, num_classes: int, head: str, path: Path) -> None:
    """Format 1's ``model.<timm keys>`` (the head under the timm classifier's name) and ``ema.module.…``
    as format 2's ``network.backbone.*`` / ``network.head.*`` (a linear head's layer is ``head.fc``)."""
    with torch.device("meta"):
        names = classifier_names(timm.create_model(backbone, pretrained=False, num_classes=num_classes))
    if len(names) != 1:
        raise ConfigError(
            f"{path} is a format-1 checkpoint of {backbone}, whose {len(names)} classifiers artmove now "
            "trains as one head: retrain it with this version."
        )
    classifier = f"{names[0]}."
    for source, target in (("model.", "network."), ("ema.module.", "ema.module.")):
        for key in [key for key in state if key.startswith(source)]:
            rest = key[len(source) :]
            if rest.startswith(classifier):
                renamed = "head." + ("fc." if head == "linear" else "") + rest[len(classifier) :]
            else:
                renamed = "backbone." + rest
            state[target + renamed] = state.pop(key)
