"""Which checkpoint a (re)started job continues from, and whether it may.

A SLURM requeue re-runs the same job in the same folder, so ``resume=true`` picks up
``<run>/checkpoints/last.ckpt`` instead of starting over (``KeepLoggedMetrics`` keeps the earlier
attempt's metric rows). Every checkpoint carries the run's record (``RUN_RECORD``: the settings that
define what it trains, its classes, its whole config and its attempts so far): a rerun whose
defining settings differ is refused, naming each, before any data is read; the other changes (more
epochs, loggers, workers) are kept in the run's history of attempts, which results.json shows.

``resume=<run folder>`` continues that run without retyping it (:func:`resume_folder_arguments`):
``python -m artmove.train resume=outputs/2026-12-01/12-00-00 trainer.max_epochs=10``.
"""

from __future__ import annotations

import copy
import functools
import logging
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from artmove.errors import ConfigError, UnreadableCheckpoint
from artmove.runs.folder import CHECKPOINTS, LAST_CHECKPOINT, RunFolder
from artmove.utils.cli import say_user_error
from artmove.utils.io import read_checkpoint

log = logging.getLogger(__name__)

#: Where a checkpoint keeps the run's record (``artmove.training.callbacks.RunRecordInCheckpoint``).
RUN_RECORD = "artmove_run"
#: The settings that define what a run trains; a config node named here counts as a whole.
IDENTITY = ("backbone", "network.head", "finetune", "image_size", "test_image_size", "seed", "data.root", "data.source",
            "data.group_by", "data.regroup_published")  # fmt: skip


@dataclass
class Resume:
    """The checkpoint a run continues from (None: it starts), and the record this attempt adds to."""

    checkpoint: str | None
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def classes(self) -> list[str] | None:
        return self.record.get("classes")


def run_settings(cfg: DictConfig) -> dict[str, Any]:
    """The run's config, resolved and flattened (``{"data.batch_size": 32, …}``): what attempts are compared on."""
    return dict(_flatten(OmegaConf.to_container(cfg, resolve=True)))


def identity(cfg: DictConfig) -> dict[str, Any]:
    """The settings that define the run ``cfg`` composes, resolved and flattened as :func:`run_settings`
    flattens them; none depends on Hydra's runtime, so this works before Hydra starts the run."""
    found: dict[str, Any] = {}
    for key in IDENTITY:
        value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        value = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
        found.update(_flatten(value, f"{key}.") if isinstance(value, dict) and value else [(key, value)])
    return found


def resume_checkpoint(resume: bool | str | None, checkpoint_dir: str | Path | None, cfg: DictConfig) -> Resume:
    """``resume=true``: this run's ``last.ckpt`` when it exists; ``false``: never; a path: that checkpoint.

    The file is read here first (tensors only, ``artmove.utils.io.read_checkpoint``), so a damaged or
    hostile one, or one trained with other defining settings, stops the run with one line before any
    data is read or weights are loaded. Returns where fit continues from and this attempt's record."""
    settings = run_settings(cfg)
    started = {"attempt": 1, "started": time.strftime("%Y-%m-%d %H:%M:%S"), "resumed_from": None}
    fresh = Resume(None, {"identity": identity(cfg), "settings": settings, "attempts": [started]})
    path = checkpoint_to_resume(resume, checkpoint_dir)
    if path is None:
        return fresh
    checkpoint = _training_state(path)
    previous = run_record(checkpoint, path)
    check_same_run(previous["identity"], fresh.record["identity"], path)
    old = previous.get("settings") or {}
    changed = {key: [old.get(key), value] for key, value in settings.items() if old.get(key) != value}
    changed.update({key: [value, None] for key, value in old.items() if key not in settings})
    changed.pop("resume", None)  # how this attempt started: resumed_from says it
    attempts = [*previous.get("attempts", []), {**started, "attempt": len(previous.get("attempts", [])) + 1,
                "resumed_from": {"checkpoint": str(path), "epoch": checkpoint.get("epoch"), "global_step": checkpoint.get("global_step")},
                "changed": changed}]  # fmt: skip
    how = ("an earlier attempt of this run; resume=false starts over" if resume is True
           else "resume=<run folder>" if Path(str(resume)).expanduser().is_dir() else "resume=PATH")  # fmt: skip
    log.info("resuming from %s (%s)%s", path, how, f"; changed since: {', '.join(changed)}" if changed else "")
    return Resume(str(path), {**previous, "settings": settings, "attempts": attempts})


