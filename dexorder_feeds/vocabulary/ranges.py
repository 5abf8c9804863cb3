"""Whole-period range arithmetic on integer microseconds.

Internally a range of candles is a half-open, period-aligned interval ``(start, stop)``: it
holds the candles whose timestamps are ``start, start + p, …, stop - p``. The public API speaks
in inclusive pairs ``(first_candle_ts, last_candle_ts)``, which select exactly those candles
when passed back as ``start_time``/``end_time``; :func:`to_inclusive` converts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

__all__ = [
    "Interval",
    "candle_interval",
    "merge_intervals",
    "subtract_intervals",
    "intervals_from_timestamps",
    "to_inclusive",
    "interval_candle_count",
]

Interval = tuple[int, int]


def candle_interval(start: int, end: int, period_us: int) -> Interval | None:
    """The candles whose timestamps lie in ``[start, end]`` (inclusive), or None if there are none."""
    first = -(-start // period_us) * period_us
    last = end // period_us * period_us
    if last < first:
        return None
    return first, last + period_us


def interval_candle_count(interval: Interval, period_us: int) -> int:
    """How many candles an interval holds."""
    return (interval[1] - interval[0]) // period_us


def merge_intervals(intervals: Iterable[Interval]) -> list[Interval]:
    """Sort and merge overlapping or touching intervals."""
    merged: list[list[int]] = []
    for start, stop in sorted(intervals):
        if stop <= start:
            continue
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], stop)
        else:
            merged.append([start, stop])
    return [(s, e) for s, e in merged]


def subtract_intervals(base: Interval, remove: Sequence[Interval]) -> list[Interval]:
    """The parts of ``base`` not covered by any interval of ``remove``."""
    result: list[Interval] = []
    cursor, stop = base
    for r_start, r_stop in merge_intervals(remove):
        if r_stop <= cursor:
            continue
        if r_start >= stop:
            break
        if r_start > cursor:
            result.append((cursor, r_start))
        cursor = max(cursor, r_stop)
        if cursor >= stop:
            break
    if cursor < stop:
        result.append((cursor, stop))
    return result


def intervals_from_timestamps(timestamps: Sequence[int] | np.ndarray, period_us: int) -> list[Interval]:
    """Runs of consecutive candle timestamps as intervals (input need not be sorted or unique)."""
    ts = np.sort(np.asarray(timestamps, dtype=np.int64))  # sort + adjacent test: np.unique is far slower
    if ts.size == 0:
        return []
    ts = ts[np.concatenate(([True], ts[1:] != ts[:-1]))]
    breaks = np.nonzero(np.diff(ts) != period_us)[0]
    starts = np.concatenate(([ts[0]], ts[breaks + 1]))
    lasts = np.concatenate((ts[breaks], [ts[-1]]))
    return [(int(s), int(e) + period_us) for s, e in zip(starts, lasts)]


def to_inclusive(intervals: Iterable[Interval], period_us: int) -> list[tuple[int, int]]:
    """Half-open intervals as the public ``(first_candle_ts, last_candle_ts)`` pairs."""
    return [(start, stop - period_us) for start, stop in intervals]
