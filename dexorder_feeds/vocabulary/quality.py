"""The data-quality report every fetch result carries (``df.attrs["quality"]``).

A report says, for one ticker, period and range: how many candles the range should hold
(``expected``: every period of the range that has opened by now), how many are stored
(``present``), which are missing and why, and how many an adapter made up by its missing-data
policy (``filled``, ``fill_ratio``). A missing range has one of three reasons:

- ``"empty at source"``: the source was asked for the range and had no candle (no trades, a
  market that did not exist yet, an exchange outage);
- ``"not yet filled"``: nobody has asked the source for the range yet (or the fill failed);
- ``"open period"``: the period has not closed, so no final candle can exist yet.

Reports are immutable records (``NamedTuple``): a frame that carries one in its ``attrs`` still
writes to Parquet, which stores ``attrs`` as JSON (a report becomes a JSON array there).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from typing import NamedTuple

import numpy as np

from .ranges import Interval, merge_intervals, runs_of_sorted_timestamps, sorted_unique_timestamps, subtract_intervals
from .requests import closed_period_stop

__all__ = [
    "EMPTY_AT_SOURCE",
    "NOT_YET_FILLED",
    "OPEN_PERIOD",
    "MissingRange",
    "QualityReport",
    "quality_report",
]

EMPTY_AT_SOURCE = "empty at source"
NOT_YET_FILLED = "not yet filled"
OPEN_PERIOD = "open period"
_REASONS = (EMPTY_AT_SOURCE, NOT_YET_FILLED, OPEN_PERIOD)


def _iso(micros: int) -> str:
    return datetime.fromtimestamp(micros // 1_000_000, timezone.utc).replace(
        microsecond=micros % 1_000_000).strftime("%Y-%m-%dT%H:%M:%SZ")


class MissingRange(NamedTuple):
    """Missing candles: ``first`` to ``last`` (inclusive open times, µs UTC), ``candles`` of them."""

    first: int
    last: int
    candles: int
    reason: str

    def __str__(self) -> str:
        span = _iso(self.first) if self.first == self.last else f"{_iso(self.first)} .. {_iso(self.last)}"
        return f"{span} ({self.candles} candle{'s' if self.candles != 1 else ''}): {self.reason}"


class QualityReport(NamedTuple):
    """How complete one fetched range is (see the module docstring)."""

    ticker: str
    period_seconds: int
    expected: int
    present: int
    missing: tuple[MissingRange, ...] = ()
    filled: int = 0
    fill_policy: str | None = None

    @property
    def missing_candles(self) -> int:
        """Candles of the range without a stored candle."""
        return sum(item.candles for item in self.missing)

    def missing_by_reason(self) -> dict[str, int]:
        """Missing candles per reason."""
        out = dict.fromkeys(_REASONS, 0)
        for item in self.missing:
            out[item.reason] += item.candles
        return out

    @property
    def fill_ratio(self) -> float:
        """The share of the delivered candles that the missing-data policy made up (0 to 1)."""
        delivered = self.present + self.filled
        return self.filled / delivered if delivered else 0.0

    def __copy__(self) -> QualityReport:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> QualityReport:
        # Immutable: pandas deep-copies attrs on most operations, which is then free however
        # many missing ranges a report holds.
        return self

    def with_fill(self, filled: int, policy: str) -> QualityReport:
        """This report after an adapter's ``policy`` added ``filled`` candles."""
        return self._replace(filled=filled, fill_policy=policy)

    def combine(self, other: QualityReport) -> QualityReport:
        """The report of two consecutive ranges of one series (pages of one iteration)."""
        missing = list(self.missing)
        for item in other.missing:
            last = missing[-1] if missing else None
            period_us = self.period_seconds * 1_000_000
            if last is not None and last.reason == item.reason and last.last + period_us == item.first:
                missing[-1] = MissingRange(last.first, item.last, last.candles + item.candles, item.reason)
            else:
                missing.append(item)
        return self._replace(
            expected=self.expected + other.expected, present=self.present + other.present,
            missing=tuple(missing), filled=self.filled + other.filled,
            fill_policy=self.fill_policy or other.fill_policy,
        )

    def __str__(self) -> str:
        lines = [f"{self.ticker} {self.period_seconds}s: {self.present} of {self.expected} candles stored, "
                 f"{self.missing_candles} missing, {self.filled} filled"
                 + (f" by missing={self.fill_policy!r}" if self.fill_policy not in (None, "drop") else "")
                 + f" (fill ratio {self.fill_ratio:.2%})"]
        lines += [f"  missing {item}" for item in self.missing]
        return "\n".join(lines)


def quality_report(
    ticker: str,
    period_seconds: int,
    interval: Interval | None,
    timestamps: Sequence[int] | np.ndarray,
    covered: Iterable[Interval],
    now: int | None = None,
) -> QualityReport:
    """The report of a fetch of ``interval`` (half-open, whole periods) that found candles at
    ``timestamps``, the source having been asked for the ``covered`` intervals already."""
    if interval is None:
        return QualityReport(ticker, period_seconds, 0, 0)
    period_us = period_seconds * 1_000_000
    closed = closed_period_stop(period_seconds, now)
    start, stop = interval[0], min(interval[1], closed + period_us)  # periods opened by now
    if stop <= start:
        return QualityReport(ticker, period_seconds, 0, 0)
    ts, steps = sorted_unique_timestamps(timestamps)  # one pass over a read's sorted timestamps
    i, j = (int(k) for k in np.searchsorted(ts, [start, stop]))
    ts, steps = ts[i:j], steps[i:max(i, j - 1)]
    runs = runs_of_sorted_timestamps(ts, steps, period_us)
    gaps = subtract_intervals((start, stop), runs)
    pieces: list[tuple[int, int, str]] = []
    if gaps and gaps[-1][1] > closed:  # the open period (at most one: it ends the range)
        last_start, last_stop = gaps.pop()
        pieces.append((max(last_start, closed), last_stop, OPEN_PERIOD))
        if last_start < closed:
            gaps.append((last_start, closed))
    empty, unasked = _split_by_cover(gaps, merge_intervals(covered))
    pieces += [(s, e, EMPTY_AT_SOURCE) for s, e in empty] + [(s, e, NOT_YET_FILLED) for s, e in unasked]
    missing = tuple(MissingRange(s, e - period_us, (e - s) // period_us, reason) for s, e, reason in sorted(pieces))
    return QualityReport(ticker, period_seconds, (stop - start) // period_us, int(ts.size), missing)


def _split_by_cover(gaps: list[Interval], covered: list[Interval]) -> tuple[list[Interval], list[Interval]]:
    """The parts of ``gaps`` inside ``covered`` and outside it (both sorted and disjoint), in
    one pass over the two lists."""
    inside: list[Interval] = []
    outside: list[Interval] = []
    j = 0
    for gap_start, gap_stop in gaps:
        while j < len(covered) and covered[j][1] <= gap_start:
            j += 1  # covered ranges that end before this gap never matter again
        cursor, k = gap_start, j
        while cursor < gap_stop and k < len(covered) and covered[k][0] < gap_stop:
            lo, hi = max(covered[k][0], cursor), min(covered[k][1], gap_stop)
            if lo > cursor:
                outside.append((cursor, lo))
            if hi > lo:
                inside.append((lo, hi))
            cursor = max(cursor, hi)
            k += 1
        if cursor < gap_stop:
            outside.append((cursor, gap_stop))
    return inside, outside
