"""Compaction and snapshot expiry: never lose or duplicate a candle, even with a second
committer appending and readers reading while they run."""

from __future__ import annotations

import glob
import threading
import time

import pytest
from pyiceberg.expressions import And, EqualTo

from dexorder_feeds.storage.catalog import open_catalog
from dexorder_feeds.vocabulary.errors import WarehouseError
from dexorder_feeds.cli import main as cli_main
from dexorder_feeds.storage.maintenance import (
    MANUAL,
    MaintenancePolicy,
    compact_partition,
    compact_table,
    expire_snapshots,
    run_maintenance,
)
from dexorder_feeds.ingest.historian import Historian
from dexorder_feeds.storage.warehouse import ROW_GROUP_ROWS, Warehouse
from dexorder_feeds.wire import HistoryRequest

from conftest import SEED_START, SEED_TICKER
from test_read_cache import candles

H = 3_600_000_000
KEY = (SEED_TICKER, 3600)
PARTITION = {"ticker": SEED_TICKER, "period_seconds": 3600}


@pytest.fixture
def manual(catalog_uri):
    wh = Warehouse(open_catalog(catalog_uri), maintenance=MANUAL)
    wh.ensure_tables()
    yield wh
    wh.close()


def second(warehouse: Warehouse, policy: MaintenancePolicy = MANUAL) -> Warehouse:
    """Another Warehouse on the same catalog: its own committer, like a second process."""
    return Warehouse(open_catalog(warehouse.catalog.properties["uri"]), maintenance=policy)


def fill(warehouse: Warehouse, first_hour: int, hours: int = 3) -> None:
    interval = (SEED_START + first_hour * H, SEED_START + (first_hour + hours) * H)
    warehouse.append_new_candles(SEED_TICKER, 3600, interval, candles(range(*interval, H)))


def stored(warehouse: Warehouse) -> list[int]:
    return warehouse.read_candles(SEED_TICKER, 3600, (0, 2**62))[0]["timestamp"].to_pylist()


def files(warehouse: Warehouse, name: str = "ohlc", key: tuple = KEY) -> int:
    return len(warehouse.reader.plan(warehouse.load_table(name)).partition_files(key))


def data_files_on_disk(catalog_uri: str) -> set[str]:
    root = catalog_uri[len("sqlite:///"):].rsplit("/", 1)[0]
    return set(glob.glob(f"{root}/warehouse/trading/ohlc/data/*/*/*.parquet"))


def test_compaction_rewrites_a_partition_as_one_sorted_file(manual):
    for block in range(10):
        fill(manual, block * 5)
    fill(manual, 100, 30)
    for block in range(2):
        interval = (SEED_START + block * 10 * H, SEED_START + (block + 1) * 10 * H)
        manual.append_new_candles("SIM:OTHER/USDT", 3600, interval, candles(range(*interval, H), "SIM:OTHER/USDT"))
    before = stored(manual)
    other_partition = len(manual.read_candles("SIM:OTHER/USDT", 3600, (0, 2**62))[0])
    assert other_partition == 20
    result = manual.committer.submit(compact_partition, manual, "ohlc", PARTITION).result()
    assert (result.files_before, result.files_after, result.rows_before, result.rows_after) == (11, 1, 60, 60)
    assert stored(manual) == before == sorted(before) and files(manual) == 1
    assert len(manual.read_candles("SIM:OTHER/USDT", 3600, (0, 2**62))[0]) == other_partition
    assert files(manual, key=("SIM:OTHER/USDT", 3600)) == 2  # other partitions are left alone
    assert manual.committer.submit(compact_partition, manual, "ohlc", PARTITION).result() is None


def test_compaction_drops_duplicate_candles(manual):
    fill(manual, 0, 5)
    manual.load_table("ohlc").append(candles(range(SEED_START + 3 * H, SEED_START + 8 * H, H)))  # bypasses the check
    assert len(stored(manual)) == 10
    result = manual.committer.submit(compact_partition, manual, "ohlc", PARTITION).result()
    assert result.duplicates_dropped == 2
    assert stored(manual) == list(range(SEED_START, SEED_START + 8 * H, H))


