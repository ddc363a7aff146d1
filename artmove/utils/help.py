"""Every command's ``--help``: its usage, the top-level keys and config groups of ITS primary config (with
the descriptions their YAML comments give, read by :mod:`artmove.utils.confdoc`), how to print the
resolved config, shell completion and ``python -m artmove.list``.

Hydra prints it: ``conf/hydra/help/artmove.yaml`` sets ``hydra.help.template`` to the
``artmove.help`` resolver (registered in ``artmove/__init__.py``), which calls :func:`command_help`
with the composed config, so ``--help`` after overrides (``experiment=paintings --help``) shows the
values those give.
"""

from __future__ import annotations

import ast
import importlib.util
import shutil
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from artmove.utils import confdoc


@dataclass(frozen=True)
class Command:
    module: str  # python -m <module>
    script: str  # the console script pyproject.toml installs
    config: str | None  # primary config name, None for an argparse command


# Keyed by Hydra's job name (the command module's file name). tests/test_help.py checks it against pyproject.toml.
COMMANDS: dict[str, Command] = {
    "train": Command("artmove.train", "artmove-train", "train"),
    "evaluate": Command("artmove.evaluate", "artmove-evaluate", "evaluate"),
    "predict": Command("artmove.predict", "artmove-predict", "predict"),
    "report": Command("artmove.report", "artmove-report", None),
    "inspect": Command("artmove.data.inspect", "artmove-inspect", "data_tools"),
    "verify": Command("artmove.data.verify", "artmove-verify", "data_tools"),
    "prepare": Command("artmove.data.prepare", "artmove-prepare", "data_tools"),
    "export": Command("artmove.export", "artmove-export", "export"),
    "demo": Command("artmove.demo", "artmove-demo", "demo"),
    "list": Command("artmove.list", "artmove-list", None),
}
KEY_COLUMN = 26


def module_usage(module: str) -> tuple[str, str]:
    """(usage, what it does) from the command module's docstring: ```python -m …`: what it does.``"""
    spec = importlib.util.find_spec(module)
    text = ""
    if spec is not None and spec.origin:
        with open(spec.origin, encoding="utf-8") as file:
            text = ast.get_docstring(ast.parse(file.read())) or ""
    first = text.split("\n\n", 1)[0].replace("\n", " ")
    if first.startswith("`") and "`:" in first:
        usage, _, purpose = first[1:].partition("`:")
        return usage, purpose.strip()
    return f"python -m {module}", first


def terminal_width() -> int:
    return max(60, min(110, shutil.get_terminal_size((100, 24)).columns))


def described(name: str, doc: str, width: int) -> list[str]:
    """``  name    description`` wrapped under a fixed column (argparse's layout)."""
    indent = " " * KEY_COLUMN
    head = f"  {name}"
    if not doc:
        return [head]
    if len(head) >= KEY_COLUMN - 1:
        return [head, *textwrap.wrap(doc, width, initial_indent=indent, subsequent_indent=indent, break_on_hyphens=False)]
    return textwrap.wrap(doc, width, initial_indent=head.ljust(KEY_COLUMN), subsequent_indent=indent, break_on_hyphens=False)


def _for_this_command(doc: str, command: str) -> tuple[bool, str]:
    """A shared config's comment may start with the commands it concerns (``prepare: …``,
    ``verify/prepare: …``): (does it concern ``command``, the comment without that prefix)."""
    head, sep, rest = doc.partition(": ")
    names = head.split("/")
    if sep and all(name in COMMANDS for name in names):
        return command in names, rest
    return True, doc


def _value(entry: confdoc.Entry, cfg: Mapping[str, Any] | None) -> str:
    """The key's value in the composed config as written (``${…}`` unresolved), ``…`` for a mapping;
    the file's text without a composed config."""
    from omegaconf import DictConfig, ListConfig

    node = cfg._get_node(entry.name) if isinstance(cfg, DictConfig) and entry.name in cfg else None
    if node is None:
        return entry.value or "…"
    if isinstance(node, DictConfig):
        return "…"
    if isinstance(node, ListConfig):
        return entry.value or "…"
    raw = node._value()
    return "null" if raw is None else str(raw).lower() if isinstance(raw, bool) else str(raw)


