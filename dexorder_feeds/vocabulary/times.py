"""Timestamps: everything becomes integer microseconds here (periods live in :mod:`.periods`).

Public functions accept ``int`` microseconds, ``datetime``, ``pandas.Timestamp``, ``numpy.datetime64``
and ISO-8601 strings. A naive ``datetime`` or string without offset is taken as **UTC** (the
convention of backtrader and pandas users); aware values are converted to UTC.

Relative times as people type them (a subset of what vectorbt's ``dateparser`` reads), all UTC:
``now``, ``today`` (00:00 UTC), ``yesterday`` (00:00 UTC the day before), ``"7 days ago"``,
``"1 week ago"``, ``"an hour ago"``, ``"3 months ago"`` (calendar months, the day clamped to
the month's last), with an optional trailing ``UTC`` (vectorbt's own default end is
``"now UTC"``). Dates whose day and month order is a matter of convention (``01/02/2025``,
``1-2-25``) are refused: write ISO 8601 (``2025-02-01``).
"""

from __future__ import annotations

import re
import time
from datetime import date, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Union

from .errors import InvalidTimeRangeError
from .periods import PeriodLike, parse_period

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["TimeLike", "PeriodLike", "to_micros", "parse_period", "now_micros", "format_micros", "relative_micros"]

TimeLike = Union[int, str, datetime, date, "pd.Timestamp"]

# Integer timestamps in microseconds fall between 1973 and 5138; anything else is almost
# certainly another unit, and the error says which.
_MIN_PLAUSIBLE_MICROS = 10**14
_MAX_PLAUSIBLE_MICROS = 10**17
_EARLIEST = "1973-03-03T09:46:40Z"  # 10**14 µs



def now_micros() -> int:
    """The current time in integer microseconds since the epoch, UTC."""
    return time.time_ns() // 1000


def _check_integer_micros(value: int, name: str) -> int:
    if value < 0:
        raise InvalidTimeRangeError(f"{name}={value} is negative; give microseconds since the epoch (UTC)")
    if value < 10**11:
        raise InvalidTimeRangeError(
            f"{name}={value} looks like seconds, not microseconds; "
            f"multiply by 1_000_000 (that is {value * 1_000_000})"
        )
    if value < _MIN_PLAUSIBLE_MICROS:
        raise InvalidTimeRangeError(
            f"{name}={value} looks like milliseconds, not microseconds; "
            f"multiply by 1_000 (that is {value * 1_000})"
        )
    if value >= _MAX_PLAUSIBLE_MICROS:
        raise InvalidTimeRangeError(
            f"{name}={value} looks like nanoseconds, not microseconds; "
            f"divide by 1_000 (that is {value // 1_000})"
        )
    return value


_NAIVE_EPOCH = datetime(1970, 1, 1)
_LATEST = "5138-11-16T09:46:40Z"  # 10**17 µs


def _datetime_micros(value: date) -> int:
    """A ``datetime`` or ``date`` (naive = UTC) in µs, by integer arithmetic: any year Python holds."""
    if not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    offset = value.utcoffset() if value.tzinfo is not None else None
    # naive arithmetic with the offset as a timedelta: no overflow even at datetime.min/max
    naive = datetime(value.year, value.month, value.day, value.hour, value.minute, value.second, value.microsecond)
    return (naive - _NAIVE_EPOCH - (offset or timedelta(0))) // timedelta(microseconds=1)


def _check_bounds(micros: int, shown: str, name: str) -> int:
    if micros < _MIN_PLAUSIBLE_MICROS:
        raise InvalidTimeRangeError(
            f"{name}={shown} is before {_EARLIEST}, the earliest time dexorder-feeds handles "
            "(no market has candles that old); start later"
        )
    if micros >= _MAX_PLAUSIBLE_MICROS:
        raise InvalidTimeRangeError(
            f"{name}={shown} is after {_LATEST}, the latest time dexorder-feeds handles; give an earlier time"
        )
    return micros


