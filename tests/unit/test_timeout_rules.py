"""Timeouts as callers give them: ``None``, a number, ``inf``, or a mistake."""

from __future__ import annotations

import fractions
import math
import threading

import pytest

from stockings._timeouts import LONGEST_SLEEP, NO_BOUND_AFTER, bounded, option_seconds


@pytest.mark.parametrize("no_bound", [None, math.inf, 1e300, NO_BOUND_AFTER * 2])
def test_no_bound_is_none_however_it_is_said(no_bound: float | None) -> None:
    assert bounded(no_bound) is None
    assert option_seconds(no_bound, "linger") is None


@pytest.mark.parametrize(
    ("given", "seconds"),
    [(0, 0.0), (2, 2.0), (0.25, 0.25), (-1, -1.0), (fractions.Fraction(1, 4), 0.25)],
)
def test_a_number_of_seconds_stays_a_finite_float(given: object, seconds: float) -> None:
    assert bounded(given) == seconds
    assert isinstance(bounded(given), float)


def test_every_bound_that_is_kept_fits_a_lock_wait() -> None:
    assert NO_BOUND_AFTER <= threading.TIMEOUT_MAX
    assert threading.Lock().acquire(True, NO_BOUND_AFTER / 1e9) is True
    assert 0 < LONGEST_SLEEP <= NO_BOUND_AFTER


@pytest.mark.parametrize("wrong", ["1", b"1", True, False, [1], object()])
def test_no_number_is_a_type_error_naming_the_parameter(wrong: object) -> None:
    with pytest.raises(
        TypeError,
        match=rf"^write_timeout must be a number of seconds or None, not {type(wrong).__name__}$",
    ):
        bounded(wrong, "write_timeout")


def test_nan_is_a_value_error_naming_the_parameter() -> None:
    with pytest.raises(ValueError, match=r"^timeout must be a number of seconds or None, not NaN$"):
        bounded(math.nan)


def test_an_option_refuses_a_negative_number_a_call_does_not() -> None:
    assert bounded(-5) == -5.0
    with pytest.raises(
        ValueError, match=r"^linger must be a number of seconds, 0 or more, or None$"
    ):
        option_seconds(-5, "linger")
