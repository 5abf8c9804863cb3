"""The historian against a real SQLite Iceberg catalog: rounding, the open period, empty ranges,
races, precision, and bad input that must leave stored data untouched."""

from __future__ import annotations

import threading

import pandas as pd
import pytest

from dexorder_feeds.vocabulary.errors import PrecisionError
from dexorder_feeds.vocabulary.markets import MarketInfo
from dexorder_feeds.ingest.historian import Historian, validate_request
from dexorder_feeds.ingest.sources import IngestSource, SourceCandles, SourceRegistry
from dexorder_feeds.vocabulary.times import now_micros
from dexorder_feeds.wire import HistoryRequest, Notification

from conftest import SEED_END, SEED_START, SEED_TICKER

H = 3_600_000_000


def request(**fields) -> HistoryRequest:
    base = dict(request_id="r", client_id="c", ticker=SEED_TICKER, period_seconds=3600,
                start_time=SEED_START, end_time=SEED_END)
    base.update(fields)
    return HistoryRequest(**base)


def stored(warehouse, ticker=SEED_TICKER, period=3600) -> list[int]:
    table, _ = warehouse.read_candles(ticker, period, (0, 2**62))
    return table["timestamp"].to_pylist()


def test_seed_range_is_168_candles_and_recorded(warehouse):
    note = Historian(warehouse).handle(request())
    assert note.status == Notification.OK and note.row_count == 168
    assert (note.covered_start, note.covered_end) == (SEED_START, SEED_START + 168 * H)
    assert note.iceberg_namespace == "trading" and note.iceberg_table == "ohlc"
    assert warehouse.read_coverage(SEED_TICKER, 3600) == [(SEED_START, SEED_START + 168 * H)]
    assert warehouse.read_market(SEED_TICKER) == MarketInfo(SEED_TICKER, 2, 6)


def test_unaligned_bounds_round_to_whole_periods(warehouse):
    note = Historian(warehouse).handle(request(start_time=SEED_START + 1, end_time=SEED_START + 5 * H - 1))
    assert note.row_count == 4
    assert stored(warehouse) == [SEED_START + i * H for i in range(1, 5)]


def test_limit_cuts_from_the_start(warehouse):
    note = Historian(warehouse).handle(request(limit=10))
    assert note.row_count == 10 and stored(warehouse) == [SEED_START + i * H for i in range(10)]


def test_the_open_period_is_never_stored(warehouse):
    now = now_micros()
    note = Historian(warehouse).handle(request(start_time=now - 3 * H, end_time=now + 5 * H))
    assert note.status == Notification.OK
    assert max(stored(warehouse)) + H <= now
    assert note.covered_end <= now


def test_overlapping_and_racing_requests_never_duplicate(warehouse):
    historian = Historian(warehouse)
    historian.handle(request(start_time=SEED_START + 24 * H, end_time=SEED_START + 48 * H))
    barrier = threading.Barrier(6)
    notes = []

    def work(i):
        barrier.wait()
        notes.append(historian.handle(request(request_id=f"r{i}", start_time=SEED_START + (i % 3) * 10 * H)))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ts = stored(warehouse)
    assert len(ts) == len(set(ts)) == 168
    assert all(n.status == Notification.OK for n in notes)


