"""Checks of single values (a batch size, a probability, a temperature): one rule, one message, anywhere.

No dependencies: inference and serving use these as training does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from digitrec.errors import ConfigError


@dataclass(frozen=True)
class Bounds:
    """A range of numbers: integers only or any, each end open or closed."""

    low: float = -math.inf
    high: float = math.inf
    integer: bool = False
    open_low: bool = False
    open_high: bool = False

    def contain(self, value: Any) -> bool:
        """Whether `value` is a number (an int if `integer`; never a bool, which Python counts as an int) within."""
        if isinstance(value, bool) or not isinstance(value, int if self.integer else (int, float)):
            return False
        above = self.low < value if self.open_low else self.low <= value
        below = value < self.high if self.open_high else value <= self.high
        return above and below

    def __str__(self) -> str:
        """In words: 'a positive integer', 'a number in (0, 1)', ..."""
        kind = "integer" if self.integer else "number"
        article = "an" if self.integer else "a"
        if self.high == math.inf and self.low == 0:
            return f"a {'positive' if self.open_low else 'non-negative'} {kind}"
        if self.high == math.inf and self.integer and self.low == 1:
            return "a positive integer"
        if self.high == math.inf:
            return f"{article} {kind} {'>' if self.open_low else '>='} {self.low:g}"
        return f"{article} {kind} in {'(' if self.open_low else '['}{self.low:g}, {self.high:g}{')' if self.open_high else ']'}"


def in_range(value: Any, low: float = -math.inf, high: float = math.inf, **kind: bool) -> bool:
    """`Bounds(low, high, **kind).contain(value)`."""
    return Bounds(low, high, **kind).contain(value)


def describe_range(low: float = -math.inf, high: float = math.inf, **kind: bool) -> str:
    """`Bounds(low, high, **kind)` in words."""
    return str(Bounds(low, high, **kind))


def check_range(
    name: str, value: Any, low: float = -math.inf, high: float = math.inf, *, hint: str = "", **kind: bool
) -> Any:
    """`value` itself if `in_range` (with the same `integer`, `open_low`, `open_high`), else a `ConfigError`:
    '<name> must be <range><hint>, got <value>.'"""
    bounds = Bounds(low, high, **kind)
    if not bounds.contain(value):
        raise ConfigError(f"{name} must be {bounds}{hint}, got {value!r}.")
    return value


def positive_int(name: str, value: Any) -> int:
    """`value` if it is an integer >= 1, else a `ConfigError` naming `name`."""
    return check_range(name, value, 1, integer=True)
