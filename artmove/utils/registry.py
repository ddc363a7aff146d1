"""Classes by name (heads, fine-tuning policies), as timm's model registry: a config and a checkpoint
name one the same way, ``{name: multiscale, stages: 3}``, and only artmove's own registered classes
can be built. A name a file gives is looked up here, never imported."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from artmove.errors import ConfigError


class Named(Protocol):
    """What a registered class has: the ``name`` configs and checkpoints use."""

    name: ClassVar[str]


T = TypeVar("T", bound=type[Named])


class Registry(Generic[T]):
    def __init__(self, kind: str, group: str):
        self.kind, self.group = kind, group  # what a message calls it, and the config node that names one ("head")
        self._classes: dict[str, T] = {}

    def register(self, cls: T) -> T:
        """Class decorator: ``cls.name`` is the name configs and checkpoints use."""
        self._classes[cls.name] = cls
        return cls

    @property
    def names(self) -> list[str]:
        return list(self._classes)

    def get(self, name: Any) -> T:
        if not isinstance(name, str) or name not in self._classes:
            raise ConfigError(
                f"{self.group}.name={name!r}: artmove has no {self.kind} of that name; use one of {', '.join(self._classes)}."
            )
        return self._classes[name]

    def settings_of(self, settings: Mapping[str, Any], context: tuple[str, ...] = ()) -> tuple[T, dict[str, Any]]:
        """The class ``settings["name"]`` names and its other settings, each checked to be one the class
        takes (``context``: the arguments the caller passes itself, never settings)."""
        settings = dict(settings)
        cls = self.get(settings.pop("name", None))
        accepted = [p for p in inspect.signature(cls).parameters if p not in context and p not in ("self", "args", "kwargs")]
        unknown = sorted(set(settings) - set(accepted))
        if unknown:
            raise ConfigError(
                f"{self.group}.{unknown[0]}: {self.kind} {cls.name} has no such setting; its settings: {', '.join(accepted) or 'none'}."
            )
        return cls, settings

    def build(self, settings: Mapping[str, Any], **context: Any) -> Any:
        """An instance of the class ``settings`` names, built with its settings and ``context``."""
        cls, kwargs = self.settings_of(settings, tuple(context))
        return cls(**context, **kwargs)