_DAY_US = 86_400_000_000
_UNIT_US = {"second": 1_000_000, "minute": 60_000_000, "hour": 3_600_000_000, "day": _DAY_US,
            "week": 7 * _DAY_US}
_UNIT_ALIASES = {"s": "second", "sec": "second", "secs": "second", "min": "minute", "mins": "minute",
                 "h": "hour", "hr": "hour", "hrs": "hour", "d": "day", "w": "week", "mo": "month",
                 "y": "year", "yr": "year", "yrs": "year"}
_AGO = re.compile(r"^(\d+|an?)\s*([a-z]+?)s?\s+ago$")
# Day and month order is a convention (US month first, most of the world day first): refused.
_AMBIGUOUS_DATE = re.compile(r"^(\d{1,2})[/.\-](\d{1,2})[/.\-](\d{2}|\d{4})(?=$|[\sT])")
_RELATIVE_HELP = ("relative times read: now, today, yesterday, or 'N UNITS ago' with UNITS seconds, minutes, "
                  "hours, days, weeks, months or years (e.g. '7 days ago'), optionally followed by UTC")


def _shift_months(micros: int, months: int) -> int:
    """``micros`` moved back ``months`` calendar months, the day clamped to the month's last."""
    moment = _NAIVE_EPOCH + timedelta(microseconds=micros)
    index = moment.year * 12 + moment.month - 1 - months
    year, month = divmod(index, 12)
    month += 1
    following = datetime(year + (month == 12), month % 12 + 1, 1)
    day = min(moment.day, (following - timedelta(days=1)).day)
    return _datetime_micros(moment.replace(year=year, month=month, day=day))


def relative_micros(text: str, now: int | None = None, *, name: str = "time") -> int | None:
    """The µs a relative time such as ``"7 days ago"`` names (``now``: µs, default the clock),
    or None if ``text`` is not written as one. Raises for text that reads half like one."""
    words = " ".join(text.strip().lower().split())
    if words.endswith(" utc"):
        words = words[:-4].rstrip()
    if words not in ("now", "today", "yesterday") and not words.endswith("ago"):
        return None
    current = now_micros() if now is None else now
    if words == "now":
        return current
    if words in ("today", "yesterday"):
        midnight = current // _DAY_US * _DAY_US
        return midnight - (_DAY_US if words == "yesterday" else 0)
    match = _AGO.match(words)
    unit = _UNIT_ALIASES.get(match.group(2), match.group(2)) if match else None
    if match is None or unit not in (*_UNIT_US, "month", "year"):
        raise InvalidTimeRangeError(f"{name}={text!r} is not a relative time dexorder-feeds reads; {_RELATIVE_HELP}")
    count = 1 if match.group(1) in ("a", "an") else int(match.group(1))
    if unit in ("month", "year"):
        return _shift_months(current, count * (12 if unit == "year" else 1))
    return current - count * _UNIT_US[unit]


def _refuse_ambiguous(text: str, name: str) -> None:
    match = _AMBIGUOUS_DATE.match(text.strip())
    if match is None:
        return
    first, second, year = (int(group) for group in match.groups())
    year += 2000 if year < 100 else 0
    day_first, month_first = f"{year}-{second:02d}-{first:02d}", f"{year}-{first:02d}-{second:02d}"
    if first > 12 or second > 12:  # one reading only, but dates of the same style elsewhere are not
        shown = day_first if first > 12 else month_first
        raise InvalidTimeRangeError(
            f"{name}={text!r} writes the date in a local order, which is ambiguous for days up to 12; "
            f"write it as ISO 8601 (YYYY-MM-DD): '{shown}'")
    raise InvalidTimeRangeError(
        f"{name}={text!r} is ambiguous: {day_first} (day first) or {month_first} (month first)? "
        f"Write the date as ISO 8601 (YYYY-MM-DD), e.g. '{day_first}'")


