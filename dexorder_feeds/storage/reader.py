"""Cached reads of the warehouse's Iceberg tables, close to what pyarrow alone can do.

How it works inside: docs/internals.md, "The read path".
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .schema import LOAD_ORDER
from ._pyiceberg_shortcuts import (
    PlannedFile,
    SnapshotPlan,
    SqlMetadataLocations,
    plan_appends,
    plan_snapshot,
    table_from_metadata,
)

__all__ = ["TableReader", "SnapshotPlan", "PlannedFile", "UnknownSnapshotError", "constant_array", "shared_reader"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_PLANS_KEPT = 64
_METADATA_KEPT = 16
_FOOTER_CACHE_FILES = 4096
_MEMO_ENTRIES = 4096
_READ_ATTEMPTS = 4
_THREADED_READ_ROWS = 65_536
CACHED_READ_ROW_GROUPS = 2
# Decoded row groups kept (LRU, bytes): small reads always go through it, a larger read when it
# takes at most half of it. 256 MB hold a million 1-minute candles twice over, so a repeated bulk
# read decodes nothing (~3x faster); 0 turns it off.
DEFAULT_ROW_GROUP_CACHE_BYTES = 256 << 20
# How long a table loaded from a catalog without a cheap freshness check (REST: every check is
# a full load, 3-10 ms) is used before it is loaded again. Stale by at most this much, and never
# after this process's own commits or a gap fill it asked for (TableReader.invalidate); see
# docs/internals.md, "The read path".
DEFAULT_FRESHNESS_SECONDS = 5.0


@dataclass
class _Footer:
    metadata: pq.FileMetaData
    schema: pa.Schema
    columns: dict[str, int]
    row_group_bounds: dict[str, tuple[np.ndarray, np.ndarray]]


class UnknownSnapshotError(LookupError):
    """A snapshot id the table's metadata (as this thread loaded it) does not hold."""


def _snapshot(table: Any, snapshot_id: int | None) -> Any:
    """The table's current snapshot, or the one named (which must still be in its metadata)."""
    if snapshot_id is None:
        return table.current_snapshot()
    snapshot = table.metadata.snapshot_by_id(snapshot_id)
    if snapshot is None:
        raise UnknownSnapshotError(f"snapshot {snapshot_id} is not in {table.name()}")
    return snapshot


def _constant_supported(kind: pa.DataType) -> bool:
    return pa.types.is_integer(kind) or pa.types.is_string(kind) or pa.types.is_large_string(kind)


_CONSTANTS_BYTES = 48 << 20  # built constant columns kept (LRU): a million tickers take ~20 MB
_constants: OrderedDict[tuple[pa.DataType, Any], pa.Array] = OrderedDict()
_constants_lock = threading.Lock()


def constant_array(kind: pa.DataType, value: Any, length: int) -> pa.Array:
    """``length`` copies of ``value`` as an Arrow array of type ``kind`` (an integer or string
    type): a zero-copy slice of one built before when one is long enough (Arrow arrays are
    immutable: sharing is safe), else built in Arrow's memory pool, one pass, no Python object
    per row."""
    key = (kind, value)
    with _constants_lock:
        built = _constants.get(key)
        if built is not None and len(built) >= length:
            _constants.move_to_end(key)
            return built.slice(0, length)
    built = _build_constant(kind, value, length)
    if built.nbytes <= _CONSTANTS_BYTES // 2:
        with _constants_lock:
            _constants[key] = built
            _constants.move_to_end(key)
            while sum(array.nbytes for array in _constants.values()) > _CONSTANTS_BYTES:
                _constants.popitem(last=False)
    return built


def _build_constant(kind: pa.DataType, value: Any, length: int) -> pa.Array:
    if pa.types.is_integer(kind):
        values = pa.allocate_buffer(length * kind.byte_width)
        np.frombuffer(values, dtype=kind.to_pandas_dtype())[:] = value
        return pa.Array.from_buffers(kind, length, [None, values])
    encoded = str(value).encode()
    offset_type = np.int64 if pa.types.is_large_string(kind) else np.int32
    offsets = pa.allocate_buffer((length + 1) * np.dtype(offset_type).itemsize)
    stops = np.frombuffer(offsets, dtype=offset_type)
    stops[0] = 0
    stops[1:] = len(encoded)
    np.cumsum(stops, out=stops)
    data = pa.allocate_buffer(max(1, length * len(encoded)))
    if length and encoded:
        np.frombuffer(data, dtype=np.uint8)[:length * len(encoded)].reshape(length, len(encoded))[:] = \
            np.frombuffer(encoded, dtype=np.uint8)
    return pa.Array.from_buffers(kind, length, [None, offsets, data])


