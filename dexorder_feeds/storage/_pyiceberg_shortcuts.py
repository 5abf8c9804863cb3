"""The read path's shortcuts past pyiceberg's public API, all in one place.

Each replaces a slow public call with a direct one that gives the same answer; tests in
tests/test_pyiceberg_shortcuts.py hold every answer against pyiceberg's public scan. Why each
one pays is in docs/internals.md, "The read path". On a pyiceberg upgrade, this is the file
to check.

- :class:`SqlMetadataLocations`: the current ``metadata_location`` of every table, straight from
  a SQL catalog's ``iceberg_tables`` (instead of one ``load_table`` per table and read).
- :func:`current_metadata_location`: one table's current ``metadata_location`` the same way, for
  a commit that checks the table it holds is still current (instead of loading it again).
- :func:`table_from_metadata`: a ``Table`` wrapped around metadata already parsed (instead of
  reading and parsing the metadata file again for another thread).
- :func:`plan_snapshot` / :func:`plan_appends`: a snapshot's live data files with their column
  bounds, from its manifests (instead of ``plan_files`` per read), and incrementally from an
  earlier plan when only appends came after it. A plan is ``direct`` only when pyarrow alone can
  read its files; otherwise the reader hands the read back to pyiceberg's scan.
- :func:`append_staging_once`: ``table.append`` through a ``Transaction`` that works out its
  staged metadata once per change (pyiceberg 0.12 deep-copies the whole table metadata on each
  of ~20 looks per append); :func:`write_data_files` and :func:`append_files_staging_once`
  split it in two: data files written first (by any thread), then one snapshot adding them.
- :func:`install_avro_schema_memo`: each distinct Avro header schema of manifests converted
  to an Iceberg schema once per process (instead of once per manifest read).
- :func:`install_parquet_encodings`: per-column Parquet encodings from two table properties of
  ours (pyiceberg's writer passes pyarrow no ``column_encoding``); a table without them is
  written exactly as pyiceberg would.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "PlannedFile", "SnapshotPlan", "SqlMetadataLocations", "current_metadata_location", "table_from_metadata", "plan_snapshot",
    "plan_appends", "MAX_INCREMENTAL_STEPS", "install_parquet_encodings", "append_staging_once",
    "append_files_staging_once", "write_data_files", "check_write_schema", "install_avro_schema_memo",
]

MAX_INCREMENTAL_STEPS = 32
_LOCATIONS_QMARK = ("SELECT table_name, metadata_location FROM iceberg_tables "
                    "WHERE catalog_name = ? AND table_namespace = ?")
_LOCATIONS_FORMAT = ("SELECT table_name, metadata_location FROM iceberg_tables "
                     "WHERE catalog_name = %s AND table_namespace = %s")
_LOCATIONS_NAMED = ("SELECT table_name, metadata_location FROM iceberg_tables "
                    "WHERE catalog_name = :catalog AND table_namespace = :namespace")


@dataclass(frozen=True)
class PlannedFile:
    """One live data file of a snapshot, with the raw Iceberg column bounds by field id."""

    path: str
    record_count: int
    lower_bounds: Mapping[int, bytes]
    upper_bounds: Mapping[int, bytes]

    def long_bounds(self, field_id: int) -> tuple[int, int] | None:
        """The ``(min, max)`` of a ``long`` column, or None if the file does not say."""
        lo, hi = self.lower_bounds.get(field_id), self.upper_bounds.get(field_id)
        if lo is None or hi is None:
            return None
        return int.from_bytes(lo, "little", signed=True), int.from_bytes(hi, "little", signed=True)


@dataclass(frozen=True)
class SnapshotPlan:
    """The live data files of one snapshot, by partition (a tuple of partition values)."""

    table_uuid: str
    snapshot_id: int | None
    files: Mapping[tuple, tuple[PlannedFile, ...]]
    direct: bool
    """False when pyarrow alone cannot read the snapshot (delete files, foreign layout)."""

    def partition_files(self, partition: tuple) -> tuple[PlannedFile, ...]:
        return self.files.get(partition, ())


class SqlMetadataLocations:
    """Reads the current metadata locations of a namespace's tables from a SQL catalog."""

    def __init__(self, catalog: Any, namespace: str) -> None:
        from pyiceberg.catalog import Catalog
        from pyiceberg.catalog.sql import SqlCatalog

        self.catalog = catalog
        self.engine = catalog.engine if isinstance(catalog, SqlCatalog) else None
        self.namespace = Catalog.namespace_to_string(Catalog.identifier_to_tuple(namespace))
        self._local = threading.local()

    @property
    def available(self) -> bool:
        return self.engine is not None

    def read(self) -> dict[str, str] | None:
        """``{table name: metadata_location}`` (None for a catalog that is not SQL).

        The query runs on a DB-API connection of this thread's own, outside SQLAlchemy's pool
        and in autocommit (SQLite ~10 µs instead of ~90 µs; PostgreSQL one round trip instead
        of a pool checkout, a statement compile, the query and a rollback). A connection that
        fails is replaced once; a second failure goes through the catalog's engine.
        """
        if self.engine is None:
            return None
        params = (self.catalog.name, self.namespace)
        for _ in range(2):
            connection = self._connection()
            if connection is None:
                break
            try:
                cursor = connection.cursor()
                try:
                    cursor.execute(self._query, params)
                    rows = cursor.fetchall()
                finally:
                    cursor.close()
                return {name: location for name, location in rows if location}
            except Exception:  # a dropped connection, a restarted server: a new one, once
                self._local.__dict__.pop("dbapi", None)
                with contextlib.suppress(Exception):
                    connection.close()
        from sqlalchemy import text

        with self.engine.connect() as pooled:
            rows = pooled.execute(text(_LOCATIONS_NAMED), {"catalog": self.catalog.name,
                                                            "namespace": self.namespace}).all()
        return {name: location for name, location in rows if location}

    @property
    def _query(self) -> str:
        style = self.engine.dialect.paramstyle if self.engine is not None else "qmark"
        return _LOCATIONS_FORMAT if style in ("format", "pyformat") else _LOCATIONS_QMARK

    def _connection(self) -> Any:
        """This thread's DB-API connection to the catalog database (new after a fork), or None
        if its driver takes neither ``?`` nor ``%s`` parameters."""
        held = self._local.__dict__.get("dbapi")
        if held is None or held[0] != os.getpid():
            engine = self.engine
            assert engine is not None
            dialect = engine.dialect
            if dialect.paramstyle not in ("qmark", "format", "pyformat"):
                return None
            cargs, cparams = dialect.create_connect_args(engine.url)
            connection = dialect.loaded_dbapi.connect(*cargs, **cparams)
            if dialect.name != "sqlite" and hasattr(connection, "autocommit"):
                connection.autocommit = True  # no transaction left open between reads
            held = (os.getpid(), connection)
            self._local.dbapi = held
        return held[1]


