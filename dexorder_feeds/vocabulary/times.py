"""Timestamps and periods: everything becomes integer microseconds / whole seconds here.

Public functions accept ``int`` microseconds, ``datetime``, ``pandas.Timestamp``, ``numpy.datetime64``
and ISO-8601 strings. A naive ``datetime`` or string without offset is taken as **UTC** (the
convention of backtrader and pandas users); aware values are converted to UTC.
"""

from __future__ import annotations

import re
import time
from datetime import date, datetime, timezone
from typing import TYPE_CHECKING, Union

from .errors import InvalidPeriodError, InvalidTimeRangeError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["TimeLike", "PeriodLike", "to_micros", "parse_period", "now_micros", "format_micros"]

TimeLike = Union[int, str, datetime, date, "pd.Timestamp"]
PeriodLike = Union[int, str]

# Integer timestamps in microseconds fall between 1973 and 5138; anything else is almost
# certainly another unit, and the error says which.
_MIN_PLAUSIBLE_MICROS = 10**14
_MAX_PLAUSIBLE_MICROS = 10**17
_EARLIEST = "1973-03-03T09:46:40Z"  # 10**14 µs

_PERIOD_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PERIOD_RE = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")


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


def to_micros(value: object, *, name: str = "time") -> int:
    """Convert a time-like value to integer microseconds since the epoch, UTC.

    Raises :class:`InvalidTimeRangeError` for values of the wrong unit or type.
    """
    if isinstance(value, bool):
        raise InvalidTimeRangeError(f"{name}={value!r} is not a time")
    if isinstance(value, int):
        return _check_integer_micros(value, name)
    if isinstance(value, str) and value.strip().isdigit():
        return _check_integer_micros(int(value), name)
    type_name = type(value).__module__ + "." + type(value).__name__
    if type_name.startswith("numpy.") and hasattr(value, "dtype"):
        if value.dtype.kind in "iu":
            return _check_integer_micros(int(value), name)  # type: ignore[call-overload]
    if isinstance(value, float):
        raise InvalidTimeRangeError(
            f"{name}={value!r} is a float; give integer microseconds, a datetime or an ISO string"
        )
    if isinstance(value, (str, datetime, date)) or type_name.startswith(("pandas.", "numpy.")):
        import pandas as pd

        if isinstance(value, str) and value.strip().lower() in ("now", "today"):
            now = pd.Timestamp.now(tz="UTC")  # pandas reads these as naive *local* time
            return (now if value.strip().lower() == "now" else now.normalize()).value // 1000
        try:
            ts = pd.Timestamp(value)
        except (ValueError, TypeError) as exc:
            raise InvalidTimeRangeError(
                f"{name}={value!r} is not a time pandas can parse; use ISO 8601 like '2025-01-01T00:00:00Z'"
            ) from exc
        if ts is pd.NaT:
            raise InvalidTimeRangeError(f"{name} is NaT; give a real time")
        if ts.tzinfo is None:
            ts = ts.tz_localize("UTC")
        ts = ts.tz_convert("UTC")
        micros = ts.value // 1000  # ns -> µs; value is ns since epoch whatever the unit
        if micros < _MIN_PLAUSIBLE_MICROS:
            raise InvalidTimeRangeError(
                f"{name}={ts.isoformat()} is before {_EARLIEST}, the earliest time dexorder-feeds handles "
                "(no market has candles that old); start later"
            )
        return micros
    raise InvalidTimeRangeError(
        f"{name}={value!r} ({type(value).__name__}) is not a time; "
        "give integer microseconds, a datetime, a pandas.Timestamp or an ISO string"
    )


def parse_period(value: object) -> int:
    """Return a period in whole seconds from ``3600``, ``"3600"`` or ``"1h"`` (s/m/h/d/w)."""
    if isinstance(value, bool):
        raise InvalidPeriodError(f"period_seconds={value!r} is not a positive whole number of seconds")
    if isinstance(value, str):
        match = _PERIOD_RE.match(value.lower())
        if match and value.strip().endswith("M"):
            raise InvalidPeriodError(
                f"period {value!r} is ambiguous: months are not supported; write minutes as {value.strip()[:-1]}m"
            )
        if not match:
            raise InvalidPeriodError(
                f"period {value!r} is not understood; give seconds (3600) or 1m/5m/15m/1h/4h/1d/1w"
            )
        seconds = int(match.group(1)) * _PERIOD_UNITS[match.group(2) or "s"]
    elif isinstance(value, int) or (hasattr(value, "dtype") and getattr(value, "dtype").kind in "iu"):
        seconds = int(value)  # type: ignore[call-overload]
    else:
        raise InvalidPeriodError(
            f"period_seconds={value!r} ({type(value).__name__}) is not a positive whole number of seconds"
        )
    if seconds <= 0:
        raise InvalidPeriodError(f"period_seconds={seconds} must be positive")
    return seconds


def format_micros(value: int) -> str:
    """ISO-8601 UTC text for integer microseconds (for messages and logs)."""
    return datetime.fromtimestamp(value / 1_000_000, tz=timezone.utc).isoformat()
