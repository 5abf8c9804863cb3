"""``IcebergClient``: direct, synchronous queries of the warehouse, as the seed documents them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from .catalog import open_catalog
from .errors import InvalidTimeRangeError
from .markets import MarketInfo
from .ranges import Interval, candle_interval, merge_intervals, subtract_intervals, to_inclusive
from .tickers import parse_ticker
from .timeconv import now_micros, parse_period, to_micros
from .warehouse import CANDLE_COLUMNS, Warehouse

__all__ = ["IcebergClient", "FetchRequest", "CacheRead", "candles_to_frame"]


@dataclass(frozen=True)
class FetchRequest:
    """One validated fetch: a ticker, a period and the half-open candle interval it covers.

    ``interval`` is None when ``[start_time, end_time]`` holds no candle timestamp.
    """

    ticker: str
    period_seconds: int
    start_time: int
    end_time: int
    interval: Interval | None

    @property
    def period_us(self) -> int:
        return self.period_seconds * 1_000_000

    @classmethod
    def create(cls, ticker: object, period_seconds: object, start_time: object, end_time: object) -> FetchRequest:
        """Validate caller input (tickers, periods and every accepted time type)."""
        name = str(parse_ticker(ticker))
        period = parse_period(period_seconds)
        start = to_micros(start_time, name="start_time")
        end = to_micros(end_time, name="end_time")
        if start > end:
            raise InvalidTimeRangeError(f"start_time={start} is after end_time={end}; swap them")
        return cls(name, period, start, end, candle_interval(start, end, period * 1_000_000))


@dataclass
class CacheRead:
    """What the cache holds for a request: candles, covered intervals, the snapshot read."""

    table: pa.Table
    covered: list[Interval]
    snapshot_id: int | None = None

    @property
    def num_rows(self) -> int:
        return self.table.num_rows


def candles_to_frame(table: pa.Table) -> pd.DataFrame:
    """Candle rows as the seed's DataFrame: int64 columns (``Int64`` where a value may be null).

    Built column by column: one copy of each integer column into a numpy array of its own,
    chunk by chunk (the frame is writable and shares nothing with ``table``), no consolidation
    copy, and an all-null column costs no memory until written (``calloc``). A bulk fetch so
    peaks at about the rows read plus the frame, where ``table.to_pandas()`` and dtype fixes
    would peak near three frames.
    """
    columns: dict[str, Any] = {}
    for name in CANDLE_COLUMNS:
        column = table[name]
        if not pa.types.is_integer(column.type):
            columns[name] = column.to_pandas()
        elif column.null_count == 0:
            columns[name] = _own_array(column)
        elif column.null_count == len(column):
            columns[name] = pd.arrays.IntegerArray(np.zeros(len(column), dtype=np.int64),
                                                   np.ones(len(column), dtype=bool))
        else:
            columns[name] = pd.arrays.IntegerArray(_own_array(column, fill=0), _own_array(column, nulls=True))
    return pd.DataFrame(columns, copy=False)


def candle_runs(timestamps: np.ndarray, period_us: int) -> list[Interval]:
    """Runs of consecutive candle timestamps as half-open intervals.

    The same as :func:`~dexorder_feeds.ranges.intervals_from_timestamps`, without its
    ``np.unique``: numpy 2's hash-based unique takes ~1 s for a million candle timestamps,
    sorting takes ~10 ms, and reads come sorted already (checked, not assumed).
    """
    ts = np.asarray(timestamps, dtype=np.int64)
    if ts.size == 0:
        return []
    if ts.size > 1 and not bool(np.all(ts[1:] > ts[:-1])):
        ts = np.sort(ts)
        ts = ts[np.concatenate(([True], ts[1:] != ts[:-1]))]
    breaks = np.flatnonzero(np.diff(ts) != period_us)
    starts = np.concatenate((ts[:1], ts[breaks + 1]))
    lasts = np.concatenate((ts[breaks], ts[-1:]))
    return [(int(s), int(e) + period_us) for s, e in zip(starts, lasts)]


def _own_array(column: pa.ChunkedArray, *, fill: int | None = None, nulls: bool = False) -> np.ndarray:
    """A writable numpy copy of an Arrow integer column, chunk by chunk (no intermediate
    concatenation): its values (nulls replaced by ``fill``), or with ``nulls`` its null mask."""
    out = np.empty(len(column), dtype=bool if nulls else np.int64)
    position = 0
    for chunk in column.chunks:
        if nulls:
            values = chunk.is_null().to_numpy(zero_copy_only=False)
        elif fill is not None and chunk.null_count:
            values = chunk.fill_null(fill).to_numpy(zero_copy_only=False)
        else:
            values = chunk.to_numpy(zero_copy_only=False)
        out[position:position + len(chunk)] = values
        position += len(chunk)
    return out


class IcebergClient:
    """Reads candles, coverage and markets from the Iceberg warehouse.

    ``IcebergClient("sqlite:////path/catalog.db")``, ``IcebergClient("http://catalog:8181",
    catalog_properties={...})``, or ``IcebergClient(warehouse=Warehouse(...))``.
    """

    def __init__(
        self,
        iceberg_catalog_uri: str | None = None,
        namespace: str = "trading",
        *,
        catalog_properties: Mapping[str, Any] | None = None,
        warehouse: Warehouse | None = None,
    ) -> None:
        if warehouse is None:
            if iceberg_catalog_uri is None and not catalog_properties:
                from .config import resolve_settings

                settings = resolve_settings(namespace=namespace)
                iceberg_catalog_uri, catalog_properties = settings.iceberg_catalog_uri, settings.catalog_properties
            warehouse = Warehouse(open_catalog(iceberg_catalog_uri, catalog_properties), namespace)
        self.warehouse = warehouse

    # -- the seed's API ----------------------------------------------------------------
    def query_ohlc(self, ticker: object, period_seconds: object, start_time: object, end_time: object) -> pd.DataFrame:
        """The stored candles with timestamps in ``[start_time, end_time]``, sorted, as a DataFrame."""
        request = FetchRequest.create(ticker, period_seconds, start_time, end_time)
        cached = self.read_cache(request)
        frame = candles_to_frame(cached.table)
        if not frame["timestamp"].is_monotonic_increasing:
            frame = frame.sort_values("timestamp", kind="stable")
        frame = frame.drop_duplicates("timestamp").reset_index(drop=True)
        frame.attrs["snapshot_id"] = cached.snapshot_id
        return frame

    def find_missing_ranges(
        self, ticker: object, period_seconds: object, start_time: object, end_time: object
    ) -> list[tuple[int, int]]:
        """Missing ranges as ``(first_candle_ts, last_candle_ts)`` pairs, inclusive, µs.

        A period is missing when no candle is stored for it and it lies in no range recorded as
        ingested (ranges the source had no candles for are remembered). Neighbouring missing
        periods merge into one range; the period that has not closed yet is always missing.
        """
        request = FetchRequest.create(ticker, period_seconds, start_time, end_time)
        return to_inclusive(self.missing_intervals(request, self.read_cache(request)), request.period_us)

    def has_data(self, ticker: object, period_seconds: object, start_time: object, end_time: object) -> bool:
        """True if at least one candle is stored in ``[start_time, end_time]``."""
        request = FetchRequest.create(ticker, period_seconds, start_time, end_time)
        return request.interval is not None and self.read_cache(request).num_rows > 0

    # -- building blocks of the fetcher -------------------------------------------------
    def read_cache(self, request: FetchRequest) -> CacheRead:
        """Candles and coverage for a request (used by the built-in cache plugin)."""
        if request.interval is None:
            from .warehouse import candle_arrow_schema

            return CacheRead(candle_arrow_schema().empty_table(), [], None)
        table, covered, snapshot_id = self.warehouse.read_range(request.ticker, request.period_seconds, request.interval)
        return CacheRead(table, covered, snapshot_id)

    def missing_intervals(self, request: FetchRequest, cached: CacheRead, now: int | None = None) -> list[Interval]:
        """Half-open missing intervals of ``request`` given ``cached`` (see find_missing_ranges)."""
        if request.interval is None:
            return []
        period_us = request.period_us
        present = list(cached.covered)
        if cached.num_rows:
            present += candle_runs(cached.table["timestamp"].to_numpy(), period_us)
        # The period still open is never final, whatever a stale coverage row says.
        closed_stop = (now_micros() if now is None else now) // period_us * period_us
        present = [(s, min(e, closed_stop)) for s, e in merge_intervals(present)]
        return subtract_intervals(request.interval, present)

    def market_info(self, ticker: str) -> MarketInfo | None:
        """The market's stored decimals, or None."""
        return self.warehouse.read_market(str(parse_ticker(ticker)))

    def coverage(self, ticker: str | None = None) -> pd.DataFrame:
        """Every ingested range (optionally of one ticker) as a DataFrame."""
        return self.warehouse.read_coverage_table(str(parse_ticker(ticker)) if ticker else None).to_pandas()
