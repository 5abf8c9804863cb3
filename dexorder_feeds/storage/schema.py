"""The warehouse's tables: names, Iceberg schemas, partitioning, sort order and table properties.

What each table holds and why it is laid out so is in docs/architecture.md ("The warehouse").
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

__all__ = [
    "CANDLES_TABLE", "MARKETS_TABLE", "COVERAGE_TABLE", "CANDLE_COLUMNS", "REQUIRED_CANDLE_COLUMNS",
    "ROW_GROUP_ROWS", "LOAD_ORDER", "TABLE_PROPERTIES", "SUPERSEDED_PROPERTIES", "properties_to_update",
    "DELTA_COLUMNS_PROPERTY", "DICTIONARY_COLUMNS_PROPERTY", "TableLayout", "TABLE_LAYOUTS", "table_schemas",
    "ticker_period_spec", "candle_arrow_schema", "coverage_arrow_schema", "row_filter", "ADDED_COLUMNS",
]

CANDLES_TABLE = "ohlc"
MARKETS_TABLE = "markets"
COVERAGE_TABLE = "coverage"
CANDLE_COLUMNS = (
    "ticker", "period_seconds", "timestamp", "open", "high", "low", "close",
    "volume", "buy_vol", "sell_vol", "open_interest",
)
REQUIRED_CANDLE_COLUMNS = CANDLE_COLUMNS[:8]
# A row group is what a range read decodes at least (its timestamp statistics say which to
# skip) and what the decoded row-group cache holds: 32,768 one-minute candles are ~23 days. Bulk
# reads pay per row group, small ones per row decoded; 4,096 (before) cost a million-candle read
# 256 row groups, 32,768 costs it 32 and a 168-candle read ~0.3 ms more when nothing is cached.
ROW_GROUP_ROWS = 32768

# Parquet encodings pyiceberg's table properties cannot express (its writer passes no
# ``column_encoding``); _pyiceberg_shortcuts.install_parquet_encodings adds them from these two
# properties of ours. Sorted timestamps and random-walk prices delta-encode to 1-3 bytes a value
# (18 bytes a candle against 52 with dictionary fallback to PLAIN), and decode ~4x faster than
# zstd. Any Parquet reader reads DELTA_BINARY_PACKED (a Parquet 2 encoding: pyarrow, DuckDB,
# Spark and Iceberg's Java readers). Columns named here that a table lacks are ignored.
DELTA_COLUMNS_PROPERTY = "dexorder.write.parquet.delta-columns"
DICTIONARY_COLUMNS_PROPERTY = "dexorder.write.parquet.dictionary-columns"
DELTA_COLUMNS = (
    "timestamp", "open", "high", "low", "close", "volume", "buy_vol", "sell_vol", "open_interest",
    "start_time", "end_time", "row_count", "ingested_at", "updated_at",
)
DICTIONARY_COLUMNS = ("ticker", "period_seconds", "request_id", "source", "price_decimals", "volume_decimals")


@dataclass(frozen=True)
class TableLayout:
    """How a table is partitioned, which column its files are sorted by (and range reads cut),
    and which columns compaction keeps unique within a partition."""

    partition_by: tuple[str, ...]
    sort_by: str | None
    unique_by: tuple[str, ...]


# Where reads cannot see every table at one instant (a REST catalog: one load per table), tables
# are loaded in this order: each is then at least as new as those before it. The historian
# commits candles before their coverage row, so coverage loaded before candles never says a
# range is ingested whose candles the candles table read does not hold.
LOAD_ORDER = (COVERAGE_TABLE, MARKETS_TABLE, CANDLES_TABLE)

TABLE_LAYOUTS: dict[str, TableLayout] = {
    CANDLES_TABLE: TableLayout(("ticker", "period_seconds"), "timestamp", ("timestamp",)),
    COVERAGE_TABLE: TableLayout(("ticker", "period_seconds"), "start_time", ()),
    MARKETS_TABLE: TableLayout((), "updated_at", ()),
}

# Every table: conflicts come back to Warehouse.commit (pyiceberg's own retry would rebase a
# write onto a snapshot its duplicate check never read); manifests merged; old metadata files
# deleted; full ticker statistics so a partition overwrite drops whole files.
TABLE_PROPERTIES = {
    "commit.retry.num-retries": "0",
    "commit.manifest-merge.enabled": "true",
    "commit.manifest.min-count-to-merge": "16",
    "write.metadata.delete-after-commit.enabled": "true",
    "write.metadata.previous-versions-max": "20",
    "write.metadata.metrics.column.ticker": "full",
    "write.parquet.row-group-limit": str(ROW_GROUP_ROWS),
    "write.parquet.compression-codec": "lz4",
    DELTA_COLUMNS_PROPERTY: ",".join(DELTA_COLUMNS),
    DICTIONARY_COLUMNS_PROPERTY: ",".join(DICTIONARY_COLUMNS),
}

# Values earlier versions of this package set, which ensure_tables replaces with the current
# ones (a value set by hand, anything else, is left alone). New files get the new layout at
# once; compaction rewrites old files into it.
SUPERSEDED_PROPERTIES: dict[str, tuple[str, ...]] = {
    "write.parquet.row-group-limit": ("4096",),
}


def properties_to_update(current: Mapping[str, str]) -> dict[str, str]:
    """The table properties a table with ``current`` properties lacks or holds at a superseded value."""
    return {key: value for key, value in TABLE_PROPERTIES.items()
            if key not in current or (current[key] != value and current[key] in SUPERSEDED_PROPERTIES.get(key, ()))}



# Columns added after a table's first release: (table, column), optional strings. A warehouse
# created before them gains them when it is opened (Warehouse.ensure_tables); its older rows
# read them as null.
ADDED_COLUMNS: tuple[tuple[str, str], ...] = ((COVERAGE_TABLE, "source"), (COVERAGE_TABLE, "fingerprint"))


def table_schemas() -> dict[str, Any]:
    from pyiceberg.schema import Schema
    from pyiceberg.types import IntegerType, LongType, NestedField, StringType

    candles = Schema(
        *[
            NestedField(i + 1, name, StringType() if name == "ticker" else LongType(),
                        required=name in REQUIRED_CANDLE_COLUMNS)
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
        NestedField(8, "source", StringType(), required=False),
        NestedField(9, "fingerprint", StringType(), required=False),
    )
    return {CANDLES_TABLE: candles, MARKETS_TABLE: markets, COVERAGE_TABLE: coverage}


def ticker_period_spec(schema: Any) -> Any:
    from pyiceberg.partitioning import PartitionField, PartitionSpec
    from pyiceberg.transforms import IdentityTransform

    return PartitionSpec(
        PartitionField(schema.find_field("ticker").field_id, 1000, IdentityTransform(), "ticker"),
        PartitionField(schema.find_field("period_seconds").field_id, 1001, IdentityTransform(), "period_seconds"),
    )


@functools.cache
def candle_arrow_schema() -> pa.Schema:
    """The Arrow schema of the ``ohlc`` table (and of a fetch's result). Built once (~1.7 ms:
    every gap fill and every empty read asks for it)."""
    return table_schemas()[CANDLES_TABLE].as_arrow()


@functools.cache
def coverage_arrow_schema() -> pa.Schema:
    """The Arrow schema of the ``coverage`` table, built once."""
    return table_schemas()[COVERAGE_TABLE].as_arrow()


def row_filter(equal: Mapping[str, Any], column: str | None = None, start: int | None = None,
               stop: int | None = None) -> Any:
    """pyiceberg's ``a = x AND b = y AND start <= column < stop`` (``AlwaysTrue`` for no terms)."""
    from pyiceberg import expressions

    # Its predicates are pydantic models whose generated __init__ mypy reads as (term, type, value);
    # at runtime they take (term, literal).
    ex: Any = expressions
    terms = [ex.EqualTo(name, value) for name, value in equal.items()]
    if column is not None and start is not None:
        terms.append(ex.GreaterThanOrEqual(column, start))
    if column is not None and stop is not None:
        terms.append(ex.LessThan(column, stop))
    if not terms:
        return ex.AlwaysTrue()
    return terms[0] if len(terms) == 1 else ex.And(*terms)
