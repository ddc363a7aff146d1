"""A data set as a run records it: its format by name, its location and the settings that decide which
painting lands in which split; what evaluate and export rebuild the run's splits from.

A training run writes this record into its checkpoints (``artmove.models.trained.RUN_RECORD``), resolved
when it ran: plain values, no interpolation. Read back from a file it is checked against
:class:`DataSettings` (pydantic: types, ranges and unknown keys refused in one declaration, with
its own messages, instead of a hand-written check per key), then the source is looked up in
:data:`~artmove.data.sources.SOURCE_FORMATS` by name: nothing a file names is imported or instantiated.
The loader settings and caches of this machine (batch size, workers, ``prepared_dir``, the
Hugging Face image cache) are never taken from a file: they are the reader's.
"""

from __future__ import annotations

import functools
import inspect
import os
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator

from artmove.data.sources import SOURCE_FORMATS
from artmove.errors import ConfigError

#: Settings of a source that belong to the machine reading the data (a cache folder), never to a record.
LOCAL_SOURCE_SETTINGS = ("root", "cache_dir")
#: The data module's settings that are the reader's own (loaders, caches, training-only augmentation):
#: accepted in a run's saved config, never used from it.
LOCAL_MODULE_SETTINGS = (
    "_target_",
    "batch_size",
    "num_workers",
    "pin_memory",
    "persistent_workers",
    "prefetch_factor",
    "augment",
    "balance",
    "prepared_dir",
)
MODULE_TARGET = "artmove.data.PaintingDataModule"


class DataSettings(BaseModel):
    """What decides a run's splits: the format (``data=…``), ``root``, the source's own settings, the seed
    its splits were drawn with, and how artists group them."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    format: str
    root: str | None = None
    source: dict[str, Any] = Field(default_factory=dict)
    seed: int = Field(ge=0)
    group_by: Literal["artist"] | None = None
    regroup_published: bool = False
    max_bad_fraction: float = Field(default=0.01, ge=0, le=1)

    @field_validator("format")
    @classmethod
    def _known_format(cls, name: str) -> str:
        if name not in SOURCE_FORMATS:
            raise ValueError(f"{name!r} is not one of artmove's data formats ({', '.join(SOURCE_FORMATS)})")
        return name

    @classmethod
    def read(cls, record: Any, where: Path) -> DataSettings:
        """A record read from a file, checked; one ConfigError naming the file and the first wrong entry."""
        try:
            settings = cls.model_validate(record)
            source_schema(settings.format).model_validate(settings.source)
            return settings
        except ValidationError as error:
            prefix = "" if error.title == cls.__name__ else "source."
            raise ConfigError(
                f"{where}: its data record is not one artmove writes ({prefix}{describe(error)}): refused. Give the data "
                "set on the command line instead (e.g. data=folder data.root=…)."
            ) from None

    @classmethod
    def from_config(cls, data: Mapping[str, Any], seed: Any, where: Path | str) -> DataSettings:
        """The record of a composed ``data`` node (resolved: plain values), its splits drawn with ``seed``
        unless the node names its own. A source artmove does not ship (a user's own ``_target_``) has no
        record: ConfigError."""
        data = dict(data)
        source = dict(data.pop("source", None) or {})
        target, partial = source.pop("_target_", None), source.pop("_partial_", True)
        names = {f"{cls_.__module__.rsplit('.', 1)[0]}.{cls_.__name__}": name for name, cls_ in SOURCE_FORMATS.items()}
        if data.get("_target_", MODULE_TARGET) != MODULE_TARGET or target not in names or partial is not True:
            raise ConfigError(
                f"{where}: its data set is not one of artmove's formats (data._target_={data.get('_target_')!r}, "
                f"data.source._target_={target!r}): give it on the command line (e.g. data=folder data.root=…)."
            )
        for key in LOCAL_MODULE_SETTINGS:
            data.pop(key, None)
        for key in LOCAL_SOURCE_SETTINGS[1:]:
            source.pop(key, None)
        module_seed = data.pop("seed", None)
        record = {"format": names[target], "source": source, "seed": seed if module_seed is None else module_seed, **data}
        return cls.read(record, Path(str(where)))

    def build(self, preprocessing: Mapping[str, Any] | None, **local: Any):
        """The data module of these settings, its source looked up by format name; ``local``: this machine's
        loader settings (``batch_size``, ``num_workers``…), ``prepared_dir`` defaulting to artmove's cache."""
        from artmove.data.datamodule import PaintingDataModule

        source_class = SOURCE_FORMATS[self.format]
        source_local = (
            {"cache_dir": str(Path(local_cache_dir()) / "hf")} if "cache_dir" in inspect.signature(source_class).parameters else {}
        )
        source = functools.partial(source_class, **self.source, **source_local)
        local = {"prepared_dir": local_cache_dir(), **local}
        return PaintingDataModule(
            source=source,
            preprocessing=preprocessing,
            root=self.root,
            seed=self.seed,
            group_by=self.group_by,
            regroup_published=self.regroup_published,
            max_bad_fraction=self.max_bad_fraction,
            **local,
        )

    def record(self) -> dict[str, Any]:
        """Plain data, as checkpoints and results.json keep it."""
        return self.model_dump()


def local_cache_dir() -> str:
    """This machine's cache of prepared copies: $ARTMOVE_CACHE, else ~/.cache/artmove (as ``conf/data_module.yaml``)."""
    return os.environ.get("ARTMOVE_CACHE", "~/.cache/artmove")


@functools.cache
def source_schema(format_name: str) -> type[BaseModel]:
    """The settings a format's source takes (its constructor's typed parameters, but root and caches), as a
    strict pydantic model: a file may set only those, with their types."""
    source_class = SOURCE_FORMATS[format_name]
    hints = typing.get_type_hints(source_class.__init__)
    fields: dict[str, Any] = {}
    for name, parameter in inspect.signature(source_class).parameters.items():
        if name in LOCAL_SOURCE_SETTINGS or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        default = ... if parameter.default is parameter.empty else parameter.default
        fields[name] = (hints.get(name, Any), default)
    config = ConfigDict(extra="forbid", strict=True, arbitrary_types_allowed=True)
    return create_model(f"{source_class.__name__}Settings", __config__=config, **fields)


def describe(error: ValidationError) -> str:
    """The first problem of a pydantic error, in one phrase: ``source.val_fraction: Input should be a valid number``."""
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "its top"
    return f"{where}: {first['msg']}"
