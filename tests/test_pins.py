"""Pins and reads at a snapshot, on the storage layer, on every kind of catalog: a pinned read
survives later fills, compaction and snapshot expiry unchanged, and any Iceberg reader finds the
same rows under the pin's name."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from dexorder_feeds.storage.catalog import open_catalog
from dexorder_feeds.storage.maintenance import MANUAL, compact_partition, expire_snapshots
from dexorder_feeds.storage.pins import create_pin, list_pins, read_point, remove_pin
from dexorder_feeds.storage.schema import candle_arrow_schema
from dexorder_feeds.storage.warehouse import Warehouse
from dexorder_feeds.vocabulary.errors import InvalidRequestError, UnknownSnapshotError
from dexorder_feeds.vocabulary.markets import MarketInfo

H = 3_600_000_000
START = 1_735_689_600_000_000  # 2025-01-01 00:00 UTC
TICKER = "SIM:BTC/USDT"
MONTH = (START, START + 31 * 24 * H)


def candles(ticker: str, first_hour: int, hours: int, salt: int = 0) -> pa.Table:
    stamps = [START + (first_hour + i) * H for i in range(hours)]
    values = np.arange(hours, dtype=np.int64) * 7 + 1000 + salt
    columns: dict[str, object] = {"ticker": [ticker] * hours, "period_seconds": [3600] * hours, "timestamp": stamps}
    columns.update({"open": values, "high": values + 5, "low": values - 5, "close": values + 1, "volume": values})
    columns.update({"buy_vol": [None] * hours, "sell_vol": values, "open_interest": [None] * hours})
    return pa.table(columns, schema=candle_arrow_schema())


def fill(warehouse: Warehouse, ticker: str, first_hour: int, hours: int, salt: int = 0) -> None:
    interval = (START + first_hour * H, START + (first_hour + hours) * H)
    warehouse.write_market(MarketInfo(ticker, 2, 4), "test")
    added, stored = warehouse.append_new_candles(ticker, 3600, interval, candles(ticker, first_hour, hours, salt))
    warehouse.record_coverage(ticker, 3600, interval, stored, None)


@pytest.fixture
def pinned_warehouse(catalog_server):
    wh = Warehouse(open_catalog(catalog_server.uri, catalog_server.properties), catalog_server.namespace,
                   maintenance=MANUAL)
    wh.ensure_tables()
    yield wh, catalog_server
    wh.close()


def test_a_pin_reads_the_same_candles_after_fills_compaction_and_expiry(pinned_warehouse, tmp_path):
    warehouse, catalog = pinned_warehouse
    fill(warehouse, TICKER, 0, 31 * 24)
    frame, covered, snapshot = warehouse.read_range(TICKER, 3600, MONTH)
    assert frame.num_rows == 744 and covered == [MONTH]
    pin = create_pin(warehouse, "jan")
    assert (pin.name, pin.snapshot_id, pin.candles) == ("jan", snapshot, 744)

    replaced = []
    for i in range(40):  # gap fills of other ranges and tickers
        ticker = TICKER if i % 2 else f"SIM:T{i % 5}/USDT"
        fill(warehouse, ticker, 31 * 24 + i * 24, 24, salt=i)
        replaced.append(warehouse.read_candles(TICKER, 3600, MONTH)[1])
    warehouse.committer.submit(compact_partition, warehouse, "ohlc", {"ticker": TICKER, "period_seconds": 3600}).result()
    for table in ("ohlc", "coverage", "markets"):
        warehouse.committer.submit(lambda t=table: expire_snapshots(
            warehouse, t, keep_snapshots=1, retention_seconds=0, reader_grace_seconds=0)).result()

    for as_of in ("jan", snapshot, str(snapshot)):
        point = read_point(warehouse, as_of)
        again, again_covered = warehouse.read_range_at(TICKER, 3600, MONTH, point.candles_snapshot, point.coverage_snapshot)
        assert again.equals(frame), as_of
        assert again_covered == [MONTH]

    # An unpinned snapshot that expired says so.
    expired = replaced[5]
    with pytest.raises(UnknownSnapshotError, match="expired"):
        read_point(warehouse, expired)

    # Any Iceberg reader finds the rows under the tag's name.
    table = warehouse.catalog.load_table(f"{catalog.namespace}.ohlc")
    assert table.metadata.refs["jan"].snapshot_ref_type == "tag"
    scanned = table.scan(row_filter=f"ticker == '{TICKER}'").use_ref("jan").to_arrow().sort_by("timestamp")
    assert scanned.equals(frame)

    # Another process (another machine) reads the pin identically.
    script = (
        "import json, sys\n"
        "from dexorder_feeds.storage.catalog import open_catalog\n"
        "from dexorder_feeds.storage.pins import read_point\n"
        "from dexorder_feeds.storage.warehouse import Warehouse\n"
        "uri, props, ns, ticker, a, b = json.loads(sys.argv[1])\n"
        "wh = Warehouse(open_catalog(uri, props), ns)\n"
        "p = read_point(wh, 'jan')\n"
        "t, _ = wh.read_range_at(ticker, 3600, (a, b), p.candles_snapshot, p.coverage_snapshot)\n"
        "print(json.dumps(t.to_pydict()))\n"
    )
    out = subprocess.run([sys.executable, "-c", script, json.dumps([catalog.uri, catalog.properties, catalog.namespace,
                                                                   TICKER, *MONTH])],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == frame.to_pydict()


def test_pins_are_listed_and_removed_and_then_expire(pinned_warehouse):
    warehouse, _ = pinned_warehouse
    with pytest.raises(UnknownSnapshotError, match="no candles yet"):
        create_pin(warehouse, "empty")
    fill(warehouse, TICKER, 0, 24)
    first = create_pin(warehouse, "day-1")
    fill(warehouse, TICKER, 24, 24)
    second = create_pin(warehouse, "day-2")
    assert [p.name for p in list_pins(warehouse)] == ["day-1", "day-2"]
    assert (first.candles, second.candles) == (24, 48)
    assert second.data_bytes > 0 and second.timestamp_ms >= first.timestamp_ms
    with pytest.raises(InvalidRequestError, match="exists"):
        create_pin(warehouse, "day-1")
    for bad in ("", "main", "has space", "-lead", "x" * 101):
        with pytest.raises(InvalidRequestError, match="pin name"):
            create_pin(warehouse, bad)

    remove_pin(warehouse, "day-1")
    assert [p.name for p in list_pins(warehouse)] == ["day-2"]
    with pytest.raises(UnknownSnapshotError, match="no pin named 'day-1'"):
        read_point(warehouse, "day-1")
    with pytest.raises(UnknownSnapshotError, match="no pin named"):
        remove_pin(warehouse, "day-1")
    fill(warehouse, TICKER, 48, 24)
    for table in ("ohlc", "coverage", "markets"):
        warehouse.committer.submit(lambda t=table: expire_snapshots(
            warehouse, t, keep_snapshots=1, retention_seconds=0, reader_grace_seconds=0)).result()
    with pytest.raises(UnknownSnapshotError, match="expired"):
        read_point(warehouse, first.snapshot_id)
    kept = read_point(warehouse, "day-2")
    frame, _ = warehouse.read_range_at(TICKER, 3600, MONTH, kept.candles_snapshot, kept.coverage_snapshot)
    assert frame.num_rows == 48


def test_as_of_a_snapshot_id_reads_the_coverage_that_went_with_it(pinned_warehouse):
    warehouse, _ = pinned_warehouse
    fill(warehouse, TICKER, 0, 24)
    _, _, first = warehouse.read_range(TICKER, 3600, MONTH)
    fill(warehouse, TICKER, 24, 24)
    point = read_point(warehouse, first)
    frame, covered = warehouse.read_range_at(TICKER, 3600, MONTH, point.candles_snapshot, point.coverage_snapshot)
    assert frame.num_rows == 24 and covered == [(START, START + 24 * H)]
    for bad in (True, 1.5, None):
        with pytest.raises(InvalidRequestError, match="as_of"):
            read_point(warehouse, bad)  # type: ignore[arg-type]
