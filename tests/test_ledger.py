"""The coverage ledger: stored / checked-empty / unknown, the settle horizon, what a source
vouched for (``checked``) and who served it (``served_by``), and older warehouses upgraded.

Real SQLite Iceberg catalogs; the late-publishing exchange is a real plugin source."""

from __future__ import annotations

import asyncio
import threading

import pandas as pd
import pyarrow as pa
import pytest

from dexorder_feeds import OHLCClient
from dexorder_feeds.hookspecs import hookimpl
from dexorder_feeds.ingest.historian import Historian, default_settle_seconds
from dexorder_feeds.ingest.sources import IngestSource, SourceCandles, SourceRegistry
from dexorder_feeds.plugins import get_plugin_manager
from dexorder_feeds.storage.catalog import open_catalog
from dexorder_feeds.storage.schema import COVERAGE_TABLE
from dexorder_feeds.storage.warehouse import Warehouse
from dexorder_feeds.vocabulary.markets import MarketInfo
from dexorder_feeds.vocabulary.quality import EMPTY_AT_SOURCE, NOT_YET_FILLED
from dexorder_feeds.vocabulary.requests import FetchRequest, closed_period_stop
from dexorder_feeds.vocabulary.tickers import Ticker
from dexorder_feeds.wire import HistoryRequest, Notification

H = 3_600_000_000
T0 = 1735689600000000  # 2025-01-01 00:00 UTC


def frame_of(timestamps: list[int]) -> pd.DataFrame:
    return pd.DataFrame({"timestamp": timestamps, "open": ["10.00"] * len(timestamps),
                         "high": ["11.00"] * len(timestamps), "low": ["9.00"] * len(timestamps),
                         "close": ["10.50"] * len(timestamps), "volume": ["1.5"] * len(timestamps)})


class LateSource(IngestSource):
    """An exchange that publishes each candle only on the second ask after its period closed
    (the first answer leaves out the last closed period, as a late exchange does)."""

    name = "late"

    def __init__(self) -> None:
        self.asks: list[tuple[int, int]] = []
        self.published: set[int] = set()
        self._lock = threading.Lock()

    def fetch_candles(self, ticker: Ticker, period_seconds: int, start: int, stop: int) -> SourceCandles:
        last_closed = closed_period_stop(period_seconds) - period_seconds * 1_000_000
        with self._lock:
            self.asks.append((start, stop))
            late = last_closed in self.published
            self.published.add(last_closed)
        step = period_seconds * 1_000_000
        times = [t for t in range(start, stop, step) if t < last_closed or (late and t == last_closed)]
        return SourceCandles(MarketInfo(str(ticker), 2, 1), frame_of(times))


class _Plugin:
    def __init__(self, name: str, source: IngestSource) -> None:
        self.name, self.source = name, source

    @hookimpl
    def dexorder_register_sources(self, register):
        register(self.name, lambda argument: self.source)


@pytest.fixture
def late_source():
    source = LateSource()
    pm = get_plugin_manager()
    pm.register(_Plugin("late", source), name="test-ledger-late")
    yield source
    pm.unregister(name="test-ledger-late")


def request(ticker: str, start: int, end: int, period: int = 3600, rid: str = "r") -> HistoryRequest:
    return HistoryRequest(request_id=rid, client_id="c", ticker=ticker, period_seconds=period,
                          start_time=start, end_time=end)


def test_the_default_settle_horizon_is_five_minutes_or_a_period():
    assert default_settle_seconds(60) == 300
    assert default_settle_seconds(3600) == 3600
    assert default_settle_seconds(86400) == 86400


def test_a_late_candle_is_served_by_the_next_fetch(catalog_uri, late_source):
    closed = closed_period_stop(3600)
    start, end = closed - 6 * H, closed + 2 * H  # six closed hours and the open one, and beyond

    async def main():
        async with OHLCClient(iceberg_catalog_uri=catalog_uri, sources={"LATE": "late"}) as client:
            first = await client.fetch_ohlc("LATE:BTC/USDT", 3600, start, end)
            second = await client.fetch_ohlc("LATE:BTC/USDT", 3600, start, end)
            return first, second, client.iceberg.coverage("LATE:BTC/USDT")

    first, second, coverage = asyncio.run(main())
    assert first["timestamp"].tolist() == [closed - i * H for i in range(6, 1, -1)]
    reasons = first.attrs["quality"].missing_by_reason()
    assert reasons[EMPTY_AT_SOURCE] == 0 and reasons[NOT_YET_FILLED] == 1
    assert second["timestamp"].tolist() == [closed - i * H for i in range(6, 0, -1)]
    assert second.attrs["quality"].missing_by_reason()[NOT_YET_FILLED] == 0
    # Only the settled part is on the ledger, under the source that answered; the open period never.
    assert set(coverage["source"]) == {"late"}
    assert coverage["end_time"].max() <= closed - H
    assert late_source.asks[1][0] == closed - H  # the second fetch asked for the late period only


