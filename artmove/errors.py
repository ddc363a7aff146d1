"""The errors a user acts on: every layer raises these, and every command turns them into one line
on stderr and exit code 2 (``artmove.utils.cli``). Anything else is a bug and keeps its traceback."""

from __future__ import annotations


class ConfigError(ValueError):
    """A setting the user has to change."""


class DataSetupError(ValueError):
    """A data set that is missing or not in the expected layout."""


class PretrainedWeightsError(RuntimeError):
    """No source of pretrained weights could be used for a backbone."""


class UnreadableCheckpoint(ValueError):
    """A file that is not a checkpoint artmove can load safely."""


class DiskFullError(OSError):
    """A checkpoint did not fit on its disk (the previous checkpoint is kept)."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


class FileSizeLimitError(OSError):
    """A file did not fit under this process's file-size limit (``ulimit -f``; the previous file is kept)."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


class ExportCheckError(ConfigError):
    """An exported file does not reproduce the checkpoint's predictions."""


USER_ERRORS = (ConfigError, DataSetupError, PretrainedWeightsError, UnreadableCheckpoint, DiskFullError, FileSizeLimitError)


def user_error_behind(error: BaseException) -> BaseException:
    """The user error a Hydra InstantiationException wraps (raised in a target's __init__), else ``error``."""
    cause: BaseException | None = error
    while cause is not None and not isinstance(cause, USER_ERRORS):
        cause = cause.__cause__
    return cause or error
