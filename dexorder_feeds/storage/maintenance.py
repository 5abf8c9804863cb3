"""Warehouse maintenance: compaction of small files and expiry of old snapshots.

How it works inside: docs/internals.md, "Compaction and snapshot expiry".
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from .schema import TABLE_LAYOUTS, row_filter

if TYPE_CHECKING:
    from .warehouse import Warehouse

__all__ = [
    "MaintenancePolicy",
    "MANUAL",
    "CompactionResult",
    "ExpiryResult",
    "compact_partition",
    "compact_table",
    "expire_snapshots",
    "run_maintenance",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MaintenancePolicy:
    """When a warehouse maintains itself, and how much history it keeps.

    - ``auto``: maintain after commits (else only ``dexorder-feeds compact`` does). The
      committer compacts a partition once it holds ``compact_small_files`` files of fewer than
      ``small_file_rows`` rows, and expires snapshots once a table holds
      ``keep_snapshots + expire_batch`` of them; both run after the commit that crossed the
      threshold, on the committer thread, without blocking reads.
    - ``keep_snapshots``: the newest snapshots never expired (the current one included).
    - ``reader_grace_seconds``: a snapshot current this recently is never expired.
    - ``retention_seconds``: files replaced by a compaction stay on disk at least this long
      (its snapshot is kept as long). Longer keeps more snapshots, and every commit costs more
      per snapshot kept (pyiceberg 0.12 deep-copies the table metadata several times per commit).
    """

    auto: bool = True
    compact_small_files: int = 32
    small_file_rows: int = 16_384
    keep_snapshots: int = 4
    expire_batch: int = 8
    retention_seconds: float = 60.0
    reader_grace_seconds: float = 1.0


MANUAL = MaintenancePolicy(auto=False)
"""A policy that never maintains by itself (``dexorder-feeds compact`` or :func:`run_maintenance` do)."""


@dataclass(frozen=True)
class CompactionResult:
    """One compacted partition: files and rows before and after."""

    table: str
    partition: tuple
    files_before: int
    files_after: int
    rows_before: int
    rows_after: int

    @property
    def duplicates_dropped(self) -> int:
        return self.rows_before - self.rows_after


@dataclass(frozen=True)
class ExpiryResult:
    """Snapshots expired from one table and the files deleted with them."""

    table: str
    snapshots_expired: int
    snapshots_kept: int
    files_deleted: int




def _dedup_sorted(rows: pa.Table, keys: tuple[str, ...], sort_by: str | None) -> pa.Table:
    """Rows sorted by ``sort_by`` (stable), keeping the first row of each ``keys`` value."""
    if sort_by is not None and rows.num_rows > 1:
        rows = rows.sort_by(sort_by)
    if not keys or rows.num_rows < 2:
        return rows
    if keys == (sort_by,):
        values = rows[sort_by].to_numpy()
        keep = np.ones(values.size, dtype=bool)
        keep[1:] = values[1:] != values[:-1]
    else:
        frame = rows.select(list(keys)).to_pandas()
        keep = ~frame.duplicated().to_numpy()
    return rows if keep.all() else rows.filter(pa.array(keep))


def compact_partition(warehouse: Warehouse, table_name: str, partition: Mapping[str, Any],
                      *, min_files: int = 2) -> CompactionResult | None:
    """Rewrite one partition of a table as one sorted file, without duplicate keys.

    Call it on the committer thread. Returns None when the partition holds fewer than
    ``min_files`` files. Never loses a row: a concurrent commit makes the overwrite fail and
    the job start over from a fresh read.
    """

    layout = TABLE_LAYOUTS[table_name]
    partition_filter = row_filter(partition)

    def attempt() -> CompactionResult | None:
        table = warehouse.load_table(table_name)
        plan = warehouse.reader.plan(table)
        key = tuple(partition[name] for name in layout.partition_by)
        files = plan.partition_files(key)
        if plan.snapshot_id is None or len(files) < min_files:
            return None
        rows = warehouse.reader.read(table, partition)  # exactly this snapshot's rows
        compacted = _dedup_sorted(rows, layout.unique_by, layout.sort_by)
        if compacted.num_rows < rows.num_rows:
            log.warning("%s %s held %d duplicate rows; compaction keeps one of each",
                        table_name, key, rows.num_rows - compacted.num_rows)
        # The same Table the rows were read from: the commit requires that snapshot.
        table.overwrite(compacted, overwrite_filter=partition_filter)
        after = warehouse.reader.plan(table).partition_files(key)
        return CompactionResult(table_name, key, len(files), len(after), rows.num_rows, compacted.num_rows)

    result = warehouse.commit(f"compacting {table_name} {dict(partition)}", attempt)
    if result is not None:
        log.info("compacted %s %s: %d files -> %d, %d rows", table_name, result.partition,
                 result.files_before, result.files_after, result.rows_after)
    return result


def compact_table(warehouse: Warehouse, table_name: str, *, min_files: int = 2,
                  small_file_rows: int | None = None) -> list[CompactionResult]:
    """Compact every partition of a table holding at least ``min_files`` files (of fewer than
    ``small_file_rows`` rows, if given), or a file written in an older layout than the table's
    properties ask for (so an upgrade's layout reaches old data). Call it on the committer thread."""

    layout = TABLE_LAYOUTS[table_name]
    table = warehouse.load_table(table_name)
    plan = warehouse.reader.plan(table)
    results = []
    for key, files in plan.files.items():
        counted = [f for f in files if small_file_rows is None or f.record_count < small_file_rows]
        outdated = any(warehouse.reader.layout_outdated(table, f) for f in files)
        if len(counted) >= min_files or outdated:
            partition = dict(zip(layout.partition_by, key))
            result = compact_partition(warehouse, table_name, partition, min_files=1 if outdated else min_files)
            if result is not None:
                results.append(result)
    return results


def _manifest_lists(snapshots: Iterable[Any]) -> set[str]:
    return {s.manifest_list for s in snapshots if s.manifest_list}


def expire_snapshots(warehouse: Warehouse, table_name: str, *, keep_snapshots: int = MaintenancePolicy.keep_snapshots,
                     retention_seconds: float = MaintenancePolicy.retention_seconds,
                     reader_grace_seconds: float = MaintenancePolicy.reader_grace_seconds,
                     min_expired: int = 1, now_ms: int | None = None) -> ExpiryResult | None:
    """Expire old snapshots of a table and delete the files only they referenced.

    Call it on the committer thread. Returns None when fewer than ``min_expired`` snapshots
    may go. See docs/internals.md for what is kept.
    """
    from pyiceberg.table.snapshots import Operation

    keep_snapshots = max(1, keep_snapshots)

    def attempt() -> tuple[ExpiryResult, list[str]] | None:
        table = warehouse.load_table(table_name)
        metadata = table.metadata
        current = table.current_snapshot()
        if current is None:
            return None
        now = int(time.time() * 1000) if now_ms is None else now_ms
        protected = {ref.snapshot_id for ref in metadata.refs.values()}
        snapshot: Any = current
        for _ in range(keep_snapshots):
            if snapshot is None:
                break
            protected.add(snapshot.snapshot_id)
            parent = snapshot.parent_snapshot_id
            snapshot = metadata.snapshot_by_id(parent) if parent is not None else None
        cutoff = now - int(retention_seconds * 1000)
        grace_cutoff = now - int(reader_grace_seconds * 1000)
        log_entries = metadata.snapshot_log
        superseded = {a.snapshot_id: b.timestamp_ms for a, b in zip(log_entries, log_entries[1:])}

        def removes_files(s: Any) -> bool:
            return s.summary is None or s.summary.operation != Operation.APPEND

        def kept(s: Any) -> bool:
            return (s.snapshot_id in protected or superseded.get(s.snapshot_id, s.timestamp_ms) > grace_cutoff
                    or (removes_files(s) and s.timestamp_ms > cutoff))

        expired = [s for s in metadata.snapshots if not kept(s)]
        if len(expired) < min_expired or not expired:
            return None
        expired_ids = {s.snapshot_id for s in expired}
        live = [s for s in metadata.snapshots if s.snapshot_id not in expired_ids]
        io = table.io
        live_manifests = {m.manifest_path: m for s in live for m in s.manifests(io)}
        old_manifests = {m.manifest_path: m for s in expired for m in s.manifests(io)}
        gone_manifests = {p: m for p, m in old_manifests.items() if p not in live_manifests}
        mentioned_live = {e.data_file.file_path for m in live_manifests.values()
                          for e in m.fetch_manifest_entry(io, discard_deleted=False)}
        gone_files = {e.data_file.file_path for m in gone_manifests.values()
                      for e in m.fetch_manifest_entry(io, discard_deleted=False)} - mentioned_live
        garbage = sorted(gone_files) + sorted(gone_manifests) + sorted(_manifest_lists(expired) - _manifest_lists(live))
        table.maintenance.expire_snapshots().by_ids(sorted(expired_ids)).commit()
        return ExpiryResult(table_name, len(expired), len(live), len(garbage)), garbage

    outcome = warehouse.commit(f"expiring snapshots of {table_name}", attempt)
    if outcome is None:
        return None
    result, garbage = outcome
    io = warehouse.load_table(table_name).io
    for path in garbage:
        try:
            io.delete(path)
        except FileNotFoundError:
            pass
        except OSError as exc:  # a leftover file wastes space but breaks nothing
            log.warning("could not delete %s after expiring its snapshots: %s", path, exc)
    log.info("expired %d snapshots of %s (%d kept), deleted %d files", result.snapshots_expired, table_name,
             result.snapshots_kept, result.files_deleted)
    return result


def run_maintenance(warehouse: Warehouse, *, tables: Iterable[str] | None = None, min_files: int = 2,
                    keep_snapshots: int | None = None, retention_seconds: float | None = None,
                    reader_grace_seconds: float | None = None,
                    ) -> tuple[list[CompactionResult], list[ExpiryResult]]:
    """Compact every partition with ``min_files`` or more files, then expire old snapshots.

    What ``dexorder-feeds compact`` runs. The jobs run on the warehouse's committer thread;
    this call blocks until they are done.
    """

    policy = warehouse.maintenance
    keep = policy.keep_snapshots if keep_snapshots is None else keep_snapshots
    retention = policy.retention_seconds if retention_seconds is None else retention_seconds
    grace = policy.reader_grace_seconds if reader_grace_seconds is None else reader_grace_seconds
    names = list(tables) if tables is not None else list(TABLE_LAYOUTS)

    def job() -> tuple[list[CompactionResult], list[ExpiryResult]]:
        compacted: list[CompactionResult] = []
        expired: list[ExpiryResult] = []
        for name in names:
            compacted += compact_table(warehouse, name, min_files=min_files)
            result = expire_snapshots(warehouse, name, keep_snapshots=keep, retention_seconds=retention,
                                      reader_grace_seconds=grace)
            if result is not None:
                expired.append(result)
        return compacted, expired

    return warehouse.committer.submit(job).result()
