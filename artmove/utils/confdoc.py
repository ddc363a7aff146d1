"""What artmove's YAML configs say about themselves: a file's description (its top comment), each
top-level key's and each defaults-list entry's description (the comment lines directly above it and
its end-of-line comment). The comments are the documentation; `--help` and `python -m artmove.list`
read them from here, so they never drift from the files.

A small line reader, not a YAML parser: the configs are written in one plain style (top-level keys at
column 0, a ``defaults:`` list of ``- group: option`` lines, ``#`` comments on their own lines or after
a value).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

_KEY = re.compile(r"^([A-Za-z_][\w.-]*)\s*:(?:\s+|$)(.*)$")
_DEFAULT = re.compile(r"^\s*-\s*(?:(override)\s+)?([^:#\s]+)(?:\s*:\s*([^#]*?))?\s*(?:#\s?(.*))?$")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z`(\"'])")


@dataclass(frozen=True)
class Entry:
    """A top-level key (``name``, its value as written) or a defaults entry (``name`` the group, ``value``
    the option), with its description."""

    name: str
    value: str
    doc: str


@dataclass(frozen=True)
class ConfigDoc:
    header: str  # the comment block at the top of the file
    keys: tuple[Entry, ...]  # top-level keys, `defaults` and `hydra` left out
    groups: tuple[Entry, ...]  # the defaults list's `group: option` entries (no `_self_`, no `override`)


def conf_root() -> Path:
    """The folder of artmove's configs (``conf/``, installed as ``artmove.conf``)."""
    import importlib

    # by name: the type checker sees the repository, where conf/ is not inside artmove/
    package = importlib.import_module("artmove.conf")
    return Path(next(iter(package.__path__)))


def split_comment(line: str) -> tuple[str, str]:
    """``value  # comment`` -> (value, comment); a ``#`` inside quotes or not after a space is kept."""
    quote = None
    for index, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1] in " \t"):
            return line[:index].rstrip(), line[index + 1 :].strip()
    return line.rstrip(), ""


def _comment_text(line: str) -> str | None:
    """The text of a comment-only line (indented or not), None for any other line."""
    stripped = line.strip()
    if not stripped.startswith("#"):
        return None
    return stripped[1:].strip()


def _join(lines: list[str]) -> str:
    return " ".join(line for line in lines if line)


@cache
def read(path: str | Path) -> ConfigDoc:
    """Read one YAML config's comments (cached per path)."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    header: list[str] = []
    start = len(lines)  # the first line after the header comment
    for index, line in enumerate(lines):
        text = _comment_text(line) if not line[:1].isspace() else None
        if text is None:
            start = index
            break
        if not text.startswith("@package"):
            header.append(text)
    keys: list[Entry] = []
    groups: list[Entry] = []
    above: list[str] = []  # the comment lines directly above the current line
    in_defaults = False
    for line in lines[start:]:
        if not line.strip():
            above = []
            continue
        text = _comment_text(line)
        if text is not None:  # a nested key's comment (indented, outside the defaults list) describes no top-level entry
            above = [*above, text] if in_defaults or not line[:1].isspace() else []
            continue
        if line[:1].isspace() or line.lstrip().startswith("-"):
            if in_defaults:
                match = _DEFAULT.match(line)
                if match and not match[1] and match[3] is not None and not match[2].startswith("/"):
                    groups.append(Entry(match[2], match[3].strip(), _join([*above, match[4] or ""])))
            above = []
            continue
        match = _KEY.match(line)
        if match:
            name = match[1]
            value, inline = split_comment(match[2])
            in_defaults = name == "defaults"
            if name not in ("defaults", "hydra"):
                keys.append(Entry(name, value, _join([*above, inline])))
        above = []
    return ConfigDoc(_join(header), tuple(keys), tuple(groups))


def summary(text: str) -> str:
    """The first sentence of a description (a trailing ``:`` dropped)."""
    first = _SENTENCE_END.split(text.strip(), maxsplit=1)[0] if text else ""
    return first.rstrip(":").rstrip()


def file_summary(path: Path) -> str:
    """The first sentence of a config file's top comment: what this option is, in a line.
    Command lines quoted in the comment (indented ``#   python …`` lines) end it too."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    kept = []
    for line in lines:
        text = _comment_text(line) if not line[:1].isspace() else None
        if text is None or line.startswith("#   "):
            break
        if not text.startswith("@package"):
            kept.append(text)
    return summary(_join(kept))


def group_options(group: str, root: Path | None = None) -> list[str]:
    """The options of a config group: the names of ``conf/<group>/*.yaml``, sorted."""
    folder = (root or conf_root()) / group
    return sorted(path.stem for path in folder.glob("*.yaml")) if folder.is_dir() else []
