"""Each shortcut past pyiceberg's public API gives pyiceberg's own answer, on the same
snapshots: after appends, after compaction, after snapshot expiry, and on a snapshot pyarrow
alone cannot read (an evolved partition spec), which the reader must hand back to the scan."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from dexorder_feeds.storage._pyiceberg_shortcuts import (
    SqlMetadataLocations,
    append_staging_once,
    plan_appends,
    plan_snapshot,
    table_from_metadata,
)
from dexorder_feeds.storage.catalog import open_catalog
from dexorder_feeds.storage.maintenance import MANUAL, compact_partition, compact_table, expire_snapshots
from dexorder_feeds.storage.schema import (
    DELTA_COLUMNS_PROPERTY,
    DICTIONARY_COLUMNS_PROPERTY,
    ROW_GROUP_ROWS,
    candle_arrow_schema,
    row_filter,
)
from dexorder_feeds.storage.warehouse import Warehouse

H = 3_600_000_000
START = 1_735_689_600_000_000  # 2025-01-01 00:00 UTC
TICKERS = ("SIM:BTC/USDT", "SIM:ETH/USDT")


def candles(ticker: str, timestamps: list[int]) -> pa.Table:
    n = len(timestamps)
    values = np.arange(n, dtype=np.int64) + 1000
    columns: dict[str, object] = {"ticker": [ticker] * n, "period_seconds": [3600] * n, "timestamp": timestamps}
    columns.update({c: values for c in ("open", "high", "low", "close", "volume")})
    columns.update({"buy_vol": [None] * n, "sell_vol": values, "open_interest": [None] * n})
    return pa.table(columns, schema=candle_arrow_schema())


def append_blocks(warehouse: Warehouse, blocks: range) -> None:
    for ticker in TICKERS:
        for block in blocks:
            stamps = [START + (block * 24 + i) * H for i in range(24)]
            warehouse.append_new_candles(ticker, 3600, (stamps[0], stamps[-1] + H), candles(ticker, stamps))


def public_scan(table, ticker: str, start: int | None = None, stop: int | None = None) -> pa.Table:
    filtered = table.scan(row_filter=row_filter({"ticker": ticker, "period_seconds": 3600}, "timestamp", start, stop))
    return filtered.to_arrow().sort_by("timestamp")


def live_files(table) -> set[str]:
    return {task.file.file_path for task in table.scan().plan_files()}


def assert_shortcuts_agree(warehouse: Warehouse, *, direct: bool = True) -> None:
    """Every shortcut against the public API, on the catalog's current snapshot."""
    public = warehouse.catalog.load_table(f"{warehouse.namespace}.ohlc")
    snapshot = public.current_snapshot()

    locations = SqlMetadataLocations(warehouse.catalog, warehouse.namespace)
    assert locations.read()["ohlc"] == public.metadata_location

    rebuilt = table_from_metadata(warehouse.catalog, public.name(), public.metadata, public.metadata_location, public.io)
    assert rebuilt.current_snapshot().snapshot_id == snapshot.snapshot_id
    assert public_scan(rebuilt, TICKERS[0]).equals(public_scan(public, TICKERS[0]))

    plan = plan_snapshot(public, snapshot)
    assert plan.snapshot_id == snapshot.snapshot_id
    assert plan.direct is direct
    assert {f.path for files in plan.files.values() for f in files} == live_files(public)
    for ticker in TICKERS:
        planned = [f for key, files in plan.files.items() if key[0] == ticker for f in files]
        assert sum(f.record_count for f in planned) == public_scan(public, ticker).num_rows
        for f in planned:  # the bounds the reader prunes by are the file's real min and max
            field_id = public.schema().find_field("timestamp").field_id
            lo, hi = f.long_bounds(field_id)
            stamps = pa.parquet.read_table(f.path.removeprefix("file://"), columns=["timestamp"])["timestamp"]
            assert (lo, hi) == (pa.compute.min(stamps).as_py(), pa.compute.max(stamps).as_py())

    # The reader (shortcuts and its own Parquet reads) against the public scan, over ranges
    # that cut files and row groups.
    warehouse.reader.forget()
    (mine,) = warehouse.reader.tables("ohlc")
    assert mine.metadata_location == public.metadata_location
    for ticker in TICKERS:
        for start, stop in ((None, None), (START + 5 * H, START + 30 * H), (START + 47 * H, START + 49 * H),
                            (START - 10 * H, START), (START + 10_000 * H, None)):
            ours = warehouse.reader.read(mine, {"ticker": ticker, "period_seconds": 3600},
                                         range_column="timestamp", start=start, stop=stop)
            assert ours.equals(public_scan(public, ticker, start, stop)), (ticker, start, stop)