def command_help(config_name: str, command: str, cfg: Mapping[str, Any] | None = None) -> str:
    """The ``--help`` text of a Hydra command: ``command`` is Hydra's job name, ``config_name`` its primary config."""
    width = terminal_width()
    spec = COMMANDS.get(command, Command(f"artmove.{command}", f"artmove-{command}", config_name))
    usage, purpose = module_usage(spec.module)
    doc = confdoc.read(confdoc.conf_root() / f"{config_name}.yaml")
    lines = [f"usage: {usage} [key=value …] [group=option …]", ""]
    if purpose:
        lines += [*textwrap.wrap(purpose[:1].upper() + purpose[1:], width), ""]
    lines.append("Settings (key=value; shown with the value they have now):")
    for entry in doc.keys:
        concerns, text = _for_this_command(entry.doc, command)
        if not concerns:
            continue
        value = _value(entry, cfg)
        name = f"{entry.name}.…" if value == "…" else f"{entry.name}={value}"
        lines += described(name, text + (" (required)" if value == "???" else ""), width)
    groups = [g for g in doc.groups if g.name not in ("hydra",) and not g.name.startswith("hydra/")]
    if groups:
        lines += [
            "",
            "Config groups (group=option; the one chosen now first, then the others; a group's own keys as",
            "group.key=value, e.g. data.root=/path/to/paintings data.batch_size=64):",
        ]
        choices = _choices(cfg)
        for group in groups:
            chosen = choices.get(group.name, group.value)
            chosen = "null" if chosen in (None, "None") else str(chosen)
            options = [chosen] + [o for o in confdoc.group_options(group.name) if o != chosen]
            if group.value == "null" and "null" not in options:
                options.append("null")
            lines += described(f"{group.name}={'|'.join(options)}", group.doc or _option_summary(group.name, chosen), width)
    program = f"python -m {spec.module}"
    lines += [
        "",
        "More:",
        *described(
            f"{program} … --cfg job --resolve",
            "print the config this command would run with (overrides applied, "
            "${…} resolved) and exit; --cfg job keeps the ${…} as written, --cfg all adds Hydra's settings",
            width,
        ),
        *described(
            "python -m artmove.list",
            "backbones with weights available offline, data formats (data=…), presets (experiment=…), heads, fine-tuning policies",
            width,
        ),
        *described(
            f'eval "$({spec.script} -sc install=bash)"',
            "complete keys, groups and options with Tab after "
            f"{spec.script} (the console script; zsh: the same after `autoload -U bashcompinit && bashcompinit`; "
            f"fish: {spec.script} -sc install=fish | source). docs/cli.md",
            width,
        ),
        *described(f"{program} --hydra-help", "Hydra's own flags: -m/--multirun (sweeps), -cd/--config-dir, --info, …", width),
    ]
    return "\n".join(lines).replace("$", "$$")  # Hydra passes the template through string.Template


def argparse_description(module: str) -> str:
    """An argparse command's description: what its docstring says it does, wrapped."""
    purpose = module_usage(module)[1].replace("``", "")
    return textwrap.fill(purpose[:1].upper() + purpose[1:], terminal_width())


def argparse_epilog(command: str) -> str:
    """The end of an argparse command's ``--help`` (report, list): where the other commands' settings are."""
    lines = [
        "More:",
        "  python -m artmove.list              backbones with offline weights, data formats, presets, heads, policies",
        "  python -m artmove.<command> --help  each command's settings: train, evaluate, predict, export, demo,",
        "                                      data.verify, data.prepare, data.inspect, report, list",
    ]
    if command == "list":
        del lines[1]
    if command == "report":
        lines[1:1] = [
            "  python -m artmove.report outputs/multirun/2026-01-31/12-00-00   one sweep",
            "  python -m artmove.report outputs/2026-01-31/* --out reports/jan  single runs, compared",
        ]
    return "\n".join(lines)


def _option_summary(group: str, option: str) -> str:
    """``option: <first sentence of conf/<group>/<option>.yaml's top comment>``, or "" without one."""
    path = confdoc.conf_root() / group / f"{option}.yaml"
    text = confdoc.file_summary(path) if path.is_file() else ""
    return f"{option}: {text}" if text else ""


def _choices(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    try:
        return dict(cfg["hydra"]["runtime"]["choices"]) if cfg is not None else {}
    except Exception:  # noqa: BLE001 - no Hydra node (a plain config): the files' defaults
        return {}


def help_resolver(config_name: str, command: str, *, _root_=None) -> str:
    """``${artmove.help:${hydra.job.config_name},${hydra.job.name}}``: what conf/hydra/help/artmove.yaml prints."""
    return command_help(str(config_name), str(command), _root_)