def test_two_historians_on_one_warehouse_never_duplicate(warehouse):
    # Two processes' historians each have their own committer; they race on the same range.
    from dexorder_feeds.storage.catalog import open_catalog
    from dexorder_feeds.storage.warehouse import Warehouse

    other = Warehouse(open_catalog(f"sqlite:///{warehouse.catalog.properties['uri'][len('sqlite:///'):]}"))
    first, second = Historian(warehouse), Historian(other)
    barrier = threading.Barrier(2)
    notes = []

    def work(h, rid):
        for day in range(7):
            barrier.wait()
            notes.append(h.handle(request(request_id=f"{rid}{day}", start_time=SEED_START + day * 24 * H,
                                          end_time=SEED_START + (day + 1) * 24 * H - 1)))

    threads = [threading.Thread(target=work, args=(h, rid)) for h, rid in ((first, "a"), (second, "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    other.close()
    ts = stored(warehouse)
    assert len(ts) == len(set(ts)) == 168
    assert [n.status for n in notes] == [Notification.OK] * 14


class FinerSource(IngestSource):
    """A source whose precision grew after its market was first stored."""

    name = "finer"

    def __init__(self, decimals: int, price: str) -> None:
        self.decimals, self.price = decimals, price

    def fetch_candles(self, ticker, period_seconds, start, stop):
        ts = list(range(start, stop, period_seconds * 1_000_000))
        frame = pd.DataFrame({"timestamp": ts, **{c: [self.price] * len(ts) for c in ("open", "high", "low", "close")},
                              "volume": ["1"] * len(ts)})
        return SourceCandles(MarketInfo(str(ticker), self.decimals, 0), frame)


def test_finer_precision_later_fails_loudly_and_keeps_stored_data(warehouse, monkeypatch):
    registry = SourceRegistry({"FINE": "sim"})
    historian = Historian(warehouse, registry)
    ticker = "FINE:ABC/USD"
    monkeypatch.setattr(registry, "source_for", lambda t: FinerSource(2, "1.25"))
    first = historian.handle(request(ticker=ticker, end_time=SEED_START + 9 * H))
    assert first.status == Notification.OK
    before = warehouse.read_candles(ticker, 3600, (0, 2**62))[0]
    monkeypatch.setattr(registry, "source_for", lambda t: FinerSource(4, "1.2575"))
    second = historian.handle(request(ticker=ticker, start_time=SEED_START + 10 * H, end_time=SEED_START + 19 * H))
    assert second.status == Notification.ERROR
    assert second.error_type == PrecisionError.__name__ and "1.2575" in second.error_message
    after = warehouse.read_candles(ticker, 3600, (0, 2**62))[0]
    assert after.equals(before)
    assert warehouse.read_market(ticker) == MarketInfo(ticker, 2, 0)
    # Coarser values are rescaled exactly to the stored decimals.
    monkeypatch.setattr(registry, "source_for", lambda t: FinerSource(1, "1.5"))
    third = historian.handle(request(ticker=ticker, start_time=SEED_START + 20 * H, end_time=SEED_START + 20 * H))
    assert third.status == Notification.OK
    last = warehouse.read_candles(ticker, 3600, (SEED_START + 20 * H, SEED_START + 21 * H))[0]
    assert last["close"].to_pylist() == [150]


@pytest.mark.parametrize(
    "fields, error",
    [
        (dict(ticker="BTCUSDT"), "InvalidTickerError"),
        (dict(ticker="SIM:BTC/USDT/../../x"), "InvalidTickerError"),
        (dict(period_seconds=0), "InvalidPeriodError"),
        (dict(period_seconds=-3600), "InvalidPeriodError"),
        (dict(start_time=SEED_END, end_time=SEED_START), "InvalidTimeRangeError"),
        (dict(start_time=1735689600), "InvalidTimeRangeError"),
        (dict(end_time=1736294399000), "InvalidTimeRangeError"),
        (dict(ticker="NOSUCHEXCHANGE:BTC/USDT"), "UnknownSourceError"),
        (dict(period_seconds=60, start_time=SEED_START, end_time=SEED_START + 4 * 10**14), "InvalidRequestError"),
    ],
)
def test_bad_requests_are_errors_that_change_nothing(warehouse, fields, error):
    historian = Historian(warehouse)
    historian.handle(request(end_time=SEED_START + 5 * H))
    before = stored(warehouse)
    note = historian.handle(request(request_id="bad", **fields))
    assert note.status == Notification.ERROR and note.error_type == error and note.error_message
    assert stored(warehouse) == before


def test_validate_request_reports_no_interval_for_a_future_range():
    now = now_micros()
    valid = validate_request(request(start_time=now + 10 * H, end_time=now + 20 * H), now=now)
    assert valid.interval is None


def test_an_empty_answer_stores_no_market_decimals(warehouse):
    note = Historian(warehouse).handle(request(start_time=1388534400000000, end_time=1388534400000000 + 9 * H))
    assert note.status == Notification.NOT_FOUND
    assert warehouse.read_coverage(SEED_TICKER, 3600) == [(1388534400000000, 1388534400000000 + 10 * H)]
    assert warehouse.read_market(SEED_TICKER) is None


def test_repeating_a_stored_range_adds_no_snapshot(warehouse):
    historian = Historian(warehouse)
    historian.handle(request())
    snapshots = len(warehouse.load_table("coverage").snapshots()), len(warehouse.load_table("ohlc").snapshots())
    again = historian.handle(request(request_id="again"))
    assert again.status == Notification.OK and again.row_count == 168
    assert (len(warehouse.load_table("coverage").snapshots()), len(warehouse.load_table("ohlc").snapshots())) == snapshots


def _candle_file(root, rows):
    pair = root / "MYX" / "ABC-USD"
    pair.mkdir(parents=True)
    lines = ["timestamp,open,high,low,close,volume"] + [",".join(row) for row in rows]
    (pair / "1h.csv").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("bad_row, text", [
    (("2025-01-01T02:00:00Z", "10.00", "10.50", "9.50", "10.75", "3"), "high 10.50 is below max(open, close) 10.75"),
    (("2025-01-01T02:00:00Z", "10.00", "10.50", "10.10", "10.20", "3"), "low 10.10 is above min(open, close) 10.00"),
    (("2025-01-01T02:00:00Z", "10.00", "10.50", "9.50", "10.20", "-3"), "volume -3 is negative"),
    (("2025-01-01T02:00:00Z", "-1.00", "10.50", "-9.50", "10.20", "3"), "is negative"),
])
def test_impossible_candles_are_refused_naming_source_and_time(warehouse, tmp_path, bad_row, text):
    from dexorder_feeds.vocabulary.errors import InvalidCandleError

    good = [("2025-01-01T00:00:00Z", "10.00", "10.50", "9.50", "10.20", "3"),
            ("2025-01-01T01:00:00Z", "10.20", "10.60", "10.00", "10.40", "4")]
    _candle_file(tmp_path, [*good, bad_row])
    historian = Historian(warehouse, SourceRegistry({"MYX": f"files:{tmp_path}"}))
    ticker = "MYX:ABC/USD"
    note = historian.handle(request(ticker=ticker, end_time=SEED_START + 5 * H))
    assert note.status == Notification.ERROR and note.error_type == InvalidCandleError.__name__
    assert text in note.error_message
    assert "files source" in note.error_message and "2025-01-01T02:00:00Z" in note.error_message
    # Nothing of the range was stored: no candle, no coverage, no market decimals.
    assert stored(warehouse, ticker) == []
    assert warehouse.read_coverage(ticker, 3600) == []
    assert warehouse.read_market(ticker) is None
    # The range before the bad candle is fine on its own.
    ok = historian.handle(request(ticker=ticker, end_time=SEED_START + 1 * H))
    assert ok.status == Notification.OK and len(stored(warehouse, ticker)) == 2


class _Concurrency:
    """How many fetches run at once, at most."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = self.most = 0

    def __enter__(self) -> None:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)

    def __exit__(self, *exc) -> None:
        with self.lock:
            self.now -= 1


def test_local_fetches_run_one_per_core_and_network_fetches_are_not_held_back(warehouse, monkeypatch):
    """A local source (pure CPU, IngestSource.local) gets at most as many fetches at once as
    the machine has cores, whatever the number of workers; a network source is not held back."""
    import time

    import dexorder_feeds.ingest.historian as historian_module
    from dexorder_feeds.hookspecs import hookimpl
    from dexorder_feeds.ingest.sources.sim import SimulatedSource
    from dexorder_feeds.plugins import get_plugin_manager

    local_seen, network_seen = _Concurrency(), _Concurrency()
    network_together = threading.Barrier(3, timeout=10)  # three network fetches must overlap

    class SlowLocal(SimulatedSource):
        local = True

        def fetch_candles(self, ticker, period_seconds, start, stop):
            with local_seen:
                time.sleep(0.2)  # releases the interpreter lock: without the limit they would overlap
                return super().fetch_candles(ticker, period_seconds, start, stop)

    class Network(SimulatedSource):
        local = False

        def fetch_candles(self, ticker, period_seconds, start, stop):
            with network_seen:
                network_together.wait()
                return super().fetch_candles(ticker, period_seconds, start, stop)

    class Plugin:
        @hookimpl
        def dexorder_register_sources(self, register):
            register("slow-local", lambda argument: SlowLocal())
            register("network", lambda argument: Network())

    monkeypatch.setattr(historian_module, "_cores", lambda: 1)
    pm = get_plugin_manager()
    pm.register(Plugin(), name="test-historian-local-fetches")
    try:
        historian = Historian(warehouse, SourceRegistry({"LOC": "slow-local", "NET": "network"}))
        assert SimulatedSource.local and not Network.local

        def run(exchange: str) -> list[Notification]:
            notes: list[Notification] = []
            threads = [threading.Thread(target=lambda i=i: notes.append(historian.handle(
                request(request_id=f"{exchange}{i}", ticker=f"{exchange}:T{i}/USDT", end_time=SEED_START + 24 * H - 1))))
                for i in range(3)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            return notes

        assert [n.status for n in run("LOC")] == [Notification.OK] * 3
        assert local_seen.most == 1
        assert [n.status for n in run("NET")] == [Notification.OK] * 3
        assert network_seen.most == 3
    finally:
        pm.unregister(name="test-historian-local-fetches")


def test_a_request_for_a_range_already_ingested_needs_no_local_fetch_slot(warehouse, monkeypatch):
    """With the one local-fetch slot held by a fill in its source call, a repeat of a stored
    range is answered at once: only a source read takes a slot."""
    import dexorder_feeds.ingest.historian as historian_module
    from dexorder_feeds.ingest.sources.sim import SimulatedSource

    monkeypatch.setattr(historian_module, "_cores", lambda: 1)
    historian = Historian(warehouse)
    day = 24 * H
    assert historian.handle(request(request_id="stored", end_time=SEED_START + day - 1)).status == Notification.OK
    in_source, release = threading.Event(), threading.Event()
    fetch = SimulatedSource.fetch_candles

    def held(self, ticker, period_seconds, start, stop):
        in_source.set()
        assert release.wait(30)
        return fetch(self, ticker, period_seconds, start, stop)

    monkeypatch.setattr(SimulatedSource, "fetch_candles", held)
    slow: list[Notification] = []
    worker = threading.Thread(target=lambda: slow.append(historian.handle(
        request(request_id="slow", start_time=SEED_START + day, end_time=SEED_START + 2 * day - 1))))
    worker.start()
    try:
        assert in_source.wait(10)  # the slot is taken
        repeat = historian.begin(request(request_id="repeat", end_time=SEED_START + day - 1)).result(10)
        assert (repeat.status, repeat.row_count) == (Notification.OK, 24)
        assert slow == []  # still in its source call
    finally:
        release.set()
        worker.join(30)
    assert [n.status for n in slow] == [Notification.OK]