def test_a_concurrent_append_during_compaction_is_never_lost(manual, monkeypatch):
    """The other committer appends between compaction's read and its overwrite: the overwrite
    must fail and compaction start over, not delete the new candles."""
    from pyiceberg.table import Table

    for block in range(5):
        fill(manual, block * 3)
    other = second(manual)
    original = Table.overwrite
    raced = []

    def overwrite_after_a_race(self, *args, **kwargs):
        if not raced:
            raced.append(True)
            other.committer.submit(fill, other, 100, 4).result()
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Table, "overwrite", overwrite_after_a_race)
    try:
        result = manual.committer.submit(compact_partition, manual, "ohlc", PARTITION).result()
    finally:
        other.close()
    assert raced and result.rows_after == 19 and result.files_after == 1
    expected = list(range(SEED_START, SEED_START + 15 * H, H)) + list(range(SEED_START + 100 * H, SEED_START + 104 * H, H))
    assert stored(manual) == expected


def test_compaction_and_expiry_racing_appends_and_readers_lose_nothing(manual):
    """A second committer keeps appending, readers keep reading (through the cache and through
    plain pyiceberg scans), while this committer compacts and expires with no retention."""
    BLOCKS = 24
    other = second(manual)
    stop = threading.Event()
    appended: list[int] = []
    errors: list[BaseException] = []
    seen_by_readers: list[int] = []

    def appender() -> None:
        try:
            for block in range(BLOCKS):
                other.committer.submit(fill, other, block * 3, 3).result()
                appended.extend(range(SEED_START + block * 3 * H, SEED_START + (block + 1) * 3 * H, H))
                time.sleep(0.1)  # leave compaction windows without conflicts too
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            stop.set()

    def reader(naive: bool) -> None:
        reader_wh = second(manual)
        try:
            last = 0
            while not stop.is_set():
                if naive:
                    table = reader_wh.load_table("ohlc")
                    rows = table.scan(row_filter=And(EqualTo("ticker", SEED_TICKER), EqualTo("period_seconds", 3600))).to_arrow()
                    ts = rows["timestamp"].to_pylist()
                else:
                    ts = stored(reader_wh)
                assert len(ts) == len(set(ts)), "a reader saw a duplicate candle"
                assert len(ts) >= last, "a reader saw candles disappear"
                assert ts == sorted(ts) or naive
                last = len(ts)
                seen_by_readers.append(len(ts))
        except BaseException as exc:
            errors.append(exc)
        finally:
            reader_wh.close()

    threads = [threading.Thread(target=appender), threading.Thread(target=reader, args=(False,)),
               threading.Thread(target=reader, args=(True,))]
    for thread in threads:
        thread.start()
    compactions = 0
    while not stop.is_set():
        try:
            result = manual.committer.submit(compact_partition, manual, "ohlc", PARTITION).result()
            compactions += result is not None
        except WarehouseError as exc:  # gave up after repeated conflicts: allowed, loses nothing
            assert "gave up" in str(exc)
        # retention 0: replaced files go at once; the 2 s reader grace protects the naive reader
        manual.committer.submit(lambda: expire_snapshots(manual, "ohlc", keep_snapshots=1, retention_seconds=0)).result()
    for thread in threads:
        thread.join()
    other.close()
    assert not errors, errors
    print(f"{compactions} compactions, {len(seen_by_readers)} reads")
    assert compactions >= 2 and len(seen_by_readers) > 10
    assert stored(manual) == sorted(appended) and len(appended) == 3 * BLOCKS


def test_expiry_keeps_recent_snapshots_and_files_replaced_within_the_retention(manual, catalog_uri):
    for block in range(6):
        fill(manual, block * 3)
    table = manual.load_table("ohlc")
    old_snapshot = table.snapshots()[2].snapshot_id
    manual.committer.submit(compact_partition, manual, "ohlc", PARTITION).result()
    on_disk = data_files_on_disk(catalog_uri)
    assert len(on_disk) == 7
    result = manual.committer.submit(lambda: expire_snapshots(manual, "ohlc", keep_snapshots=1, retention_seconds=3600, reader_grace_seconds=0)).result()
    table = manual.load_table("ohlc")
    assert result.snapshots_expired == 6 and len(table.snapshots()) == 2  # the compaction's delete is kept
    assert data_files_on_disk(catalog_uri) == on_disk, "replaced files stay for the retention window"
    assert stored(manual) == list(range(SEED_START, SEED_START + 18 * H, H))
    assert table.snapshot_by_id(old_snapshot) is None
    # Past the retention window the compaction's snapshot goes too, and the replaced files with it.
    manual.committer.submit(lambda: expire_snapshots(manual, "ohlc", keep_snapshots=1, retention_seconds=0,
                                                     reader_grace_seconds=0)).result()
    assert len(manual.load_table("ohlc").snapshots()) == 1
    assert len(data_files_on_disk(catalog_uri)) == 1
    assert stored(manual) == list(range(SEED_START, SEED_START + 18 * H, H))