class Empty(IngestSource):
    """Has no candles, and vouches for the whole range."""

    name = "empty"

    def fetch_candles(self, ticker, period_seconds, start, stop):
        return SourceCandles(MarketInfo(str(ticker), 0, 0), frame_of([]))


def test_an_empty_answer_inside_the_horizon_is_never_remembered(warehouse):
    pm = get_plugin_manager()
    pm.register(_Plugin("empty", Empty()), name="test-ledger-empty")
    try:
        closed = closed_period_stop(60)
        historian = Historian(warehouse, SourceRegistry({"EMPTY": "empty"}))
        note = historian.handle(request("EMPTY:A/B", closed - 20 * 60_000_000, closed + 60_000_000, period=60))
        assert note.status == Notification.NOT_FOUND
        covered = warehouse.read_coverage("EMPTY:A/B", 60)
        assert covered and covered[-1][1] <= closed - 5 * 60_000_000  # five minutes before the close: unknown
        # A configured horizon of 0 records everything closed.
        eager = Historian(warehouse, SourceRegistry({"EMPTY": "empty"}), settle_seconds=0)
        eager.handle(request("EMPTY:C/D", closed - 20 * 60_000_000, closed + 60_000_000, period=60))
        assert warehouse.read_coverage("EMPTY:C/D", 60) == [(closed - 20 * 60_000_000, closed)]
    finally:
        pm.unregister(name="test-ledger-empty")


class Partial(IngestSource):
    """Answers with ``checked`` and ``served_by`` as a fallback chain would."""

    name = "partial"

    def __init__(self, checked=None, served_by=None, times=()):
        self.checked, self.served_by, self.times = checked, served_by, list(times)

    def fetch_candles(self, ticker, period_seconds, start, stop):
        return SourceCandles(MarketInfo(str(ticker), 2, 1), frame_of(self.times), checked=self.checked,
                             served_by=self.served_by)


def _with_source(warehouse, source, exchange="PART", **kwargs):
    pm = get_plugin_manager()
    pm.register(_Plugin("partial", source), name="test-ledger-partial")
    try:
        return Historian(warehouse, SourceRegistry({exchange: "partial"}), **kwargs)
    finally:
        pm.unregister(name="test-ledger-partial")


def test_only_the_parts_a_source_vouched_for_are_recorded(warehouse):
    source = Partial(checked=[(T0, T0 + 3 * H), (T0 + 5 * H, T0 + 8 * H)], times=[T0 + H])
    historian = _with_source(warehouse, source)
    note = historian.handle(request("PART:X/Y", T0, T0 + 10 * H - 1))
    assert note.status == Notification.OK and note.row_count == 1
    assert warehouse.read_coverage("PART:X/Y", 3600) == [(T0, T0 + 3 * H), (T0 + 5 * H, T0 + 8 * H)]
    # The unknown parts are asked again, the known ones not.
    assert warehouse.stored_if_covered("PART:X/Y", 3600, (T0, T0 + 3 * H)) == 1
    assert warehouse.stored_if_covered("PART:X/Y", 3600, (T0, T0 + 10 * H)) is None


def test_served_by_names_the_source_of_each_part(warehouse):
    served = [((T0, T0 + 4 * H), "files:/data"), ((T0 + 4 * H, T0 + 10 * H), "ccxt:binance")]
    source = Partial(served_by=served, times=[T0, T0 + 5 * H])
    historian = _with_source(warehouse, source)
    historian.handle(request("PART:X/Y", T0, T0 + 10 * H - 1))
    rows = warehouse.read_ledger("PART:X/Y").sort_by("start_time").to_pylist()
    assert [(r["start_time"], r["end_time"], r["source"], r["row_count"]) for r in rows] == [
        (T0, T0 + 4 * H, "files:/data", 1), (T0 + 4 * H, T0 + 10 * H, "ccxt:binance", 1)]
    assert all(r["ingested_at"] > 0 for r in rows)


def test_a_whole_answer_is_recorded_under_the_spec_of_its_source(warehouse):
    historian = _with_source(warehouse, Partial(times=[T0]))
    historian.handle(request("PART:X/Y", T0, T0 + 3 * H - 1))
    rows = warehouse.read_ledger("PART:X/Y").to_pylist()
    assert [(r["source"], r["row_count"], r["fingerprint"]) for r in rows] == [("partial", 1, None)]


