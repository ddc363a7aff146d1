"""``resume=<run folder>``: continue a run by re-running the command line it recorded, checked as data.

A run's ``.hydra/overrides.yaml`` is Hydra's record of its command line. It is read with the safe YAML
loader and each line parsed with Hydra's own override parser; it may hold only what a person types to
choose settings: ``key=value`` with a literal value (no interpolation, no resolver, nothing naming code
for ``instantiate``) on a key of artmove's train config, ``+trainer.<a Trainer argument>=value``, or
``group=option`` where the option is one of the files artmove's ``conf/<group>/`` ships (no path, no
``..``: what ``python -m artmove.list`` lists). The merged command line is composed once here, with Hydra's
compose API on artmove's own configs, so that a key the config does not have is one line before Hydra
starts. Anything else refuses the folder in one line, exit 2, before anything is written.

Hydra then composes the run's config as it composed it the first time and writes into the run's folder
(the folder's current place: a copied or moved run continues in itself).
"""

from __future__ import annotations

import functools
import inspect
import logging
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from artmove.errors import ConfigError
from artmove.runs.folder import CHECKPOINTS, RunFolder
from artmove.runs.plain import read_yaml
from artmove.utils.cli import say_user_error

if TYPE_CHECKING:
    from hydra.core.override_parser.types import Override

log = logging.getLogger(__name__)

#: What an override read from a run folder may not name: code for ``instantiate`` (a file is data).
CODE_KEYS = re.compile(r"_(target|partial|args|recursive|convert)_")


def resume_folder_arguments(argv: Sequence[str]) -> list[str]:
    """The command line that continues the run ``resume=<run folder>`` names, before Hydra composes anything.

    The run's own command line (:func:`saved_overrides`) comes first; the overrides given now are applied on
    top (one for the same key replaces the saved one), then ``hydra.run.dir=<run>`` and ``resume=<run>``.
    The lock, the check of the run's defining settings against ``last.ckpt`` (``CheckResume``: a changed
    backbone is one line and exit 2, before Hydra rewrites ``.hydra/``), ``KeepLoggedMetrics`` and the
    history of attempts then work as for a rerun into the folder. The resolved ``.hydra/config.yaml`` is
    never used as a config. Flags (``--cfg job``…) stay; ``-m`` is refused (one run).

    Any other command line (no ``resume=``, or ``resume=true|false|<file>``) comes back unchanged."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    argv = list(argv)
    given = [arg for arg in argv if re.match(r"\+{0,2}resume=", arg)]
    if not given:
        return argv
    parser = OverridesParser.create()
    try:
        value = parser.parse_override(given[-1]).value()
    except Exception:  # noqa: BLE001 - Hydra says what is wrong with it, with its own message
        return argv
    if isinstance(value, bool) or value is None or not Path(str(value)).expanduser().is_dir():
        return argv
    run = run_to_resume(Path(str(value)).expanduser(), given[-1])
    overrides, flags = _split_command_line(argv)
    if overrides is None:
        return argv  # not a command line Hydra accepts: it says why
    if any(flag in ("-m", "--multirun") for flag in flags):
        raise ConfigError(f"{given[-1]} continues one run: drop -m (to sweep again, start a new sweep).")
    try:
        parsed = parser.parse_overrides(overrides)
    except Exception:  # noqa: BLE001 - Hydra's own message, when it parses them
        return argv
    for override in parsed:
        if override.key_or_group == "hydra.run.dir" and Path(str(override.value())).expanduser().resolve() != run.path:
            raise ConfigError(f"{given[-1]} writes into that run's folder: drop {override.input_line}.")
    now = {(o.key_or_group, o.package): o for o in parsed if o.key_or_group not in ("resume", "hydra.run.dir")}
    merged: list[str] = []
    for saved in saved_overrides(run):
        new = now.pop((saved.key_or_group, saved.package), None)
        if new is None:
            merged.append(_input_line(saved))
        elif saved.is_add() and not (new.is_add() or new.is_force_add() or new.is_delete()):
            merged.append(f"++{new.input_line}")  # the key exists only through the saved +key=…
        else:
            merged.append(_input_line(new))
    merged += [_input_line(override) for override in now.values()]
    check_composes(merged, run)
    folder = hydra_string(str(run.path))
    log.debug("resume=%s: %s", run.path, " ".join(merged))
    return [*merged, f"hydra.run.dir={folder}", f"resume={folder}", *flags]


def _input_line(override: Override) -> str:
    """The override as it was typed: Hydra's parser sets it (Hydra's own methods assert it; the field is
    Optional only as a dataclass default)."""
    assert override.input_line is not None
    return override.input_line


def run_to_resume(folder: Path, given: str) -> RunFolder:
    """The training run folder ``resume=<folder>`` names (its ``checkpoints/`` folder counts as it), where it is now."""
    run = RunFolder((folder.parent if folder.name == CHECKPOINTS else folder).resolve())
    config = run.saved_config
    if config is None:
        raise ConfigError(
            f"{given}: {run.path} is not a training run folder (no .hydra/config.yaml): give the folder "
            "a train command wrote (a sweep's job: <sweep>/<job number>), or a checkpoint file."
        )
    if config.get("task_name", "train") != "train":
        raise ConfigError(f"{given}: {run.path} is a {config.get('task_name')!r} folder, not a training run's.")
    return run


def saved_overrides(run: RunFolder) -> list[Any]:
    """The run's command line (``.hydra/overrides.yaml``), each override checked by :func:`override_problem`;
    ``resume=`` is left out. Anything else refuses the folder in one line."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    path = run.hydra_file("overrides")
    if not path.is_file():
        raise ConfigError(
            f"resume={run.path}: no {path} (the run was not started from the command line): "
            f"run it again with its settings and hydra.run.dir={run.path}."
        )
    lines = read_yaml(path)
    lines = [] if lines is None else lines
    if not isinstance(lines, list) or not all(isinstance(line, str) for line in lines):
        raise ConfigError(f"resume={run.path}: {path} is not a list of key=value overrides, as Hydra writes it.")
    parser, overrides = OverridesParser.create(), []
    for line in lines:
        try:
            override = parser.parse_override(line)
        except Exception:  # noqa: BLE001 - any parse failure is the file's
            override = None
        why = "not an override Hydra reads" if override is None else override_problem(override, line)
        if why or override is None:  # None has its why: the test narrows the type
            raise ConfigError(
                f"resume={run.path}: {path} holds {line!r} ({why}); a saved command line is read as data and may hold only "
                f"plain settings. Continue it with its settings typed out and hydra.run.dir={run.path}."
            )
        if override.key_or_group != "resume":
            overrides.append(override)
    return overrides


