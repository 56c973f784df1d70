"""One rule per kind of value, one message: what was wrong, what is wanted."""

from __future__ import annotations

import math

import pytest

from digitrec.errors import ConfigError
from digitrec.validation import check_range, describe_range, in_range, positive_int


def test_bools_and_strings_are_not_numbers_and_bounds_are_open_or_closed_as_asked() -> None:
    assert in_range(1, 0, 1) and not in_range(1, 0, 1, open_high=True) and not in_range(0, 0, 1, open_low=True)
    assert not in_range(True, 0, 1) and not in_range("1", 0, 1) and not in_range(1.5, 1, integer=True)
    assert in_range(2.5, 0) and not in_range(math.nan, 0, 1)


def test_each_range_is_described_in_words() -> None:
    assert describe_range(1, integer=True) == "a positive integer"
    assert describe_range(0, open_low=True) == "a positive number"
    assert describe_range(0) == "a non-negative number"
    assert describe_range(0, 1, open_low=True, open_high=True) == "a number in (0, 1)"
    assert describe_range(1, 64, integer=True) == "an integer in [1, 64]"


def test_a_bad_value_is_one_config_error_naming_the_key_and_the_value() -> None:
    assert check_range("threshold", 0.5, 0, 1) == 0.5 and positive_int("batch_size", 3) == 3
    with pytest.raises(ConfigError, match=r"^data.batch_size must be a positive integer, got True\.$"):
        positive_int("data.batch_size", True)
    with pytest.raises(ConfigError, match=r"^EMA decay must be a number in \(0, 1\) \(e.g. 0.999\) or null, got 1\.$"):
        check_range("EMA decay", 1, 0, 1, open_low=True, open_high=True, hint=" (e.g. 0.999) or null")