def test_an_older_warehouse_gains_the_ledger_columns_on_open(catalog_uri):
    from pyiceberg.schema import Schema
    from pyiceberg.types import LongType, NestedField, StringType

    catalog = open_catalog(catalog_uri)
    catalog.create_namespace_if_not_exists("trading")
    old = Schema(
        NestedField(1, "ticker", StringType(), required=True),
        NestedField(2, "period_seconds", LongType(), required=True),
        NestedField(3, "start_time", LongType(), required=True),
        NestedField(4, "end_time", LongType(), required=True),
        NestedField(5, "row_count", LongType(), required=True),
        NestedField(6, "request_id", StringType(), required=False),
        NestedField(7, "ingested_at", LongType(), required=True),
    )
    table = catalog.create_table(("trading", COVERAGE_TABLE), schema=old)
    table.append(pa.Table.from_pylist([{"ticker": "SIM:BTC/USDT", "period_seconds": 3600, "start_time": T0,
                                        "end_time": T0 + 5 * H, "row_count": 5, "request_id": "old",
                                        "ingested_at": 1}], schema=old.as_arrow()))
    warehouse = Warehouse(open_catalog(catalog_uri))
    try:
        assert warehouse.read_coverage("SIM:BTC/USDT", 3600) == [(T0, T0 + 5 * H)]
        names = [f.name for f in warehouse.load_table(COVERAGE_TABLE).schema().fields]
        assert names[-2:] == ["source", "fingerprint"]
        # Before any row of the new schema: the only snapshot was written without the columns.
        assert warehouse.read_coverage_sources("SIM:BTC/USDT", 3600) == ()
        _, covered, _, served = warehouse.read_range_served("SIM:BTC/USDT", 3600, (T0, T0 + 6 * H))
        assert covered == [(T0, T0 + 5 * H)] and served == ()
        rows = warehouse.read_ledger("SIM:BTC/USDT").to_pylist()
        assert [(r["source"], r["fingerprint"], r["row_count"]) for r in rows] == [(None, None, 5)]
        warehouse.record_coverage("SIM:BTC/USDT", 3600, (T0 + 5 * H, T0 + 6 * H), 1, "new", source="sim")
        rows = warehouse.read_ledger("SIM:BTC/USDT").sort_by("start_time").to_pylist()
        assert [(r["source"], r["row_count"]) for r in rows] == [(None, 5), ("sim", 1)]
        assert warehouse.read_coverage("SIM:BTC/USDT", 3600) == [(T0, T0 + 6 * H)]
    finally:
        warehouse.close()
    again = Warehouse(open_catalog(catalog_uri))  # opening an upgraded warehouse changes nothing
    try:
        assert [f.name for f in again.load_table(COVERAGE_TABLE).schema().fields][-2:] == ["source", "fingerprint"]
    finally:
        again.close()


def test_the_quality_report_says_which_source_served_which_range(catalog_uri):
    served = [((T0, T0 + 4 * H), "files:/data"), ((T0 + 4 * H, T0 + 10 * H), "ccxt:binance")]
    source = Partial(served_by=served, times=[T0, T0 + 1 * H, T0 + 5 * H])
    pm = get_plugin_manager()
    pm.register(_Plugin("partial", source), name="test-ledger-partial")

    async def main():
        async with OHLCClient(iceberg_catalog_uri=catalog_uri, sources={"PART": "partial"}) as client:
            return await client.fetch_ohlc("PART:X/Y", 3600, T0, T0 + 10 * H - 1)

    try:
        frame = asyncio.run(main())
    finally:
        pm.unregister(name="test-ledger-partial")
    report = frame.attrs["quality"]
    assert [(s.first, s.last, s.periods, s.source) for s in report.served] == [
        (T0, T0 + 3 * H, 4, "files:/data"), (T0 + 4 * H, T0 + 9 * H, 6, "ccxt:binance")]
    assert [(m.first, m.last, m.reason, m.source) for m in report.missing] == [
        (T0 + 2 * H, T0 + 3 * H, EMPTY_AT_SOURCE, "files:/data"), (T0 + 4 * H, T0 + 4 * H, EMPTY_AT_SOURCE, "ccxt:binance"),
        (T0 + 6 * H, T0 + 9 * H, EMPTY_AT_SOURCE, "ccxt:binance")]
    text = str(report)
    assert "empty at source (files:/data)" in text and "served 2025-01-01T04:00:00Z .. 2025-01-01T09:00:00Z (6 periods): ccxt:binance" in text


