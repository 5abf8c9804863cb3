"""The cached read path: same rows as pyiceberg's scan, never stale, per-thread tables, the
Parquet layout it relies on, and the zero-copy frame."""

from __future__ import annotations

import asyncio
import random
import threading

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dexorder_feeds.storage.catalog import open_catalog
from dexorder_feeds.client.iceberg_client import IcebergClient, candles_to_frame
from dexorder_feeds.vocabulary.requests import FetchRequest
from dexorder_feeds.storage.maintenance import MANUAL
from dexorder_feeds.storage._pyiceberg_shortcuts import plan_snapshot
from dexorder_feeds.ingest.historian import Historian
from dexorder_feeds.storage.warehouse import CANDLE_COLUMNS, ROW_GROUP_ROWS, Warehouse, candle_arrow_schema
from dexorder_feeds.wire import HistoryRequest

from conftest import SEED_START, SEED_TICKER

H = 3_600_000_000
PARTITION = {"ticker": SEED_TICKER, "period_seconds": 3600}


def candles(timestamps, ticker=SEED_TICKER, *, nulls=True) -> pa.Table:
    n = len(timestamps)
    values = np.arange(n, dtype=np.int64) + 100
    columns = {"ticker": [ticker] * n, "period_seconds": [3600] * n, "timestamp": list(timestamps)}
    columns.update({c: values for c in ("open", "high", "low", "close", "volume")})
    columns["buy_vol"] = [None if nulls and i % 3 == 0 else int(i) for i in range(n)]
    columns["sell_vol"] = values
    columns["open_interest"] = [None] * n
    return pa.table(columns, schema=candle_arrow_schema())


def naive_scan(warehouse: Warehouse, start: int, stop: int) -> pa.Table:
    from pyiceberg.expressions import And, EqualTo, GreaterThanOrEqual, LessThan

    table = warehouse.load_table("ohlc")
    row_filter = And(EqualTo("ticker", SEED_TICKER), EqualTo("period_seconds", 3600),
                     GreaterThanOrEqual("timestamp", start), LessThan("timestamp", stop))
    return table.scan(row_filter=row_filter).to_arrow().sort_by("timestamp")


def other_warehouse(warehouse: Warehouse) -> Warehouse:
    """A second Warehouse on the same catalog through a catalog object of its own (so a reader
    of its own too), its own committer: like another process."""
    return Warehouse(open_catalog(warehouse.catalog.properties["uri"], cache=False), maintenance=MANUAL)


@pytest.fixture
def manual(catalog_uri):
    wh = Warehouse(open_catalog(catalog_uri), maintenance=MANUAL)
    wh.ensure_tables()
    yield wh
    wh.close()