def checkpoint_to_resume(resume: bool | str | None, checkpoint_dir: str | Path | None) -> Path | None:
    """``resume=true``: this run's ``last.ckpt`` when it exists; ``false``: none; a checkpoint file: that one;
    a run folder: its ``last.ckpt`` when it exists (none yet: the run starts over, with its settings)."""
    if resume in (None, False):
        return None
    if resume is True:
        path = Path(checkpoint_dir) / LAST_CHECKPOINT if checkpoint_dir else None
        return path if path is not None and path.is_file() else None
    path = Path(str(resume)).expanduser()
    if path.is_dir():
        last = RunFolder(path.parent if path.name == CHECKPOINTS else path).last_checkpoint
        if not last.is_file():
            log.info("resume=%s: no %s yet (no epoch ended): the run starts over in its folder, with its settings", resume, last)
        return last if last.is_file() else None
    if not path.is_file():
        raise ConfigError(f"resume={resume}: no such checkpoint file or run folder. Give a run folder, a .ckpt path, "
                          "true (this run's last.ckpt) or false.")  # fmt: skip
    return path


def run_record(checkpoint: dict[str, Any], path: Path) -> dict[str, Any]:
    record = checkpoint.get(RUN_RECORD)
    if not isinstance(record, dict) or not isinstance(record.get("identity"), dict):
        raise ConfigError(f"cannot resume from {path}: it does not record the settings it was trained with (written by an "
                          f"earlier artmove, or not by artmove). Start over with resume=false (its weights: weights={path}).")  # fmt: skip
    return record


class CheckResume(Callback):
    """Hydra callback (``hydra.callbacks``): a rerun into a run folder whose defining settings differ from its
    last checkpoint's stops with one line before Hydra writes the new settings into the folder's
    ``.hydra/``, which keeps saying what its checkpoint was trained with (evaluate reads it). ``train``
    checks again, for runs started from Python; the checkpoint is memory-mapped here, not read."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.get("task_name") != "train":
            return
        from artmove.finetune.policies import drop_unused_settings

        try:
            path = checkpoint_to_resume(config.get("resume", True), RunFolder(Path(config.hydra.run.dir)).checkpoints)
            if path is None:
                return
            try:
                checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except Exception:  # noqa: BLE001 - an unreadable file is train's to report, with its reason
                return
            now = copy.deepcopy(config)  # as train settles it: a preset's value the policy does not use, dropped
            drop_unused_settings(now, list(config.hydra.overrides.task), say=False)
            check_same_run(run_record(checkpoint, path)["identity"], identity(now), path)
        except ConfigError as error:
            say_user_error(error)
            raise SystemExit(2) from None


def check_same_run(trained: dict[str, Any], now: dict[str, Any], path: Path) -> None:
    """One line naming every defining setting that differs from the checkpoint's."""
    keys = sorted(set(trained) | set(now))
    differ = [f"{key}={now.get(key)!r} (the checkpoint's: {trained.get(key)!r})" for key in keys if trained.get(key) != now.get(key)]
    if differ:
        raise ConfigError(f"cannot continue {path} with other settings: {'; '.join(differ)}. Rerun with the checkpoint's settings, "
                          "or start a new run (another hydra.run.dir, or resume=false to overwrite this one).")  # fmt: skip


def check_same_classes(resume: Resume, classes: list[str]) -> None:
    """The data set's classes are the checkpoint's (compared once the data set is listed, before weights load)."""
    trained = resume.classes
    if resume.checkpoint and trained is not None and list(trained) != list(classes):
        raise ConfigError(f"cannot continue {resume.checkpoint}: the data set's classes differ from the checkpoint's "
                          f"({len(classes)} now, {len(trained)} then; first difference: "
                          f"{next((f'{a!r} vs {b!r}' for a, b in zip(classes, trained) if a != b), 'the count')}). "
                          "Continue on the same data, or start a new run.")  # fmt: skip


def _training_state(path: Path) -> dict[str, Any]:
    try:
        checkpoint = read_checkpoint(path)
    except UnreadableCheckpoint as error:
        raise ConfigError(f"cannot resume: {error}. Start over with resume=false, or continue from another "
                          "checkpoint with resume=PATH (e.g. the best-….ckpt beside it).") from None  # fmt: skip
    if not isinstance(checkpoint, dict) or "loops" not in checkpoint:
        raise ConfigError(f"cannot resume from {path}: it holds weights but no training state (not a Lightning "
                          "checkpoint). Use weights=PATH to start from its weights, or resume=false.")  # fmt: skip
    return checkpoint


def _flatten(node: Any, prefix: str = ""):
    if isinstance(node, dict) and node:
        for key, value in node.items():
            yield from _flatten(value, f"{prefix}{key}.")
    else:
        yield prefix[:-1], node


# --- resume=<run folder> -------------------------------------------------------------------------
#: What an override read from a run folder may not name: code for ``instantiate`` (a file is data).
CODE_KEYS = re.compile(r"_(target|partial|args|recursive|convert)_")