def test_forget_never_loses_a_row_committed_during_it(catalog_uri):
    """Forgetting one range while another writer records coverage in the same partition: every
    concurrent row outside the range survives (conflicts retried from a fresh read)."""
    from dexorder_feeds.client.iceberg_client import IcebergClient

    writer = Warehouse(open_catalog(catalog_uri))
    forgetter = IcebergClient(warehouse=Warehouse(open_catalog(catalog_uri)))
    try:
        writer.record_coverage("SIM:BTC/USDT", 3600, (T0, T0 + 10 * H), 10, "first", source="sim")
        stop = threading.Event()
        errors: list[BaseException] = []

        def record() -> None:
            try:
                for i in range(12):
                    start = T0 + (100 + i) * H
                    writer.record_coverage("SIM:BTC/USDT", 3600, (start, start + H), 1, f"w{i}", source="sim")
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)
            finally:
                stop.set()

        thread = threading.Thread(target=record)
        thread.start()
        forgot = 0
        while not stop.is_set() or forgot == 0:
            forgot += forgetter.forget("SIM:BTC/USDT", 3600, T0 + 2 * H, T0 + 3 * H).coverage_rows
        thread.join()
        assert not errors
        assert writer.read_coverage("SIM:BTC/USDT", 3600) == [(T0, T0 + 2 * H), (T0 + 4 * H, T0 + 10 * H),
                                                              (T0 + 100 * H, T0 + 112 * H)]
    finally:
        writer.close()
        forgetter.warehouse.close()


def test_forget_everything_of_a_ticker_in_python(catalog_uri):
    from dexorder_feeds.client.iceberg_client import IcebergClient

    async def fill():
        async with OHLCClient(iceberg_catalog_uri=catalog_uri) as client:
            await client.fetch_ohlc("SIM:ETH/USDT", "1h", T0, T0 + 5 * H)
            await client.fetch_ohlc("SIM:ETH/USDT", "1d", T0, T0 + 48 * H)
            await client.fetch_ohlc("SIM:BTC/USDT", "1h", T0, T0 + 5 * H)

    asyncio.run(fill())
    client = IcebergClient(catalog_uri)
    try:
        result = client.forget("SIM:ETH/USDT", candles=True)
        assert result.coverage_rows == 2 and result.candles == 6 + 3
        assert client.ledger("SIM:ETH/USDT").empty and client.query_ohlc("SIM:ETH/USDT", "1h", T0, T0 + 5 * H).empty
        assert len(client.query_ohlc("SIM:BTC/USDT", "1h", T0, T0 + 5 * H)) == 6  # another ticker: untouched
        assert set(client.ledger()["state"]) == {"stored"}
    finally:
        client.warehouse.close()


def test_the_settle_horizon_is_configured_like_every_setting(tmp_path):
    from dexorder_feeds.config import resolve_settings
    from dexorder_feeds.vocabulary.errors import InvalidRequestError

    assert resolve_settings(environ={}).settle_seconds is None
    assert resolve_settings(environ={"DEXORDER_SETTLE_SECONDS": "90"}).settle_seconds == 90.0
    assert resolve_settings(settle_seconds=0, environ={"DEXORDER_SETTLE_SECONDS": "90"}).settle_seconds == 0.0
    config = tmp_path / "config.toml"
    config.write_text("settle_seconds = 600\n")
    assert resolve_settings(config_file=config, environ={}).settle_seconds == 600.0
    for bad in ("-1", "soon", "nan"):
        with pytest.raises(InvalidRequestError, match="DEXORDER_SETTLE_SECONDS"):
            resolve_settings(environ={"DEXORDER_SETTLE_SECONDS": bad})
    with pytest.raises(InvalidRequestError, match="zero or more"):
        Historian(None, SourceRegistry(), settle_seconds=-5)  # type: ignore[arg-type]


def test_a_configured_horizon_reaches_the_in_process_historian(catalog_uri):
    pm = get_plugin_manager()
    pm.register(_Plugin("empty", Empty()), name="test-ledger-empty")
    closed = closed_period_stop(3600)

    async def main(settle):
        async with OHLCClient(iceberg_catalog_uri=catalog_uri, sources={"EMPTY": "empty"},
                              settle_seconds=settle) as client:
            await client.fetch_ohlc("EMPTY:A/B", 3600, closed - 3 * H, closed - 1)
            return client.iceberg.ledger("EMPTY:A/B")

    try:
        default = asyncio.run(main(None))
        eager = asyncio.run(main(0))
    finally:
        pm.unregister(name="test-ledger-empty")
    # The default keeps the last closed hour unknown; a horizon of 0 records it.
    assert default[["end_time", "state"]].values.tolist() == [[closed - H, "checked-empty"]]
    assert eager[["end_time", "state"]].values.tolist() == [[closed, "checked-empty"]]


