"""The data-quality report every fetch result carries (``df.attrs["quality"]``).

A report says, for one ticker, period and range: how many candles the range should hold
(``expected``: every period of the range that has opened by now), how many are stored
(``present``), which are missing and why, and how many an adapter made up by its missing-data
policy (``filled``, ``fill_ratio``). A missing range has one of three reasons:

- ``"empty at source"``: the source was asked for the range and had no candle (no trades, a
  market that did not exist yet, an exchange outage);
- ``"not yet filled"``: nobody has asked the source for the range yet (or the fill failed,
  or the source had nothing for it while it was still inside its settle horizon: asked again);
- ``"open period"``: the period has not closed, so no final candle can exist yet.

Where the coverage ledger names the source that answered (every range ingested since sources
were recorded), ``served`` says which source served which part of the range (its candles and
its checked-empty periods alike), and each ``"empty at source"`` range names the source that
had nothing (``MissingRange.source``).

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
    "ServedRange",
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
    """Missing candles: ``first`` to ``last`` (inclusive open times, µs UTC), ``candles`` of them;
    for ``"empty at source"``, ``source`` names the source that had none (when recorded)."""

    first: int
    last: int
    candles: int
    reason: str
    source: str | None = None

    def __str__(self) -> str:
        span = _iso(self.first) if self.first == self.last else f"{_iso(self.first)} .. {_iso(self.last)}"
        said = f" ({self.source})" if self.source else ""
        return f"{span} ({self.candles} candle{'s' if self.candles != 1 else ''}): {self.reason}{said}"


class ServedRange(NamedTuple):
    """Periods ``first`` to ``last`` (inclusive open times, µs UTC), ``periods`` of them, that
    ``source`` answered for (with candles or checked empty)."""

    first: int
    last: int
    periods: int
    source: str

    def __str__(self) -> str:
        span = _iso(self.first) if self.first == self.last else f"{_iso(self.first)} .. {_iso(self.last)}"
        return f"{span} ({self.periods} period{'s' if self.periods != 1 else ''}): {self.source}"


class QualityReport(NamedTuple):
    """How complete one fetched range is (see the module docstring)."""

    ticker: str
    period_seconds: int
    expected: int
    present: int
    missing: tuple[MissingRange, ...] = ()
    filled: int = 0
    fill_policy: str | None = None
    served: tuple[ServedRange, ...] = ()

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
            if last is not None and last.reason == item.reason and last.source == item.source \
                    and last.last + period_us == item.first:
                missing[-1] = MissingRange(last.first, item.last, last.candles + item.candles, item.reason, item.source)
            else:
                missing.append(item)
        served = list(self.served)
        for part in other.served:
            before = served[-1] if served else None
            if before is not None and before.source == part.source \
                    and before.last + self.period_seconds * 1_000_000 == part.first:
                served[-1] = ServedRange(before.first, part.last, before.periods + part.periods, part.source)
            else:
                served.append(part)
        return self._replace(
            expected=self.expected + other.expected, present=self.present + other.present,
            missing=tuple(missing), filled=self.filled + other.filled,
            fill_policy=self.fill_policy or other.fill_policy, served=tuple(served),
        )

    def __str__(self) -> str:
        lines = [f"{self.ticker} {self.period_seconds}s: {self.present} of {self.expected} candles stored, "
                 f"{self.missing_candles} missing, {self.filled} filled"
                 + (f" by missing={self.fill_policy!r}" if self.fill_policy not in (None, "drop") else "")
                 + f" (fill ratio {self.fill_ratio:.2%})"]
        lines += [f"  missing {item}" for item in self.missing]
        lines += [f"  served {item}" for item in self.served]
        return "\n".join(lines)


def quality_report(
    ticker: str,
    period_seconds: int,
    interval: Interval | None,
    timestamps: Sequence[int] | np.ndarray,
    covered: Iterable[Interval],
    now: int | None = None,
    served: Iterable[tuple[Interval, str]] = (),
) -> QualityReport:
    """The report of a fetch of ``interval`` (half-open, whole periods) that found candles at
    ``timestamps``, the source having been asked for the ``covered`` intervals already;
    ``served`` names the source of recorded parts (``((start, stop), source)``, from the
    coverage ledger)."""
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
    sources = _served_in(served, (start, min(stop, closed)), period_seconds)
    named: list[tuple[int, int, str, str | None]] = []
    for s, e in empty:  # each empty piece under the source that answered for it
        cursor = s
        for part in sources:
            lo, hi = max(part.first, cursor), min(part.last + period_us, e)
            if hi <= lo:
                continue
            if lo > cursor:
                named.append((cursor, lo, EMPTY_AT_SOURCE, None))
            named.append((lo, hi, EMPTY_AT_SOURCE, part.source))
            cursor = hi
        if cursor < e:
            named.append((cursor, e, EMPTY_AT_SOURCE, None))
    named += [(s, e, reason, None) for s, e, reason in pieces] + [(s, e, NOT_YET_FILLED, None) for s, e in unasked]
    missing = tuple(MissingRange(s, e - period_us, (e - s) // period_us, reason, source)
                    for s, e, reason, source in sorted(named, key=lambda item: item[:3]))
    return QualityReport(ticker, period_seconds, (stop - start) // period_us, int(ts.size), missing,
                         served=sources)


def _served_in(served: Iterable[tuple[Interval, str]], bounds: Interval, period_seconds: int) -> tuple[ServedRange, ...]:
    """The recorded sources inside ``bounds``: sorted, cut to it, neighbours of one source merged
    (where two rows overlap, the later-starting one wins its part)."""
    period_us = period_seconds * 1_000_000
    cut = sorted((max(s, bounds[0]), min(e, bounds[1]), name) for (s, e), name in served
                 if min(e, bounds[1]) > max(s, bounds[0]) and name)
    out: list[list] = []
    for s, e, name in cut:
        if out and s < out[-1][1]:  # overlaps the previous one: keep only what is new
            s = out[-1][1]
            if s >= e:
                continue
        if out and out[-1][2] == name and out[-1][1] == s:
            out[-1][1] = e
        else:
            out.append([s, e, name])
    return tuple(ServedRange(s, e - period_us, (e - s) // period_us, name) for s, e, name in out)


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
