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
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .catalog import catalog_label, redact_uri, scrub
from ..vocabulary.errors import DataError, DexOrderError, WarehouseError
from ..vocabulary.identity import WarehouseIdentity
from .maintenance import MaintenancePolicy
from ..vocabulary.markets import MarketInfo
from ..vocabulary.periods import MONTH, WEEK, is_aligned, period_floor
from ..vocabulary.ranges import Interval, merge_intervals, subtract_intervals
from ._pyiceberg_shortcuts import (append_files_staging_once, check_write_schema, install_avro_schema_memo,
                                   install_parquet_encodings, write_data_files)
from .reader import shared_reader
from .schema import (
    ADDED_COLUMNS,
    CANDLE_COLUMNS,
    CANDLES_TABLE,
    COVERAGE_TABLE,
    MARKETS_TABLE,
    ROW_GROUP_ROWS,
    TABLE_LAYOUTS,
    TABLE_PROPERTIES,
    TableLayout,
    candle_arrow_schema,
    coverage_arrow_schema,
    properties_to_update,
    row_filter,
    table_schemas,
    ticker_period_spec,
)

__all__ = ["Warehouse", "Committer", "CoveragePart", "Fill", "FillOutcome", "coverage_row", "CANDLE_COLUMNS",
           "ROW_GROUP_ROWS", "TABLE_LAYOUTS", "TableLayout", "candle_arrow_schema"]

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

_COMMIT_ATTEMPTS = 8
# Fills of at least this many candles are written as data files before they reach the committer.
STAGED_FILL_ROWS = 8192


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
        elif "database is locked" in text:
            hint = ("another process holds a lock on the SQLite catalog for too long (a long read, or a tool "
                    "with the file open); retry, and for a team use a PostgreSQL or REST catalog")
        else:
            hint = "check that the catalog is reachable and its credentials are right"
        error = WarehouseError(f"{action} failed: {name}: {text}; {hint}")
        if text == redact_uri(raw):
            raise error from exc
        hidden = error
    if hidden is not None:
        raise hidden from None  # the original's text would show the secret in tracebacks


@dataclass(frozen=True)
class FillOutcome:
    """What the candle commit did for one :class:`Fill`, for deciding its coverage rows.

    ``added``: candles of the fill appended; ``stored``: candles its interval holds now;
    ``covered``: the merged ranges of its ticker and period recorded at the coverage snapshot
    the rows are appended to, plus those recorded by fills earlier in the same batch.
    """

    added: int
    stored: int
    covered: tuple[Interval, ...]


@dataclass(eq=False)
class StagedFiles:
    """Data files holding exactly a fill's candles, written by the thread that made them before
    the fill reached the committer (see :meth:`Warehouse.submit_fill`), with the table layout
    they were written for. ``offered`` is set while an append attempt lists them, and cleared
    when the catalog refuses that commit: files not offered are named by no metadata and may be
    deleted; offered ones may not (an attempt whose outcome is unknown may have committed them)."""

    files: tuple[Any, ...]  # pyiceberg DataFiles
    table_uuid: str
    schema_id: int
    spec_id: int
    offered: bool = False

    def fit(self, table: Any) -> bool:
        """Whether the files can be appended to ``table`` as written (same table and layout)."""
        metadata = table.metadata
        return (str(metadata.table_uuid) == self.table_uuid and metadata.current_schema_id == self.schema_id
                and metadata.default_spec_id == self.spec_id)


@dataclass(eq=False)
class Fill:
    """One gap fill to commit: the candles of ``interval`` (one ticker and period, all inside
    it, the candle columns), and ``coverage_rows``, which gives the coverage rows to record
    once the candles are stored (built with :func:`coverage_row`; none: record nothing).
    ``staged``: the candles already written as data files (set by :meth:`Warehouse.submit_fill`)."""

    ticker: str
    period_seconds: int
    interval: Interval
    candles: pa.Table
    coverage_rows: Callable[[FillOutcome], list[dict[str, Any]]]
    staged: StagedFiles | None = None

    @property
    def key(self) -> tuple[str, int]:
        return (self.ticker, self.period_seconds)