def to_micros(value: object, *, name: str = "time", round_up: bool = False, now: int | None = None) -> int:
    """Convert a time-like value to integer microseconds since the epoch, UTC.

    A time finer than a microsecond is rounded down, or up with ``round_up`` (for the start of a
    range: a start 100 ns after the hour does not include that hour). Relative text (``"now"``,
    ``"7 days ago"``, see the module docstring) counts from ``now`` (µs; default: the clock).
    Raises :class:`InvalidTimeRangeError` for values of the wrong unit or type, outside
    1973–5138, or dates such as ``01/02/2025`` whose day and month order is ambiguous.
    """
    if isinstance(value, bool):
        raise InvalidTimeRangeError(f"{name}={value!r} is not a time")
    if isinstance(value, int):
        return _check_integer_micros(value, name)
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        return _check_integer_micros(int(value.strip()), name)  # str.strip takes more than int() does
    type_name = type(value).__module__ + "." + type(value).__name__
    if type_name.startswith("numpy.") and hasattr(value, "dtype"):
        if value.dtype.kind in "iu":
            return _check_integer_micros(int(value), name)  # type: ignore[call-overload]
    if isinstance(value, float):
        raise InvalidTimeRangeError(
            f"{name}={value!r} is a float; give integer microseconds, a datetime or an ISO string"
        )
    if isinstance(value, date) and not type_name.startswith("pandas."):  # any year Python holds
        return _check_bounds(_datetime_micros(value), value.isoformat(), name)
    if isinstance(value, (str, datetime, date)) or type_name.startswith(("pandas.", "numpy.")):
        import pandas as pd

        if isinstance(value, str):
            # before pandas, which reads "now"/"today" as naive *local* time and 01/02 month first
            relative = relative_micros(value, now, name=name)
            if relative is not None:
                return _check_bounds(relative, value, name)
            _refuse_ambiguous(value, name)
        try:
            ts = pd.Timestamp(value)
        except (ValueError, TypeError, OverflowError) as exc:
            # pandas holds 1677-2262 only: a time outside that, in ISO text, is read by Python
            beyond = _iso_beyond_pandas(value) if isinstance(value, str) else None
            if beyond is not None:
                return _check_bounds(_datetime_micros(beyond), beyond.isoformat(), name)
            raise InvalidTimeRangeError(
                f"{name}={value!r} is not a time pandas can parse; use ISO 8601 like '2025-01-01T00:00:00Z'"
            ) from exc
        if ts is pd.NaT:
            raise InvalidTimeRangeError(f"{name} is NaT; give a real time")
        try:
            if ts.tzinfo is None:
                ts = ts.tz_localize("UTC")
            ts = ts.tz_convert("UTC")
            if ts.unit == "ns":  # the only unit finer than a microsecond; .value is always ns
                micros = -(-int(ts.value) // 1000) if round_up else int(ts.value) // 1000
            else:  # s, ms or us: exact in Python, whatever the year
                micros = _datetime_micros(ts.to_pydatetime())
        except (ValueError, OverflowError):  # beyond what pandas can shift or convert: Python can
            micros = _datetime_micros(ts.to_pydatetime())
        return _check_bounds(micros, ts.isoformat(), name)
    raise InvalidTimeRangeError(
        f"{name}={value!r} ({type(value).__name__}) is not a time; "
        "give integer microseconds, a datetime, a pandas.Timestamp or an ISO string"
    )


def _iso_beyond_pandas(text: str) -> datetime | None:
    """ISO 8601 text pandas cannot hold (before 1677 or after 2262), read by Python; None if it is not ISO."""
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError:
        return None


def format_micros(value: int) -> str:
    """ISO-8601 UTC text for integer microseconds (for messages and logs)."""
    return datetime.fromtimestamp(value / 1_000_000, tz=timezone.utc).isoformat()
