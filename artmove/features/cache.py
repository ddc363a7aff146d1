"""Pooled features of a frozen backbone, computed once per split and kept on disk (fp16).

A cache entry is keyed by everything that changes the features: the backbone's name and
actual weights (a hash of its tensors, head excluded), the split's content (for files, each
path, label, size and modification time; for generated data, its parameters) and the eval
transform (input size, interpolation, mean/std, crop). Anything else changed gives a new key,
never a stale entry; loader settings (batch size, workers) change nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from artmove.data.sources.base import SizedDataset
from artmove.utils.io import atomic_write, fingerprint
from artmove.utils.progress import progress

if TYPE_CHECKING:
    from artmove.models.network import ArtNetwork

log = logging.getLogger(__name__)


def weights_digest(backbone: nn.Module) -> str:
    """A hash of the backbone's parameters and buffers (the network's head is not part of it)."""
    digest = hashlib.sha256()
    for name, tensor in backbone.state_dict(keep_vars=True).items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def cache_tag(head: nn.Module) -> str | None:
    """What tells a head's cached vectors apart: its settings (None for the linear head: timm's pooled
    pre-logits, with the keys of caches written before heads existed)."""
    return None if head.name == "linear" else json.dumps(head.settings, sort_keys=True)


def content_digest(dataset: Dataset) -> str:
    """What a split holds: its files (path, label, size, mtime), or a generated split's parameters (its repr)."""
    samples = getattr(dataset, "samples", None)
    if samples is None:
        if type(dataset).__repr__ is object.__repr__:
            raise TypeError(f"{type(dataset).__name__} has neither files nor a repr that identifies its content")
        return repr(dataset)
    digest = hashlib.sha256()
    for path, label in samples:
        size, mtime_ns = fingerprint(os.stat(path))
        digest.update(f"{os.path.abspath(path)}|{label}|{size}|{mtime_ns}\n".encode())
    return f"{len(samples)} files {digest.hexdigest()}"


def cache_key(backbone: str, weights: str, split: str, content: str, transform: str, head: str | None = None) -> str:
    """``head``: the head's ``cache_tag``, which vectors are cached (None: timm's pooled pre-logits, the
    linear head's, with the keys of caches written before heads existed)."""
    fields = {"backbone": backbone, "weights": weights, "split": split, "content": content, "transform": transform}
    if head is not None:
        fields["head"] = head
    payload = json.dumps(fields)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


@torch.inference_mode()
def extract(network: ArtNetwork, dataset: SizedDataset, batch_size: int, num_workers: int, device: torch.device):
    """(``network.pooled(images)`` as fp16 on CPU, labels) of a whole data set, in order: the vectors
    the head's trainable part reads (linear: timm's pooled pre-logits; multiscale: the pooled stages)."""
    # Its own generator: extracting leaves the global RNG (the seeded run's shuffling) untouched.
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, generator=torch.Generator())
    was_training = network.training
    network.eval().to(device)
    features, labels = [], []
    with progress(len(dataset), "feature extraction") as bar:
        for images, targets in loader:
            features.append(network.pooled(images.to(device)).to(torch.float16).cpu())
            labels.append(torch.as_tensor(targets, dtype=torch.long))
            bar.update(len(images))
    network.train(was_training)
    return torch.cat(features), torch.cat(labels)


class FeatureCache:
    """``root/<backbone>/<key>.pt`` = {"features": fp16 (N, C), "labels": int64 (N,)}."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(os.path.expanduser(str(root)))

    def path(self, backbone: str, key: str) -> Path:
        return self.root / backbone.replace("/", "_") / f"{key}.pt"

    def load_or_extract(self, backbone: str, key: str, split: str, compute) -> tuple[torch.Tensor, torch.Tensor]:
        path = self.path(backbone, key)
        if path.is_file():
            entry = torch.load(path, map_location="cpu", weights_only=True)
            log.info("features %s: %d cached in %s", split, len(entry["labels"]), path)
            return entry["features"], entry["labels"]
        started = time.time()
        features, labels = compute()
        with atomic_write(path, "wb") as file:  # a crash never leaves half an entry
            torch.save({"features": features, "labels": labels}, file)
        log.info("features %s: %d computed in %.1f s, cached in %s", split, len(labels), time.time() - started, path)
        return features, labels


def feature_device(device: str) -> torch.device:
    """``auto``: the GPU when there is one; else the device named (``cpu``, ``cuda:1``)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
