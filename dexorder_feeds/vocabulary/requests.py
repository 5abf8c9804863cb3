"""The fetch request every layer passes, what a cache read returns, and the two rules every
layer applies to candles: only closed periods are final, and a result is sorted and unique."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from . import periods
from .errors import InvalidRequestError, InvalidTimeRangeError
from .ranges import Interval, candle_interval
from .tickers import parse_ticker
from .times import now_micros, parse_period, to_micros

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

__all__ = ["FetchRequest", "CacheRead", "closed_period_stop", "sorted_unique_candles"]


def closed_period_stop(period_seconds: int, now: int | None = None) -> int:
    """The start of the period still open at ``now`` (µs): every candle before it has closed.

    A candle whose period has not closed is never final: it is never stored, never asked for,
    and always reported missing. (Calendar-aware: see :func:`.periods.closed_period_stop`.)
    """
    return periods.closed_period_stop(period_seconds, now_micros() if now is None else now)


def sorted_unique_candles(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` sorted by timestamp with one row per timestamp (the first one kept)."""
    if not frame["timestamp"].is_monotonic_increasing:
        frame = frame.sort_values("timestamp", kind="stable").reset_index(drop=True)
    ts = frame["timestamp"].to_numpy()
    repeated = ts[1:] == ts[:-1]  # sorted: a duplicate sits next to its first
    if repeated.any():
        frame = frame.loc[np.concatenate(([True], ~repeated))].reset_index(drop=True)
    return frame


@dataclass(frozen=True)
class FetchRequest:
    """One validated fetch: a ticker, a period and the half-open candle interval it covers.

    ``interval`` is None when ``[start_time, end_time]`` holds no candle timestamp. ``as_of``
    (a pin name or a snapshot id) makes it a read of that snapshot, which never fills gaps.
    """

    ticker: str
    period_seconds: int
    start_time: int
    end_time: int
    interval: Interval | None
    as_of: str | int | None = None

    @property
    def period_us(self) -> int:
        return self.period_seconds * 1_000_000

    @classmethod
    def create(cls, ticker: object, period_seconds: object, start_time: object, end_time: object,
               as_of: object = None) -> FetchRequest:
        """Validate caller input (tickers, periods and every accepted time type)."""
        name = str(parse_ticker(ticker))
        period = parse_period(period_seconds)
        start = to_micros(start_time, name="start_time", round_up=True)  # 100 ns past the hour: not that hour
        end = to_micros(end_time, name="end_time")
        if start > end:
            raise InvalidTimeRangeError(f"start_time={start} is after end_time={end}; swap them")
        if as_of is not None and (isinstance(as_of, bool) or not isinstance(as_of, (str, int)) or as_of == ""):
            raise InvalidRequestError(f"as_of must be a pin name or a snapshot id (an integer), not {as_of!r}")
        return cls(name, period, start, end, candle_interval(start, end, period * 1_000_000),
                   as_of if as_of is None or isinstance(as_of, int) else str(as_of))


@dataclass
class CacheRead:
    """What the cache holds for a request: candles, covered intervals, the snapshot read, and for
    a read ``as_of`` a snapshot, when that snapshot was made (µs; periods open then are not missing)."""

    table: pa.Table
    covered: list[Interval]
    snapshot_id: int | None = None
    snapshot_time: int | None = None
    served: tuple[tuple[Interval, str], ...] = ()
    """The source each recorded range names (``((start, stop), source)``), where the ledger says."""

    @property
    def num_rows(self) -> int:
        return int(self.table.num_rows)
