"""A run's files read as plain data: YAML through the safe loader (no tags), JSON, and the only
interpolations a file may hold, plain references to other keys of the same file.

Nothing read here is handed to OmegaConf's resolvers or to ``instantiate``: ``${oc.create:…}``,
``${oc.env:…}`` or any other ``${name:…}`` builds or reads something the file's author chose, so a
value holding one is refused where it is used (:func:`resolve_references`); every other value stays
the string it is.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from artmove.errors import ConfigError

#: ``${seed}``, ``${data.root}``, ``${..prepared_dir}``: a key of the same file, absolute or relative.
REFERENCE = re.compile(r"\$\{(\.*)([A-Za-z_][\w-]*(?:\.[A-Za-z_][\w-]*)*)\}")
MAX_DEPTH = 16  # references to references; a cycle stops here


class PlainLoader(yaml.SafeLoader):
    """PyYAML's safe loader (no tags that build objects), also refusing aliases (``*name``): Hydra writes none,
    and one makes a structure that contains itself or expands a few lines into gigabytes."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(None, None, "an alias (*name), which artmove never writes", self.peek_event().start_mark)
        return super().compose_node(parent, index)


def read_yaml(path: Path) -> Any:
    """A YAML file's plain content (dicts, lists, strings, numbers, booleans, None); a tag
    (``!!python/object/apply``…), an alias or a syntax error is one ConfigError naming the file."""
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=PlainLoader)  # PlainLoader is a SafeLoader
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path} is not readable ({error}).") from None
    except yaml.YAMLError as error:
        problem = str(getattr(error, "problem", None) or error).splitlines()[0]
        raise ConfigError(f"{path} is not plain YAML data ({problem}): a run's files are read as data, and this one is refused.") from None


def read_json(path: Path) -> Any:
    """A JSON file's content; a syntax error is one ConfigError naming the file."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path} is not readable ({error}).") from None
    except ValueError as error:
        raise ConfigError(f"{path} is not JSON ({error}): refused.") from None


def select(document: Any, key: str) -> Any:
    """``document``'s value at the dotted ``key`` (None where it has none), as written: no reference followed."""
    node = document
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def resolve_references(document: dict[str, Any], key: str, where: Path) -> Any:
    """The value at ``key`` with its plain references (``${seed}``, ``${..root}``) replaced by the values they
    name in the same ``document``; a resolver call (``${oc.create:…}``, ``${oc.env:…}``), an escape or a
    reference to a key the document lacks is a ConfigError naming the key. Containers are resolved whole."""
    return _resolve(document, select(document, key), key.split("."), where, key, 0)


def _resolve(document: dict[str, Any], value: Any, path: list[str], where: Path, key: str, depth: int) -> Any:
    if isinstance(value, dict):
        return {name: _resolve(document, item, [*path, str(name)], where, f"{key}.{name}", depth) for name, item in value.items()}
    if isinstance(value, list):
        return [_resolve(document, item, path, where, f"{key}[{index}]", depth) for index, item in enumerate(value)]
    if not isinstance(value, str) or ("${" not in value and "\\" not in value):
        return value
    if depth >= MAX_DEPTH:
        raise ConfigError(f"{where}: {key} refers to itself (through {MAX_DEPTH} references): refused.")
    if foreign_interpolation(value):
        raise ConfigError(
            f"{where}: {key}={value!r} is an interpolation other than a plain reference to a key of the same file "
            "(a resolver call such as ${oc.env:…} or an escape): a run's files are read as data, "
            "and this one is refused."
        )
    whole = REFERENCE.fullmatch(value)
    if whole:  # the referenced value as it is (a number stays a number)
        return _resolve(document, _target(document, whole, path, where, key), _target_path(whole, path), where, key, depth + 1)
    return REFERENCE.sub(
        lambda match: str(_resolve(document, _target(document, match, path, where, key), _target_path(match, path), where, key, depth + 1)),
        value,
    )


