"""The Python API: top-k movements of paintings from a checkpoint, a run folder or an export.

    from artmove import Predictor
    predictor = Predictor.from_checkpoint("outputs/2026-12-01/12-00-00")   # or .from_export(folder)
    predictor("painting.jpg").top   # [("Impressionism", 0.71), ("Post-Impressionism", 0.12), ...]
    predictor("painting.jpg").uncertain   # True: the top probability is below the model's "not sure" threshold

The probabilities are calibrated (the temperature fitted at the end of training is inside the network);
an ensemble (``Predictor.from_checkpoint(["run_a", "run_b"])``, or a sweep folder with ``ensemble="all"``)
averages its members' calibrated probabilities, each member reading the painting through its own
preprocessing, and is calibrated as one model when opened (its own temperature, sets and "not sure"
threshold: ``artmove.runs.ensemble_calibration``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn
from torchvision.transforms.functional import to_pil_image

from artmove.data.images import load_rgb, to_rgb, within_aspect
from artmove.data.transforms import decode_size
from artmove.errors import ConfigError
from artmove.evaluation.gradcam import grad_cam, overlay, to_pil
from artmove.evaluation.tta import eval_transform, predict_views, stack_views, views_to, views_transform
from artmove.models import conformal as conformal_sets
from artmove.models.calibration import check_threshold
from artmove.models.ensemble import Ensemble, TrainedEnsemble
from artmove.models.trained import TrainedModel, resolve_device
from artmove.release.formats import export_conformal, export_threshold, load_weights_folder
from artmove.runs.checkpoints import open_run

ImageInput = str | Path | Image.Image | torch.Tensor


@dataclass(frozen=True)
class Prediction:
    """The top-k movements with their probabilities, best first; the Grad-CAM overlay when asked for;
    ``uncertain``: the top probability is below the predictor's threshold (None: it has none); ``set``: the
    movements of its prediction set, most probable first, which holds the true one for ``coverage`` of paintings
    drawn like those it was fitted on (None: the predictor has no sets)."""

    top: list[tuple[str, float]]
    gradcam: Image.Image | None = None
    uncertain: bool | None = None
    set: list[str] | None = None
    coverage: float | None = None

    @property
    def label(self) -> str:
        return self.top[0][0]

    @property
    def probability(self) -> float:
        return self.top[0][1]


class Predictor:
    """A classifier ready for new paintings: its network (or ensemble), class names, eval preprocessing (an
    ensemble's: one per member when theirs differ) and "not sure" threshold (``threshold``: answers whose
    top probability is below it are marked uncertain; None: never; settable) and prediction sets' record
    (``conformal``, artmove.models.conformal; None: no sets)."""

    def __init__(
        self,
        network: nn.Module,
        class_names: Sequence[str],
        preprocessing: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        batch_size: int = 32,
        threshold: float | None = None,
        conformal: Mapping[str, Any] | None = None,
    ):
        check_threshold("threshold", threshold)
        self.conformal = conformal_sets.checked_record(conformal, "Predictor(conformal=…)", len(class_names))
        # aps/raps draw a uniform per painting: one stream over the predictor's life, so no two calls share their draws.
        self.sets_generator = torch.Generator().manual_seed(self.conformal["seed"]) if self.conformal else None
        self.network, self.class_names = network.eval(), list(class_names)
        self.preprocessing = dict(preprocessing) if isinstance(preprocessing, Mapping) else [dict(p) for p in preprocessing]
        self.batch_size, self.threshold = batch_size, threshold
        self.device = next(network.parameters()).device

    @classmethod
    def from_checkpoint(
        cls,
        ckpt_path: str | Path | Sequence[str | Path],
        device: str = "cpu",
        ensemble: str | None = None,
        conformal: str | Path | None = None,
    ) -> Predictor:
        """A training checkpoint, a run folder (its best checkpoint) or a sweep folder (its best job); an ensemble:
        a list of them, or a sweep folder with ``ensemble="all"`` or ``"top3"``. ``conformal``: a conformal.json
        (``evaluate … conformal.fit=true``) for the prediction sets instead of the run's."""
        predictor = cls.from_trained(open_run(ckpt_path, ensemble).load(device))
        if conformal is not None:
            predictor.conformal = conformal_sets.read_file(conformal, len(predictor.class_names))
            predictor.sets_generator = torch.Generator().manual_seed(predictor.conformal["seed"]) if predictor.conformal else None
        return predictor

    @classmethod
    def from_trained(cls, trained: TrainedModel | TrainedEnsemble) -> Predictor:
        return cls(trained.network, trained.class_names, trained.preprocessing, threshold=trained.threshold, conformal=trained.conformal)

    @classmethod
    def from_export(cls, folder: str | Path, device: str = "cpu") -> Predictor:
        """An export folder (``python -m artmove.export``): its config.json + model.safetensors, timm's layout
        or artmove's (any head, or an ensemble), rebuilt without the training code; its threshold with it."""
        network, names, preprocessing = load_weights_folder(folder)
        return cls(
            network.to(resolve_device(device)),
            names,
            preprocessing,
            threshold=export_threshold(folder),
            conformal=export_conformal(folder, len(names)),
        )

    @property
    def explains(self) -> bool:
        """Grad-CAM needs one network: an ensemble has none to explain."""
        return not isinstance(self.network, Ensemble)

    @property
    def decode_size(self) -> int:
        """Shortest side worth decoding for its preprocessing (an ensemble's members may differ: the largest)."""
        pre = self.preprocessing
        return decode_size(pre) if isinstance(pre, dict) else max(decode_size(p) for p in pre)

    def __call__(
        self, images: ImageInput | list[ImageInput] | tuple[ImageInput, ...], top_k: int = 5, tta: str | None = None, gradcam: bool = False
    ) -> Prediction | list[Prediction]:
        """Predict one image (a path, a PIL image, a 3 x H x W tensor) or a list of them (or an N x 3 x H x W
        tensor). Tensors are pixels (uint8, or floats in [0, 1]) and get the same resize, crop and
        normalisation as files. ``tta``: none | flip | five_crop | ten_crop. One image in, one Prediction out."""
        inputs: Iterable[ImageInput]
        if isinstance(images, (list, tuple)) or (isinstance(images, torch.Tensor) and images.ndim == 4):
            inputs, single = images, False
        else:
            inputs, single = [images], True
        pictures = [self.picture(image) for image in inputs]
        if not pictures:
            return []
        if gradcam and not self.explains:
            raise ConfigError("gradcam=True draws one network's Grad-CAM: an ensemble has none; use a member's Predictor.")
        k = max(1, min(int(top_k), len(self.class_names)))
        views = views_transform(self.preprocessing, tta or "none")
        probs = torch.cat(
            [
                predict_views(
                    self.network, views_to(stack_views([views(p) for p in pictures[start : start + self.batch_size]]), self.device)
                ).cpu()
                for start in range(0, len(pictures), self.batch_size)
            ]
        )
        best = probs.topk(k, dim=1)
        overlays = self.explain(pictures, best.indices[:, 0]) if gradcam else [None] * len(pictures)
        threshold, record = self.threshold, self.conformal
        mask = conformal_sets.prediction_sets(probs, record, self.sets_generator) if record else None
        predictions = [
            Prediction(
                [(self.class_names[c], float(p)) for c, p in zip(indices.tolist(), values.tolist(), strict=True)],
                overlays[row],
                None if threshold is None else bool(values[0] < threshold),
                None if mask is None else conformal_sets.movements(mask[row], probs[row], self.class_names),
                None if record is None else record["coverage"],
            )
            for row, (indices, values) in enumerate(zip(best.indices, best.values, strict=True))
        ]
        return predictions[0] if single else predictions

    def picture(self, image: ImageInput) -> Image.Image:
        """Any accepted input as an RGB PIL image (files decode no larger than the preprocessing needs)."""
        if isinstance(image, (str, Path)):
            return load_rgb(image, self.decode_size)
        if isinstance(image, Image.Image):
            return within_aspect(to_rgb(image))
        if isinstance(image, torch.Tensor) and image.ndim == 3:
            return within_aspect(to_rgb(to_pil_image(image if image.dtype == torch.uint8 else image.clamp(0, 1))))
        raise TypeError(f"cannot predict a {type(image).__name__}: give a path, a PIL image or a 3 x H x W tensor.")

    def explain(self, pictures: list[Image.Image], targets: torch.Tensor) -> list[Image.Image]:
        """Grad-CAM overlays for ``targets`` on the eval crop the network saw."""
        pre = self.preprocessing
        if not isinstance(pre, dict):  # one per ensemble member: __call__ refuses an ensemble's Grad-CAM first
            raise TypeError("Grad-CAM explains one network, read through one preprocessing.")
        transform = eval_transform(pre)
        batch = torch.stack([transform(p) for p in pictures]).to(self.device)
        cams = grad_cam(self.network, batch, targets.to(self.device))
        return [overlay(to_pil(image, pre["mean"], pre["std"]), cam) for image, cam in zip(batch, cams, strict=True)]