def override_problem(override: Any, line: str) -> str:
    """Why a saved override is not a plain setting ("" when it is one)."""
    from artmove.utils.confdoc import conf_root, group_options

    name = override.key_or_group
    if override.is_sweep_override():
        return "a sweep"
    if name.startswith("hydra"):
        return "a setting of Hydra's"
    if CODE_KEYS.search(line):
        return "it names code"
    if "${" in line or "\\$" in line:
        return "an interpolation, not a literal value"
    if "/" in name or name.startswith(".") or ".." in name:
        return "not a key or a config group of artmove's"
    if (conf_root() / name).is_dir():  # a config group: its options are artmove's own files, by name
        options = [] if override.is_delete() and override.value() is None else _strings(override.value())
        known = group_options(name)
        unknown = [option for option in options if option not in known]
        return f"{name}={unknown[0]!r} is not one of artmove's {name} options ({', '.join(known)})" if unknown else ""
    if not all(isinstance(value, (str, int, float, bool)) or value is None for value in _leaves(override.value())):
        return "not a literal value"
    if (override.is_add() or override.is_force_add()) and not _trainer_argument(name):
        return "it adds a key artmove's config does not have (only +trainer.<a Lightning Trainer argument>= may be added)"
    return ""


def _trainer_argument(key: str) -> bool:
    import pytorch_lightning as pl

    section, _, argument = key.partition(".")
    return section == "trainer" and argument in inspect.signature(pl.Trainer).parameters


def _strings(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def _leaves(value: Any) -> Iterable[Any]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _leaves(item)
    elif isinstance(value, list):
        for item in value:
            yield from _leaves(item)
    else:
        yield value


def check_composes(overrides: list[str], run: RunFolder) -> None:
    """The merged command line composes with artmove's own configs (Hydra's compose API, nothing resolved or
    built): a key the train config does not have is one line here, before Hydra starts the run."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        return  # inside a running Hydra app (a test composing in-process): the run's own composition checks it
    try:
        with initialize_config_module(config_module="artmove.conf", version_base="1.3"):
            compose(config_name="train", overrides=overrides)
    except Exception as error:  # noqa: BLE001 - Hydra's composition errors have no common class; its message says which override
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(
            f"resume={run.path}: its saved command line does not compose with artmove's configs ({message}). "
            f"Continue it with its settings typed out and hydra.run.dir={run.path}."
        ) from None
    finally:
        GlobalHydra.instance().clear()


def hydra_string(value: str) -> str:
    """``value`` as Hydra's override parser reads it back: bare when it can be, else single-quoted."""
    if re.fullmatch(r"[\w/.\-+:@~%]+", value, re.ASCII):
        return value
    return "'" + re.sub(r"(\\*)('|$)", lambda m: m[1] * 2 + ("\\'" if m[2] else ""), value) + "'"


def _split_command_line(argv: list[str]) -> tuple[list[str] | None, list[str]]:
    """(overrides, Hydra's flags with their values) of a command line, parsed by Hydra's own argument parser;
    (None, []) when it does not parse."""
    from hydra._internal.utils import get_args_parser

    parser = get_args_parser()

    def refuse(message: str) -> NoReturn:
        raise ValueError(message)

    # no message or exit here: Hydra's own parse reports it (this one parser's method replaced on purpose)
    parser.error = refuse  # type: ignore[method-assign]
    try:
        args = parser.parse_args(argv)
    except (ValueError, SystemExit):
        return None, []
    flags = list(argv)
    for override in args.overrides:
        flags.remove(override)
    return list(args.overrides), flags


def accepts_resume_folder(main: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a command's ``@hydra.main`` function: ``resume=<run folder>`` on its command line becomes that
    run's command line (:func:`resume_folder_arguments`) before Hydra reads it; a user error there is one line
    and exit code 2. Called with a config (from Python), the function runs as it is."""

    @functools.wraps(main)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not args and not kwargs:
            try:
                sys.argv = [sys.argv[0], *resume_folder_arguments(sys.argv[1:])]  # kept: DDP's ranks > 0 re-run it
            except ConfigError as error:
                say_user_error(error)
                raise SystemExit(2) from None
        return main(*args, **kwargs)

    return wrapper