@pytest.fixture
def warehouse(catalog_uri):
    wh = Warehouse(open_catalog(catalog_uri), maintenance=MANUAL)
    wh.ensure_tables()
    yield wh
    wh.close()


def test_after_appends(warehouse):
    append_blocks(warehouse, range(4))
    assert_shortcuts_agree(warehouse)


def test_incremental_plans_equal_full_plans(warehouse):
    plans: dict[int, object] = {}
    for block in range(5):
        append_blocks(warehouse, range(block, block + 1))
        table = warehouse.catalog.load_table(f"{warehouse.namespace}.ohlc")
        snapshot = table.current_snapshot()
        full = plan_snapshot(table, snapshot)
        step = plan_appends(table, snapshot, plans.get)
        if block == 0:
            assert step is None  # nothing cached to build on
        else:
            assert step is not None
            assert {k: sorted(f.path for f in v) for k, v in step.files.items()} == \
                   {k: sorted(f.path for f in v) for k, v in full.files.items()}
        plans[snapshot.snapshot_id] = full
    assert len(full.partition_files((TICKERS[0], 3600))) == 5


def test_after_compaction(warehouse):
    append_blocks(warehouse, range(6))
    before = warehouse.catalog.load_table(f"{warehouse.namespace}.ohlc")
    before_plan = plan_snapshot(before, before.current_snapshot())
    result = warehouse.committer.submit(compact_partition, warehouse, "ohlc",
                                        {"ticker": TICKERS[0], "period_seconds": 3600}).result()
    assert result is not None and result.files_after == 1
    assert_shortcuts_agree(warehouse)
    # An overwrite (pyiceberg writes a delete, then an append) is not an append: no incremental
    # plan may be built across it from the plan cached before it.
    table = warehouse.catalog.load_table(f"{warehouse.namespace}.ohlc")
    cached = {before_plan.snapshot_id: before_plan}
    assert plan_appends(table, table.current_snapshot(), cached.get) is None


def test_after_snapshot_expiry(warehouse):
    append_blocks(warehouse, range(6))
    warehouse.committer.submit(compact_partition, warehouse, "ohlc", {"ticker": TICKERS[1], "period_seconds": 3600}).result()
    expired = warehouse.committer.submit(
        lambda: expire_snapshots(warehouse, "ohlc", keep_snapshots=1, retention_seconds=0, reader_grace_seconds=0)
    ).result()
    assert expired is not None and expired.snapshots_expired > 0
    assert_shortcuts_agree(warehouse)


def test_a_snapshot_pyarrow_cannot_read_alone_goes_back_to_the_scan(warehouse):
    append_blocks(warehouse, range(3))
    table = warehouse.load_table("ohlc")
    with table.update_spec() as update:  # files written before keep the old spec id
        update.remove_field("period_seconds")
    warehouse.reader.forget()
    append_blocks(warehouse, range(3, 5))
    assert_shortcuts_agree(warehouse, direct=False)


def encodings(path: str) -> dict[str, set[str]]:
    """Every column's Parquet encodings over all row groups of a data file."""
    metadata = pa.parquet.read_metadata(path.removeprefix("file://"))
    out: dict[str, set[str]] = {}
    for i in range(metadata.num_row_groups):
        group = metadata.row_group(i)
        for j in range(group.num_columns):
            out.setdefault(group.column(j).path_in_schema, set()).update(group.column(j).encodings)
    return out


def partition_paths(warehouse: Warehouse, ticker: str) -> list[str]:
    table = warehouse.catalog.load_table(f"{warehouse.namespace}.ohlc")
    return [f.path for f in plan_snapshot(table, table.current_snapshot()).partition_files((ticker, 3600))]