_LOCATIONS_ATTRIBUTE = "_dexorder_feeds_locations"  # of a SQL catalog object: namespace -> SqlMetadataLocations
_locations_lock = threading.Lock()


def current_metadata_location(catalog: Any, identifier: tuple[str, ...]) -> str | None:
    """The ``metadata_location`` a SQL catalog names now for the table ``identifier`` (None if
    it names none), read as :meth:`SqlMetadataLocations.read` reads them."""
    namespace, name = ".".join(identifier[:-1]), identifier[-1]
    with _locations_lock:
        by_namespace = catalog.__dict__.setdefault(_LOCATIONS_ATTRIBUTE, {})
        locations = by_namespace.get(namespace)
        if locations is None:
            locations = by_namespace[namespace] = SqlMetadataLocations(catalog, namespace)
    return (locations.read() or {}).get(name)


def table_from_metadata(catalog: Any, identifier: Any, metadata: Any, location: str, io: Any) -> Any:
    """A new ``Table`` around parsed (immutable) metadata another thread's table loaded."""
    from pyiceberg.table import Table

    return Table(identifier=identifier, metadata=metadata, metadata_location=location, io=io, catalog=catalog)


def _partition_key(record: Any) -> tuple:
    return tuple(record[i] for i in range(len(record)))


def _collect(table: Any, entries: Iterable[Any], files: dict[tuple, list[PlannedFile]]) -> bool:
    """Add data-file entries to ``files``; False if one cannot be read by pyarrow alone."""
    from pyiceberg.manifest import DataFileContent, FileFormat

    spec_id = table.metadata.default_spec_id
    direct = True
    for entry in entries:
        data_file = entry.data_file
        if (data_file.content != DataFileContent.DATA or data_file.file_format != FileFormat.PARQUET
                or data_file.spec_id != spec_id):
            direct = False
        files[_partition_key(data_file.partition)].append(PlannedFile(
            data_file.file_path, data_file.record_count,
            dict(data_file.lower_bounds or {}), dict(data_file.upper_bounds or {}),
        ))
    return direct