def _decoded_bytes(footer: _Footer, row_groups: Sequence[int], schema: pa.Schema) -> int:
    """About what ``row_groups`` of ``schema``'s columns take decoded (8 bytes a value)."""
    return sum(footer.metadata.row_group(i).num_rows for i in row_groups) * 8 * len(schema)


def _plain_schema(schema: pa.Schema) -> pa.Schema:
    return pa.schema([field.remove_metadata() for field in schema])


def _load_rank(name: str) -> tuple[int, str]:
    """Tables in ``LOAD_ORDER`` first, in that order (see ``TableReader._tables_within_bound``)."""
    return (LOAD_ORDER.index(name) if name in LOAD_ORDER else len(LOAD_ORDER), name)


@dataclass(frozen=True)
class _SharedView:
    """Tables loaded together by one thread (catalogs read within a staleness bound): when
    (``time.monotonic()`` at the start of the load), at which ``generation`` of the reader, a
    sequence number, and each table's ``(metadata, io, identifier, metadata_location)``."""

    loaded: float
    generation: int
    seq: int
    tables: dict[str, tuple[Any, Any, Any, str]]


class TableReader:
    """Reads one namespace's tables through per-thread tables, per-snapshot plans, cached
    Parquet footers and decoded row groups (see docs/internals.md). ``load_table`` loads a
    fresh ``Table`` by name. Thread-safe: tables are per thread, everything shared is immutable
    or behind a lock."""

    def __init__(self, catalog: Any, namespace: str, load_table: Callable[[str], Any], *,
                 row_group_cache_bytes: int = DEFAULT_ROW_GROUP_CACHE_BYTES) -> None:
        self.catalog = catalog
        self.namespace = namespace
        self._load_table = load_table
        self._local = threading.local()
        self._lock = threading.Lock()
        self._plans: OrderedDict[tuple[str, int | None], SnapshotPlan] = OrderedDict()
        self._footers: OrderedDict[str, _Footer] = OrderedDict()
        self._memo: OrderedDict[tuple, Any] = OrderedDict()
        self._schemas: dict[tuple, pa.Schema] = {}
        self._metadata: OrderedDict[str, tuple[Any, Any, Any]] = OrderedDict()
        self._row_groups: OrderedDict[tuple, pa.Table] = OrderedDict()
        self._row_group_bytes = 0
        self.row_group_cache_bytes = row_group_cache_bytes
        self._locations = SqlMetadataLocations(catalog, namespace)
        # Each table's Iceberg table-uuid as last loaded, by any thread (see Warehouse.identity).
        self.table_uuids: dict[str, str] = {}
        self.freshness_seconds = DEFAULT_FRESHNESS_SECONDS
        self._generation = 0
        self._view: _SharedView | None = None  # the newest tables loaded within the bound (REST)
        self._view_seq = 0
        self.tables_ensured = False  # set by the first Warehouse.ensure_tables through this reader
        self._computing: dict[Hashable, concurrent.futures.Future[Any]] = {}  # see _once

    # -- tables ---------------------------------------------------------------------------
    def metadata_locations(self) -> dict[str, str] | None:
        """Current ``metadata_location`` of every table of the namespace (SQL catalogs), else None."""
        return self._locations.read()

    def tables(self, *names: str) -> tuple[Any, ...]:
        """This thread's ``Table`` for each name, reloaded if the catalog moved it.

        A ``Table`` object is never shared between threads, but the parsed metadata behind it
        (immutable) is: after a commit, the first thread to read loads and parses the new
        metadata file, the others wrap the same metadata in a ``Table`` of their own.
        """
        cache: dict[str, Any] = self._local.__dict__.setdefault("tables", {})
        locations = self.metadata_locations()
        if locations is None:
            return self._tables_within_bound(names)
        out = []
        for name in names:
            table = cache.get(name)
            location = locations.get(name) if locations is not None else None
            if table is None or location is None or location != table.metadata_location:
                table = self._table_at(name, location)
                cache[name] = table
                self.table_uuids[name] = str(table.metadata.table_uuid)
            out.append(table)
        return tuple(out)

    def _table_at(self, name: str, location: str | None) -> Any:
        """A new ``Table`` for this thread, from shared parsed metadata when ``location`` is known
        (threads asking for the same new location at once wait for one load of it)."""
        if location is None:
            table = self._load_table(name)
            self._share(table)
            return table
        with self._lock:
            shared = self._metadata.get(location)
        if shared is None:
            def load() -> tuple[Any, Any, Any, str]:
                table = self._load_table(name)
                self._share(table)
                return table.metadata, table.io, table.name(), table.metadata_location

            metadata, io, identifier, location = self._once(("metadata", name, location), load)
        else:
            metadata, io, identifier = shared
        return table_from_metadata(self.catalog, identifier, metadata, location, io)

    def _once(self, key: Hashable, compute: Callable[[], T]) -> T:
        """``compute()``, unless another thread is computing ``key`` now: then its value, once it
        has it (after a commit, the threads of a process that read the new snapshot at once
        would each load its metadata, plan it and decode its new files). Values must be
        immutable: every waiter gets the same one. If the other thread's computation failed,
        this one computes it itself."""
        with self._lock:
            pending = self._computing.get(key)
            owner = pending is None
            if pending is None:
                pending = self._computing[key] = concurrent.futures.Future()
        if not owner:
            try:
                return pending.result()
            except Exception:  # noqa: BLE001 - its error: computed (and raised, if so) here
                return compute()
        try:
            value = compute()
        except BaseException as exc:
            pending.set_exception(exc)
            raise
        else:
            pending.set_result(value)
            return value
        finally:
            with self._lock:
                self._computing.pop(key, None)

    def adopt(self, table: Any) -> None:
        """Share ``table``'s parsed metadata with every thread (e.g. right after this process
        committed through it: readers then need no load of the new metadata file)."""
        self._share(table, new_commit=True)

    def _share(self, table: Any, *, new_commit: bool = False) -> None:
        with self._lock:
            if new_commit:
                self._generation += 1  # a staleness bound never hides this process's own commit
            self._metadata[table.metadata_location] = (table.metadata, table.io, table.name())
            self._metadata.move_to_end(table.metadata_location)
            while len(self._metadata) > _METADATA_KEPT:
                self._metadata.popitem(last=False)

    def _tables_within_bound(self, names: tuple[str, ...]) -> tuple[Any, ...]:
        """Catalogs with no cheap freshness check (REST): the newest tables any thread of this
        process loaded together, less than ``freshness_seconds`` ago and since the last
        :meth:`invalidate`, are used again (each thread wraps their parsed metadata in ``Table``
        objects of its own). Else this thread loads them all, in ``LOAD_ORDER`` (a table there
        is loaded after those before it, so it is at least as new: candles after coverage), and
        shares them. Shared, so that no thread reads older tables than another thread of the
        same process already read (one fetch's reads and the next call's run on different
        threads). With no bound (``freshness_seconds`` 0) each read loads just what it reads."""
        local = self._local.__dict__
        view: dict[str, Any] = local.setdefault("view", {})
        now = time.monotonic()
        with self._lock:
            shared, generation = self._view, self._generation
        if (shared is not None and shared.generation == generation and now - shared.loaded <= self.freshness_seconds
                and all(name in shared.tables for name in names)):
            if local.get("view_seq") != shared.seq:
                view.clear()
                for name, (metadata, io, identifier, location) in shared.tables.items():
                    view[name] = table_from_metadata(self.catalog, identifier, metadata, location, io)
                local["view_seq"] = shared.seq
            return tuple(view[name] for name in names)
        if self.freshness_seconds <= 0:  # no bound: every read loads what it reads, nothing is shared
            view.clear()
            view.update((name, self._table_at(name, None)) for name in sorted(set(names), key=_load_rank))
            local.pop("view_seq", None)
            return tuple(view[name] for name in names)
        wanted = set(names) | (set(shared.tables) if shared is not None else set())
        fresh = {name: self._table_at(name, None) for name in sorted(wanted, key=_load_rank)}
        with self._lock:
            self._view_seq += 1
            seq = self._view_seq
            if self._view is None or self._view.loaded <= now:  # never replaced by an older load
                self._view = _SharedView(now, generation, seq, {
                    name: (table.metadata, table.io, table.name(), table.metadata_location)
                    for name, table in fresh.items()})
        view.clear()
        view.update(fresh)
        local["view_seq"] = seq
        return tuple(view[name] for name in names)

    def invalidate(self) -> None:
        """Make every thread's next read check the catalog (catalogs read within a staleness
        bound: REST). Called after this process committed, and by the fetcher after a gap fill
        it asked for, so what a historian just stored is always read."""
        with self._lock:
            self._generation += 1

    def forget(self) -> None:
        """Drop this thread's tables (the next read reloads them, and the tables shared within
        a staleness bound)."""
        self._local.__dict__.pop("tables", None)
        self._local.__dict__.pop("view", None)
        self._local.__dict__.pop("view_seq", None)
        with self._lock:
            self._view = None

    def retrying(self, read: Callable[[], T]) -> T:
        """Run ``read``; if a file vanished under it (expired by maintenance), or it names a
        snapshot this thread's tables do not know yet (committed elsewhere within a staleness
        bound), reload and rerun."""
        unknown_snapshot_retried = False
        for attempt in range(1, _READ_ATTEMPTS + 1):
            try:
                return read()
            except FileNotFoundError as exc:
                if attempt == _READ_ATTEMPTS:
                    raise
                log.info("a file vanished during a read (%s); reloading and reading again", exc)
                self.forget()
            except UnknownSnapshotError:
                if unknown_snapshot_retried:
                    raise
                unknown_snapshot_retried = True
                self.forget()
        raise AssertionError("unreachable")

    # -- plans ----------------------------------------------------------------------------
    def plan(self, table: Any, snapshot_id: int | None = None) -> SnapshotPlan:
        """The plan of ``table``'s current snapshot (cached; built incrementally from the plan of
        the nearest cached ancestor when only appends came after it)."""
        snapshot = _snapshot(table, snapshot_id)
        uuid = str(table.metadata.table_uuid)
        snapshot_id = snapshot.snapshot_id if snapshot else None
        with self._lock:
            cached = self._plans.get((uuid, snapshot_id))
            if cached is not None:
                self._plans.move_to_end((uuid, snapshot_id))
                return cached
        if snapshot is None:
            return SnapshotPlan(uuid, None, {}, True)

        def build() -> SnapshotPlan:
            plan = (plan_appends(table, snapshot, lambda snapshot_id: self._cached_plan(uuid, snapshot_id))
                    or plan_snapshot(table, snapshot))
            with self._lock:
                self._plans[(uuid, snapshot_id)] = plan
                while len(self._plans) > _PLANS_KEPT:
                    self._plans.popitem(last=False)
            return plan

        return self._once(("plan", uuid, snapshot_id), build)

    def _cached_plan(self, uuid: str, snapshot_id: int) -> SnapshotPlan | None:
        with self._lock:
            return self._plans.get((uuid, snapshot_id))

    # -- derived values -------------------------------------------------------------------
    def memo(self, table: Any, key: Hashable, compute: Callable[[], T], snapshot_id: int | None = None) -> T:
        """``compute()`` once per snapshot of ``table`` and ``key`` (for small derived values)."""
        snapshot = _snapshot(table, snapshot_id)
        full_key = (str(table.metadata.table_uuid), snapshot.snapshot_id if snapshot else None, key)
        with self._lock:
            if full_key in self._memo:
                self._memo.move_to_end(full_key)
                return self._memo[full_key]

        def remember() -> T:
            value = compute()
            with self._lock:
                self._memo[full_key] = value
                while len(self._memo) > _MEMO_ENTRIES:
                    self._memo.popitem(last=False)
            return value

        return self._once(("memo", full_key), remember)

    def layout_outdated(self, table: Any, planned: PlannedFile) -> bool:
        """True if a data file was written with an older layout than ``table``'s properties ask
        for: a column they delta-encode that the file does not, or row groups cut smaller than
        the row-group limit (compaction rewrites such files, see maintenance.compact_table)."""
        from .schema import DELTA_COLUMNS_PROPERTY

        metadata = self._footer(table, planned.path, None).metadata
        properties = table.properties
        limit = int(properties.get("write.parquet.row-group-limit", 0) or 0)
        if limit and metadata.num_row_groups > 1 and metadata.row_group(0).num_rows < limit:
            return True
        delta = {c.strip() for c in properties.get(DELTA_COLUMNS_PROPERTY, "").split(",") if c.strip()}
        if delta and metadata.num_row_groups:
            group = metadata.row_group(0)
            for i in range(group.num_columns):
                column = group.column(i)
                if column.path_in_schema in delta and "DELTA_BINARY_PACKED" not in column.encodings:
                    return True
        return False

    # -- reads ----------------------------------------------------------------------------
    def read(
        self,
        table: Any,
        partition: Mapping[str, Any],
        *,
        range_column: str | None = None,
        start: int | None = None,
        stop: int | None = None,
        columns: Sequence[str] | None = None,
        snapshot_id: int | None = None,
    ) -> pa.Table:
        """Rows of one partition of ``table``'s current snapshot, ``start <= range_column < stop``.

        ``partition`` maps each partition column to its value (``{}`` for an unpartitioned
        table). Rows come sorted by ``range_column`` when one is given. The result has the
        schema pyiceberg's scan would give (``columns`` only, if given).
        """
        schema = self._arrow_schema(table, columns)
        plan = self.plan(table, snapshot_id)
        if plan.snapshot_id is None:
            return schema.empty_table()
        if not plan.direct:
            return self._scan(table, plan, partition, range_column, start, stop, columns)
        key = tuple(partition[table.schema().find_column_name(f.source_id)] for f in table.spec().fields)
        files = plan.partition_files(key)
        if range_column is not None:
            field_id = table.schema().find_field(range_column).field_id
            files = tuple(f for f in files if self._overlaps(f.long_bounds(field_id), start, stop))
        # Identity partition columns hold the partition's value in every row: built, not decoded
        # (a million tickers decoded cost ~10 ms, built ~2 ms).
        constants = self._constant_columns(table, partition, schema, range_column)
        file_schema = pa.schema([f for f in schema if f.name not in constants]) if constants else schema
        pieces = []
        for planned in files:
            piece = self._read_file(table, planned, file_schema, range_column, start, stop)
            if piece is None:
                return self._scan(table, plan, partition, range_column, start, stop, columns)
            if piece.num_rows:
                pieces.append(piece)
        if not pieces:
            return schema.empty_table()
        if len(pieces) == 1:
            result = pieces[0]
        elif range_column is None:
            result = pa.concat_tables(pieces)
        else:
            result = self._merge_sorted(pieces, range_column)
        if not constants:
            return result
        return pa.Table.from_arrays([constant_array(field.type, constants[field.name], result.num_rows)
                                     if field.name in constants else result[field.name] for field in schema],
                                    schema=schema)

    def _constant_columns(self, table: Any, partition: Mapping[str, Any], schema: pa.Schema,
                          range_column: str | None) -> dict[str, Any]:
        """``{column: value}`` of the identity partition columns among ``schema``'s."""
        from pyiceberg.transforms import IdentityTransform

        out = {}
        for spec_field in table.spec().fields:
            name = table.schema().find_column_name(spec_field.source_id)
            if (isinstance(spec_field.transform, IdentityTransform) and name in partition and name != range_column
                    and name in schema.names and _constant_supported(schema.field(name).type)):
                out[name] = partition[name]
        return out

    @staticmethod
    def _merge_sorted(pieces: list[pa.Table], column: str) -> pa.Table:
        """Pieces concatenated in ``column`` order; no sort (no copy) when they do not overlap."""
        spans = []
        for piece in pieces:
            values = piece[column].to_numpy()
            ordered = bool(np.all(values[1:] >= values[:-1]))
            spans.append((int(values[0]), int(values[-1]), ordered, piece))
        spans.sort(key=lambda span: span[0])
        disjoint = all(a[1] < b[0] for a, b in zip(spans, spans[1:]))
        result = pa.concat_tables([span[3] for span in spans])
        if disjoint and all(span[2] for span in spans):
            return result
        return result.sort_by(column)

    def _arrow_schema(self, table: Any, columns: Sequence[str] | None) -> pa.Schema:
        """The Arrow schema pyiceberg's scan gives for ``columns`` (cached per table schema)."""
        key = (str(table.metadata.table_uuid), table.metadata.current_schema_id, tuple(columns or ()))
        schema = self._schemas.get(key)
        if schema is None:
            schema = _plain_schema(table.schema().as_arrow())
            if columns is not None:
                schema = pa.schema([schema.field(c) for c in columns])
            self._schemas[key] = schema
        return schema

    @staticmethod
    def _overlaps(bounds: tuple[int, int] | None, start: int | None, stop: int | None) -> bool:
        if bounds is None:
            return True
        lo, hi = bounds
        return (start is None or hi >= start) and (stop is None or lo < stop)

    def _scan(self, table: Any, plan: SnapshotPlan, partition: Mapping[str, Any], range_column: str | None,
              start: int | None, stop: int | None, columns: Sequence[str] | None) -> pa.Table:
        """pyiceberg's own scan of the same snapshot (delete files, foreign layouts)."""
        from .schema import row_filter

        wanted = self._arrow_schema(table, columns)
        # pyiceberg projects a scan at a snapshot through that snapshot's schema, so a column
        # added since (schema evolution) is unknown to it: ask for the others, add it as nulls.
        known = _snapshot_field_names(table, plan.snapshot_id)
        asked = tuple(name for name in wanted.names if known is None or name in known)
        scan = table.scan(row_filter=row_filter(partition, range_column, start, stop), snapshot_id=plan.snapshot_id,
                          selected_fields=asked if columns or len(asked) < len(wanted.names) else ("*",))
        result = scan.to_arrow()
        if range_column is not None and result.num_rows:
            result = result.sort_by(range_column)
        if result.column_names != wanted.names:
            result = pa.Table.from_arrays(
                [result[f.name] if f.name in result.column_names else pa.nulls(result.num_rows, f.type)
                 for f in wanted], schema=wanted)
        return result

    def _footer(self, table: Any, path: str, range_column: str | None) -> _Footer:
        with self._lock:
            footer = self._footers.get(path)
            if footer is not None:
                self._footers.move_to_end(path)
        if footer is None:
            with table.io.new_input(path).open() as source:
                metadata = pq.read_metadata(source)
            schema = metadata.schema.to_arrow_schema()
            footer = _Footer(metadata, schema, {name: i for i, name in enumerate(schema.names)}, {})
            with self._lock:
                self._footers[path] = footer
                while len(self._footers) > _FOOTER_CACHE_FILES:
                    self._footers.popitem(last=False)
        if range_column is not None and range_column not in footer.row_group_bounds and range_column in footer.columns:
            footer.row_group_bounds[range_column] = self._row_group_bounds(footer, range_column)
        return footer

    @staticmethod
    def _row_group_bounds(footer: _Footer, column: str) -> tuple[np.ndarray, np.ndarray]:
        metadata = footer.metadata
        index = footer.columns[column]  # flat schemas: Arrow field i is Parquet column i
        lows = np.full(metadata.num_row_groups, np.iinfo(np.int64).min, dtype=np.int64)
        highs = np.full(metadata.num_row_groups, np.iinfo(np.int64).max, dtype=np.int64)
        for i in range(metadata.num_row_groups):
            stats = metadata.row_group(i).column(index).statistics
            if stats is not None and stats.has_min_max:
                lows[i], highs[i] = stats.min, stats.max
        return lows, highs

    def _read_file(self, table: Any, planned: PlannedFile, schema: pa.Schema, range_column: str | None,
                   start: int | None, stop: int | None) -> pa.Table | None:
        """The rows of one data file in the range, or None if pyarrow alone cannot read it."""
        footer = self._footer(table, planned.path, range_column)
        if any(name not in footer.columns for name in schema.names):
            return None
        row_groups = list(range(footer.metadata.num_row_groups))
        if range_column is not None:
            lows, highs = footer.row_group_bounds[range_column]
            keep = np.ones(len(lows), dtype=bool)
            if start is not None:
                keep &= highs >= start
            if stop is not None:
                keep &= lows < stop
            row_groups = np.flatnonzero(keep).tolist()
        if not row_groups:
            return schema.empty_table()
        if self.row_group_cache_bytes > 0 and (
                len(row_groups) <= CACHED_READ_ROW_GROUPS
                or _decoded_bytes(footer, row_groups, schema) <= self.row_group_cache_bytes // 2):
            data = self._cached_row_groups(table, planned.path, footer, row_groups, schema.names)
        else:
            rows = sum(footer.metadata.row_group(i).num_rows for i in row_groups)
            with table.io.new_input(planned.path).open() as source:
                data = pq.ParquetFile(source, metadata=footer.metadata).read_row_groups(
                    row_groups, columns=list(schema.names), use_threads=rows >= _THREADED_READ_ROWS)
        if range_column is not None and data.num_rows:
            data = self._cut(data, range_column, start, stop)
        try:
            return pa.Table.from_arrays(data.columns, schema=schema) if data.schema.equals(schema) else data.cast(schema)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            log.debug("%s does not match the table schema; using pyiceberg's scan", planned.path)
            return None

    def _cached_row_groups(self, table: Any, path: str, footer: _Footer, row_groups: list[int],
                           names: Sequence[str]) -> pa.Table:
        """Row groups of one file through the decoded row-group LRU (immutable files: no staleness)."""
        keys = [(path, index, tuple(names)) for index in row_groups]
        with self._lock:
            found = {key: self._row_groups[key] for key in keys if key in self._row_groups}
            for key in found:
                self._row_groups.move_to_end(key)
        missing = [key for key in keys if key not in found]
        if missing:
            def decode() -> dict[tuple, pa.Table]:
                indices = [key[1] for key in missing]
                counts = [footer.metadata.row_group(i).num_rows for i in indices]
                with table.io.new_input(path).open() as source:
                    parquet = pq.ParquetFile(source, metadata=footer.metadata)
                    decoded = parquet.read_row_groups(indices, columns=list(names),
                                                      use_threads=sum(counts) >= _THREADED_READ_ROWS)
                slices, offset = {}, 0  # one decode for all of them, cached row group by row group
                for key, count in zip(missing, counts):
                    slices[key] = decoded.slice(offset, count)  # zero-copy
                    offset += count
                with self._lock:
                    for key, value in slices.items():
                        if key not in self._row_groups:
                            self._row_groups[key] = value
                            self._row_group_bytes += value.nbytes
                    while self._row_group_bytes > self.row_group_cache_bytes and self._row_groups:
                        _, evicted = self._row_groups.popitem(last=False)
                        self._row_group_bytes -= evicted.nbytes
                return slices

            found.update(self._once(("row groups", path, tuple(names), tuple(key[1] for key in missing)), decode))
        parts = [found[key] for key in keys]
        return parts[0] if len(parts) == 1 else pa.concat_tables(parts)

    @staticmethod
    def _cut(data: pa.Table, column: str, start: int | None, stop: int | None) -> pa.Table:
        """The rows with ``start <= column < stop``, sorted by ``column`` (a slice when the file
        is sorted, as every file this package writes is)."""
        values = data[column].to_numpy()
        lo = np.iinfo(np.int64).min if start is None else start
        hi = np.iinfo(np.int64).max if stop is None else stop
        if values.size < 2 or bool(np.all(values[1:] >= values[:-1])):
            i, j = np.searchsorted(values, [lo, hi], side="left")
            return data.slice(int(i), int(j - i)) if (i, j) != (0, values.size) else data
        mask = (values >= lo) & (values < hi)
        return data.filter(pa.array(mask)).sort_by(column)


_SHARED_READERS = "_dexorder_feeds_readers"  # attribute of a catalog object: namespace -> TableReader
_shared_lock = threading.Lock()


def shared_reader(catalog: Any, namespace: str, load_table: Callable[[str], Any]) -> TableReader:
    """The one :class:`TableReader` of ``namespace`` for this catalog object.

    Every ``Warehouse`` opened on one catalog object (``open_catalog`` returns the same one per
    process for the same settings) reads through it, so many clients in one process plan each
    new snapshot, parse each footer and decode each row group once, not once each, and share
    one row-group cache. A catalog opened with ``cache=False`` (another machine, as tests
    have it) gets readers of its own. ``load_table`` is the first caller's."""
    with _shared_lock:
        try:
            readers = catalog.__dict__.setdefault(_SHARED_READERS, {})
        except AttributeError:  # an object without a __dict__: nothing to share on
            return TableReader(catalog, namespace, load_table)
        reader = readers.get(namespace)
        if reader is None:
            reader = readers[namespace] = TableReader(catalog, namespace, load_table)
        return reader


def _snapshot_field_names(table: Any, snapshot_id: int | None) -> set[str] | None:
    """The column names of the schema ``snapshot_id`` was written with (None: unknown)."""
    if snapshot_id is None:
        return None
    snapshot = table.metadata.snapshot_by_id(snapshot_id)
    if snapshot is None or snapshot.schema_id is None:
        return None
    for schema in table.metadata.schemas:
        if schema.schema_id == snapshot.schema_id:
            return {field.name for field in schema.fields}
    return None