def foreign_interpolation(value: str) -> bool:
    """A string holding an interpolation other than plain references (a resolver call, an escape)."""
    return "\\$" in value or "${" in REFERENCE.sub("", value)


def _target_path(match: re.Match[str], path: list[str]) -> list[str]:
    dots, name = match[1], match[2].split(".")
    if not dots:
        return name
    parent = path[: len(path) - len(dots)]  # ${.x}: a sibling, ${..x}: a key of the parent node
    return [*parent, *name]


def _target(document: dict[str, Any], match: re.Match[str], path: list[str], where: Path, key: str) -> Any:
    target = _target_path(match, path)
    if len(match[1]) > len(path):
        raise ConfigError(f"{where}: {key} refers above the file's top ({match[0]}): refused.")
    node: Any = document
    for part in target:
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"{where}: {key} refers to {'.'.join(target)}, which the file does not hold: refused.")
        node = node[part]
    return node


@functools.cache
def shipped_values() -> tuple[frozenset[str], frozenset[str]]:
    """What artmove's own configs hold: every ``_target_`` they name, and every value with an interpolation
    (``${oc.env:ARTMOVE_CACHE,…}``, ``${hydra:runtime.output_dir}``…). A saved config may name no other code
    and hold no other interpolation but plain references to its own keys."""
    from artmove.utils.confdoc import conf_root

    targets: set[str] = set()
    interpolations: set[str] = set()
    for path in conf_root().rglob("*.yaml"):
        for key, value in _keyed_strings(yaml.safe_load(path.read_text(encoding="utf-8")), ""):
            if key.endswith("_target_"):
                targets.add(value)
            if "${" in value:
                interpolations.add(value)
    return frozenset(targets), frozenset(interpolations)


def check_saved_config(document: Any, where: Path) -> None:
    """Refuse a saved config that names code artmove's own configs never name (a ``_target_``, anywhere), or
    holds an interpolation that is neither plain references to its own keys nor one artmove's configs ship,
    word for word. Nothing is resolved or built here or later: the check refuses a file someone edited to
    hold ``${oc.create:…}`` or another ``_target_``, before any command uses any of it."""
    targets, interpolations = shipped_values()
    foreign = [
        f"{key}={value!r}"
        for key, value in _keyed_items(document, "")
        if key.rsplit(".", 1)[-1] == "_target_" and (not isinstance(value, str) or value not in targets)
    ]
    if foreign:
        raise ConfigError(
            f"{where} names code artmove's own configs never name ({'; '.join(foreign[:3])}): a saved config "
            "is read as data, and this one is refused. "
            "Give the settings on the command line instead (e.g. data=… data.root=…)."
        )
    for key, value in _keyed_strings(document, ""):
        if foreign_interpolation(value) and value not in interpolations:
            raise ConfigError(
                f"{where}: {key or '<root>'}={value!r} is an interpolation artmove's configs never write (a resolver "
                "call or an escape): a run's files are read as data, and this one is refused. Give the settings on the "
                "command line instead (e.g. data=… data.root=…)."
            )


def _keyed_strings(node: Any, key: str) -> Iterator[tuple[str, str]]:
    for name, value in _keyed_items(node, key):
        if isinstance(value, str):
            yield name, value


def _keyed_items(node: Any, key: str) -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every leaf and every key (a ``_target_`` whose value is a mapping too)."""
    if isinstance(node, dict):
        for name, value in node.items():
            child = f"{key}.{name}" if key else str(name)
            if not isinstance(value, (dict, list)) or name == "_target_":
                yield child, value
            yield from _keyed_items(value, child) if isinstance(value, (dict, list)) else ()
    elif isinstance(node, list):
        for index, value in enumerate(node):
            if not isinstance(value, (dict, list)):
                yield f"{key}[{index}]", value
            yield from _keyed_items(value, f"{key}[{index}]") if isinstance(value, (dict, list)) else ()