def test_cached_reads_equal_pyiceberg_scans(manual):
    rng = random.Random(7)
    # Several files with interleaved ranges, one of them unsorted and written around the
    # duplicate check (a foreign writer), so the reader cannot rely on sorted, disjoint files.
    for block in range(6):
        manual.append_new_candles(SEED_TICKER, 3600, (SEED_START + block * 500 * H, SEED_START + (block + 1) * 500 * H),
                                  candles([SEED_START + (block * 500 + i) * H for i in range(0, 500, 2)]))
    odd = [SEED_START + i * H for i in range(1, 3000, 2)]
    rng.shuffle(odd)
    manual.load_table("ohlc").append(candles(odd))
    manual.append_new_candles("SIM:OTHER/USDT", 3600, (SEED_START, SEED_START + 100 * H),
                              candles([SEED_START + i * H for i in range(100)], "SIM:OTHER/USDT"))
    for _ in range(40):
        start = SEED_START + rng.randrange(-50, 3050) * H + rng.choice([0, 1, H // 2])
        stop = start + rng.randrange(0, 800) * H + rng.choice([0, 1])
        ours, snapshot = manual.read_candles(SEED_TICKER, 3600, (start, stop))
        expected = naive_scan(manual, start, stop)
        assert ours.equals(expected), (start, stop)
        assert snapshot == manual.load_table("ohlc").current_snapshot().snapshot_id
    everything, _ = manual.read_candles(SEED_TICKER, 3600, (0, 2**62))
    assert everything.num_rows == 3000 and everything["timestamp"].to_pylist() == sorted(everything["timestamp"].to_pylist())


def test_a_commit_by_another_committer_is_seen_by_the_next_read(manual):
    manual.append_new_candles(SEED_TICKER, 3600, (SEED_START, SEED_START + 10 * H),
                              candles([SEED_START + i * H for i in range(10)]))
    client = IcebergClient(warehouse=manual)
    request = FetchRequest.create(SEED_TICKER, 3600, SEED_START, SEED_START + 20 * H - 1)
    first = client.read_cache(request)
    assert first.num_rows == 10 and first.covered == []
    assert client.read_cache(request).snapshot_id == first.snapshot_id  # warm: same snapshot
    other = other_warehouse(manual)
    try:
        other.append_new_candles(SEED_TICKER, 3600, (SEED_START + 10 * H, SEED_START + 20 * H),
                                 candles([SEED_START + i * H for i in range(10, 20)]))
        other.record_coverage(SEED_TICKER, 3600, (SEED_START, SEED_START + 20 * H), 20, "other")
    finally:
        other.close()
    second = client.read_cache(request)
    assert second.num_rows == 20 and second.snapshot_id != first.snapshot_id
    assert second.covered == [(SEED_START, SEED_START + 20 * H)]
    assert manual.read_coverage(SEED_TICKER, 3600) == [(SEED_START, SEED_START + 20 * H)]


def test_a_fetch_after_another_committers_gap_fill_returns_the_new_candles(catalog_uri):
    from dexorder_feeds.client.ohlc_client import OHLCClient

    end = SEED_START + 48 * H - 1

    async def run() -> tuple[int, int]:
        async with OHLCClient(iceberg_catalog_uri=catalog_uri) as client:
            first = await client.fetch_ohlc(SEED_TICKER, 3600, SEED_START, SEED_START + 24 * H - 1)
            warehouse = client.iceberg.warehouse
            other = other_warehouse(warehouse)
            try:  # another process fills the next day while this client's cache is warm
                Historian(other).handle(HistoryRequest(request_id="x", ticker=SEED_TICKER, period_seconds=3600,
                                                       start_time=SEED_START + 24 * H, end_time=end))
            finally:
                other.close()
            before = client.iceberg.read_cache(FetchRequest.create(SEED_TICKER, 3600, SEED_START, end))
            return len(first), before.num_rows

    assert asyncio.run(run()) == (24, 48)


def test_tables_are_per_thread_and_reused_until_the_snapshot_changes(manual):
    manual.append_new_candles(SEED_TICKER, 3600, (SEED_START, SEED_START + H), candles([SEED_START]))
    (mine,) = manual.reader.tables("ohlc")
    assert manual.reader.tables("ohlc")[0] is mine
    theirs = []
    thread = threading.Thread(target=lambda: theirs.append(manual.reader.tables("ohlc")[0]))
    thread.start()
    thread.join()
    assert theirs[0] is not mine
    before = mine.current_snapshot().snapshot_id
    # This thread's own commit goes through its table, which pyiceberg moves to the new snapshot.
    manual.append_new_candles(SEED_TICKER, 3600, (SEED_START + H, SEED_START + 2 * H), candles([SEED_START + H]))
    (same,) = manual.reader.tables("ohlc")
    assert same is mine and same.current_snapshot().snapshot_id != before
    assert same.metadata_location == manual.reader.metadata_locations()["ohlc"]
    # Another committer's commit: the next read loads the table again.
    other = other_warehouse(manual)
    try:
        other.append_new_candles(SEED_TICKER, 3600, (SEED_START + 2 * H, SEED_START + 3 * H), candles([SEED_START + 2 * H]))
    finally:
        other.close()
    (fresh,) = manual.reader.tables("ohlc")
    assert fresh is not mine and fresh.current_snapshot().snapshot_id == other.load_table("ohlc").current_snapshot().snapshot_id


def test_incremental_plans_equal_full_plans(manual):
    reader = manual.reader
    for block in range(5):
        manual.append_new_candles(SEED_TICKER, 3600, (SEED_START + block * 10 * H, SEED_START + (block + 1) * 10 * H),
                                  candles([SEED_START + (block * 10 + i) * H for i in range(10)]))
        table = manual.load_table("ohlc")
        plan = reader.plan(table)
        full = plan_snapshot(table, table.current_snapshot())
        assert plan.snapshot_id == full.snapshot_id
        assert {k: sorted(f.path for f in v) for k, v in plan.files.items()} == \
               {k: sorted(f.path for f in v) for k, v in full.files.items()}
        assert len(plan.partition_files((SEED_TICKER, 3600))) == block + 1


def test_a_file_vanishing_under_a_read_reloads_and_reads_again(manual, monkeypatch):
    manual.append_new_candles(SEED_TICKER, 3600, (SEED_START, SEED_START + 5 * H),
                              candles([SEED_START + i * H for i in range(5)]))
    manual.read_candles(SEED_TICKER, 3600, (SEED_START, SEED_START + 5 * H))
    original = type(manual.reader)._read_file
    failures = [FileNotFoundError("gone")]

    def flaky(self, *args, **kwargs):
        if failures:
            raise failures.pop()
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(manual.reader), "_read_file", flaky)
    data, _ = manual.read_candles(SEED_TICKER, 3600, (SEED_START, SEED_START + 5 * H))
    assert data.num_rows == 5 and not failures


def test_files_are_sorted_delta_encoded_lz4_row_groups_and_a_week_touches_at_most_two(manual):
    start = SEED_START - 4 * 365 * 24 * H  # 35,040 hourly candles: more than one row group
    Historian(manual).handle(HistoryRequest(request_id="y", ticker=SEED_TICKER, period_seconds=3600,
                                            start_time=start, end_time=SEED_START - 1))
    table = manual.load_table("ohlc")
    (planned,) = manual.reader.plan(table).partition_files((SEED_TICKER, 3600))
    with table.io.new_input(planned.path).open() as source:
        metadata = pq.read_metadata(source)
    rows = 4 * 365 * 24
    assert metadata.num_rows == rows and metadata.num_row_groups == -(-rows // ROW_GROUP_ROWS) > 1
    assert all(metadata.row_group(i).num_rows <= ROW_GROUP_ROWS for i in range(metadata.num_row_groups))
    assert metadata.row_group(0).column(0).compression.startswith("LZ4")
    assert "DELTA_BINARY_PACKED" in metadata.row_group(0).column(2).encodings  # timestamp
    footer = manual.reader._footer(table, planned.path, "timestamp")
    lows, highs = footer.row_group_bounds["timestamp"]
    assert list(lows[1:]) > list(highs[:-1])  # sorted: row groups do not overlap
    for week in range(0, rows // 168):
        week_start = start + week * 168 * H
        assert int(((highs >= week_start) & (lows < week_start + 168 * H)).sum()) <= 2


def test_the_frame_has_the_seed_dtypes_and_shares_no_writes_with_the_rows():
    rows = candles([SEED_START + i * H for i in range(6)])
    frame = candles_to_frame(rows)
    assert list(frame.columns) == list(CANDLE_COLUMNS)
    assert frame["open"].dtype == np.int64 and frame["buy_vol"].dtype == "Int64"
    assert frame["open_interest"].isna().all() and frame["buy_vol"].isna().sum() == 2
    assert frame["sell_vol"].dtype == np.int64  # a nullable column without nulls stays int64
    expected = rows.to_pandas()
    for column in ("buy_vol", "open_interest"):
        expected[column] = expected[column].astype("Int64")
    pd.testing.assert_frame_equal(frame, expected)
    frame.loc[0, "open"] = -1
    frame["close"] += 1
    assert rows["open"][0].as_py() == 100 and rows["close"][0].as_py() == 100
    empty = candles_to_frame(candle_arrow_schema().empty_table())
    assert list(empty.columns) == list(CANDLE_COLUMNS) and len(empty) == 0


def test_cached_row_groups_never_outlive_their_files(manual):
    """Warm the decoded row-group cache, then another committer appends and compacts: the next
    read sees the new candle, from the new file, exactly once."""
    from dexorder_feeds.storage.maintenance import compact_partition

    for block in range(3):
        manual.append_new_candles(SEED_TICKER, 3600, (SEED_START + block * 10 * H, SEED_START + (block + 1) * 10 * H),
                                  candles([SEED_START + (block * 10 + i) * H for i in range(10)]))
    week = (SEED_START, SEED_START + 168 * H)
    assert manual.read_candles(SEED_TICKER, 3600, week)[0].num_rows == 30
    assert manual.reader._row_groups  # small reads went through the cache
    other = other_warehouse(manual)
    try:
        other.append_new_candles(SEED_TICKER, 3600, (SEED_START + 40 * H, SEED_START + 41 * H),
                                 candles([SEED_START + 40 * H]))
        result = other.committer.submit(compact_partition, other, "ohlc", PARTITION).result()
    finally:
        other.close()
    assert result.files_after == 1
    data, _ = manual.read_candles(SEED_TICKER, 3600, week)
    assert data["timestamp"].to_pylist() == [SEED_START + i * H for i in list(range(30)) + [40]]


def test_a_bulk_read_through_the_cache_equals_the_scan_and_frames_share_no_writes(manual):
    """A read of many row groups goes through the decoded cache too (it fits): the same rows as
    pyiceberg's scan, with the partition columns built rather than decoded; and a frame written
    to changes neither the cache nor the next frame."""
    start = SEED_START - 5 * 365 * 24 * H  # 43,800 hourly candles: two row groups
    Historian(manual).handle(HistoryRequest(request_id="b", ticker=SEED_TICKER, period_seconds=3600,
                                            start_time=start, end_time=SEED_START - 1))
    whole = (start, SEED_START)
    first, _ = manual.read_candles(SEED_TICKER, 3600, whole)
    assert len(manual.reader._row_groups) >= 2  # cached row group by row group
    scan = manual.load_table("ohlc").scan(row_filter=f"ticker == '{SEED_TICKER}' and period_seconds == 3600")
    assert first.equals(scan.to_arrow().sort_by("timestamp"))
    client = IcebergClient(warehouse=manual)
    frame = client.query_ohlc(SEED_TICKER, 3600, start, SEED_START - 1)
    assert len(frame) == 5 * 365 * 24 and frame["ticker"].eq(SEED_TICKER).all() and frame["period_seconds"].eq(3600).all()
    frame.loc[0, "open"] = -1
    frame["close"] += 1
    again = client.query_ohlc(SEED_TICKER, 3600, start, SEED_START - 1)
    assert again["open"].iloc[0] == first["open"][0].as_py() != -1
    assert again["close"].tolist() == first["close"].to_pylist()
    assert manual.read_candles(SEED_TICKER, 3600, whole)[0].equals(first)


def test_stored_if_covered_answers_only_for_fully_ingested_ranges(manual):
    Historian(manual).handle(HistoryRequest(request_id="z", ticker=SEED_TICKER, period_seconds=3600,
                                            start_time=SEED_START, end_time=SEED_START + 24 * H - 1))
    assert manual.stored_if_covered(SEED_TICKER, 3600, (SEED_START + 2 * H, SEED_START + 10 * H)) == 8
    assert manual.stored_if_covered(SEED_TICKER, 3600, (SEED_START + 20 * H, SEED_START + 30 * H)) is None
    assert manual.stored_if_covered("SIM:NEVER/USDT", 3600, (SEED_START, SEED_START + H)) is None


def test_a_single_unsorted_file_is_read_sorted(manual):
    shuffled = [SEED_START + i * H for i in range(50)]
    random.Random(2).shuffle(shuffled)
    manual.load_table("ohlc").append(candles(shuffled))  # a foreign writer that does not sort
    data, _ = manual.read_candles(SEED_TICKER, 3600, (SEED_START + 10 * H, SEED_START + 20 * H))
    assert data["timestamp"].to_pylist() == [SEED_START + i * H for i in range(10, 20)]
    assert data.equals(naive_scan(manual, SEED_START + 10 * H, SEED_START + 20 * H))


def test_warehouses_on_one_catalog_share_one_reader_and_plan_each_snapshot_once(manual, catalog_uri, monkeypatch):
    """Many clients in one process (one catalog object from open_catalog) read through one
    reader: a new snapshot is planned once, not once per client. A catalog opened with
    ``cache=False`` (another machine) keeps a reader of its own."""
    import dexorder_feeds.storage.reader as reader_module

    manual.append_new_candles(SEED_TICKER, 3600, (SEED_START, SEED_START + 3 * H),
                              candles([SEED_START, SEED_START + H, SEED_START + 2 * H]))
    plans = []
    for name in ("plan_appends", "plan_snapshot"):
        original = getattr(reader_module, name)
        monkeypatch.setattr(reader_module, name,
                            lambda *args, _original=original, _name=name: plans.append(_name) or _original(*args))
    other = Warehouse(open_catalog(catalog_uri), maintenance=MANUAL)
    separate = Warehouse(open_catalog(catalog_uri, cache=False), maintenance=MANUAL)
    try:
        assert other.reader is manual.reader and separate.reader is not manual.reader
        window = (SEED_START, SEED_START + 3 * H)
        first = manual.read_range(SEED_TICKER, 3600, window)[0]
        planned = len(plans)
        assert planned >= 1
        in_a_thread = []
        thread = threading.Thread(target=lambda: in_a_thread.append(other.read_range(SEED_TICKER, 3600, window)[0]))
        thread.start()
        thread.join()
        assert len(plans) == planned  # the other client, on another thread: no new plan
        assert in_a_thread[0].equals(first) and first.num_rows == 3
        assert separate.read_range(SEED_TICKER, 3600, window)[0].equals(first)
        assert len(plans) > planned  # its own reader plans for itself
    finally:
        other.close()
        separate.close()


def test_threads_reading_a_new_snapshot_at_once_load_plan_and_decode_it_once(manual, monkeypatch):
    """Right after another process's commit, threads of this process that read at the same
    moment wait for one load of the new metadata, one plan and one decode of the new file, and
    each still gets a ``Table`` of its own and the right rows."""
    import time

    import dexorder_feeds.storage.reader as reader_module

    manual.append_new_candles(SEED_TICKER, 3600, (SEED_START, SEED_START + H), candles([SEED_START]))
    manual.read_range(SEED_TICKER, 3600, (SEED_START, SEED_START + 3 * H))
    other = other_warehouse(manual)
    try:
        other.append_new_candles(SEED_TICKER, 3600, (SEED_START + H, SEED_START + 3 * H),
                                 candles([SEED_START + H, SEED_START + 2 * H]))
    finally:
        other.close()
    work: list[str] = []

    def slow(name, original):
        def run(*args, **kwargs):
            work.append(name)
            time.sleep(0.3)  # long enough for every thread to ask meanwhile
            return original(*args, **kwargs)
        return run

    monkeypatch.setattr(manual.reader, "_load_table", slow("load", manual.reader._load_table))
    monkeypatch.setattr(reader_module, "plan_appends", slow("plan", reader_module.plan_appends))
    monkeypatch.setattr(reader_module.pq.ParquetFile, "read_row_groups",
                        slow("decode", reader_module.pq.ParquetFile.read_row_groups))
    start = threading.Barrier(4)
    got: list[tuple] = []

    def read() -> None:
        start.wait(10)
        rows = manual.read_candles(SEED_TICKER, 3600, (SEED_START, SEED_START + 3 * H))[0]
        got.append((manual.reader.tables("ohlc")[0], rows["timestamp"].to_pylist()))

    threads = [threading.Thread(target=read) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert [stamps for _, stamps in got] == [[SEED_START, SEED_START + H, SEED_START + 2 * H]] * 4
    assert len({id(table) for table, _ in got}) == 4  # a Table per thread
    assert sorted(work) == ["decode", "load", "plan"]  # once each (the first file was decoded before)
