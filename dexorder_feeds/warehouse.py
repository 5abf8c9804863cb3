"""The Iceberg warehouse: table layout, reads, and the single committer that writes.

Tables (namespace ``trading`` by default):

``ohlc``
    The candles, columns exactly the seed's return frame: ``ticker``, ``period_seconds``,
    ``timestamp`` (µs, start of the period), ``open``/``high``/``low``/``close``/``volume``
    (required integers) and ``buy_vol``/``sell_vol``/``open_interest`` (integers, null where the
    source does not know them). **Partitioned by identity(ticker), identity(period_seconds)**: a
    fetch always names one ticker and one period, so planning drops every other partition's
    files at once. **Sorted by timestamp** within each file, and each gap fill writes the range
    it filled, so the per-file min/max statistics of ``timestamp`` prune the files of a
    partition that lie outside the asked range. Time transforms were rejected: ``month``/``day``
    refuse a ``long`` column and ``truncate``/``bucket`` do not narrow a µs range.
``markets``
    ``ticker`` → ``price_decimals``, ``volume_decimals`` (first write wins, never changed).
``coverage``
    Every range the historian ingested, also the empty ones: ``ticker``, ``period_seconds``,
    ``start_time`` (first candle, inclusive) and ``end_time`` (exclusive), ``row_count``,
    ``request_id``, ``ingested_at``. Partitioned like ``ohlc``.

Threads: a pyiceberg ``Table`` is never shared between threads (doing so silently loses
appends). Reads load their ``Table`` in the calling thread; every write goes through the
:class:`Committer`, one thread per warehouse per process, which reloads before each commit,
retries conflicts with back-off, and recomputes what to write from a fresh read each time (a
retried write never reuses rows read before the conflict).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.compute as pc

from .catalog import redact_uri
from .errors import DexOrderError, WarehouseError
from .markets import MarketInfo
from .ranges import Interval, merge_intervals

__all__ = ["Warehouse", "Committer", "CANDLE_COLUMNS", "candle_arrow_schema"]

log = logging.getLogger(__name__)

T = TypeVar("T")

CANDLES_TABLE = "ohlc"
MARKETS_TABLE = "markets"
COVERAGE_TABLE = "coverage"
CANDLE_COLUMNS = (
    "ticker", "period_seconds", "timestamp", "open", "high", "low", "close",
    "volume", "buy_vol", "sell_vol", "open_interest",
)
_REQUIRED_CANDLE_COLUMNS = CANDLE_COLUMNS[:8]
_COMMIT_ATTEMPTS = 8


def _schemas() -> dict[str, Any]:
    from pyiceberg.schema import Schema
    from pyiceberg.types import IntegerType, LongType, NestedField, StringType

    candles = Schema(
        *[
            NestedField(i + 1, name, StringType() if name == "ticker" else LongType(),
                        required=name in _REQUIRED_CANDLE_COLUMNS)
            for i, name in enumerate(CANDLE_COLUMNS)
        ],
        identifier_field_ids=[1, 2, 3],
    )
    markets = Schema(
        NestedField(1, "ticker", StringType(), required=True),
        NestedField(2, "price_decimals", IntegerType(), required=True),
        NestedField(3, "volume_decimals", IntegerType(), required=True),
        NestedField(4, "source", StringType(), required=False),
        NestedField(5, "updated_at", LongType(), required=True),
    )
    coverage = Schema(
        NestedField(1, "ticker", StringType(), required=True),
        NestedField(2, "period_seconds", LongType(), required=True),
        NestedField(3, "start_time", LongType(), required=True),
        NestedField(4, "end_time", LongType(), required=True),
        NestedField(5, "row_count", LongType(), required=True),
        NestedField(6, "request_id", StringType(), required=False),
        NestedField(7, "ingested_at", LongType(), required=True),
    )
    return {CANDLES_TABLE: candles, MARKETS_TABLE: markets, COVERAGE_TABLE: coverage}


def _ticker_period_spec(schema: Any) -> Any:
    from pyiceberg.partitioning import PartitionField, PartitionSpec
    from pyiceberg.transforms import IdentityTransform

    return PartitionSpec(
        PartitionField(schema.find_field("ticker").field_id, 1000, IdentityTransform(), "ticker"),
        PartitionField(schema.find_field("period_seconds").field_id, 1001, IdentityTransform(), "period_seconds"),
    )


def candle_arrow_schema() -> pa.Schema:
    """The Arrow schema of the ``ohlc`` table (and of a fetch's result)."""
    return _schemas()[CANDLES_TABLE].as_arrow()


@contextlib.contextmanager
def translate_errors(action: str) -> Iterator[None]:
    """Turn pyiceberg, SQL and OS failures into :class:`WarehouseError` saying what to check."""
    try:
        yield
    except DexOrderError:
        raise
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            hint = "the disk holding the warehouse is full; free space and retry"
        elif exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            hint = "the warehouse is not writable; check its permissions or mount"
        else:
            hint = "check the warehouse path or storage endpoint"
        raise WarehouseError(f"{action} failed: {exc.strerror or exc}; {hint}") from exc
    except Exception as exc:
        name = type(exc).__name__
        if name in ("CommitFailedException", "ValidationException"):
            raise
        text = redact_uri(str(exc)).splitlines()[0] if str(exc) else ""
        if "readonly database" in text or "read-only" in text.lower():
            hint = "the catalog is read-only; check its permissions"
        elif "disk is full" in text or "No space" in text:
            hint = "the disk holding the catalog is full"
        else:
            hint = "check that the catalog is reachable and its credentials are right"
        raise WarehouseError(f"{action} failed: {name}: {text}; {hint}") from exc


class Warehouse:
    """One Iceberg namespace holding the ``ohlc``, ``markets`` and ``coverage`` tables."""

    def __init__(self, catalog: Any, namespace: str = "trading") -> None:
        self.catalog = catalog
        self.namespace = namespace
        self._ensured = False
        self._ensure_lock = threading.Lock()
        self._committer: Committer | None = None
        self._committer_lock = threading.Lock()

    @property
    def candles_table_name(self) -> str:
        return CANDLES_TABLE

    def identifier(self, table: str) -> tuple[str, str]:
        return (self.namespace, table)

    # -- setup ---------------------------------------------------------------------------
    def ensure_tables(self) -> None:
        """Create the namespace and tables if missing (idempotent, safe under races)."""
        if self._ensured:
            return
        with self._ensure_lock, translate_errors(f"creating Iceberg namespace {self.namespace!r}"):
            if self._ensured:
                return
            from pyiceberg.exceptions import NamespaceAlreadyExistsError, TableAlreadyExistsError
            from pyiceberg.table.sorting import SortField, SortOrder
            from pyiceberg.transforms import IdentityTransform

            with contextlib.suppress(NamespaceAlreadyExistsError):
                self.catalog.create_namespace_if_not_exists(self.namespace)
            for name, schema in _schemas().items():
                kwargs: dict[str, Any] = {}
                if name in (CANDLES_TABLE, COVERAGE_TABLE):
                    kwargs["partition_spec"] = _ticker_period_spec(schema)
                if name == CANDLES_TABLE:
                    ts_id = schema.find_field("timestamp").field_id
                    kwargs["sort_order"] = SortOrder(SortField(source_id=ts_id, transform=IdentityTransform()))
                    kwargs["properties"] = {
                        "commit.manifest-merge.enabled": "true",
                        # pyiceberg's own retry rebases an append onto a newer snapshot, which
                        # would skip our duplicate check; conflicts go to Warehouse._commit.
                        "commit.retry.num-retries": "0",
                    }
                with contextlib.suppress(TableAlreadyExistsError):
                    self.catalog.create_table_if_not_exists(self.identifier(name), schema=schema, **kwargs)
            self._ensured = True

    def load_table(self, name: str) -> Any:
        """A freshly loaded ``Table`` for the calling thread only."""
        self.ensure_tables()
        with translate_errors(f"loading table {self.namespace}.{name}"):
            return self.catalog.load_table(self.identifier(name))

    # -- reads ---------------------------------------------------------------------------
    def read_candles(self, ticker: str, period_seconds: int, interval: Interval) -> tuple[pa.Table, int | None]:
        """Stored candles with ``interval[0] <= timestamp < interval[1]`` and the snapshot read."""
        table = self.load_table(CANDLES_TABLE)
        snapshot = table.current_snapshot()
        return self._scan_candles(table, ticker, period_seconds, interval), snapshot.snapshot_id if snapshot else None

    @staticmethod
    def _scan_candles(table: Any, ticker: str, period_seconds: int, interval: Interval) -> pa.Table:
        from pyiceberg.expressions import And, EqualTo, GreaterThanOrEqual, LessThan

        snapshot = table.current_snapshot()
        if snapshot is None:
            return candle_arrow_schema().empty_table()
        row_filter = And(
            EqualTo("ticker", ticker),
            EqualTo("period_seconds", period_seconds),
            GreaterThanOrEqual("timestamp", interval[0]),
            LessThan("timestamp", interval[1]),
        )
        with translate_errors(f"reading candles of {ticker}"):
            return table.scan(row_filter=row_filter, snapshot_id=snapshot.snapshot_id).to_arrow()

    def read_coverage(self, ticker: str, period_seconds: int) -> list[Interval]:
        """The merged ranges ingested for a ticker and period (empty ones included)."""
        from pyiceberg.expressions import And, EqualTo

        table = self.load_table(COVERAGE_TABLE)
        if table.current_snapshot() is None:
            return []
        with translate_errors(f"reading coverage of {ticker}"):
            data = table.scan(
                row_filter=And(EqualTo("ticker", ticker), EqualTo("period_seconds", period_seconds)),
                selected_fields=("start_time", "end_time"),
            ).to_arrow()
        return merge_intervals(zip(data["start_time"].to_pylist(), data["end_time"].to_pylist()))

    def read_coverage_table(self, ticker: str | None = None) -> pa.Table:
        """Every coverage row (optionally of one ticker), for listings."""
        from pyiceberg.expressions import AlwaysTrue, EqualTo

        table = self.load_table(COVERAGE_TABLE)
        if table.current_snapshot() is None:
            return _schemas()[COVERAGE_TABLE].as_arrow().empty_table()
        with translate_errors("reading coverage"):
            return table.scan(row_filter=EqualTo("ticker", ticker) if ticker else AlwaysTrue()).to_arrow()

    def read_market(self, ticker: str) -> MarketInfo | None:
        """The stored decimals of a market, or None if it was never written."""
        from pyiceberg.expressions import EqualTo

        table = self.load_table(MARKETS_TABLE)
        if table.current_snapshot() is None:
            return None
        with translate_errors(f"reading market {ticker}"):
            data = table.scan(row_filter=EqualTo("ticker", ticker)).to_arrow()
        if data.num_rows == 0:
            return None
        first = data.sort_by([("updated_at", "ascending")]).slice(0, 1).to_pylist()[0]
        return MarketInfo(ticker, int(first["price_decimals"]), int(first["volume_decimals"]))

    # -- writes (committer thread only) -------------------------------------------------
    @property
    def committer(self) -> Committer:
        with self._committer_lock:
            if self._committer is None or self._committer.closed:
                self._committer = Committer(self)
            return self._committer

    def close(self) -> None:
        """Stop the committer thread after the commits already queued."""
        with self._committer_lock:
            if self._committer is not None:
                self._committer.close()
                self._committer = None

    def _commit(self, description: str, attempt: Callable[[], T]) -> T:
        """Run ``attempt`` (which must re-read what it needs) until its commit succeeds."""
        from pyiceberg.exceptions import CommitFailedException

        delay = 0.05
        for tries in range(1, _COMMIT_ATTEMPTS + 1):
            try:
                with translate_errors(description):
                    return attempt()
            except CommitFailedException as exc:
                if tries == _COMMIT_ATTEMPTS:
                    raise WarehouseError(
                        f"{description}: gave up after {tries} commit conflicts ({exc}); retry the request"
                    ) from exc
                log.info("%s: commit conflict (%s), retry %d", description, exc, tries)
                time.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 2.0)
        raise AssertionError("unreachable")

    def write_market(self, market: MarketInfo, source: str) -> MarketInfo:
        """Store a market's decimals if none are stored; return the stored ones."""

        def attempt() -> MarketInfo:
            stored = self.read_market(market.ticker)
            if stored is not None:
                return stored
            table = self.load_table(MARKETS_TABLE)
            row = pa.Table.from_pylist(
                [{"ticker": market.ticker, "price_decimals": market.price_decimals,
                  "volume_decimals": market.volume_decimals, "source": source,
                  "updated_at": time.time_ns() // 1000}],
                schema=table.schema().as_arrow(),
            )
            table.append(row)
            return market

        return self._commit(f"storing market {market.ticker}", attempt)

    def append_new_candles(
        self, ticker: str, period_seconds: int, interval: Interval, candles: pa.Table
    ) -> tuple[int, int]:
        """Append the candles of ``interval`` not already stored.

        ``candles`` holds the candle columns of one ticker and period, all inside ``interval``.
        Returns ``(added, stored_after)``: candles appended, and candles the interval holds now.
        """

        def attempt() -> tuple[int, int]:
            # Read and append through the same Table: the append then requires the snapshot
            # the duplicate check read, and a concurrent commit makes it fail (no rebase, see
            # ensure_tables) so the retry re-reads instead of appending stale rows.
            table = self.load_table(CANDLES_TABLE)
            stored = self._scan_candles(table, ticker, period_seconds, interval)
            fresh = candles
            if stored.num_rows and candles.num_rows:
                fresh = candles.filter(pc.invert(pc.is_in(candles["timestamp"], value_set=stored["timestamp"])))
            if fresh.num_rows == 0:
                return 0, stored.num_rows
            table.append(fresh.sort_by("timestamp").cast(table.schema().as_arrow()))
            return fresh.num_rows, stored.num_rows + fresh.num_rows

        return self._commit(f"writing candles of {ticker}", attempt)

    def record_coverage(self, ticker: str, period_seconds: int, interval: Interval, row_count: int, request_id: str) -> None:
        """Record that ``interval`` was ingested (also when it held no candles)."""

        def attempt() -> None:
            table = self.load_table(COVERAGE_TABLE)
            row = pa.Table.from_pylist(
                [{"ticker": ticker, "period_seconds": period_seconds, "start_time": interval[0],
                  "end_time": interval[1], "row_count": row_count, "request_id": request_id,
                  "ingested_at": time.time_ns() // 1000}],
                schema=table.schema().as_arrow(),
            )
            table.append(row)

        self._commit(f"recording coverage of {ticker}", attempt)


class Committer:
    """The one thread of a process that commits to a warehouse; jobs run in submission order."""

    def __init__(self, warehouse: Warehouse) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"dexorder-committer-{warehouse.namespace}"
        )
        self.closed = False

    def submit(self, fn: Callable[..., T], *args: Any) -> concurrent.futures.Future[T]:
        return self._executor.submit(fn, *args)

    def close(self) -> None:
        self.closed = True
        self._executor.shutdown(wait=True)