def plan_snapshot(table: Any, snapshot: Any) -> SnapshotPlan:
    """Every live data file of ``snapshot``, read from all its manifests."""
    from pyiceberg.manifest import ManifestContent
    from pyiceberg.utils.concurrent import ExecutorFactory

    io = table.io
    manifests = snapshot.manifests(io)
    direct = all(m.content == ManifestContent.DATA for m in manifests)
    data_manifests = [m for m in manifests if m.content == ManifestContent.DATA]
    if len(data_manifests) > 1:
        entry_lists = list(ExecutorFactory.get_or_create().map(lambda m: m.fetch_manifest_entry(io), data_manifests))
    else:
        entry_lists = [m.fetch_manifest_entry(io) for m in data_manifests]
    files: dict[tuple, list[PlannedFile]] = defaultdict(list)
    direct = _collect(table, (e for entries in entry_lists for e in entries), files) and direct
    return SnapshotPlan(str(table.metadata.table_uuid), snapshot.snapshot_id,
                        {k: tuple(v) for k, v in files.items()}, direct)


def plan_appends(table: Any, snapshot: Any, cached: Callable[[int], SnapshotPlan | None]) -> SnapshotPlan | None:
    """The plan of the nearest ancestor ``cached`` knows plus the files the append snapshots since
    added; None if none is within reach or a snapshot in between did more than append."""
    from pyiceberg.manifest import ManifestContent, ManifestEntryStatus
    from pyiceberg.table.snapshots import Operation

    chain: list[Any] = []
    current = snapshot
    base: SnapshotPlan | None = None
    while current is not None:
        base = cached(current.snapshot_id)
        if base is not None:
            break
        if len(chain) >= MAX_INCREMENTAL_STEPS or current.summary is None or current.summary.operation != Operation.APPEND:
            return None
        chain.append(current)
        current = table.metadata.snapshot_by_id(current.parent_snapshot_id) if current.parent_snapshot_id else None
    if base is None or not base.direct:
        return None
    files: dict[tuple, list[PlannedFile]] = defaultdict(list, {k: list(v) for k, v in base.files.items()})
    io = table.io
    for step in reversed(chain):
        added = []
        for manifest in step.manifests(io):
            if manifest.added_snapshot_id != step.snapshot_id or not manifest.has_added_files():
                continue
            if manifest.content != ManifestContent.DATA:
                return None
            added += [e for e in manifest.fetch_manifest_entry(io)
                      if e.status == ManifestEntryStatus.ADDED and e.snapshot_id == step.snapshot_id]
        if not _collect(table, added, files):
            return None
    return SnapshotPlan(base.table_uuid, snapshot.snapshot_id, {k: tuple(v) for k, v in files.items()}, True)


def _columns(value: str | None) -> list[str]:
    return [name.strip() for name in (value or "").split(",") if name.strip()]


def install_parquet_encodings() -> bool:
    """Make pyiceberg's Parquet writer honour ``dexorder.write.parquet.delta-columns`` (written
    DELTA_BINARY_PACKED) and ``dexorder.write.parquet.dictionary-columns`` (dictionary-encoded;
    any other column PLAIN) where a table sets them. Idempotent; False if this pyiceberg has no
    writer-options function to extend (files are then written with pyiceberg's defaults)."""
    import pyiceberg.io.pyarrow as pyiceberg_pyarrow

    from .schema import DELTA_COLUMNS_PROPERTY, DICTIONARY_COLUMNS_PROPERTY

    original = getattr(pyiceberg_pyarrow, "_get_parquet_writer_kwargs", None)
    if original is None:
        return False
    if getattr(original, "dexorder_encodings", False):
        return True

    def writer_kwargs(table_properties: Mapping[str, str]) -> dict[str, Any]:
        kwargs = dict(original(table_properties))
        delta = _columns(table_properties.get(DELTA_COLUMNS_PROPERTY))
        if delta:
            kwargs["use_dictionary"] = _columns(table_properties.get(DICTIONARY_COLUMNS_PROPERTY))
            kwargs["column_encoding"] = {name: "DELTA_BINARY_PACKED" for name in delta}
        return kwargs

    writer_kwargs.dexorder_encodings = True  # type: ignore[attr-defined]
    pyiceberg_pyarrow._get_parquet_writer_kwargs = writer_kwargs
    return True


