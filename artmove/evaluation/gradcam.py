"""Grad-CAM (Selvaraju et al. 2017) on a network's final feature map.

The class score's gradient with respect to the feature map, averaged over space, weighs the
map's channels; their positive sum, upsampled to the input, shows the regions that raised the
score. Needs only timm's ``forward_features`` / ``forward_head``, which every timm model and
every artmove network has, whatever its head: a head that reads several stages (``multiscale``)
gets them all, and the map explained is the final one (the others held fixed).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from PIL import Image

from artmove.errors import ConfigError
from artmove.models.heads import Features


def grad_cam(model: torch.nn.Module, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``[B, C, H, W]`` images and target classes ``[B]`` -> heat maps ``[B, H, W]`` in [0, 1]."""
    # timm's contract, which nn.Module's attribute lookup types as ``Tensor | Module``
    forward_features = cast(Callable[[torch.Tensor], Features], model.forward_features)
    forward_head = cast(Callable[[Features], torch.Tensor], model.forward_head)
    with torch.enable_grad():
        output = forward_features(images)
        stages = [x.detach() for x in output] if isinstance(output, list) else [output.detach()]
        features = stages[-1].requires_grad_(True)
        scores = forward_head(stages if len(stages) > 1 else features).gather(1, targets[:, None]).sum()
        (gradients,) = torch.autograd.grad(scores, features)
    features, gradients = _channels_first(features, model), _channels_first(gradients, model)
    weights = gradients.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * features).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
    return (cam / peak).detach()


def _channels_first(features: torch.Tensor, model: torch.nn.Module) -> torch.Tensor:
    """``[B, C, h, w]`` from a CNN's map, a channels-last map (Swin) or ViT tokens on a square grid."""
    channels = getattr(model, "num_features", features.shape[1])
    if features.ndim == 4:
        return features if features.shape[1] == channels else features.permute(0, 3, 1, 2)
    if features.ndim == 3:
        tokens = features[:, getattr(model, "num_prefix_tokens", 0) :]
        side = math.isqrt(tokens.shape[1])
        if side * side == tokens.shape[1]:
            return tokens.transpose(1, 2).reshape(len(tokens), -1, side, side)
    raise ConfigError(f"explain=true needs a spatial feature map; this backbone's features have shape {tuple(features.shape)}.")


def to_pil(image: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> Image.Image:
    """Undo the eval transform's normalisation: the crop the model saw, as RGB."""
    pixels = image.cpu() * torch.tensor(std)[:, None, None] + torch.tensor(mean)[:, None, None]
    return Image.fromarray((pixels.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))


def overlay(image: Image.Image, cam: torch.Tensor, alpha: float = 0.45, min_side: int = 224) -> Image.Image:
    """The heat map (jet colours) blended over the image, enlarged to at least ``min_side`` pixels."""
    heat = Image.fromarray((colormaps["jet"](cam.cpu().numpy())[..., :3] * 255).astype(np.uint8))
    blended = Image.blend(image.convert("RGB"), heat, alpha)
    scale = max(1, math.ceil(min_side / min(blended.size)))
    return blended.resize((blended.width * scale, blended.height * scale), Image.Resampling.BICUBIC) if scale > 1 else blended
