"""Several trained networks as one classifier: their calibrated probabilities averaged.

``ckpt_path=[run_a,run_b]`` or a sweep folder with ``ensemble=all|top3`` (``artmove.runs.checkpoints``)
gives the members; they must name the same classes in the same order, and may differ in backbone,
head and preprocessing: each member then sees the painting through its own eval transform
(``artmove.evaluation.tta.views_transform`` makes one view per member), and :class:`Ensemble` takes
one tensor per member. Each member divides its logits by its own temperature (inside its network),
so the average is of calibrated probabilities; that average is under-confident (members that disagree
flatten it), so the ensemble has a temperature of its own too, fitted on validation as one model
(``artmove.runs.ensemble_calibration``), with its own prediction sets and "not sure" threshold.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from artmove.data.transforms import decode_size, eval_input_size
from artmove.errors import ConfigError
from artmove.models.network import ArtNetwork
from artmove.models.trained import TrainedModel, check_same_classes, load_trained


class Ensemble(nn.Module):
    """``forward(images)`` -> ``log_softmax(log(mean of the members' softmax probabilities) / temperature)``: its
    softmax is the calibrated average (the average itself at temperature 1), its argmax the ensemble's answer
    (a temperature changes no ranking), so it stands where a network's logits do (evaluation, prediction,
    export and its numeric check). ``images``: one batch all members read, or one per member. ``temperature``
    is a buffer, as :class:`~artmove.models.network.ArtNetwork`'s, so every exported graph applies it."""

    temperature: torch.Tensor  # a buffer: declared, else nn.Module's attribute lookup types it ``Tensor | Module``

    def __init__(self, members: Sequence[ArtNetwork], temperature: float = 1.0):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.num_classes = members[0].num_classes
        self.register_buffer("temperature", torch.ones(()), persistent=False)
        self.set_temperature(temperature)

    def set_temperature(self, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
            raise ConfigError(f"the ensemble's temperature {value!r} is not a number > 0.")
        self.temperature.fill_(float(value))

    def forward(self, images: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        inputs = list(images) if isinstance(images, (list, tuple)) else [images] * len(self.members)
        log_probs = torch.stack([member(batch).log_softmax(-1) for member, batch in zip(self.members, inputs, strict=True)])
        return ((torch.logsumexp(log_probs, dim=0) - math.log(len(self.members))) / self.temperature).log_softmax(-1)

    @property
    def specs(self) -> list[dict[str, Any]]:
        """Each member network's spec (temperature included): what rebuilds the ensemble (its own temperature:
        :attr:`record`)."""
        # nn.ModuleList is not generic: its items read as Module, and they are the ArtNetworks given to __init__.
        return [dict(cast(ArtNetwork, member).spec) for member in self.members]

    @property
    def record(self) -> dict[str, Any]:
        """What an export's config.json keeps under ``artmove`` to rebuild it: the members' specs and, when not 1,
        the ensemble's own temperature."""
        temperature = float(self.temperature)
        return {"ensemble": self.specs, **({"ensemble_temperature": temperature} if temperature != 1 else {})}


def eval_view(preprocessing: Mapping[str, Any]) -> tuple:
    """What the eval transform of a preprocessing depends on: two members with the same see the same crop."""
    return (
        tuple(eval_input_size(preprocessing)),
        preprocessing["interpolation"],
        tuple(preprocessing["mean"]),
        tuple(preprocessing["std"]),
        preprocessing["crop_pct"],
        preprocessing.get("crop_mode", "center"),
    )


def shared_preprocessing(preprocessings: Sequence[Mapping[str, Any]]) -> dict[str, Any] | list[dict[str, Any]]:
    """The first member's preprocessing when every member's eval transform is the same, else one per member."""
    if len({eval_view(p) for p in preprocessings}) == 1:
        return dict(preprocessings[0])
    return [dict(p) for p in preprocessings]


@dataclass
class TrainedEnsemble:
    """The members (each a :class:`TrainedModel`), their :class:`Ensemble` and what the commands read of a model."""

    members: list[TrainedModel]
    network: Ensemble
    calibration: dict[str, Any] | None = None  # the ensemble's own temperature scaling, fitted on validation (None: not fitted)
    abstain: dict[str, Any] | None = None  # its own "not sure" threshold, when the members had an abstain target (None: none)
    conformal: dict[str, Any] | None = None  # its own prediction sets, fitted on validation (None: none)

    @property
    def class_names(self) -> list[str]:
        return self.members[0].class_names

    @property
    def preprocessing(self) -> dict[str, Any] | list[dict[str, Any]]:
        """One preprocessing when the members share their eval transform, else one per member (in order)."""
        return shared_preprocessing([member.preprocessing for member in self.members])

    @property
    def largest_preprocessing(self) -> dict[str, Any]:
        """The member preprocessing that decodes the largest image (what a data module reads files for)."""
        return max((member.preprocessing for member in self.members), key=decode_size)

    @property
    def checkpoint(self) -> Path:
        return self.members[0].checkpoint

    @property
    def checkpoints(self) -> list[Path]:
        return [member.checkpoint for member in self.members]

    @property
    def backbone(self) -> str:
        return f"ensemble of {len(self.members)} ({', '.join(dict.fromkeys(member.backbone for member in self.members))})"

    @property
    def heads(self) -> list[dict[str, Any]]:
        return [member.network.spec["head"] for member in self.members]

    @property
    def threshold(self) -> float | None:
        """Its own "not sure" threshold (members' thresholds were chosen for themselves, not for the average)."""
        return None if self.abstain is None else self.abstain.get("threshold")

    def to(self, device: str | torch.device) -> TrainedEnsemble:
        for member in self.members:
            member.to(device)
        return self


def load_model(files: Sequence[str | Path], device: str = "cpu") -> TrainedModel | TrainedEnsemble:
    """One checkpoint's :class:`TrainedModel`, or several as a :class:`TrainedEnsemble` (their classes checked)."""
    if len(files) == 1:
        return load_trained(files[0], device)
    members = [load_trained(path, device) for path in files]
    for member in members[1:]:
        check_same_classes(
            members[0].class_names,
            member.class_names,
            f"the ensemble's members do not share their classes: {member.checkpoint} and {members[0].checkpoint}",
            "Ensemble runs trained on the same classes.",
        )
    return TrainedEnsemble(members, Ensemble([member.network for member in members]).eval())
