"""Which checkpoint class each of a data set's classes is scored as."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from omegaconf import OmegaConf

from artmove.errors import ConfigError


def load_class_map(class_map: Mapping[str, str | None] | str | None) -> dict[str, str | None]:
    """``class_map`` as given: a mapping, or a YAML/JSON file holding one."""
    if class_map is None:
        return {}
    if isinstance(class_map, str):
        path = Path(class_map)
        if not path.is_file():
            raise ConfigError(f"class_map={class_map}: no such file. Give a YAML/JSON file or an inline mapping.")
        loaded = OmegaConf.to_container(OmegaConf.load(path))
    else:
        loaded = class_map
    if not isinstance(loaded, Mapping):
        raise ConfigError("class_map must map data set class names to checkpoint class names (or null).")
    return {str(key): None if value is None else str(value) for key, value in loaded.items()}


def label_map(
    data_classes: Sequence[str], model_classes: Sequence[str], class_map: Mapping[str, str | None] | None = None
) -> list[int | None]:
    """For each data set label, the checkpoint's label; None drops that class's images.

    Classes are matched by name; ``class_map`` ({data class: checkpoint class or None}) covers
    the rest. Any data class left without a match is an error, raised before images are read.
    """
    class_map = dict(class_map or {})
    unknown_keys = sorted(set(class_map) - set(data_classes))
    if unknown_keys:
        raise ConfigError(f"class_map names classes the data set does not have: {unknown_keys}. Data set classes: {list(data_classes)}.")
    bad_targets = sorted({v for v in class_map.values() if v is not None} - set(model_classes))
    if bad_targets:
        raise ConfigError(
            f"class_map maps to classes the checkpoint does not have: {bad_targets}. Checkpoint classes: {list(model_classes)}."
        )
    index = {name: label for label, name in enumerate(model_classes)}
    mapping, unmatched = [], []
    for name in data_classes:
        target = class_map.get(name, name)
        if target is not None and target not in index:
            unmatched.append(name)
        mapping.append(None if target is None else index.get(target))
    if unmatched:
        raise ConfigError(
            f"the data set's classes differ from the checkpoint's: {len(unmatched)} of its {len(data_classes)} classes "
            f"are not among the checkpoint's {len(model_classes)} ({unmatched}). Map them explicitly, e.g. "
            f"class_map=\"{{'{unmatched[0]}': '<checkpoint class>'}}\" (null drops a class's images), or a YAML file "
            f"class_map=map.yaml. Checkpoint classes: {list(model_classes)}."
        )
    return mapping