_AVRO_SCHEMAS_KEPT = 64


def install_avro_schema_memo() -> bool:
    """Make pyiceberg convert each distinct Avro schema of a manifest or manifest list header
    to an Iceberg schema once per process, not once per file read (half of a small manifest's
    read time: every plan of a new snapshot reads its manifest list and new manifests, whose
    headers all carry the same few schemas). Idempotent; False if this pyiceberg reads headers
    otherwise (they are then converted as before)."""
    from pyiceberg.avro.file import AvroFileHeader

    original = AvroFileHeader.__dict__.get("get_schema")
    if original is None:
        return False
    if getattr(original, "dexorder_memo", False):
        return True
    converted: dict[str, Any] = {}
    lock = threading.Lock()

    def get_schema(self: Any) -> Any:
        text = self.meta.get("avro.schema") if isinstance(getattr(self, "meta", None), dict) else None
        if not isinstance(text, str):
            return original(self)
        schema = converted.get(text)
        if schema is None:
            schema = original(self)  # the Iceberg schema models are immutable: one can be shared
            with lock:
                if len(converted) >= _AVRO_SCHEMAS_KEPT:
                    converted.clear()
                converted[text] = schema
        return schema

    get_schema.dexorder_memo = True  # type: ignore[attr-defined]
    get_schema.original = original  # type: ignore[attr-defined]
    AvroFileHeader.get_schema = get_schema  # type: ignore[method-assign]
    return True


def write_data_files(table: Any, data: Any) -> list[Any]:
    """``data`` (an Arrow table in ``table``'s schema) written as data files of ``table``, as
    ``table.append`` would write them, without committing: the ``DataFile`` entries an append
    can add later (see :func:`append_files_staging_once`).

    Two of pyiceberg 0.12's steps are done faster, with the same outcome: the schema check is
    done once per table schema and Arrow schema (pyiceberg's builds a ``rich`` table of every
    field on each write, ~10 ms, and imports ``rich`` on the first); and a table partitioned by
    identity transforms only (every table of ours) is split into its partitions with one sort
    instead of one filter of the whole table per partition (~3 ms each). Files are then written
    by pyiceberg's own ``write_file``, as an append writes them."""
    from pyiceberg.io.pyarrow import _dataframe_to_data_files

    metadata = table.metadata
    check_write_schema(table, data.schema)
    split = _identity_partitions(metadata, data)
    if split is None:  # another transform: pyiceberg splits it
        return list(_dataframe_to_data_files(table_metadata=metadata, df=data, io=table.io))
    return _write_partitions(table, split)


_schema_checks: dict[tuple[Any, ...], bool] = {}
_schema_checks_lock = threading.Lock()


def check_write_schema(table: Any, arrow_schema: Any) -> None:
    """pyiceberg's write-time check that rows of ``arrow_schema`` fit ``table``, remembered per
    table schema and Arrow schema (a failed check raises every time)."""
    from pyiceberg.io.pyarrow import _check_pyarrow_schema_compatible

    metadata = table.metadata
    schema = metadata.schema()
    # the Arrow schema by its IPC bytes: older pyarrow cannot hash a schema with metadata
    key = (str(metadata.table_uuid), schema.schema_id, metadata.format_version, arrow_schema.serialize().to_pybytes())
    if key in _schema_checks:
        return
    _check_pyarrow_schema_compatible(schema, provided_schema=arrow_schema, format_version=metadata.format_version)
    with _schema_checks_lock:
        if len(_schema_checks) >= 256:
            _schema_checks.clear()
        _schema_checks[key] = True


