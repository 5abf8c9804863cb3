"""dexorder_feeds.candles / acandles: exact Decimal candles, read in pages."""

from __future__ import annotations

import asyncio
import decimal
import threading
import tracemalloc
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

import dexorder_feeds
from dexorder_feeds import Candle, acandles, candles, hookimpl
from dexorder_feeds.vocabulary.errors import InvalidTickerError, InvalidTimeRangeError
from dexorder_feeds.plugins import get_plugin_manager
from dexorder_feeds.client.sync import close_sync_clients

from conftest import SEED_END, SEED_START, SEED_TICKER

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def uri(tmp_path_factory):
    path = tmp_path_factory.mktemp("iter-warehouse") / "catalog.db"
    yield f"sqlite:///{path}"
    close_sync_clients()


class Reads:
    """A real plugin recording the range of every cache read."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ranges: list[tuple[int, int]] = []

    @hookimpl
    def dexorder_cache_checked(self, request, cached_rows, missing_ranges):
        with self.lock:
            self.ranges.append((request.start_time, request.end_time))


@pytest.fixture
def reads():
    plugin = Reads()
    get_plugin_manager().register(plugin)
    yield plugin
    get_plugin_manager().unregister(plugin)


def test_every_field_is_the_stored_integer_scaled_exactly(uri):
    ints = dexorder_feeds.fetch_ohlc(SEED_TICKER, 3600, SEED_START, SEED_END, iceberg_catalog_uri=uri)
    got = list(candles(SEED_TICKER, "1h", SEED_START, SEED_END, iceberg_catalog_uri=uri))
    assert len(got) == len(ints) == 168
    for candle, row in zip(got, ints.itertuples()):
        assert type(candle) is Candle
        assert (candle.ticker, candle.period_seconds, candle.timestamp) == (SEED_TICKER, 3600, row.timestamp)
        assert candle.time == EPOCH + timedelta(microseconds=row.timestamp) and candle.time.tzinfo is timezone.utc
        for field in ("open", "high", "low", "close"):
            value = getattr(candle, field)
            assert type(value) is Decimal and value == Decimal(int(getattr(row, field))) / 10**2
            assert value.as_tuple().exponent == -2  # kept at the market's precision
        for field in ("volume", "buy_vol", "sell_vol"):
            assert getattr(candle, field) == Decimal(int(getattr(row, field))) / 10**6
        assert candle.open_interest is None  # SIM gives no open interest
    assert got[0].time == datetime(2025, 1, 1, tzinfo=timezone.utc)


def test_exact_whatever_the_callers_decimal_context(uri):
    expected = list(candles(SEED_TICKER, 3600, SEED_START, SEED_START + 23 * 3_600_000_000, iceberg_catalog_uri=uri))
    with decimal.localcontext() as ctx:
        ctx.prec = 3
        ctx.rounding = decimal.ROUND_DOWN
        got = list(candles(SEED_TICKER, 3600, SEED_START, SEED_START + 23 * 3_600_000_000, iceberg_catalog_uri=uri))
    assert got == expected and got[0].open == Decimal("56776.05")


def test_candles_are_immutable(uri):
    candle = next(candles(SEED_TICKER, "1h", "2025-01-01", "2025-01-01T02:00", iceberg_catalog_uri=uri))
    with pytest.raises(AttributeError):
        candle.close = Decimal(0)  # type: ignore[misc]
    assert {candle: 1}[candle._replace()] == 1  # immutable values hash and compare by value


def test_read_in_pages_in_order(uri, reads):
    got = list(candles(SEED_TICKER, "1h", SEED_START, SEED_END, page_size=50, iceberg_catalog_uri=uri))
    assert len(got) == 168
    assert [c.timestamp for c in got] == sorted(c.timestamp for c in got)
    h = 3_600_000_000
    pages = [(SEED_START + i * 50 * h, min(SEED_START + (i + 1) * 50 * h, SEED_START + 168 * h) - 1) for i in range(4)]
    assert reads.ranges == pages  # four fetches of at most 50 candles, in order
    assert got == list(candles(SEED_TICKER, "1h", SEED_START, SEED_END, iceberg_catalog_uri=uri))


def test_async_twin_gives_the_same_candles(uri):
    expected = list(candles(SEED_TICKER, "1h", SEED_START, SEED_END, page_size=40, iceberg_catalog_uri=uri))

    async def collect():
        stream = acandles(SEED_TICKER, "1h", SEED_START, SEED_END, page_size=40, iceberg_catalog_uri=uri)
        return [c async for c in stream]

    assert asyncio.run(collect()) == expected


def test_memory_stays_bounded_for_long_ranges(uri):
    start, end = "2025-01-01", "2025-01-14T23:59"  # 20,160 one-minute candles
    dexorder_feeds.fetch_ohlc(SEED_TICKER, 60, start, end, iceberg_catalog_uri=uri)  # ingest outside the trace

    def peak(consume) -> tuple[int, int]:
        tracemalloc.start()
        try:
            result = consume()
            return tracemalloc.get_traced_memory()[1], result
        finally:
            tracemalloc.stop()

    streamed, count = peak(lambda: sum(1 for _ in candles(SEED_TICKER, 60, start, end, page_size=2_000,
                                                           iceberg_catalog_uri=uri)))
    listed, items = peak(lambda: len(list(candles(SEED_TICKER, 60, start, end, page_size=2_000,
                                                   iceberg_catalog_uri=uri))))
    print(f"peak traced memory: streamed {streamed / 1e6:.1f} MB, listed {listed / 1e6:.1f} MB")
    assert count == items == 14 * 1440
    assert listed > 15_000_000  # holding every candle costs ~1 kB each ...
    assert streamed < listed / 4  # ... streaming them in pages does not


def test_bad_input_fails_at_the_call():
    with pytest.raises(InvalidTickerError):
        candles("btc", "1h", SEED_START, SEED_END)
    with pytest.raises(InvalidTimeRangeError):
        candles(SEED_TICKER, "1h", SEED_END, SEED_START)
    with pytest.raises(ValueError, match="page_size"):
        candles(SEED_TICKER, "1h", SEED_START, SEED_END, page_size=0)
    with pytest.raises(TypeError, match="unknown client setting"):
        candles(SEED_TICKER, "1h", SEED_START, SEED_END, catalog="x")


def test_default_end_is_now_and_open_period_is_never_yielded(uri):
    recent = datetime.now(timezone.utc) - timedelta(hours=5)
    got = list(candles("SIM:SOL/USDT", "1h", recent, iceberg_catalog_uri=uri))
    now_us = int(datetime.now(timezone.utc).timestamp() * 1_000_000)
    assert 4 <= len(got) <= 5
    assert all(c.timestamp + 3_600_000_000 <= now_us for c in got)
