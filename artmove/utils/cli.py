"""What every command does with a user's mistake: one line on stderr and exit code 2."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import Any

from artmove.errors import USER_ERRORS, user_error_behind

log = logging.getLogger("artmove")


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