def test_automatic_maintenance_keeps_files_and_snapshots_bounded(catalog_uri):
    policy = MaintenancePolicy(compact_small_files=8, keep_snapshots=2, expire_batch=6, retention_seconds=0,
                               reader_grace_seconds=0)
    warehouse = Warehouse(open_catalog(catalog_uri), maintenance=policy)
    historian = Historian(warehouse)
    try:
        for day in range(30):
            note = historian.handle(HistoryRequest(request_id=f"d{day}", ticker=SEED_TICKER, period_seconds=3600,
                                                   start_time=SEED_START + day * 24 * H, end_time=SEED_START + (day + 1) * 24 * H - 1))
            assert note.row_count == 24
        warehouse.committer.submit(lambda: None).result()  # drain queued maintenance
        assert files(warehouse) < 8 and files(warehouse, "coverage") < 8
        assert len(warehouse.load_table("ohlc").snapshots()) <= 2 + 6 + 2
        assert stored(warehouse) == list(range(SEED_START, SEED_START + 30 * 24 * H, H))
        assert warehouse.read_coverage(SEED_TICKER, 3600) == [(SEED_START, SEED_START + 30 * 24 * H)]
    finally:
        warehouse.close()


def test_compact_table_and_run_maintenance_cover_every_table(manual):
    historian = Historian(manual)
    for ticker in ("SIM:A/USDT", "SIM:B/USDT"):
        for day in range(3):
            historian.handle(HistoryRequest(request_id=f"{ticker}{day}", ticker=ticker, period_seconds=3600,
                                            start_time=SEED_START + day * 24 * H, end_time=SEED_START + (day + 1) * 24 * H - 1))
    compacted, expired = run_maintenance(manual, keep_snapshots=1, retention_seconds=0, reader_grace_seconds=0)
    assert {(r.table, r.partition) for r in compacted} == {
        ("ohlc", ("SIM:A/USDT", 3600)), ("ohlc", ("SIM:B/USDT", 3600)),
        ("coverage", ("SIM:A/USDT", 3600)), ("coverage", ("SIM:B/USDT", 3600)), ("markets", ())}
    assert {r.table for r in expired} == {"ohlc", "coverage", "markets"}
    assert manual.committer.submit(compact_table, manual, "ohlc").result() == []
    for ticker in ("SIM:A/USDT", "SIM:B/USDT"):
        assert len(manual.read_candles(ticker, 3600, (0, 2**62))[0]) == 72
        assert manual.read_coverage(ticker, 3600) == [(SEED_START, SEED_START + 72 * H)]
        assert manual.read_market(ticker) is not None


def test_the_compact_command(manual, catalog_uri, capsys):
    for block in range(3):
        fill(manual, block * 3)
    assert cli_main(["compact", "--iceberg-catalog-uri", catalog_uri, "--retention", "0", "--keep-snapshots", "1"]) == 0
    out = capsys.readouterr().out
    assert f"compacted ohlc {SEED_TICKER}/3600: 3 files -> 1, 9 rows" in out
    assert stored(manual) == list(range(SEED_START, SEED_START + 9 * H, H))
    assert cli_main(["compact", "--iceberg-catalog-uri", catalog_uri]) == 0
    assert "compacted" not in capsys.readouterr().out


def test_tables_of_an_older_version_get_the_current_properties(catalog_uri):
    warehouse = Warehouse(open_catalog(catalog_uri), maintenance=MANUAL)
    warehouse.ensure_tables()
    table = warehouse.load_table("ohlc")
    table.transaction().remove_properties("write.parquet.row-group-limit").commit_transaction()
    assert "write.parquet.row-group-limit" not in warehouse.load_table("ohlc").properties
    again = Warehouse(open_catalog(catalog_uri, cache=False), maintenance=MANUAL)
    again.ensure_tables()
    assert again.load_table("ohlc").properties["write.parquet.row-group-limit"] == str(ROW_GROUP_ROWS)
    for name in ("ohlc", "coverage", "markets"):
        assert again.load_table(name).properties["commit.retry.num-retries"] == "0"
