"""Periods: the one place that knows where candles open and close.

A period is carried everywhere (Python API, wire, warehouse) as an ``int`` of seconds, as the
seed's ``period_seconds`` always was. Two values are calendar-aware:

- ``604800`` (``"1w"``) is a **Monday week**: weeks open Monday 00:00 UTC, as on Binance and
  TradingView. Every multiple of a week (``"2w"``) is anchored on Monday 1970-01-05 too.
- ``2592000`` (``"1M"``) is a **calendar month** (UTC): months open on the 1st at 00:00 UTC and
  last 28 to 31 days. No fixed 30-day period exists; ``"30d"`` and ``"720h"`` are refused.

Every other period is a fixed length on a grid counted from the epoch (1970-01-01 00:00 UTC):
``"1m"``, ``"5m"``, ``"1h"``, ``"4h"``, ``"1d"``, ``"3d"``…

Times are integer microseconds since the epoch (UTC). A candle's timestamp is the start of its
period; its period ends where the next one starts (:func:`period_end`). Code outside this module
never does ``t // period * period``: it calls :func:`period_floor`, :func:`period_end`,
:func:`period_starts` and :func:`closed_period_stop`, which are right for weeks and months.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import numpy as np

from .errors import InvalidPeriodError

__all__ = [
    "PeriodLike",
    "WEEK",
    "MONTH",
    "DAY",
    "parse_period",
    "period_label",
    "is_calendar_month",
    "period_floor",
    "period_ceil",
    "period_end",
    "shift_periods",
    "period_starts",
    "iter_period_starts",
    "period_count",
    "is_aligned",
    "closed_period_stop",
    "divides",
]

PeriodLike = int | str

DAY = 86_400
WEEK = 604_800
MONTH = 2_592_000  # on the wire and in the warehouse: a calendar month, not 30 days
_US = 1_000_000
_WEEK_ANCHOR_US = 4 * DAY * _US  # Monday 1970-01-05 00:00 UTC: the epoch was a Thursday

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": DAY, "w": WEEK}
_PERIOD_RE = re.compile(r"^(\d+)\s*([a-zA-Z]*)$")
_MONTH_WORDS = ("M", "mo", "mon", "month", "months")
_SUPPORTED = "seconds (3600) or 1m, 5m, 15m, 1h, 4h, 1d, 1w, 1M (calendar month)"


def _refuse_ambiguous(seconds: int, text: str) -> None:
    if seconds == MONTH:
        raise InvalidPeriodError(
            f"period {text!r} is ambiguous: 30 fixed days is not a period dexorder-feeds offers; "
            "write '1M' (or 2592000) for calendar months (UTC), or '4w' for four Monday weeks"
        )


def parse_period(value: object) -> int:
    """A period as its ``int`` of seconds, from ``3600``, ``"3600"``, ``"1h"``, ``"1w"`` or ``"1M"``.

    Units: ``s``, ``m`` (minutes), ``h``, ``d``, ``w`` (case-insensitive except ``M``, which is
    a calendar month; ``mo`` and ``month`` also mean month). ``"1M"`` and the integer
    ``2592000`` both mean a calendar month; ``"30d"``, ``"720h"`` and other spellings of 30
    days are refused as ambiguous, as are multi-month periods (``"3M"``) and years.
    Raises :class:`InvalidPeriodError` (a ``ValueError``) saying what to write instead.
    """
    if isinstance(value, bool):
        raise InvalidPeriodError(f"period_seconds={value!r} is not a period; give {_SUPPORTED}")
    if isinstance(value, str):
        text = value.strip()
        match = _PERIOD_RE.match(text)
        if not match:
            raise InvalidPeriodError(f"period {value!r} is not understood; give {_SUPPORTED}")
        count, unit = int(match.group(1)), match.group(2)
        if unit in _MONTH_WORDS or unit.lower() in _MONTH_WORDS[1:]:
            if count != 1:
                raise InvalidPeriodError(
                    f"period {value!r}: only single calendar months are supported; use '1M' and group months yourself"
                )
            return MONTH
        if unit.lower() in ("y", "yr", "year", "years"):
            raise InvalidPeriodError(f"period {value!r}: years are not supported; use '1M' or '1w'")
        if unit.lower() not in _UNITS and unit != "":
            raise InvalidPeriodError(f"period {value!r} has an unknown unit {unit!r}; give {_SUPPORTED}")
        seconds = count * _UNITS[unit.lower() or "s"]
        if unit:  # "2592000" spelled as digits is the documented month code; "30d" is not
            _refuse_ambiguous(seconds, value)
    elif isinstance(value, int) or (hasattr(value, "dtype") and getattr(value, "dtype").kind in "iu"):
        seconds = int(value)  # type: ignore[call-overload]
    else:
        raise InvalidPeriodError(
            f"period_seconds={value!r} ({type(value).__name__}) is not a period; give {_SUPPORTED}"
        )
    if seconds <= 0:
        raise InvalidPeriodError(f"period_seconds={seconds} must be positive; give {_SUPPORTED}")
    return seconds


def period_label(period: int) -> str:
    """The short name of a period: ``"1h"``, ``"1w"``, ``"1M"``, ``"90s"``."""
    if period == MONTH:
        return "1M"
    for unit, size in (("w", WEEK), ("d", DAY), ("h", 3600), ("m", 60)):
        if period % size == 0:
            return f"{period // size}{unit}"
    return f"{period}s"


def is_calendar_month(period: int) -> bool:
    """True for the calendar month (``2592000``), the one period of varying length."""
    return period == MONTH


def _anchor_us(period: int) -> int:
    return _WEEK_ANCHOR_US if period % WEEK == 0 else 0


def _months_to_us(months: np.ndarray) -> np.ndarray:
    return months.astype("datetime64[M]").astype("datetime64[us]").astype(np.int64)


def _us_to_months(ts: np.ndarray) -> np.ndarray:
    return np.asarray(ts, dtype=np.int64).astype("datetime64[us]").astype("datetime64[M]").astype(np.int64)


def period_floor(period: int, t: int) -> int:
    """The start of the period holding ``t`` (µs)."""
    if period == MONTH:
        return int(_months_to_us(_us_to_months(np.array([t])))[0])
    size, anchor = period * _US, _anchor_us(period)
    return (t - anchor) // size * size + anchor


def period_floor_array(period: int, ts: np.ndarray) -> np.ndarray:
    """:func:`period_floor` of every element (int64 µs)."""
    ts = np.asarray(ts, dtype=np.int64)
    if period == MONTH:
        return _months_to_us(_us_to_months(ts))
    size, anchor = period * _US, _anchor_us(period)
    return (ts - anchor) // size * size + anchor


def period_ceil(period: int, t: int) -> int:
    """The first period start at or after ``t`` (µs)."""
    floor = period_floor(period, t)
    return floor if floor == t else period_end(period, floor)


def shift_periods(period: int, start: int, n: int) -> int:
    """The period start ``n`` periods after (``n < 0``: before) the period start ``start``."""
    if period == MONTH:
        months = _us_to_months(np.array([start]))[0] + n
        return int(_months_to_us(np.array([months]))[0])
    return start + n * period * _US


def period_end(period: int, start: int) -> int:
    """Where the period opening at ``start`` closes: the start of the next one."""
    return shift_periods(period, start, 1)


def period_end_array(period: int, starts: np.ndarray) -> np.ndarray:
    """:func:`period_end` of every period start (int64 µs)."""
    starts = np.asarray(starts, dtype=np.int64)
    if period == MONTH:
        return _months_to_us(_us_to_months(starts) + 1)
    return starts + period * _US


def period_starts(period: int, start: int, stop: int) -> np.ndarray:
    """Every period start ``t`` with ``start <= t < stop``, as int64 µs."""
    if stop <= start:
        return np.empty(0, dtype=np.int64)
    if period == MONTH:
        first = _us_to_months(np.array([period_ceil(period, start)]))[0]
        last = _us_to_months(np.array([stop - 1]))[0]
        return _months_to_us(np.arange(first, last + 1, dtype=np.int64))
    return np.arange(period_ceil(period, start), stop, period * _US, dtype=np.int64)


def iter_period_starts(period: int, start: int, stop: int) -> Iterator[int]:
    """:func:`period_starts` one at a time (no array for long ranges)."""
    t = period_ceil(period, start)
    while t < stop:
        yield t
        t = period_end(period, t)


def period_count(period: int, start: int, stop: int) -> int:
    """How many periods open in ``[start, stop)``."""
    if stop <= start:
        return 0
    first = period_ceil(period, start)
    if first >= stop:
        return 0
    if period == MONTH:
        return int(_us_to_months(np.array([stop - 1]))[0] - _us_to_months(np.array([first]))[0]) + 1
    return (stop - 1 - first) // (period * _US) + 1


def is_aligned(period: int, ts: np.ndarray) -> np.ndarray:
    """A boolean array: which timestamps are period starts."""
    ts = np.asarray(ts, dtype=np.int64)
    return period_floor_array(period, ts) == ts


def closed_period_stop(period: int, now: int | None = None) -> int:
    """The start of the period still open at ``now`` (µs): every period before it has closed.

    A candle whose period has not closed is never final: it is never stored, never asked for,
    and always reported missing.
    """
    return period_floor(period, time.time_ns() // 1000 if now is None else now)


def divides(fine: int, coarse: int) -> bool:
    """True when every ``coarse`` period is exactly a run of whole ``fine`` periods.

    ``1h`` divides ``4h``, ``1d``, ``1w`` and ``1M``; ``1d`` divides ``1w`` and ``1M``; ``1w``
    does not divide ``1M``; ``4h`` divides ``1d`` but ``7h`` does not.
    """
    if fine == coarse:
        return True
    if fine == MONTH:
        return False
    if coarse == MONTH:
        return DAY % fine == 0  # months open at midnight UTC
    if coarse % fine:
        return False
    return (_anchor_us(coarse) - _anchor_us(fine)) % (fine * _US) == 0