def test_the_open_period_is_never_stored_even_when_a_source_gives_it(warehouse):
    class Eager(IngestSource):
        """Gives a candle for every period asked and for the open one and the next, too."""

        name = "eager"
        settle = 0.0

        def fetch_candles(self, ticker, period_seconds, start, stop):
            step = period_seconds * 1_000_000
            return SourceCandles(MarketInfo(str(ticker), 2, 1), frame_of(list(range(start, stop + 2 * step, step))))

    pm = get_plugin_manager()
    pm.register(_Plugin("eager", Eager()), name="test-ledger-eager")
    try:
        closed = closed_period_stop(60)
        note = Historian(warehouse, SourceRegistry({"EAGER": "eager"})).handle(
            request("EAGER:A/B", closed - 10 * 60_000_000, closed + 5 * 60_000_000, period=60))
    finally:
        pm.unregister(name="test-ledger-eager")
    assert note.status == Notification.OK
    table, _ = warehouse.read_candles("EAGER:A/B", 60, (0, 2**62))
    assert max(table["timestamp"].to_pylist()) < closed_period_stop(60)
    assert warehouse.read_coverage("EAGER:A/B", 60)[-1][1] <= closed_period_stop(60)


def test_a_part_vouched_for_at_a_finer_period_covers_only_whole_coarser_periods(warehouse):
    class Hourly(Partial):
        def periods(self, ticker):
            return [3600]

    source = Hourly(checked=[(T0 + H, T0 + 10 * H)], served_by=[((T0, T0 + 6 * H), "a"), ((T0 + 6 * H, T0 + 12 * H), "b")])
    historian = _with_source(warehouse, source)
    historian.handle(request("PART:X/Y", T0, T0 + 12 * H - 1, period=4 * 3600))
    rows = warehouse.read_ledger("PART:X/Y").to_pylist()
    # [1h, 10h) holds only the 4h period [4h, 8h); "b" began inside it: the period is b's.
    assert [(r["start_time"], r["end_time"], r["source"]) for r in rows] == [(T0 + 4 * H, T0 + 8 * H, "b")]


def test_a_read_only_older_warehouse_is_read_without_the_new_columns(tmp_path, caplog):
    from pyiceberg.schema import Schema

    from dexorder_feeds.client.iceberg_client import IcebergClient
    from dexorder_feeds.storage.schema import CANDLES_TABLE, MARKETS_TABLE, TABLE_PROPERTIES, table_schemas, \
        ticker_period_spec

    path = tmp_path / "catalog.db"
    catalog = open_catalog(f"sqlite:///{path}")
    catalog.create_namespace_if_not_exists("trading")
    for name in (CANDLES_TABLE, MARKETS_TABLE):
        schema = table_schemas()[name]
        extra = {"partition_spec": ticker_period_spec(schema)} if name == CANDLES_TABLE else {}
        catalog.create_table(("trading", name), schema=schema, properties=dict(TABLE_PROPERTIES), **extra)
    old = Schema(*[f for f in table_schemas()[COVERAGE_TABLE].fields if f.name not in ("source", "fingerprint")])
    table = catalog.create_table(("trading", COVERAGE_TABLE), schema=old, properties=dict(TABLE_PROPERTIES))
    table.append(pa.Table.from_pylist([{"ticker": "SIM:BTC/USDT", "period_seconds": 3600, "start_time": T0,
                                        "end_time": T0 + 5 * H, "row_count": 0, "request_id": "old",
                                        "ingested_at": 1}], schema=old.as_arrow()))
    read_only = Warehouse(open_catalog(f"sqlite:///file:{path}?mode=ro&uri=true"))
    client = IcebergClient(warehouse=read_only)
    with caplog.at_level("WARNING"):
        assert read_only.read_coverage("SIM:BTC/USDT", 3600) == [(T0, T0 + 5 * H)]
    assert "could not be added" in caplog.text and "write access" in caplog.text
    ledger = client.ledger("SIM:BTC/USDT")
    assert ledger[["state", "source"]].values.tolist() == [["checked-empty", None]]
    cached = client.read_cache(FetchRequest.create("SIM:BTC/USDT", 3600, T0, T0 + 5 * H - 1))
    assert cached.covered == [(T0, T0 + 5 * H)] and cached.served == ()
