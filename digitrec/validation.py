"""Checks of single values (a batch size, a probability, a temperature): one rule, one message, anywhere.

No dependencies: inference and serving use these as training does.
"""

from __future__ import annotations

import math
from typing import Any

from digitrec.errors import ConfigError


def in_range(
    value: Any,
    low: float = -math.inf,
    high: float = math.inf,
    *,
    integer: bool = False,
    open_low: bool = False,
    open_high: bool = False,
) -> bool:
    """Whether `value` is a number (an int if `integer`; never a bool, which Python counts as an int) within the bounds."""
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        return False
    above = low < value if open_low else low <= value
    below = value < high if open_high else value <= high
    return above and below


def describe_range(
    low: float = -math.inf,
    high: float = math.inf,
    *,
    integer: bool = False,
    open_low: bool = False,
    open_high: bool = False,
) -> str:
    """`in_range`'s bounds in words: 'a positive integer', 'a number in (0, 1)', ..."""
    kind = "integer" if integer else "number"
    if high == math.inf and low == 0:
        return f"a {'positive' if open_low else 'non-negative'} {kind}"
    if high == math.inf and integer and low == 1:
        return "a positive integer"
    article = "an" if integer else "a"
    if high == math.inf:
        return f"{article} {kind} {'>' if open_low else '>='} {low:g}"
    return f"{article} {kind} in {'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"


def check_range(
    name: str, value: Any, low: float = -math.inf, high: float = math.inf, *, hint: str = "", **kind: bool
) -> Any:
    """`value` itself if `in_range` (with the same `integer`, `open_low`, `open_high`), else a `ConfigError`:
    '<name> must be <range><hint>, got <value>.'"""
    if not in_range(value, low, high, **kind):
        raise ConfigError(f"{name} must be {describe_range(low, high, **kind)}{hint}, got {value!r}.")
    return value


def positive_int(name: str, value: Any) -> int:
    """`value` if it is an integer >= 1, else a `ConfigError` naming `name`."""
    return check_range(name, value, 1, integer=True)
