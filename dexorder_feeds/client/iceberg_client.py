"""``IcebergClient``: direct, synchronous queries of the warehouse, as the seed documents them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa

from ..storage.catalog import open_catalog
from ..storage.ledger import ForgetResult
from ..vocabulary.errors import InvalidTimeRangeError
from ..vocabulary.markets import MarketInfo
from ..vocabulary.fingerprint import content_hash, table_content_hash
from ..vocabulary.requests import CacheRead, FetchRequest, closed_period_stop, sorted_unique_candles
from ..vocabulary.ranges import Interval, candle_interval, intervals_from_timestamps, merge_intervals, subtract_intervals, to_inclusive
from ..vocabulary.tickers import parse_ticker
from ..vocabulary.times import now_micros, parse_period, to_micros
from ..storage.warehouse import CANDLE_COLUMNS, Warehouse
from ..vocabulary.identity import WarehouseIdentity
from . import relay_warehouses

if TYPE_CHECKING:
    from ..storage.pins import Pin

__all__ = ["IcebergClient", "candles_to_frame", "ForgetResult"]

T = TypeVar("T")
_FAR_FUTURE = 2**62


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
    """Runs of consecutive candle timestamps as half-open intervals: one diff over sorted
    unique timestamps (what reads return; checked, not assumed: others are sorted first)."""
    return intervals_from_timestamps(timestamps, period_us)


def _own_array(column: pa.ChunkedArray, *, fill: int | None = None, nulls: bool = False) -> np.ndarray:
    """A writable numpy copy of an Arrow integer column, chunk by chunk (no intermediate
    concatenation): its values (nulls replaced by ``fill``), or with ``nulls`` its null mask."""
    # In Arrow's memory pool, which keeps freed pages for the next read: a fresh numpy array of
    # a million candles page-faults its 8 MB in (~1.3 ms a column), a pooled one is ~4x faster.
    dtype = np.dtype(bool if nulls else np.int64)
    out = np.frombuffer(pa.allocate_buffer(max(1, len(column)) * dtype.itemsize), dtype=dtype)[:len(column)]
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
                from ..config import resolve_settings

                settings = resolve_settings(namespace=namespace)
                iceberg_catalog_uri, catalog_properties = settings.iceberg_catalog_uri, settings.catalog_properties
            warehouse = Warehouse(open_catalog(iceberg_catalog_uri, catalog_properties), namespace)
        self.warehouse = warehouse

    # -- the seed's API ----------------------------------------------------------------
    def query_ohlc(self, ticker: object, period_seconds: object, start_time: object, end_time: object, *,
                   as_of: str | int | None = None) -> pd.DataFrame:
        """The stored candles with timestamps in ``[start_time, end_time]``, sorted, as a DataFrame,
        with ``attrs["snapshot_id"]`` and ``attrs["content_hash"]``. ``as_of`` (a pin name or a
        snapshot id) reads that snapshot instead of the current one."""
        request = FetchRequest.create(ticker, period_seconds, start_time, end_time, as_of)
        cached = self.read_cache(request)
        self._check_relay(request, cached)
        frame = candles_to_frame(cached.table)
        frame = sorted_unique_candles(frame)
        market = self.market_info(request.ticker)
        decimals = (market.price_decimals, market.volume_decimals) if market else (0, 0)
        frame.attrs["snapshot_id"] = cached.snapshot_id
        digest = None
        if len(frame) == cached.num_rows:
            digest = table_content_hash(cached.table, request.ticker, request.period_seconds, *decimals)
        frame.attrs["content_hash"] = digest or content_hash(frame, request.ticker, request.period_seconds, *decimals)
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
        cached = self.read_cache(request)
        self._check_relay(request, cached)
        return to_inclusive(self.missing_intervals(request, cached), request.period_us)

    def has_data(self, ticker: object, period_seconds: object, start_time: object, end_time: object) -> bool:
        """True if at least one candle is stored in ``[start_time, end_time]``."""
        request = FetchRequest.create(ticker, period_seconds, start_time, end_time)
        if request.interval is None:
            return False
        cached = self.read_cache(request)
        self._check_relay(request, cached)
        return cached.num_rows > 0

    def warehouse_identity(self) -> WarehouseIdentity:
        """The warehouse this client reads: catalog, namespace and table uuids. Compare it with
        ``HistoryClient.warehouse_identity`` (the relay's) to check both name the same one."""
        return self.warehouse.identity()

    def _check_relay(self, request: FetchRequest, cached: CacheRead) -> None:
        """Raise ``WarehouseMismatchError`` when a relay of this process stored part of the range
        into another warehouse and this one lacks it (see :mod:`.relay_warehouses`)."""
        relay_warehouses.check(request.ticker, request.period_seconds, request.interval, self.warehouse.identity,
                               lambda: self._present(request, cached))

    @staticmethod
    def _present(request: FetchRequest, cached: CacheRead) -> list[Interval]:
        present = list(cached.covered)
        if cached.num_rows:
            present += candle_runs(cached.table["timestamp"].to_numpy(), request.period_us)
        return merge_intervals(present)

    # -- building blocks of the fetcher -------------------------------------------------
    def read_cache(self, request: FetchRequest) -> CacheRead:
        """Candles and coverage for a request (used by the built-in cache plugin)."""
        if request.interval is None:
            from ..storage.warehouse import candle_arrow_schema

            return CacheRead(candle_arrow_schema().empty_table(), [], None)
        if request.as_of is not None:
            return self.read_at(request)
        table, covered, snapshot_id, served = self.warehouse.read_range_served(request.ticker, request.period_seconds,
                                                                               request.interval)
        return CacheRead(table, covered, snapshot_id, served=served)

    def read_at(self, request: FetchRequest) -> CacheRead:
        """The candles and coverage of the snapshot ``request.as_of`` names (a pin or a snapshot id)."""
        from ..storage.pins import read_point

        assert request.as_of is not None and request.interval is not None
        point = read_point(self.warehouse, request.as_of)
        table, covered = self.warehouse.read_range_at(request.ticker, request.period_seconds, request.interval,
                                                      point.candles_snapshot, point.coverage_snapshot)
        return CacheRead(table, covered or [], point.candles_snapshot, point.time)

    def missing_intervals(self, request: FetchRequest, cached: CacheRead, now: int | None = None) -> list[Interval]:
        """Half-open missing intervals of ``request`` given ``cached`` (see find_missing_ranges)."""
        if request.interval is None:
            return []
        period_us = request.period_us
        present = list(cached.covered)
        if cached.num_rows:
            present += candle_runs(cached.table["timestamp"].to_numpy(), period_us)
        # The period still open is never final, whatever a stale coverage row says.
        closed_stop = closed_period_stop(request.period_seconds, cached.snapshot_time if now is None else now)
        present = [(s, min(e, closed_stop)) for s, e in merge_intervals(present)]
        return subtract_intervals(request.interval, present)

    def market_info(self, ticker: str) -> MarketInfo | None:
        """The market's stored decimals, or None."""
        return self.warehouse.read_market(str(parse_ticker(ticker)))

    # -- pins ----------------------------------------------------------------------------
    def pin(self, name: str) -> Pin:
        """Keep the warehouse's current snapshot under ``name`` (an Iceberg tag); read it again
        with ``as_of=name``. Same as ``dexorder-feeds pin NAME``."""
        from ..storage.pins import create_pin

        return create_pin(self.warehouse, name)

    def unpin(self, name: str) -> None:
        """Drop a pin; its snapshot then expires like any other."""
        from ..storage.pins import remove_pin

        remove_pin(self.warehouse, name)

    def pins(self) -> list[Pin]:
        """Every pin (name, snapshot id, time, candles, bytes), oldest first."""
        from ..storage.pins import list_pins

        return list_pins(self.warehouse)

    def forget(self, ticker: object, period_seconds: object = None, start_time: object = None,
               end_time: object = None, *, candles: bool = False) -> ForgetResult:
        """Forget that ``ticker`` was ingested so the next fetch asks its source again: one
        period (or every period), candles with timestamps in ``[start_time, end_time]`` (either
        bound may be None: no limit). With ``candles=True`` the stored candles there are
        deleted too, so the source's values are stored afresh (after a file corrected a
        candle). Same as ``dexorder-feeds forget``. Returns the coverage rows and candles dropped.
        """
        from ..storage.ledger import forget

        name = str(parse_ticker(ticker))
        start = 0 if start_time is None else to_micros(start_time, name="start_time", round_up=True)
        end = _FAR_FUTURE if end_time is None else to_micros(end_time, name="end_time")
        if start > end:
            raise InvalidTimeRangeError(f"start_time={start} is after end_time={end}; swap them")
        whole = start_time is None and end_time is None
        if period_seconds is not None:
            periods = [parse_period(period_seconds)]
        else:
            periods = sorted({int(p) for p in self.warehouse.read_ledger(name)["period_seconds"].to_pylist()})
            if candles:
                periods = sorted(set(periods) | set(self._candle_periods(name)))
            if whole:  # every period at once: one commit per table
                return self._in_committer(lambda: forget(self.warehouse, name, None, None, candles=candles))
        rows, deleted = 0, 0
        for period in periods:
            interval = None if whole else candle_interval(start, end, period * 1_000_000)
            if interval is None and not whole:
                continue
            result = self._in_committer(lambda: forget(self.warehouse, name, period, interval, candles=candles))
            rows, deleted = rows + result.coverage_rows, deleted + result.candles
        return ForgetResult(rows, deleted)

    def _candle_periods(self, ticker: str) -> list[int]:
        table = self.warehouse.load_table(self.warehouse.candles_table_name)
        if table.current_snapshot() is None:
            return []
        from ..storage.schema import row_filter

        data = table.scan(row_filter=row_filter({"ticker": ticker}), selected_fields=("period_seconds",)).to_arrow()
        return sorted(set(data["period_seconds"].to_pylist()))

    def _in_committer(self, job: Callable[[], T]) -> T:
        """Run a write on the warehouse's committer: in one process it never interleaves with
        a historian's candles-then-coverage commit of the same warehouse."""
        return self.warehouse.committer.submit(job).result()

    def ledger(self, ticker: str | None = None) -> pd.DataFrame:
        """What the warehouse knows of each ingested ticker and period, range by range, in the
        three states of the coverage ledger (docs/sources.md): ``stored`` (candles exist),
        ``checked-empty`` (the source answered and had none; ``source`` and ``checked_at``, µs,
        say which and when) and ``unknown`` (never answered for: a gap between ingested ranges,
        or a recent range still inside its settle horizon). Columns: ``ticker, period_seconds,
        start_time, end_time`` (half-open, µs), ``state, candles, source, checked_at``.
        """
        rows = self.coverage(ticker)
        columns = ["ticker", "period_seconds", "start_time", "end_time", "state", "candles", "source", "checked_at"]
        out: list[tuple] = []
        for (name, period), group in rows.groupby(["ticker", "period_seconds"], sort=True):
            period_us = int(period) * 1_000_000
            recorded = [(int(a), int(b), src if isinstance(src, str) else None, int(at)) for a, b, src, at in
                        zip(group["start_time"], group["end_time"], group.get("source", [None] * len(group)),
                            group["ingested_at"])]
            covered = merge_intervals((a, b) for a, b, _, _ in recorded)
            table, _ = self.warehouse.read_candles(str(name), int(period), (0, _FAR_FUTURE))
            ts = np.sort(table["timestamp"].to_numpy())
            runs = candle_runs(ts, period_us)
            span = (min([covered[0][0], *(r[0] for r in runs[:1])]), max([covered[-1][1], *(r[1] for r in runs[-1:])]))

            def latest(interval: Interval) -> tuple[str | None, int | None]:
                hits = [(at, src) for a, b, src, at in recorded if a < interval[1] and interval[0] < b]
                if not hits:
                    return None, None
                at, src = max(hits, key=lambda hit: hit[0])
                return src, at

            def count(interval: Interval) -> int:
                return int(np.searchsorted(ts, interval[1]) - np.searchsorted(ts, interval[0]))

            pieces: list[tuple[int, int, str]] = [(a, b, "stored") for a, b in runs]
            for part in covered:
                pieces += [(a, b, "checked-empty") for a, b in subtract_intervals(part, runs)]
            known = merge_intervals([*covered, *runs])
            pieces += [(a, b, "unknown") for a, b in subtract_intervals(span, known)]
            for a, b, state in sorted(pieces):
                src, at = latest((a, b)) if state != "unknown" else (None, None)
                out.append((name, int(period), a, b, state, count((a, b)), src, at))
        return pd.DataFrame(out, columns=columns)

    def coverage(self, ticker: str | None = None) -> pd.DataFrame:
        """Every ingested range (optionally of one ticker) as a DataFrame."""
        return self.warehouse.read_coverage_table(str(parse_ticker(ticker)) if ticker else None).to_pandas()