def test_new_files_delta_encode_their_long_columns(warehouse):
    append_blocks(warehouse, range(2))
    for path in partition_paths(warehouse, TICKERS[0]):
        found = encodings(path)
        for column in ("timestamp", "open", "close", "sell_vol"):
            assert "DELTA_BINARY_PACKED" in found[column], (column, found[column])
            assert "RLE_DICTIONARY" not in found[column]
        assert "RLE_DICTIONARY" in found["ticker"]
    coverage = warehouse.catalog.load_table(f"{warehouse.namespace}.coverage")
    assert coverage.properties[DELTA_COLUMNS_PROPERTY]  # every table gets the same properties
    assert_shortcuts_agree(warehouse)


def test_a_warehouse_of_the_old_layout_reads_the_same_and_compaction_moves_it_to_the_new(catalog_uri):
    old = Warehouse(open_catalog(catalog_uri), maintenance=MANUAL)
    old.ensure_tables()
    for name in ("ohlc", "coverage", "markets"):  # as an older version of this package left them
        table = old.load_table(name)
        with table.transaction() as transaction:
            transaction.remove_properties(DELTA_COLUMNS_PROPERTY, DICTIONARY_COLUMNS_PROPERTY)
            transaction.set_properties({"write.parquet.row-group-limit": "4096"})
    old.reader.forget()
    stamps = [START + i * H for i in range(10_000)]
    old.append_new_candles(TICKERS[0], 3600, (stamps[0], stamps[-1] + H), candles(TICKERS[0], stamps))
    (old_file,) = partition_paths(old, TICKERS[0])
    assert "DELTA_BINARY_PACKED" not in encodings(old_file)["timestamp"]
    assert pa.parquet.read_metadata(old_file.removeprefix("file://")).num_row_groups == 3
    old.close()

    new = Warehouse(open_catalog(catalog_uri, cache=False), maintenance=MANUAL)  # a process of the new version
    new.ensure_tables()  # the superseded row-group limit and the missing encodings are updated
    properties = new.load_table("ohlc").properties
    assert properties["write.parquet.row-group-limit"] == str(ROW_GROUP_ROWS)
    assert properties[DELTA_COLUMNS_PROPERTY] and properties[DICTIONARY_COLUMNS_PROPERTY]
    more = [START + (10_000 + i) * H for i in range(48)]
    new.append_new_candles(TICKERS[0], 3600, (more[0], more[-1] + H), candles(TICKERS[0], more))
    new.append_new_candles(TICKERS[1], 3600, (more[0], more[-1] + H), candles(TICKERS[1], more))
    new_files = [p for p in partition_paths(new, TICKERS[0]) if p != old_file]
    assert len(new_files) == 1 and "DELTA_BINARY_PACKED" in encodings(new_files[0])["timestamp"]
    assert_shortcuts_agree(new)  # old and new files side by side read as pyiceberg reads them

    result = new.committer.submit(compact_partition, new, "ohlc", {"ticker": TICKERS[0], "period_seconds": 3600}).result()
    assert result is not None and result.rows_after == 10_048
    (compacted,) = partition_paths(new, TICKERS[0])
    assert "DELTA_BINARY_PACKED" in encodings(compacted)["timestamp"]
    assert pa.parquet.read_metadata(compacted.removeprefix("file://")).num_row_groups == 1
    assert_shortcuts_agree(new)
    new.close()


def test_compact_table_rewrites_a_lone_file_of_the_old_layout(catalog_uri):
    old = Warehouse(open_catalog(catalog_uri), maintenance=MANUAL)
    old.ensure_tables()
    table = old.load_table("ohlc")
    table.transaction().remove_properties(DELTA_COLUMNS_PROPERTY).commit_transaction()
    old.reader.forget()
    for ticker in TICKERS:
        stamps = [START + i * H for i in range(100)]
        old.append_new_candles(ticker, 3600, (stamps[0], stamps[-1] + H), candles(ticker, stamps))
    before = {ticker: partition_paths(old, ticker) for ticker in TICKERS}
    old.close()
    new = Warehouse(open_catalog(catalog_uri, cache=False), maintenance=MANUAL)
    new.ensure_tables()
    results = new.committer.submit(compact_table, new, "ohlc").result()
    assert sorted(r.partition[0] for r in results) == sorted(TICKERS)  # lone old files, rewritten
    for ticker in TICKERS:
        (after,) = partition_paths(new, ticker)
        assert after not in before[ticker] and "DELTA_BINARY_PACKED" in encodings(after)["timestamp"]
    assert new.committer.submit(compact_table, new, "ohlc").result() == []  # nothing outdated now
    assert_shortcuts_agree(new)
    new.close()


