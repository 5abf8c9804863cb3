"""The Iceberg warehouse: table layout, reads, and the single committer that writes.

How it works inside: docs/internals.md, "The warehouse".
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import logging
import random
import threading
import time
from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.compute as pc

from .catalog import redact_uri, scrub
from ..vocabulary.errors import DexOrderError, WarehouseError
from .maintenance import MaintenancePolicy
from ..vocabulary.markets import MarketInfo
from ..vocabulary.periods import MONTH, WEEK, is_aligned, period_floor
from ..vocabulary.ranges import Interval, merge_intervals, subtract_intervals
from ._pyiceberg_shortcuts import install_parquet_encodings
from .reader import TableReader
from .schema import (
    CANDLE_COLUMNS,
    CANDLES_TABLE,
    COVERAGE_TABLE,
    MARKETS_TABLE,
    ROW_GROUP_ROWS,
    TABLE_LAYOUTS,
    TABLE_PROPERTIES,
    TableLayout,
    candle_arrow_schema,
    properties_to_update,
    row_filter,
    table_schemas,
    ticker_period_spec,
)

__all__ = ["Warehouse", "Committer", "CANDLE_COLUMNS", "ROW_GROUP_ROWS", "TABLE_LAYOUTS", "TableLayout", "candle_arrow_schema"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_COMMIT_ATTEMPTS = 8


class _FileVanished(Exception):
    """A file a write attempt read was deleted under it (snapshot expiry): run it again."""




@contextlib.contextmanager
def translate_errors(action: str, secrets: Mapping[str, Any] | None = None) -> Iterator[None]:
    """Turn pyiceberg, SQL and OS failures into :class:`WarehouseError` saying what to check.

    ``secrets`` are the catalog's properties: any secret value among them is scrubbed from the
    message, and an original error that carried one is not chained (its text would leak it).
    """
    hidden: WarehouseError | None = None
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
        if name in ("CommitFailedException", "ValidationException") or isinstance(exc, _FileVanished):
            raise
        raw = str(exc).splitlines()[0] if str(exc) else ""
        text = scrub(raw, secrets or {})
        if "readonly database" in text or "read-only" in text.lower():
            hint = "the catalog is read-only; check its permissions"
        elif "disk is full" in text or "No space" in text:
            hint = "the disk holding the catalog is full"
        else:
            hint = "check that the catalog is reachable and its credentials are right"
        error = WarehouseError(f"{action} failed: {name}: {text}; {hint}")
        if text == redact_uri(raw):
            raise error from exc
        hidden = error
    if hidden is not None:
        raise hidden from None  # the original's text would show the secret in tracebacks


def _is_calendar(period_seconds: int) -> bool:
    """Periods whose meaning changed with calendar periods: Monday weeks and calendar months."""
    return period_seconds % WEEK == 0 or period_seconds == MONTH


class Warehouse:
    """One Iceberg namespace holding the ``ohlc``, ``markets`` and ``coverage`` tables.

    ``maintenance`` says when the committer compacts and expires by itself (default: after
    32 small files in a partition / 20 snapshots; ``MaintenancePolicy(auto=False)`` never).
    """

    def __init__(self, catalog: Any, namespace: str = "trading", *,
                 maintenance: MaintenancePolicy | None = None) -> None:
        self.catalog = catalog
        self.namespace = namespace
        self.maintenance = maintenance if maintenance is not None else MaintenancePolicy()
        self.reader = TableReader(catalog, namespace, self.load_table)
        self._ensured = False
        self._ensure_lock = threading.Lock()
        self._committer: Committer | None = None
        self._committer_lock = threading.Lock()
        self._closing = False
        self._pending_maintenance: set[Hashable] = set()
        self._expiry_quiet_until: dict[str, float] = {}

    @property
    def candles_table_name(self) -> str:
        return CANDLES_TABLE

    def identifier(self, table: str) -> tuple[str, str]:
        return (self.namespace, table)

    # -- setup ---------------------------------------------------------------------------
    def ensure_tables(self) -> None:
        """Create the namespace and tables if missing (idempotent, safe under races), and give
        tables created by an older version the current table properties."""
        if self._ensured:
            return
        with self._ensure_lock, translate_errors(f"creating Iceberg namespace {self.namespace!r}", self.catalog.properties):
            if self._ensured:
                return
            from pyiceberg.exceptions import (
                CommitFailedException,
                NamespaceAlreadyExistsError,
                NoSuchTableError,
                TableAlreadyExistsError,
            )
            from pyiceberg.table.sorting import SortField, SortOrder
            from pyiceberg.transforms import IdentityTransform

            install_parquet_encodings()  # the layout TABLE_PROPERTIES ask for (see schema.py)
            with contextlib.suppress(NamespaceAlreadyExistsError):
                self.catalog.create_namespace_if_not_exists(self.namespace)
            for name, schema in table_schemas().items():
                kwargs: dict[str, Any] = {"properties": dict(TABLE_PROPERTIES)}
                if name in (CANDLES_TABLE, COVERAGE_TABLE):
                    kwargs["partition_spec"] = ticker_period_spec(schema)
                sort_by = TABLE_LAYOUTS[name].sort_by
                if sort_by is not None:
                    sort_id = schema.find_field(sort_by).field_id
                    kwargs["sort_order"] = SortOrder(SortField(source_id=sort_id, transform=IdentityTransform()))
                # Look before creating: pyiceberg's create-if-not-exists writes a metadata file
                # before it checks, which would fail on a read-only or full warehouse and leave
                # an orphan file for every new Warehouse object.
                try:
                    table = self.catalog.load_table(self.identifier(name))
                except NoSuchTableError:
                    try:
                        table = self.catalog.create_table_if_not_exists(self.identifier(name), schema=schema, **kwargs)
                    except TableAlreadyExistsError:
                        table = self.catalog.load_table(self.identifier(name))
                missing = properties_to_update(table.properties)
                if missing:
                    with contextlib.suppress(CommitFailedException):  # another process is doing it
                        table.transaction().set_properties(missing).commit_transaction()
            self._ensured = True

    def load_table(self, name: str) -> Any:
        """A freshly loaded ``Table`` for the calling thread only."""
        self.ensure_tables()
        with translate_errors(f"loading table {self.namespace}.{name}", self.catalog.properties):
            return self.catalog.load_table(self.identifier(name))

    # -- reads ---------------------------------------------------------------------------
    def _tables(self, *names: str) -> tuple[Any, ...]:
        """This thread's current tables (reloaded when the catalog says they changed)."""
        self.ensure_tables()
        return self.reader.tables(*names)

    def read_candles(self, ticker: str, period_seconds: int, interval: Interval) -> tuple[pa.Table, int | None]:
        """Stored candles with ``interval[0] <= timestamp < interval[1]`` and the snapshot read."""

        def read() -> tuple[pa.Table, int | None]:
            (table,) = self._tables(CANDLES_TABLE)
            return self._candles_in(table, ticker, period_seconds, interval), _snapshot_id(table)

        with translate_errors(f"reading candles of {ticker}", self.catalog.properties):
            return self.reader.retrying(read)

    def read_range(self, ticker: str, period_seconds: int, interval: Interval) -> tuple[pa.Table, list[Interval], int | None]:
        """Candles in ``interval``, the merged covered ranges and the candle snapshot read, with
        one catalog check for both tables (what a fetch's cache check needs)."""

        def read() -> tuple[pa.Table, list[Interval], int | None]:
            # Both tables from one catalog check (SQL: one SELECT, one instant; REST: loaded
            # coverage first, see LOAD_ORDER): the historian commits candles before their
            # coverage row, so every covered range seen here has its candles in the candle
            # table read (never "covered" but empty).
            coverage, candles = self._tables(COVERAGE_TABLE, CANDLES_TABLE)
            covered = self._coverage_in(coverage, ticker, period_seconds)
            return self._candles_in(candles, ticker, period_seconds, interval), covered, _snapshot_id(candles)

        with translate_errors(f"reading candles of {ticker}", self.catalog.properties):
            return self.reader.retrying(read)

    def read_range_at(self, ticker: str, period_seconds: int, interval: Interval, candles_snapshot: int | None,
                      coverage_snapshot: int | None) -> tuple[pa.Table, list[Interval] | None]:
        """Like :meth:`read_range`, at the snapshots a pin or ``as_of`` names (see
        :func:`~dexorder_feeds.storage.pins.read_point`); covered is None when unknown."""

        def read() -> tuple[pa.Table, list[Interval] | None]:
            coverage, candles = self._tables(COVERAGE_TABLE, CANDLES_TABLE)
            covered = None
            if coverage_snapshot is not None:
                covered = self._coverage_in(coverage, ticker, period_seconds, coverage_snapshot)
            if candles_snapshot is None:
                return candle_arrow_schema().empty_table(), covered
            return self._candles_in(candles, ticker, period_seconds, interval, candles_snapshot), covered

        with translate_errors(f"reading candles of {ticker}", self.catalog.properties):
            return self.reader.retrying(read)

    # Before calendar periods, 604800 candles were stored on epoch weeks (Thursdays) and 2592000
    # ones on 30-day steps. Such rows stay in the table untouched, but are not served, and their
    # coverage rows (not on calendar boundaries) are ignored, so the calendar periods are
    # ingested anew (see docs/periods.md).
    def _candles_in(self, table: Any, ticker: str, period_seconds: int, interval: Interval,
                    snapshot_id: int | None = None) -> pa.Table:
        read = self.reader.read(table, {"ticker": ticker, "period_seconds": period_seconds},
                                range_column="timestamp", start=interval[0], stop=interval[1], snapshot_id=snapshot_id)
        if _is_calendar(period_seconds) and read.num_rows:
            keep = is_aligned(period_seconds, read["timestamp"].to_numpy())
            if not keep.all():
                read = read.filter(pa.array(keep))
        return read

    def _coverage_in(self, table: Any, ticker: str, period_seconds: int, snapshot_id: int | None = None) -> list[Interval]:
        def merged() -> tuple[Interval, ...]:
            data = self.reader.read(table, {"ticker": ticker, "period_seconds": period_seconds},
                                    columns=("start_time", "end_time"), snapshot_id=snapshot_id)
            pairs = zip(data["start_time"].to_pylist(), data["end_time"].to_pylist())
            if _is_calendar(period_seconds):  # rows of the older grid say nothing of calendar periods
                pairs = ((s, e) for s, e in pairs  # type: ignore[assignment]
                         if period_floor(period_seconds, s) == s and period_floor(period_seconds, e) == e)
            return tuple(merge_intervals(pairs))

        return list(self.reader.memo(table, ("coverage", ticker, period_seconds), merged, snapshot_id))

    def stored_if_covered(self, ticker: str, period_seconds: int, interval: Interval) -> int | None:
        """The number of candles stored in ``interval`` if all of it was ingested before (a
        repeated request needs neither the source nor a commit), else None."""

        def read() -> int | None:
            (coverage,) = self._tables(COVERAGE_TABLE)  # coverage first: see read_range
            if subtract_intervals(interval, self._coverage_in(coverage, ticker, period_seconds)):
                return None
            (candles,) = self._tables(CANDLES_TABLE)
            return self._candles_in(candles, ticker, period_seconds, interval).num_rows

        with translate_errors(f"reading coverage of {ticker}", self.catalog.properties):
            return self.reader.retrying(read)

    def read_coverage(self, ticker: str, period_seconds: int) -> list[Interval]:
        """The merged ranges ingested for a ticker and period (empty ones included)."""

        def read() -> list[Interval]:
            (table,) = self._tables(COVERAGE_TABLE)
            return self._coverage_in(table, ticker, period_seconds)

        with translate_errors(f"reading coverage of {ticker}", self.catalog.properties):
            return self.reader.retrying(read)

    def read_coverage_table(self, ticker: str | None = None) -> pa.Table:
        """Every coverage row (optionally of one ticker), for listings."""
        def read() -> pa.Table:
            (table,) = self._tables(COVERAGE_TABLE)
            if table.current_snapshot() is None:
                return table_schemas()[COVERAGE_TABLE].as_arrow().empty_table()
            return table.scan(row_filter=row_filter({"ticker": ticker} if ticker else {})).to_arrow()

        with translate_errors("reading coverage", self.catalog.properties):
            return self.reader.retrying(read)

    def read_market(self, ticker: str) -> MarketInfo | None:
        """The stored decimals of a market, or None if it was never written."""

        def read() -> MarketInfo | None:
            (table,) = self._tables(MARKETS_TABLE)
            return self.reader.memo(table, "markets", lambda: self._markets_in(table)).get(ticker)

        with translate_errors(f"reading market {ticker}", self.catalog.properties):
            return self.reader.retrying(read)

    def _markets_in(self, table: Any) -> dict[str, MarketInfo]:
        data = self.reader.read(table, {}, columns=("ticker", "price_decimals", "volume_decimals", "updated_at"))
        markets: dict[str, MarketInfo] = {}
        for row in data.sort_by([("updated_at", "ascending")]).to_pylist():  # first write wins
            markets.setdefault(row["ticker"], MarketInfo(row["ticker"], int(row["price_decimals"]), int(row["volume_decimals"])))
        return markets

    # -- writes (committer thread only) -------------------------------------------------
    @property
    def committer(self) -> Committer:
        with self._committer_lock:
            if self._committer is None or self._committer.closed:
                self._committer = Committer(self)
                self._closing = False
            return self._committer

    def close(self) -> None:
        """Stop the committer thread after the commits (and maintenance) already queued."""
        with self._committer_lock:
            committer, self._committer = self._committer, None
            self._closing = True
        if committer is not None:
            committer.close()

    def commit(self, description: str, attempt: Callable[[], T]) -> T:
        """Run ``attempt`` (which must re-read what it needs) until its commit succeeds."""
        from pyiceberg.exceptions import CommitFailedException, ValidationException

        def run() -> T:
            try:
                return attempt()
            except FileNotFoundError as exc:  # expired under a read of a stale snapshot
                raise _FileVanished(str(exc)) from exc

        delay = 0.05
        for tries in range(1, _COMMIT_ATTEMPTS + 1):
            try:
                with translate_errors(description, self.catalog.properties):
                    return run()
            except (CommitFailedException, ValidationException, _FileVanished) as exc:
                if tries == _COMMIT_ATTEMPTS:
                    raise WarehouseError(
                        f"{description}: gave up after {tries} commit conflicts ({exc}); retry the request"
                    ) from exc
                log.info("%s: commit conflict (%s), retry %d", description, exc, tries)
                self.reader.invalidate()  # the retry re-reads the catalog (REST: past the staleness bound)
                time.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 2.0)
        raise AssertionError("unreachable")

    def write_market(self, market: MarketInfo, source: str) -> MarketInfo:
        """Store a market's decimals if none are stored; return the stored ones."""

        def attempt() -> MarketInfo:
            (table,) = self._tables(MARKETS_TABLE)
            stored = self._markets_in(table).get(market.ticker)
            if stored is not None:
                return stored
            row = pa.Table.from_pylist(
                [{"ticker": market.ticker, "price_decimals": market.price_decimals,
                  "volume_decimals": market.volume_decimals, "source": source,
                  "updated_at": time.time_ns() // 1000}],
                schema=table.schema().as_arrow(),
            )
            table.append(row)
            self._after_commit(MARKETS_TABLE, table, ())
            return market

        return self.commit(f"storing market {market.ticker}", attempt)

    def append_new_candles(
        self, ticker: str, period_seconds: int, interval: Interval, candles: pa.Table
    ) -> tuple[int, int]:
        """Append the candles of ``interval`` not already stored.

        ``candles`` holds the candle columns of one ticker and period, all inside ``interval``.
        Returns ``(added, stored_after)``: candles appended, and candles the interval holds now.
        """

        def attempt() -> tuple[int, int]:
            # Read and append through the same Table (this thread's, reloaded if the catalog
            # moved): the append then requires the snapshot the duplicate check read, and a
            # concurrent commit makes it fail (no rebase, see TABLE_PROPERTIES) so the retry
            # re-reads instead of appending stale rows.
            (table,) = self._tables(CANDLES_TABLE)
            stored = self._candles_in(table, ticker, period_seconds, interval)
            fresh = candles
            if stored.num_rows and candles.num_rows:
                fresh = candles.filter(pc.invert(pc.is_in(candles["timestamp"], value_set=stored["timestamp"])))
            if fresh.num_rows == 0:
                return 0, stored.num_rows
            table.append(fresh.sort_by("timestamp").cast(table.schema().as_arrow()))
            self._after_commit(CANDLES_TABLE, table, (ticker, period_seconds))
            return fresh.num_rows, stored.num_rows + fresh.num_rows

        return self.commit(f"writing candles of {ticker}", attempt)

    def record_coverage(self, ticker: str, period_seconds: int, interval: Interval, row_count: int, request_id: str) -> None:
        """Record that ``interval`` was ingested (also when it held no candles)."""

        def attempt() -> None:
            (table,) = self._tables(COVERAGE_TABLE)
            row = pa.Table.from_pylist(
                [{"ticker": ticker, "period_seconds": period_seconds, "start_time": interval[0],
                  "end_time": interval[1], "row_count": row_count, "request_id": request_id,
                  "ingested_at": time.time_ns() // 1000}],
                schema=table.schema().as_arrow(),
            )
            table.append(row)
            self._after_commit(COVERAGE_TABLE, table, (ticker, period_seconds))

        self.commit(f"recording coverage of {ticker}", attempt)

    # -- automatic maintenance ------------------------------------------------------------
    def _after_commit(self, name: str, table: Any, partition: tuple) -> None:
        """Share the committed metadata with readers, and queue maintenance on the committer if
        this commit (``table`` is now at its snapshot) crossed a threshold of the policy. Never
        raises: both are optimisations."""
        self.reader.adopt(table)
        policy = self.maintenance
        if not policy.auto or self._closing:
            return
        from . import maintenance

        try:
            files = self.reader.plan(table).partition_files(partition)
            small = sum(1 for f in files if f.record_count < policy.small_file_rows)
            if small >= policy.compact_small_files:
                values = dict(zip(TABLE_LAYOUTS[name].partition_by, partition))

                def compact_then_expire() -> None:
                    maintenance.compact_partition(self, name, values)
                    self._expire(name, min_expired=1)

                self._schedule(("compact", name, partition), compact_then_expire)
            elif (len(table.metadata.snapshots) >= policy.keep_snapshots + policy.expire_batch
                  and time.monotonic() >= self._expiry_quiet_until.get(name, 0.0)):
                self._schedule(("expire", name), lambda: self._expire(name, min_expired=max(1, policy.expire_batch // 2)))
        except Exception:
            log.warning("could not plan maintenance of %s after a commit", name, exc_info=True)

    def _expire(self, name: str, min_expired: int) -> None:
        from .maintenance import expire_snapshots

        policy = self.maintenance
        result = expire_snapshots(self, name, keep_snapshots=policy.keep_snapshots,
                                  retention_seconds=policy.retention_seconds,
                                  reader_grace_seconds=policy.reader_grace_seconds, min_expired=min_expired)
        if result is None:  # all still within the grace or retention: do not look again at once
            self._expiry_quiet_until[name] = time.monotonic() + max(1.0, policy.reader_grace_seconds)

    def _schedule(self, key: Hashable, job: Callable[[], None]) -> None:
        """Run ``job`` on the committer once (a job already queued under ``key`` is enough)."""
        with self._committer_lock:
            if self._closing or key in self._pending_maintenance:
                return
            self._pending_maintenance.add(key)

        def run() -> None:
            try:
                job()
            except Exception:
                log.warning("automatic maintenance %s failed; it runs again after later commits", key, exc_info=True)
            finally:
                with self._committer_lock:
                    self._pending_maintenance.discard(key)

        try:
            self.committer.submit(run)
        except RuntimeError:  # the committer is shutting down
            with self._committer_lock:
                self._pending_maintenance.discard(key)


def _snapshot_id(table: Any) -> int | None:
    snapshot = table.current_snapshot()
    return snapshot.snapshot_id if snapshot else None


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
