"""Errors a user can act on: each message says what was wrong and what to do."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


class DigitrecError(Exception):
    """Base class: entry points print these as one line instead of a traceback."""


class ConfigError(DigitrecError, ValueError):
    """A configuration value is invalid."""


class DataError(DigitrecError):
    """The dataset files are missing, unreadable or corrupt."""


class CheckpointError(DigitrecError):
    """A checkpoint is missing, unreadable or cannot rebuild its model."""


class TrainingDiverged(DigitrecError):
    """The loss became NaN or infinite."""


def find_user_error(error: BaseException | None) -> DigitrecError | None:
    """The `DigitrecError` behind an exception, if any (Hydra's instantiate wraps the ones it meets)."""
    while error is not None:
        if isinstance(error, DigitrecError):
            return error
        error = error.__cause__ or error.__context__
    return None


def exit_on_user_error(func: Callable[P, R]) -> Callable[P, R]:
    """Decorate an entry point: a `DigitrecError` ends it with one `error: ...` line and status 1."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except Exception as e:
            user_error = find_user_error(e)
            if user_error is None:
                raise
            if logging.getLogger().hasHandlers():  # under Hydra: console and the run's log file
                logging.getLogger(logger_name(func)).error("%s", user_error)
            else:
                print(f"error: {user_error}", file=sys.stderr)
            raise SystemExit(1) from None

    return wrapper


def logger_name(func: Callable) -> str:
    """The entry point's own logger: `train` for train.py (as its other lines say), not `__main__`."""
    if func.__module__ != "__main__":
        return func.__module__
    return Path(getattr(sys.modules["__main__"], "__file__", None) or "__main__").stem
