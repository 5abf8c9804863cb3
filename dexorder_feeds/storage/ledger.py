"""The coverage ledger's edits: forgetting ranges (``forget``) and dropping coverage whose
source data changed (files re-checked). Reads of the ledger live on :class:`Warehouse`.

Every edit here is a delete (plus, when a row is cut, the rest of it appended again) in one
transaction on a freshly loaded table, retried by :meth:`Warehouse.commit` from a new read
after a conflict: a retry never rewrites rows read before another writer's commit (the
overwrite trap of DESIGN.md). Coverage is dropped before candles, so a reader never sees a
range recorded as ingested whose candles are gone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from ..vocabulary.ranges import Interval, subtract_intervals
from .schema import CANDLES_TABLE, COVERAGE_TABLE
from .warehouse import Warehouse

__all__ = ["ForgetResult", "forget", "drop_stale_coverage"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ForgetResult:
    """What :func:`forget` dropped: coverage rows removed (or cut), and candles deleted."""

    coverage_rows: int
    candles: int


def _expressions() -> Any:
    from pyiceberg import expressions

    return expressions  # its predicates take (term, literal) at runtime; mypy reads them otherwise


def _ticker_filter(ticker: str, period_seconds: int | None) -> Any:
    ex = _expressions()
    term = ex.EqualTo("ticker", ticker)
    if period_seconds is not None:
        term = ex.And(term, ex.EqualTo("period_seconds", period_seconds))
    return term


def _adopt(warehouse: Warehouse, table: Any) -> None:
    try:
        warehouse.reader.adopt(table)
    except Exception:  # an optimisation only: readers see the catalog move anyway
        log.debug("could not share the committed metadata", exc_info=True)


def forget(warehouse: Warehouse, ticker: str, period_seconds: int | None = None,
           interval: Interval | None = None, *, candles: bool = False) -> ForgetResult:
    """Forget that ``ticker`` (one period, or all) was ingested in ``interval`` (µs, half-open;
    None: all time), so the next fetch asks its source again; with ``candles`` also delete the
    stored candles there (the source's values are then stored afresh).

    A coverage row reaching outside ``interval`` is cut: its parts outside stay recorded.
    Safe while others read and write; run it in the process's committer when one is in use.
    """
    ex = _expressions()

    def coverage_attempt() -> int:
        table = warehouse.load_table(COVERAGE_TABLE)
        if table.current_snapshot() is None:
            return 0
        where = _ticker_filter(ticker, period_seconds)
        if interval is not None:
            where = ex.And(where, ex.And(ex.LessThan("start_time", interval[1]), ex.GreaterThan("end_time", interval[0])))
        rows = table.scan(row_filter=where).to_arrow()
        if not rows.num_rows:
            return 0
        keep: list[dict[str, Any]] = []
        if interval is not None:
            for row in rows.to_pylist():
                for start, stop in subtract_intervals((row["start_time"], row["end_time"]), [interval]):
                    keep.append({**row, "start_time": start, "end_time": stop, "row_count": 0})
        with table.transaction() as transaction:
            transaction.delete(delete_filter=where)
            if keep:
                transaction.append(pa.Table.from_pylist(keep, schema=table.schema().as_arrow()))
        _adopt(warehouse, table)
        return int(rows.num_rows)

    def candles_attempt() -> int:
        table = warehouse.load_table(CANDLES_TABLE)
        if table.current_snapshot() is None:
            return 0
        where = _ticker_filter(ticker, period_seconds)
        if interval is not None:
            where = ex.And(where, ex.And(ex.GreaterThanOrEqual("timestamp", interval[0]),
                                         ex.LessThan("timestamp", interval[1])))
        count = table.scan(row_filter=where, selected_fields=("timestamp",)).to_arrow().num_rows
        if count:
            table.delete(delete_filter=where)
            _adopt(warehouse, table)
        return int(count)

    rows = warehouse.commit(f"forgetting coverage of {ticker}", coverage_attempt)
    deleted = warehouse.commit(f"deleting candles of {ticker}", candles_attempt) if candles else 0
    return ForgetResult(rows, deleted)


def drop_stale_coverage(warehouse: Warehouse, ticker: str, current: str | None,
                        period_seconds: int | None = None) -> int:
    """Drop ``ticker``'s coverage rows (of one period, or all) whose source fingerprint is not
    ``current`` (what they vouched for has changed; the historian re-checked those ranges
    first). Returns the rows dropped."""
    ex = _expressions()
    where = ex.And(_ticker_filter(ticker, period_seconds), ex.NotNull("fingerprint"))
    if current is not None:
        where = ex.And(where, ex.NotEqualTo("fingerprint", current))

    def attempt() -> int:
        table = warehouse.load_table(COVERAGE_TABLE)
        if table.current_snapshot() is None:
            return 0
        count = table.scan(row_filter=where, selected_fields=("start_time",)).to_arrow().num_rows
        if count:
            table.delete(delete_filter=where)
            _adopt(warehouse, table)
        return int(count)

    return warehouse.commit(f"dropping outdated coverage of {ticker}", attempt)
