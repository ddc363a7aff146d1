"""What every command does with a user's mistake: one line on stderr and exit code 2."""

from __future__ import annotations

import functools
import logging
import re
import sys
from collections.abc import Callable
from typing import Any

from artmove.checkpoint_io import DiskFullError
from artmove.checks import ConfigError
from artmove.data.sources import DataSetupError
from artmove.models.pretrained import PretrainedWeightsError

log = logging.getLogger("artmove")
USER_ERRORS = (ConfigError, DataSetupError, PretrainedWeightsError, DiskFullError)


def user_error_behind(error: BaseException) -> BaseException:
    """The user error a Hydra InstantiationException wraps (raised in a target's __init__), else ``error``."""
    cause: BaseException | None = error
    while cause is not None and not isinstance(cause, USER_ERRORS):
        cause = cause.__cause__
    return cause or error


def instantiate_checked(config: Any, key: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` of the config node at ``key``: a user error its constructor raised comes
    out as itself (not Hydra's wrapper), and a setting the constructor does not take as a ConfigError."""
    from hydra.utils import instantiate

    try:
        return instantiate(config, **kwargs)
    except Exception as raised:
        error = user_error_behind(raised)
        unknown = re.search(r"unexpected keyword argument '(\w+)'", str(raised.__cause__ or raised))
        if error is raised and unknown:
            target = str(config.get("_target_", "")).rsplit(".", 1)[-1]
            known = ", ".join(sorted(set(config) - {"_target_", "_partial_", "_convert_", unknown[1]}))
            raise ConfigError(f"{key}.{unknown[1]}: {target} has no such setting; its settings: {known}.") from None
        if error is raised:
            raise
        raise error from None


def say_user_error(error: BaseException) -> None:
    """One line on stderr; the run's log file (not the console a second time) keeps it too."""
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, "%s", (error,), None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
    print(f"artmove: error: {error}", file=sys.stderr)


def exit_on_user_error(command: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a command's task function: user errors end it with one line and exit code 2."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except Exception as raised:
            error = user_error_behind(raised)
            if not isinstance(error, USER_ERRORS):
                raise
            say_user_error(error)
            raise SystemExit(2) from None

    return wrapper