def test_a_hand_set_row_group_limit_is_left_alone(catalog_uri):
    first = Warehouse(open_catalog(catalog_uri), maintenance=MANUAL)
    first.ensure_tables()
    first.load_table("ohlc").transaction().set_properties({"write.parquet.row-group-limit": "10000"}).commit_transaction()
    first.close()
    again = Warehouse(open_catalog(catalog_uri, cache=False), maintenance=MANUAL)
    again.ensure_tables()
    assert again.load_table("ohlc").properties["write.parquet.row-group-limit"] == "10000"
    again.close()


def test_append_staging_once_commits_what_a_public_append_commits(catalog_uri, tmp_path):
    """The same appends through the shortcut and through ``Table.append`` into two warehouses:
    the same rows, one snapshot per append with the same summary, and a conflicting commit
    still refused (the staged metadata is not reused across a change of the table)."""
    from pyiceberg.exceptions import CommitFailedException

    ours = Warehouse(open_catalog(catalog_uri), maintenance=MANUAL)
    public = Warehouse(open_catalog(f"sqlite:///{tmp_path / 'public' / 'catalog.db'}"), maintenance=MANUAL)
    try:
        for wh in (ours, public):
            wh.ensure_tables()
        blocks = [candles(TICKERS[i % 2], [START + (i * 24 + h) * H for h in range(24)]) for i in range(4)]
        mine = ours.load_table("ohlc")
        theirs = public.load_table("ohlc")
        for block in blocks:
            append_staging_once(mine, block)
            theirs.append(block)
        mine, theirs = ours.load_table("ohlc"), public.load_table("ohlc")
        assert len(mine.metadata.snapshots) == len(theirs.metadata.snapshots) == len(blocks)
        for a, b in zip(mine.metadata.snapshots, theirs.metadata.snapshots):
            for key in ("operation", "added-records", "total-records", "added-data-files", "total-data-files"):
                assert a.summary[key] == b.summary[key], key
        for ticker in TICKERS:
            assert public_scan(mine, ticker).equals(public_scan(theirs, ticker))

        stale = ours.load_table("ohlc")
        append_staging_once(ours.load_table("ohlc"), blocks[0])  # another writer moves the table on
        with pytest.raises(CommitFailedException):
            append_staging_once(stale, blocks[1])
        assert ours.load_table("ohlc").scan().to_arrow().num_rows == 5 * 24
    finally:
        ours.close()
        public.close()


def _file_summary(table) -> list[tuple]:
    """(partition, rows, min and max timestamp) of each live data file, sorted."""
    field_id = table.schema().find_field("timestamp").field_id
    out = []
    for task in table.scan().plan_files():
        f = task.file
        lo = int.from_bytes(f.lower_bounds[field_id], "little", signed=True)
        hi = int.from_bytes(f.upper_bounds[field_id], "little", signed=True)
        out.append((tuple(f.partition), f.record_count, lo, hi))
    return sorted(out)


@pytest.mark.parametrize("layout", ["interleaved", "sorted"])
def test_write_data_files_writes_what_a_public_append_writes(catalog_uri, tmp_path, layout):
    """Rows of several partitions (interleaved, or sorted so each partition is one run) written
    by the shortcut and appended, and the same rows through ``Table.append``: the same files
    per partition, with the same rows, counts and bounds."""
    from dexorder_feeds.storage._pyiceberg_shortcuts import append_files_staging_once, write_data_files

    ours = Warehouse(open_catalog(catalog_uri), maintenance=MANUAL)
    public = Warehouse(open_catalog(f"sqlite:///{tmp_path / 'public' / 'catalog.db'}"), maintenance=MANUAL)
    try:
        for wh in (ours, public):
            wh.ensure_tables()
        blocks = [candles(ticker, [START + (i * 24 + h) * H for h in range(24)])
                  for i in range(3) for ticker in (*TICKERS, "SIM:SOL/USDT")]
        rows = pa.concat_tables(blocks)
        if layout == "sorted":
            rows = rows.sort_by([("ticker", "ascending"), ("timestamp", "ascending")])
        for _ in range(2):  # the second write finds the schema check already done
            mine = ours.load_table("ohlc")
            files = write_data_files(mine, rows)
            assert len(files) == 3  # one per partition
            append_files_staging_once(mine, files)
            public.load_table("ohlc").append(rows)
        mine, theirs = ours.load_table("ohlc"), public.load_table("ohlc")
        assert _file_summary(mine) == _file_summary(theirs)
        for ticker in (*TICKERS, "SIM:SOL/USDT"):
            assert public_scan(mine, ticker).equals(public_scan(theirs, ticker))
        for a, b in zip(mine.metadata.snapshots, theirs.metadata.snapshots):
            for key in ("added-records", "total-records", "added-data-files", "changed-partition-count"):
                assert a.summary[key] == b.summary[key], key
    finally:
        ours.close()
        public.close()