def _identity_partitions(metadata: Any, data: Any) -> list[tuple[Any, Any]] | None:
    """``data`` split into ``(PartitionKey, rows)`` per partition of the table's spec, rows in
    their order within each; None when a partition field is not an identity transform of a
    top-level column (pyiceberg's own split handles those)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    from pyiceberg.partitioning import PartitionFieldValue, PartitionKey
    from pyiceberg.transforms import IdentityTransform

    spec, schema = metadata.spec(), metadata.schema()
    if spec.is_unpartitioned():
        return [(None, data)]
    names = []
    for field in spec.fields:
        name = schema.find_column_name(field.source_id)
        if not isinstance(field.transform, IdentityTransform) or name is None or name not in data.column_names:
            return None
        names.append(name)
    if data.num_rows == 0:
        return []
    codes = np.zeros(data.num_rows, dtype=np.int64)
    for name in names:
        encoded = pc.dictionary_encode(data[name].combine_chunks(), null_encoding="encode")
        codes = codes * len(encoded.dictionary) + encoded.indices.to_numpy(zero_copy_only=False)
    uniques, first, inverse = np.unique(codes, return_index=True, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(inverse, minlength=len(uniques)))])
    out = []
    for group in np.argsort(first, kind="stable"):  # partitions in the order they first occur
        row = int(first[group])
        values = [PartitionFieldValue(field=field, value=data[name][row].as_py())
                  for field, name in zip(spec.fields, names, strict=True)]
        rows = order[bounds[group]:bounds[group + 1]]
        part = data.slice(row, len(rows)) if rows[-1] - rows[0] == len(rows) - 1 else data.take(pa.array(rows))
        out.append((PartitionKey(field_values=values, partition_spec=spec, schema=schema), part.combine_chunks()))
    return out


def _write_partitions(table: Any, split: list[tuple[Any, Any]]) -> list[Any]:
    """The data files of ``split`` (as :func:`_identity_partitions` gives it), bin-packed and
    written by pyiceberg's ``write_file`` as ``_dataframe_to_data_files`` does."""
    import itertools
    import uuid

    from pyiceberg.io.pyarrow import bin_pack_arrow_table, pyarrow_to_schema, write_file
    from pyiceberg.table import DOWNCAST_NS_TIMESTAMP_TO_US_ON_WRITE, TableProperties, WriteTask
    from pyiceberg.utils.config import Config
    from pyiceberg.utils.properties import property_as_int

    if not split:
        return []
    metadata = table.metadata
    target = property_as_int(metadata.properties, TableProperties.WRITE_TARGET_FILE_SIZE_BYTES,
                             TableProperties.WRITE_TARGET_FILE_SIZE_BYTES_DEFAULT)
    assert target is not None  # the default is a number
    task_schema = pyarrow_to_schema(
        split[0][1].schema, name_mapping=metadata.schema().name_mapping,
        downcast_ns_timestamp_to_us=Config().get_bool(DOWNCAST_NS_TIMESTAMP_TO_US_ON_WRITE) or False,
        format_version=metadata.format_version)
    write_uuid, counter = uuid.uuid4(), itertools.count(0)
    tasks = [WriteTask(write_uuid=write_uuid, task_id=next(counter), record_batches=batches, partition_key=key,
                       schema=task_schema)
             for key, rows in split if rows.num_rows
             for batches in bin_pack_arrow_table(rows, target)]
    return list(write_file(io=table.io, table_metadata=metadata, tasks=iter(tasks)))


def append_staging_once(table: Any, data: Any) -> None:
    """``table.append(data)``, through a ``Transaction`` that works out its staged metadata once
    per change instead of on every look: pyiceberg 0.12 deep-copies the whole table metadata
    (every snapshot) each time ``Transaction.table_metadata`` is read, about 20 times per
    append, which was ~40% of a commit's time here. The metadata models are frozen, so the one
    copy can be shared."""
    with _memo_transaction_type()(table) as transaction:
        transaction.append(data)


def append_files_staging_once(table: Any, files: Sequence[Any]) -> None:
    """One snapshot adding the data files ``files`` (written by :func:`write_data_files`), made
    as :func:`append_staging_once` makes an append: the same transaction, and the snapshot
    producer ``table.append`` would use (fast or merging, by table property)."""
    with _memo_transaction_type()(table) as transaction:
        with transaction._append_snapshot_producer({}) as append_files:
            for data_file in files:
                append_files.append_data_file(data_file)


_memo_transaction: type | None = None


def _memo_transaction_type() -> type:
    global _memo_transaction
    if _memo_transaction is None:
        from pyiceberg.table import Transaction

        staged = Transaction.table_metadata

        class MemoTransaction(Transaction):
            _memo: tuple[Any, Any, Any] | None = None

            @property
            def table_metadata(self) -> Any:
                memo = self._memo
                if memo is not None and memo[0] is self._table.metadata and memo[1] is self._updates:
                    return memo[2]
                value = staged.fget(self)  # type: ignore[attr-defined]
                self._memo = (self._table.metadata, self._updates, value)
                return value

        _memo_transaction = MemoTransaction
    return _memo_transaction