def coverage_row(ticker: str, period_seconds: int, interval: Interval, row_count: int, request_id: str | None,
                 **extra: Any) -> dict[str, Any]:
    """One row of the coverage table (``extra``: further columns of it, by name)."""
    return {"ticker": ticker, "period_seconds": period_seconds, "start_time": interval[0], "end_time": interval[1],
            "row_count": row_count, "request_id": request_id, "ingested_at": time.time_ns() // 1000, **extra}


def _is_calendar(period_seconds: int) -> bool:
    """Periods whose meaning changed with calendar periods: Monday weeks and calendar months."""
    return period_seconds % WEEK == 0 or period_seconds == MONTH


@dataclass(frozen=True)
class CoveragePart:
    """One coverage row to record: an interval, the candles it holds and the source that answered."""

    interval: Interval
    row_count: int
    source: str | None = None


_NAMESPACE_ATTEMPTS = 4  # see Warehouse._create_namespace


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
        self.reader = shared_reader(catalog, namespace, self.load_table)
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
        tables created by an older version the current table properties. Once per process for
        a catalog object and namespace: the warehouses sharing its reader share this too (many
        clients in one process do not each look the tables up again)."""
        if self._ensured or self.reader.tables_ensured:
            self._ensured = True
            return
        with self._ensure_lock, translate_errors(f"creating Iceberg namespace {self.namespace!r}", self.catalog.properties):
            if self._ensured or self.reader.tables_ensured:
                self._ensured = True
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
            install_avro_schema_memo()
            self._create_namespace(NamespaceAlreadyExistsError)
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
                _add_missing_columns(table, name, CommitFailedException)
            self._ensured = self.reader.tables_ensured = True

    def _create_namespace(self, exists: type[Exception]) -> None:
        """Create the namespace if missing. A REST catalog may answer a server error while
        another process creates the same namespace (SeaweedFS: "attribute not found" for the
        namespace being written): asked again a moment later, it answers."""
        from pyiceberg.exceptions import ServerError

        for attempt in range(1, _NAMESPACE_ATTEMPTS + 1):
            try:
                with contextlib.suppress(exists):
                    self.catalog.create_namespace_if_not_exists(self.namespace)
                return
            except ServerError as exc:
                if attempt == _NAMESPACE_ATTEMPTS:
                    raise
                shown = scrub(str(exc), self.catalog.properties).splitlines()[0][:200] if str(exc) else type(exc).__name__
                log.info("creating namespace %s: %s; asking again", self.namespace, shown)
                time.sleep(0.2 * attempt)

    def prepare_writes(self) -> None:
        """Do now what this process's first write to each table would do once (pyiceberg's
        write-time schema check of the rows every write casts to, and the imports it needs:
        ~50 ms in all), so a writer that serves requests (the relay) does not pay it on its
        first commit, with every request of a cold burst waiting behind it. Best effort."""
        try:
            for table in self._tables(CANDLES_TABLE, COVERAGE_TABLE, MARKETS_TABLE):
                check_write_schema(table, table.schema().as_arrow())
        except Exception:  # noqa: BLE001 - the first write then does it, and reports any problem
            log.debug("could not prepare the writes of %s", self.namespace, exc_info=True)

    def load_table(self, name: str) -> Any:
        """A freshly loaded ``Table`` for the calling thread only."""
        self.ensure_tables()
        with translate_errors(f"loading table {self.namespace}.{name}", self.catalog.properties):
            return self.catalog.load_table(self.identifier(name))

    _identity: WarehouseIdentity | None = None  # the last one built (rebuilt when a uuid changes)

    def identity(self, *, load: bool = True) -> WarehouseIdentity:
        """Which warehouse this is: its catalog (for messages), namespace and the table uuids of
        the candle and coverage tables as last loaded by any read. Costs no catalog round trip
        once both were read; before that ``load`` loads them (``load=False``: unknown uuids empty)."""
        uuids = self.reader.table_uuids
        if load and not (CANDLES_TABLE in uuids and COVERAGE_TABLE in uuids):
            with translate_errors(f"loading the tables of {self.namespace}", self.catalog.properties):
                self._tables(CANDLES_TABLE, COVERAGE_TABLE)
        last = self._identity
        ohlc_uuid, coverage_uuid = uuids.get(CANDLES_TABLE, ""), uuids.get(COVERAGE_TABLE, "")
        if last is None or last.ohlc_uuid != ohlc_uuid or last.coverage_uuid != coverage_uuid:
            label, location = (last.catalog, last.catalog_warehouse) if last else catalog_label(self.catalog)
            last = self._identity = WarehouseIdentity(label, self.namespace, CANDLES_TABLE, ohlc_uuid,
                                                      COVERAGE_TABLE, coverage_uuid, location)
        return last

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

    def read_range_served(self, ticker: str, period_seconds: int, interval: Interval
                          ) -> tuple[pa.Table, list[Interval], int | None, tuple[tuple[Interval, str], ...]]:
        """:meth:`read_range` plus the sources the coverage rows name (as
        :meth:`read_coverage_sources`), from the same catalog check."""

        def read() -> tuple[pa.Table, list[Interval], int | None, tuple[tuple[Interval, str], ...]]:
            (coverage,) = self._tables(COVERAGE_TABLE)  # coverage first: see read_range
            covered = self._coverage_in(coverage, ticker, period_seconds)
            served = self._sources_in(coverage, ticker, period_seconds) if covered else ()
            (candles,) = self._tables(CANDLES_TABLE)
            return self._candles_in(candles, ticker, period_seconds, interval), covered, _snapshot_id(candles), served

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
            return int(self._timestamps_in(candles, ticker, period_seconds, interval).size)

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
                return coverage_arrow_schema().empty_table()
            return table.scan(row_filter=row_filter({"ticker": ticker} if ticker else {})).to_arrow()

        with translate_errors("reading coverage", self.catalog.properties):
            return self.reader.retrying(read)

    def read_coverage_sources(self, ticker: str, period_seconds: int) -> tuple[tuple[Interval, str], ...]:
        """The recorded ranges of a ticker and period that name their source, sorted:
        ``((start, stop), source)`` (memoised per snapshot)."""

        def read() -> tuple[tuple[Interval, str], ...]:
            (table,) = self._tables(COVERAGE_TABLE)
            return self._sources_in(table, ticker, period_seconds)

        with translate_errors(f"reading coverage of {ticker}", self.catalog.properties):
            return self.reader.retrying(read)

    def _sources_in(self, table: Any, ticker: str, period_seconds: int) -> tuple[tuple[Interval, str], ...]:
        if "source" not in {field.name for field in table.schema().fields}:  # not upgraded (read-only)
            return ()

        def rows() -> tuple[tuple[Interval, str], ...]:
            data = self.reader.read(table, {"ticker": ticker, "period_seconds": period_seconds},
                                    columns=("start_time", "end_time", "source"))
            named = [((int(s), int(e)), str(src)) for s, e, src in
                     zip(data["start_time"].to_pylist(), data["end_time"].to_pylist(), data["source"].to_pylist())
                     if src]
            return tuple(sorted(named))

        return self.reader.memo(table, ("coverage-sources", ticker, period_seconds), rows)

    def read_ledger(self, ticker: str, period_seconds: int | None = None) -> pa.Table:
        """The coverage rows of a ticker (one period, or every period) with the columns the
        ledger needs: ``period_seconds, start_time, end_time, row_count, ingested_at, source,
        fingerprint`` (memoised per snapshot: a repeated call without a commit reads nothing;
        one period reads its partition's files directly)."""
        columns = ("period_seconds", "start_time", "end_time", "row_count", "ingested_at", "source", "fingerprint")

        def read() -> pa.Table:
            (table,) = self._tables(COVERAGE_TABLE)
            if table.current_snapshot() is None:
                return coverage_arrow_schema().empty_table().select(list(columns))

            present = {field.name for field in table.schema().fields}
            have = tuple(c for c in columns if c in present)  # a read-only, older table lacks some

            def scan() -> pa.Table:
                if period_seconds is not None:
                    data = self.reader.read(table, {"ticker": ticker, "period_seconds": period_seconds}, columns=have)
                else:
                    data = table.scan(row_filter=row_filter({"ticker": ticker}), selected_fields=have).to_arrow()
                for column in columns:
                    if column not in present:
                        data = data.append_column(column, pa.nulls(data.num_rows, pa.string()))
                return data.select(list(columns))

            return self.reader.memo(table, ("ledger", ticker, period_seconds), scan)

        with translate_errors(f"reading coverage of {ticker}", self.catalog.properties):
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
        (stored,) = self.write_markets([(market, source)])
        return stored

    def write_markets(self, markets: Sequence[tuple[MarketInfo, str]]) -> list[MarketInfo]:
        """Store the decimals of each ``(market, source)`` whose ticker has none stored, in one
        commit; return, for each, the decimals stored now (the first of a ticker's wins)."""

        def attempt() -> list[MarketInfo]:
            (table,) = self._tables(MARKETS_TABLE)
            stored = self._markets_in(table)
            now = time.time_ns() // 1000
            rows = []
            for market, source in markets:
                if market.ticker not in stored:
                    stored[market.ticker] = market
                    rows.append({"ticker": market.ticker, "price_decimals": market.price_decimals,
                                 "volume_decimals": market.volume_decimals, "source": source, "updated_at": now})
            if rows:
                _append_or_clean_up(table, pa.Table.from_pylist(rows, schema=table.schema().as_arrow()))
                self._after_commit(MARKETS_TABLE, table, ())
            return [stored[market.ticker] for market, _ in markets]

        tickers = sorted({market.ticker for market, _ in markets})
        return self.commit(f"storing market {tickers[0]}" if len(tickers) == 1 else f"storing {len(tickers)} markets",
                           attempt)

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
            _append_or_clean_up(table, fresh.sort_by("timestamp").cast(table.schema().as_arrow()))
            self._after_commit(CANDLES_TABLE, table, (ticker, period_seconds))
            return fresh.num_rows, stored.num_rows + fresh.num_rows

        return self.commit(f"writing candles of {ticker}", attempt)

    def record_coverage(self, ticker: str, period_seconds: int, interval: Interval, row_count: int, request_id: str,
                        *, source: str | None = None, fingerprint: str | None = None,
                        parts: list[CoveragePart] | None = None) -> None:
        """Record that ``interval`` was ingested (also when it held no candles): the source
        answered for it, it has settled, and what it holds is stored.

        ``parts`` replaces the single row of ``interval`` by one row per part (each with its
        own candle count and source), committed together. ``source`` names the source that
        answered, ``fingerprint`` what it read (a files source's files), so the row can be
        forgotten when they change (docs/sources.md, "The coverage ledger").
        """
        rows = parts if parts is not None else [CoveragePart(interval, row_count, source)]
        if not rows:
            return

        def attempt() -> None:
            (table,) = self._tables(COVERAGE_TABLE)
            row = pa.Table.from_pylist(
                [coverage_row(ticker, period_seconds, part.interval, part.row_count, request_id,
                              source=part.source, fingerprint=fingerprint) for part in rows],
                schema=table.schema().as_arrow(),
            )
            _append_or_clean_up(table, row)
            self._after_commit(COVERAGE_TABLE, table, (ticker, period_seconds))

        self.commit(f"recording coverage of {ticker}", attempt)

    # -- group commit (committer thread only) ------------------------------------------------
    def submit_fill(self, fill: Fill) -> concurrent.futures.Future[tuple[int, int]]:
        """Queue ``fill`` for the committer's next batch; the future gives ``(added, stored)``
        as :meth:`append_new_candles` does, once its candles and coverage rows are committed.

        A fill of at least ``STAGED_FILL_ROWS`` candles is first written as data files here, on
        the calling thread: encoding Parquet is most of a large fill's commit, and done here it
        runs beside other fills and commits instead of inside the one committer. The committer
        then appends those files as written, unless the duplicate check drops some of the
        candles (or the table's layout changed): it then writes the rest itself, as for a small
        fill."""
        if fill.staged is None and fill.candles.num_rows >= STAGED_FILL_ROWS:
            fill = self._staged(fill)
        return self.committer.submit_fill(fill)

    def _staged(self, fill: Fill) -> Fill:
        """``fill`` with its candles written as data files (unchanged if that fails: the
        committer then writes them, and reports what is wrong with them)."""
        try:
            checked = self._checked_fill(fill)
            (table,) = self._tables(CANDLES_TABLE)
            rows = checked.candles.sort_by([("timestamp", "ascending")]).cast(table.schema().as_arrow())
            files = write_data_files(table, rows)
        except Exception as exc:  # noqa: BLE001 - an optimisation: the committer writes them instead
            log.debug("not staging the candles of %s: %s", fill.ticker, exc)
            return fill
        metadata = table.metadata
        staged = StagedFiles(tuple(files), str(metadata.table_uuid), metadata.current_schema_id,
                             metadata.default_spec_id)
        return Fill(checked.ticker, checked.period_seconds, checked.interval, checked.candles, checked.coverage_rows,
                    staged)

    def commit_fills(self, fills: Sequence[Fill]) -> list[tuple[int, int] | BaseException]:
        """Commit ``fills`` together: one candle append, then one coverage append.

        Each fill's candles are checked for duplicates against the stored ones of its interval
        at the snapshot the append requires (and against the fills before it in the batch), so
        a conflicting commit by another writer makes the append fail and the whole batch is
        re-read and recomputed (never retried with frames read before the conflict). Candles
        are committed before any coverage row, so a reader trusting coverage never sees a
        partial range. A fill that cannot be written (bad columns, a candle outside its
        interval) fails alone; if a batch fails for another reason than a conflict, its fills
        are committed one by one, so only the one at fault fails. Returns, per fill,
        ``(added, stored)`` or the exception that fill failed with.
        """
        results: list[tuple[int, int] | BaseException] = [AssertionError("fill not committed")] * len(fills)
        ready: list[tuple[int, Fill]] = []
        for i, fill in enumerate(fills):
            try:
                ready.append((i, self._checked_fill(fill)))
            except Exception as exc:
                results[i] = exc
        stored: dict[int, tuple[int, int]] = {}
        for i, got in self._batched(ready, "writing candles of", self._append_fills).items():
            if isinstance(got, BaseException):
                results[i] = got
            else:
                stored[i] = got
        covering = [(i, fill) for i, fill in ready if i in stored]
        recorded = self._batched(covering, "recording coverage of",
                                 lambda batch: self._append_coverage(batch, [stored[i] for i, _ in batch]))
        for i, failed in recorded.items():
            results[i] = failed if isinstance(failed, BaseException) else stored[i]
        self._delete_unused([fill.staged for fill in fills if fill.staged is not None])
        return results

    def _delete_unused(self, staged: Iterable[StagedFiles]) -> None:
        """Delete staged files no append attempt listed (their candles were stored meanwhile,
        the layout changed or the fill failed its checks): no metadata names them. Best effort."""
        unused = [files for files in staged if not files.offered]
        if not unused:
            return
        (table,) = self._tables(CANDLES_TABLE)
        for files in unused:
            for data_file in files.files:
                try:
                    table.io.delete(data_file.file_path)
                except Exception as exc:  # noqa: BLE001 - an unreferenced file left behind
                    log.debug("could not delete the unused staged file %s: %s", data_file.file_path, exc)

    def _checked_fill(self, fill: Fill) -> Fill:
        """``fill`` with its candles in the table's candle schema, or a :class:`DataError`
        (a staged fill was checked when it was staged: returned as it is)."""
        if fill.staged is not None:
            return fill
        candles = fill.candles
        try:
            candles = candles.select(list(CANDLE_COLUMNS)).cast(candle_arrow_schema())
        except (KeyError, ValueError, TypeError, pa.ArrowException) as exc:
            raise DataError(f"the candles of {fill.ticker} do not fit the candle table: {exc}") from exc
        if candles.num_rows:
            tickers = pc.unique(candles["ticker"]).to_pylist()
            periods = pc.unique(candles["period_seconds"]).to_pylist()
            if tickers != [fill.ticker] or periods != [fill.period_seconds]:
                raise DataError(f"a fill of {fill.ticker} {fill.period_seconds}s holds candles of {tickers} {periods}")
            bounds = pc.min_max(candles["timestamp"])
            if bounds["min"].as_py() < fill.interval[0] or bounds["max"].as_py() >= fill.interval[1]:
                raise DataError(f"a fill of {fill.ticker} holds candles outside its interval {fill.interval}")
        return Fill(fill.ticker, fill.period_seconds, fill.interval, candles, fill.coverage_rows)

    def _batched(self, items: list[tuple[int, Fill]], action: str,
                 attempt: Callable[[list[tuple[int, Fill]]], list[R]]) -> dict[int, R | BaseException]:
        """Run ``attempt`` on all of ``items`` through :meth:`commit`; the results by index.
        A failure other than giving up on conflicts is retried one fill at a time."""
        if not items:
            return {}
        def run(part: list[tuple[int, Fill]]) -> dict[int, R | BaseException]:
            tickers = sorted({fill.ticker for _, fill in part})
            description = f"{action} {tickers[0]}" if len(tickers) == 1 else f"{action} {len(tickers)} tickers"
            try:
                return dict(zip((i for i, _ in part), self.commit(description, lambda: attempt(part))))
            except Exception as exc:
                if len(part) > 1 and not _gave_up(exc):
                    log.warning("%s failed (%s); committing its %d fills one by one", description, exc, len(part))
                    raise
                return {i: exc for i, _ in part}

        try:
            return run(items)
        except Exception:
            out: dict[int, R | BaseException] = {}
            for item in items:
                out.update(run([item]))
            return out

    def _stored_timestamps(self, table: Any, ticker: str, period_seconds: int, interval: Interval) -> np.ndarray:
        """The duplicate check's read: the timestamps stored in ``interval``."""
        return self._timestamps_in(table, ticker, period_seconds, interval)

    def _timestamps_in(self, table: Any, ticker: str, period_seconds: int, interval: Interval) -> np.ndarray:
        """The timestamps of the candles stored in ``interval`` (the timestamp column alone:
        counting or checking for duplicates decodes none of the others)."""
        ts = self.reader.read(table, {"ticker": ticker, "period_seconds": period_seconds},
                              range_column="timestamp", start=interval[0], stop=interval[1],
                              columns=("timestamp",))["timestamp"].to_numpy()
        if _is_calendar(period_seconds) and ts.size:
            ts = ts[is_aligned(period_seconds, ts)]
        return np.asarray(ts, dtype=np.int64)

    def _append_fills(self, batch: list[tuple[int, Fill]]) -> list[tuple[int, int]]:
        """One attempt: the candles of every fill not already stored (nor given by an earlier
        fill of the batch), appended through the Table the duplicate checks read."""
        # The same Table for the checks and the append: the append then requires the snapshot
        # the checks read, and a concurrent commit makes it fail (no rebase) so the retry
        # re-reads instead of appending stale rows.
        from pyiceberg.exceptions import CommitFailedException, ValidationException

        (table,) = self._tables(CANDLES_TABLE)
        # One read per ticker and period of the batch, over the span of its fills' intervals.
        spans: dict[tuple[str, int], Interval] = {}
        for _, fill in batch:
            lo, hi = spans.get(fill.key, fill.interval)
            spans[fill.key] = (min(lo, fill.interval[0]), max(hi, fill.interval[1]))
        stored = {key: self._stored_timestamps(table, key[0], key[1], span) for key, span in spans.items()}
        taken: dict[tuple[str, int], list[np.ndarray]] = {}
        pieces: list[pa.Table] = []
        staged: list[StagedFiles] = []
        outcomes: list[tuple[int, int]] = []
        for _, fill in batch:
            lo, hi = fill.interval
            known = np.concatenate([ts[(ts >= lo) & (ts < hi)] for ts in (stored[fill.key], *taken.get(fill.key, []))])
            fresh = fill.candles
            if known.size and fresh.num_rows:
                fresh = fresh.filter(pc.invert(pc.is_in(fresh["timestamp"], value_set=pa.array(known))))
            if fresh.num_rows:
                if fill.staged is not None and fresh.num_rows == fill.candles.num_rows and fill.staged.fit(table):
                    staged.append(fill.staged)  # written already, and every candle of it is new
                else:
                    pieces.append(fresh)
                taken.setdefault(fill.key, []).append(fresh["timestamp"].to_numpy())
            outcomes.append((fresh.num_rows, int(known.size) + fresh.num_rows))
        if pieces or staged:
            rows = None
            if pieces:
                rows = pa.concat_tables(pieces).sort_by(
                    [("ticker", "ascending"), ("period_seconds", "ascending"), ("timestamp", "ascending")]
                ).cast(table.schema().as_arrow())
            for files in staged:
                files.offered = True  # from here on, an attempt may have committed them
            try:
                _append_or_clean_up(table, rows, [data_file for files in staged for data_file in files.files])
            except (CommitFailedException, ValidationException):
                for files in staged:  # refused whole by the catalog: no metadata names them
                    files.offered = False
                raise
            self._after_commit(CANDLES_TABLE, table, *sorted(taken))
        return outcomes

    def _append_coverage(self, batch: list[tuple[int, Fill]], outcomes: list[tuple[int, int]]) -> list[None]:
        """One attempt: the coverage rows of every fill, appended in one commit."""
        (table,) = self._tables(COVERAGE_TABLE)
        recorded: dict[tuple[str, int], list[Interval]] = {}
        rows: list[dict[str, Any]] = []
        for (_, fill), (added, stored) in zip(batch, outcomes):
            if fill.key not in recorded:
                recorded[fill.key] = self._coverage_in(table, fill.ticker, fill.period_seconds)
            mine = fill.coverage_rows(FillOutcome(added, stored, tuple(merge_intervals(recorded[fill.key]))))
            recorded[fill.key] += [(row["start_time"], row["end_time"]) for row in mine]
            rows += mine
        if rows:
            _append_or_clean_up(table, pa.Table.from_pylist(rows, schema=table.schema().as_arrow()))
            self._after_commit(COVERAGE_TABLE, table, *sorted({(r["ticker"], r["period_seconds"]) for r in rows}))
        return [None] * len(batch)

    # -- automatic maintenance ------------------------------------------------------------
    def _after_commit(self, name: str, table: Any, *partitions: tuple) -> None:
        """Share the committed metadata with readers, and queue maintenance on the committer if
        this commit (``table`` is now at its snapshot, having written to ``partitions``) crossed
        a threshold of the policy. Never raises: both are optimisations."""
        self.reader.adopt(table)
        policy = self.maintenance
        if not policy.auto or self._closing:
            return
        from . import maintenance

        try:
            compacting = False
            for partition in partitions:
                files = self.reader.plan(table).partition_files(partition)
                small = sum(1 for f in files if f.record_count < policy.small_file_rows)
                if small >= policy.compact_small_files:
                    values = dict(zip(TABLE_LAYOUTS[name].partition_by, partition))

                    def compact_then_expire(values: dict[str, Any] = values) -> None:
                        maintenance.compact_partition(self, name, values)
                        self._expire(name, min_expired=1)

                    self._schedule(("compact", name, partition), compact_then_expire)
                    compacting = True
            if (not compacting and len(table.metadata.snapshots) >= policy.keep_snapshots + policy.expire_batch
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


def _add_missing_columns(table: Any, name: str, conflict: type[Exception]) -> None:
    """Give a table created by an older version the columns added since (schema evolution:
    optional columns, older rows read them as null). Another process adding them at the same
    time is fine: its schema is checked again."""
    from pyiceberg.types import StringType

    for attempt in range(3):
        names = {field.name for field in table.schema().fields}
        wanted = [column for table_name, column in ADDED_COLUMNS if table_name == name and column not in names]
        if not wanted:
            return
        try:
            with table.update_schema() as update:
                for column in wanted:
                    update.add_column(column, StringType())
            return
        except conflict:
            table = table.refresh()
        except ValueError:  # added by another process between the look and the update
            table = table.refresh()
        except Exception as exc:  # a read-only warehouse: reads work without them, writes need them
            log.warning("the %s table lacks the column(s) %s of this version and they could not be added (%s: %s); "
                        "reads go on without them, open the warehouse once with write access to add them",
                        name, ", ".join(wanted), type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
            return


def _append_or_clean_up(table: Any, rows: pa.Table | None, files: Sequence[Any] = ()) -> None:
    """Append ``rows`` (written here as data files first) and the data files ``files`` in one
    snapshot. If the catalog refuses the commit (a conflict: the retry recomputes and writes
    again), the files written here are deleted: no metadata names them (``table.append`` would
    leave them behind on every conflict)."""
    from pyiceberg.exceptions import CommitFailedException, ValidationException

    written = write_data_files(table, rows) if rows is not None and rows.num_rows else []
    if not written and not files:
        return
    try:
        append_files_staging_once(table, [*written, *files])
    except (CommitFailedException, ValidationException):
        for data_file in written:
            try:
                table.io.delete(data_file.file_path)
            except Exception as exc:  # noqa: BLE001 - an unreferenced file left behind
                log.debug("could not delete %s after a refused commit: %s", data_file.file_path, exc)
        raise


def _gave_up(exc: BaseException) -> bool:
    """Whether :meth:`Warehouse.commit` gave up on commit conflicts (rather than failing)."""
    return isinstance(exc.__cause__, _FileVanished) or type(exc.__cause__).__name__ in (
        "CommitFailedException", "ValidationException")


def _snapshot_id(table: Any) -> int | None:
    snapshot = table.current_snapshot()
    return snapshot.snapshot_id if snapshot else None


class Committer:
    """The one thread of a process that commits to a warehouse; jobs run in submission order,
    except that fills (:meth:`submit_fill`) queued while it works are committed together."""

    def __init__(self, warehouse: Warehouse) -> None:
        self._warehouse = warehouse
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"dexorder-committer-{warehouse.namespace}"
        )
        self._fills: deque[tuple[Fill, concurrent.futures.Future[tuple[int, int]]]] = deque()
        self._markets: deque[tuple[MarketInfo, str, concurrent.futures.Future[MarketInfo]]] = deque()
        self._lock = threading.Lock()
        self.closed = False
        self.batches = 0  # fill batches committed, for tests and logs

    def submit(self, fn: Callable[..., T], *args: Any) -> concurrent.futures.Future[T]:
        return self._executor.submit(fn, *args)

    def submit_fill(self, fill: Fill) -> concurrent.futures.Future[tuple[int, int]]:
        """Queue ``fill``; it is committed with every other fill queued when the committer
        gets to it (raises RuntimeError once the committer is shutting down)."""
        future: concurrent.futures.Future[tuple[int, int]] = concurrent.futures.Future()
        self._enqueue(self._fills, (fill, future), self._drain)
        return future

    def submit_market(self, market: MarketInfo, source: str) -> concurrent.futures.Future[MarketInfo]:
        """Queue a market to store (:meth:`Warehouse.write_market`); it is stored with every
        other market queued when the committer gets to it, in one commit."""
        future: concurrent.futures.Future[MarketInfo] = concurrent.futures.Future()
        self._enqueue(self._markets, (market, source, future), self._drain_markets)
        return future

    def _enqueue(self, queue: deque[Any], item: tuple[Any, ...], drain: Callable[[], None]) -> None:
        """Add ``item`` to ``queue`` and a ``drain`` of it to the committer's jobs."""
        with self._lock:
            queue.append(item)
            try:
                self._executor.submit(drain)
            except RuntimeError:
                queue.pop()
                raise

    def _take(self, queue: deque[Any]) -> list[Any]:
        """Everything queued in ``queue`` now whose future was not cancelled (its last item)."""
        with self._lock:
            batch = list(queue)
            queue.clear()
        return [item for item in batch if item[-1].set_running_or_notify_cancel()]

    def _drain_markets(self) -> None:
        batch = self._take(self._markets)
        if not batch:
            return
        try:
            stored = self._warehouse.write_markets([(market, source) for market, source, _ in batch])
        except BaseException as exc:  # every waiting fill hears of it
            for _, _, future in batch:
                future.set_exception(exc)
            return
        for (_, _, future), market in zip(batch, stored):
            future.set_result(market)

    def _drain(self) -> None:
        """Commit every fill queued now as one batch (none left: an earlier drain took them)."""
        batch = self._take(self._fills)
        if not batch:
            return
        began = time.perf_counter()
        try:
            results: list[tuple[int, int] | BaseException] = self._warehouse.commit_fills([f for f, _ in batch])
        except BaseException as exc:  # a bug: every waiting request hears of it
            results = [exc] * len(batch)
        self.batches += 1
        log.debug("committed a batch of %d fills in %.1f ms", len(batch), (time.perf_counter() - began) * 1e3)
        for (_, future), result in zip(batch, results):
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

    def close(self) -> None:
        self.closed = True
        self._executor.shutdown(wait=True)