def test_write_data_files_refuses_rows_that_do_not_fit_each_time(warehouse):
    """The schema check is remembered only when it passes: rows missing a column are refused on
    every write, as pyiceberg refuses them."""
    from dexorder_feeds.storage._pyiceberg_shortcuts import write_data_files

    table = warehouse.load_table("ohlc")
    good = candles(TICKERS[0], [START + h * H for h in range(4)])
    assert sum(f.record_count for f in write_data_files(table, good)) == 4
    bad = good.drop_columns(["close"])
    for _ in range(2):
        with pytest.raises(ValueError, match="close"):
            write_data_files(table, bad)


def test_write_data_files_of_a_table_with_another_transform_goes_through_pyiceberg(warehouse):
    """A partition transform other than identity (not ours, but a table can be made so; the one
    pyiceberg 0.12 computes without its optional native module is ``void``, which it cannot
    commit): the shortcut hands the split to pyiceberg, so the files are those it writes."""
    from pyiceberg.io.pyarrow import _dataframe_to_data_files
    from pyiceberg.partitioning import PartitionField, PartitionSpec
    from pyiceberg.transforms import IdentityTransform, VoidTransform

    from dexorder_feeds.storage._pyiceberg_shortcuts import write_data_files
    from dexorder_feeds.storage.schema import table_schemas

    schema = table_schemas()["ohlc"]
    spec = PartitionSpec(
        PartitionField(source_id=schema.find_field("ticker").field_id, field_id=1000, transform=IdentityTransform(),
                       name="ticker"),
        PartitionField(source_id=schema.find_field("timestamp").field_id, field_id=1001, transform=VoidTransform(),
                       name="nothing"))
    warehouse.catalog.create_namespace_if_not_exists("other")
    table = warehouse.catalog.create_table(("other", "voided"), schema=schema, partition_spec=spec)
    rows = pa.concat_tables([candles(ticker, [START + h * H for h in range(72)]) for ticker in TICKERS])

    def summary(files):
        return sorted((tuple(f.partition), f.record_count) for f in files)

    ours = write_data_files(table, rows)
    theirs = list(_dataframe_to_data_files(table_metadata=table.metadata, df=rows, io=table.io))
    assert summary(ours) == summary(theirs) == [((ticker, None), 72) for ticker in TICKERS]


def test_manifest_headers_are_converted_once_and_read_as_pyiceberg_reads_them(warehouse, monkeypatch):
    """Once a header schema was converted, reading manifests converts none again, and their
    entries are those pyiceberg's own header reading gives."""
    from pyiceberg.avro.file import AvroFileHeader
    from pyiceberg.utils.schema_conversion import AvroSchemaConversion

    from dexorder_feeds.storage._pyiceberg_shortcuts import install_avro_schema_memo

    assert install_avro_schema_memo()
    append_blocks(warehouse, range(3))
    table = warehouse.load_table("ohlc")
    manifests = table.current_snapshot().manifests(table.io)
    assert len(manifests) > 1

    def entries() -> list[list[tuple]]:
        return [[(e.status, e.data_file.file_path, e.data_file.record_count, tuple(e.data_file.partition))
                 for e in m.fetch_manifest_entry(table.io)] for m in manifests]

    ours = entries()
    converted: list[object] = []
    convert = AvroSchemaConversion.avro_to_iceberg
    monkeypatch.setattr(AvroSchemaConversion, "avro_to_iceberg",
                        lambda self, schema: converted.append(schema) or convert(self, schema))
    assert entries() == ours and converted == []
    monkeypatch.setattr(AvroFileHeader, "get_schema", AvroFileHeader.get_schema.original)
    assert entries() == ours and len(converted) == len(manifests)  # pyiceberg's own: one per file