def resume_folder_arguments(argv: Sequence[str]) -> list[str]:
    """The command line that continues the run ``resume=<run folder>`` names, before Hydra composes anything.

    The run's own command line, ``<run>/.hydra/overrides.yaml`` (Hydra's record of it, a list of
    ``key=value`` strings, read as data and checked by :func:`saved_overrides`), comes first; the
    overrides given now are applied on top (one for the same key replaces the saved one), then
    ``hydra.run.dir=<run>`` and ``resume=<run>``. Hydra then composes the run's config as it composed
    it the first time, from artmove's own config groups, and writes into the run's folder: the lock,
    the check of its defining settings against ``last.ckpt`` (:class:`CheckResume`: a changed
    backbone is one line and exit 2, before Hydra rewrites ``.hydra/``), ``KeepLoggedMetrics`` and
    the history of attempts work as for a rerun into the folder; the resolved ``.hydra/config.yaml``
    is never used as a config (it would need its ``defaults`` again, and a group override such as
    ``logger=wandb`` could not apply). Flags (``--cfg job``…) stay; ``-m`` is refused (one run).

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
        now = parser.parse_overrides(overrides)
    except Exception:  # noqa: BLE001 - Hydra's own message, when it parses them
        return argv
    for override in now:
        if override.key_or_group == "hydra.run.dir" and Path(str(override.value())).expanduser().resolve() != run.path:
            raise ConfigError(f"{given[-1]} writes into that run's folder: drop {override.input_line}.")
    now = {(o.key_or_group, o.package): o for o in now if o.key_or_group not in ("resume", "hydra.run.dir")}
    merged = []
    for saved in saved_overrides(run):
        new = now.pop((saved.key_or_group, saved.package), None)
        if new is None:
            merged.append(saved.input_line)
        elif saved.is_add() and not (new.is_add() or new.is_force_add() or new.is_delete()):
            merged.append(f"++{new.input_line}")  # the key exists only through the saved +key=…
        else:
            merged.append(new.input_line)
    merged += [override.input_line for override in now.values()]
    folder = hydra_string(str(run.path))
    log.debug("resume=%s: %s", run.path, " ".join(merged))
    return [*merged, f"hydra.run.dir={folder}", f"resume={folder}", *flags]


def run_to_resume(folder: Path, given: str) -> RunFolder:
    """The training run folder ``resume=<folder>`` names (its ``checkpoints/`` folder counts as it), with its
    saved config checked as data (:meth:`RunFolder.config`: only artmove's own ``_target_``s)."""
    run = RunFolder((folder.parent if folder.name == CHECKPOINTS else folder).resolve())
    config = run.config()
    if config is None:
        raise ConfigError(f"{given}: {run.path} is not a training run folder (no .hydra/config.yaml): give the folder "
                          "a train command wrote (a sweep's job: <sweep>/<job number>), or a checkpoint file.")  # fmt: skip
    if config.get("task_name", "train") != "train":
        raise ConfigError(f"{given}: {run.path} is a {config.get('task_name')} folder, not a training run's.")
    return run


def saved_overrides(run: RunFolder) -> list[Any]:
    """The run's command line (``.hydra/overrides.yaml``), each override checked: a plain ``key=value`` (or
    ``+key=``, ``~key``, ``group=option``), no sweep, no ``hydra.…`` setting, nothing naming code
    (``_target_``…); ``resume=`` is left out. Anything else refuses the folder in one line."""
    import yaml
    from hydra.core.override_parser.overrides_parser import OverridesParser

    path = run.hydra_file("overrides")
    if not path.is_file():
        raise ConfigError(f"resume={run.path}: no {path} (the run was not started from the command line): "
                          f"run it again with its settings and hydra.run.dir={run.path}.")  # fmt: skip
    try:
        lines = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ConfigError(f"resume={run.path}: {path} is not readable ({error}).") from None
    lines = [] if lines is None else lines
    if not isinstance(lines, list) or not all(isinstance(line, str) for line in lines):
        raise ConfigError(f"resume={run.path}: {path} is not a list of key=value overrides, as Hydra writes it.")
    parser, overrides = OverridesParser.create(), []
    for line in lines:
        try:
            override = parser.parse_override(line)
        except Exception:  # noqa: BLE001 - any parse failure is the file's
            override = None
        why = ("not an override Hydra reads" if override is None else "a sweep" if override.is_sweep_override()
               else "a setting of Hydra's" if override.key_or_group.startswith("hydra") else "it names code" if CODE_KEYS.search(line)
               else "")  # fmt: skip
        if why:
            raise ConfigError(f"resume={run.path}: {path} holds {line!r} ({why}); a saved command line is read as data and may hold only "
                              f"plain settings. Continue it with its settings typed out and hydra.run.dir={run.path}.")  # fmt: skip
        if override.key_or_group != "resume":
            overrides.append(override)
    return overrides


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

    def refuse(message: str):
        raise ValueError(message)

    parser.error = refuse  # no message or exit here: Hydra's own parse reports it
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
