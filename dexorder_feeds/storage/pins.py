"""Pins: named, kept snapshots of the warehouse, stored as standard Iceberg tags.

A pin tags the current snapshot of the candle, coverage and market tables under one name, so any
Iceberg reader (pyiceberg, DuckDB, Spark) can read the same candles by that name, and so snapshot
expiry and compaction never remove them. :func:`read_point` turns a fetch's ``as_of`` (a pin name
or a candle-table snapshot id) into the snapshots to read. See docs/reproducibility.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..vocabulary.errors import InvalidRequestError, UnknownSnapshotError
from .schema import CANDLES_TABLE, COVERAGE_TABLE, MARKETS_TABLE

if TYPE_CHECKING:
    from .warehouse import Warehouse

__all__ = ["Pin", "ReadPoint", "create_pin", "remove_pin", "list_pins", "read_point", "PINNED_TABLES"]

# Coverage before candles: the historian commits candles first, so every range the pinned
# coverage calls ingested has its candles in the candle snapshot tagged after it.
PINNED_TABLES = (COVERAGE_TABLE, MARKETS_TABLE, CANDLES_TABLE)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_RESERVED = {"main"}


@dataclass(frozen=True)
class Pin:
    """A pin as listed: its name, the candle snapshot it keeps, when that snapshot was made (ms
    since the epoch), and the candles and bytes of data files that snapshot holds."""

    name: str
    snapshot_id: int
    timestamp_ms: int
    candles: int
    data_bytes: int


@dataclass(frozen=True)
class ReadPoint:
    """What a read ``as_of`` reads: the candle snapshot, and the coverage snapshot that goes with
    it (None when the warehouse no longer keeps one: coverage is then unknown)."""

    label: str
    candles_snapshot: int | None
    coverage_snapshot: int | None
    time: int | None = None
    """When the candle snapshot was made, µs since the epoch."""


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name in _RESERVED:
        raise InvalidRequestError(
            f"invalid pin name {name!r}: use 1-100 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit (and not 'main')")
    return name


def _tag_of(table: Any, name: str) -> int | None:
    ref = table.metadata.refs.get(name)
    return ref.snapshot_id if ref is not None and str(ref.snapshot_ref_type) == "tag" else None


def create_pin(warehouse: Warehouse, name: str) -> Pin:
    """Tag the current snapshot of every table as ``name``; refuses a name already pinned."""
    _check_name(name)
    warehouse.ensure_tables()

    def job() -> None:
        for table_name in PINNED_TABLES:
            def attempt() -> None:
                table = warehouse.load_table(table_name)
                if name in table.metadata.refs:
                    if table_name == CANDLES_TABLE:
                        raise InvalidRequestError(f"a pin named {name!r} exists; unpin it first or choose another name")
                    table.manage_snapshots().remove_tag(name).commit()  # left by an unfinished pin
                    table = warehouse.load_table(table_name)
                snapshot = table.current_snapshot()
                if snapshot is not None:
                    table.manage_snapshots().create_tag(snapshot.snapshot_id, name).commit()

            warehouse.commit(f"pinning {name} on {table_name}", attempt)

    warehouse.committer.submit(job).result()
    for pin in list_pins(warehouse):
        if pin.name == name:
            return pin
    raise UnknownSnapshotError(f"nothing to pin: the warehouse holds no candles yet ({name!r} not created)")


def remove_pin(warehouse: Warehouse, name: str) -> None:
    """Drop the pin ``name`` from every table; its snapshots then expire like any other."""
    _check_name(name)

    def job() -> bool:
        found = False
        for table_name in PINNED_TABLES:
            def attempt() -> bool:
                table = warehouse.load_table(table_name)
                if _tag_of(table, name) is None:
                    return False
                table.manage_snapshots().remove_tag(name).commit()
                return True

            found = warehouse.commit(f"unpinning {name} on {table_name}", attempt) or found
        return found

    if not warehouse.committer.submit(job).result():
        raise UnknownSnapshotError(f"no pin named {name!r}; `dexorder-feeds pins` lists them")


def list_pins(warehouse: Warehouse) -> list[Pin]:
    """Every pin, oldest snapshot first."""
    table = warehouse.load_table(CANDLES_TABLE)
    pins = []
    for name, ref in table.metadata.refs.items():
        if str(ref.snapshot_ref_type) != "tag":
            continue
        snapshot = table.metadata.snapshot_by_id(ref.snapshot_id)
        summary = snapshot.summary if snapshot is not None else None
        pins.append(Pin(name, ref.snapshot_id, snapshot.timestamp_ms if snapshot is not None else 0,
                        int(summary["total-records"]) if summary is not None and "total-records" in summary else 0,
                        int(summary["total-files-size"]) if summary is not None and "total-files-size" in summary else 0))
    return sorted(pins, key=lambda pin: (pin.timestamp_ms, pin.name))


def read_point(warehouse: Warehouse, as_of: str | int) -> ReadPoint:
    """Resolve ``as_of``: a pin name, or the id of a candle-table snapshot still kept."""
    candles = warehouse.load_table(CANDLES_TABLE)
    coverage = warehouse.load_table(COVERAGE_TABLE)
    if isinstance(as_of, str) and not as_of.lstrip("-").isdigit():
        _check_name(as_of)
        snapshot_id = _tag_of(candles, as_of)
        if snapshot_id is None:
            raise UnknownSnapshotError(f"no pin named {as_of!r}; `dexorder-feeds pins` lists them")
        made = candles.metadata.snapshot_by_id(snapshot_id)
        return ReadPoint(as_of, snapshot_id, _tag_of(coverage, as_of), made.timestamp_ms * 1000 if made else None)
    if isinstance(as_of, bool) or not isinstance(as_of, (int, str)):
        raise InvalidRequestError(f"as_of must be a pin name or a snapshot id (an integer), not {as_of!r}")
    snapshot_id = int(as_of)
    snapshot = candles.metadata.snapshot_by_id(snapshot_id)
    if snapshot is None:
        raise UnknownSnapshotError(
            f"snapshot {snapshot_id} is not kept by the warehouse: it expired or never existed. Pin a "
            "result's snapshot (`dexorder-feeds pin NAME`) to keep it, or raise the snapshot retention")
    return ReadPoint(str(snapshot_id), snapshot_id, _coverage_for(candles, coverage, snapshot),
                     snapshot.timestamp_ms * 1000)


def _coverage_for(candles: Any, coverage: Any, snapshot: Any) -> int | None:
    """The coverage snapshot that goes with a candle snapshot, or None if it is no longer known.

    A pin's own; for the current candle snapshot the current coverage; otherwise the last coverage
    commit before the next candle commit (coverage is committed right after the candles it
    describes). When that next commit expired, an older coverage snapshot may be chosen: it can
    only call less "ingested", never more.
    """
    for name, ref in candles.metadata.refs.items():
        if str(ref.snapshot_ref_type) == "tag" and ref.snapshot_id == snapshot.snapshot_id:
            tagged = _tag_of(coverage, name)
            if tagged is not None:
                return tagged
    current = candles.current_snapshot()
    if current is not None and current.snapshot_id == snapshot.snapshot_id:
        latest = coverage.current_snapshot()
        return latest.snapshot_id if latest is not None else None
    children = [s for s in candles.metadata.snapshots if s.parent_snapshot_id == snapshot.snapshot_id]
    if not children:
        return None
    bound = min(s.timestamp_ms for s in children)
    before = [s for s in coverage.metadata.snapshots if s.timestamp_ms < bound]
    return max(before, key=lambda s: (s.timestamp_ms, s.sequence_number)).snapshot_id if before else None
