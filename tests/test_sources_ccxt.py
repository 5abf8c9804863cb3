"""The ``ccxt`` ingest source against a real ccxt Binance object whose HTTP layer is recorded.

There is no network here. The exchange gets a ``requests`` session whose transport adapter
answers from ``tests/data/ccxt/binance/`` (Binance's wire format, built by
``tests/data/make_candles.py``), keyed by method, path and query. Everything above the socket is
ccxt's own code: request signing, rate limiting, error handling, market and kline parsing.
"""

from __future__ import annotations

import json
import sys
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import ccxt
import numpy as np
import pandas as pd
import pytest
import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

from dexorder_feeds.vocabulary.errors import (
    DataError,
    DexOrderError,
    InvalidPeriodError,
    InvalidTickerError,
    MissingDependencyError,
    RequestFailedError,
    UnknownSourceError,
)
from dexorder_feeds.hookspecs import hookimpl
from dexorder_feeds.vocabulary.markets import scale_to_integers
from dexorder_feeds.plugins import get_plugin_manager
from dexorder_feeds.ingest.historian import Historian
from dexorder_feeds.ingest.sources import SourceRegistry
from dexorder_feeds.ingest.sources import ccxt_source
from dexorder_feeds.ingest.sources.ccxt_source import CcxtSource, decimals_of_precision
from dexorder_feeds.vocabulary.tickers import parse_ticker
from dexorder_feeds.wire import HistoryRequest, Notification

RECORDINGS = Path(__file__).parent / "data" / "ccxt" / "binance"
HOUR_US = 3_600_000_000
DAY_US = 24 * HOUR_US
WEEK_START = 1735689600000000  # 2025-01-01 00:00 UTC
WEEK_START_MS = WEEK_START // 1000
BTC = parse_ticker("BINANCE:BTC/USDT")


class RecordedBinance(BaseAdapter):
    """A ``requests`` transport that serves recorded responses and counts the requests."""

    def __init__(self, directory: Path) -> None:
        super().__init__()
        self.directory = directory
        self.responses: dict[tuple[str, str, tuple[tuple[str, str], ...]], tuple[int, str]] = {}
        for entry in json.loads((directory / "index.json").read_text()):
            key = (entry["method"], entry["path"], tuple(sorted(entry["query"].items())))
            self.responses[key] = (entry["status"], entry["file"])
        self.calls: list[tuple[str, dict[str, str]]] = []
        self.unmatched: list[str] = []
        self.fail_with: Exception | None = None
        self._lock = threading.Lock()

    def send(self, request: Any, stream: bool = False, timeout: Any = None, verify: Any = True,
             cert: Any = None, proxies: Any = None) -> requests.Response:
        url = urlsplit(request.url)
        query = dict(parse_qsl(url.query))
        with self._lock:
            self.calls.append((url.path, query))
        if self.fail_with is not None and url.path == "/api/v3/klines":
            raise self.fail_with
        found = self.responses.get((request.method, url.path, tuple(sorted(query.items()))))
        response = requests.Response()
        response.url, response.request, response.encoding = request.url, request, "utf-8"
        response.headers = CaseInsensitiveDict({"Content-Type": "application/json;charset=UTF-8"})
        if url.netloc != "api.binance.com" or found is None:
            with self._lock:
                self.unmatched.append(request.url)
            response.status_code, response.reason = 404, "Not Found"
            response._content = b'{"code":-1,"msg":"no recording for this request"}'
            return response
        status, name = found
        response.status_code, response.reason = status, "OK" if status == 200 else "Bad Request"
        response._content = (self.directory / name).read_bytes()
        return response

    def close(self) -> None:
        pass

    def kline_queries(self) -> list[tuple[int, int]]:
        return [(int(q["startTime"]), int(q["limit"])) for path, q in self.calls if path == "/api/v3/klines"]


@pytest.fixture
def recorded() -> Any:
    adapter = RecordedBinance(RECORDINGS)
    session = requests.Session()
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    exchange = ccxt.binance({
        "enableRateLimit": True,
        "session": session,
        "options": {"fetchMarkets": ["spot"], "defaultType": "spot"},
    })
    yield exchange, adapter
    assert adapter.unmatched == [], "the source made requests that have no recording"


def raw_klines(name: str) -> list[list[Any]]:
    return json.loads((RECORDINGS / name).read_text())


def test_week_is_fetched_in_pages_with_exact_values(recorded: Any) -> None:
    exchange, adapter = recorded
    source = CcxtSource("binance", exchange=exchange, page_limit=100)
    got = source.fetch_candles(BTC, 3600, WEEK_START, WEEK_START + 168 * HOUR_US)

    assert adapter.kline_queries() == [(WEEK_START_MS, 100), (WEEK_START_MS + 100 * 3_600_000, 68)]
    frame = got.frame
    assert len(frame) == 168
    np.testing.assert_array_equal(frame["timestamp"], WEEK_START + np.arange(168) * HOUR_US)
    raw = raw_klines("klines_1h_page1.json") + raw_klines("klines_1h_page2.json")
    for i, name in enumerate(("open", "high", "low", "close", "volume"), start=1):
        assert list(frame[name]) == [Decimal(row[i]) for row in raw], name
    assert got.scaled is False
    assert (got.market.price_decimals, got.market.volume_decimals) == (2, 5)  # tickSize 0.01, stepSize 0.00001


def test_taker_buy_volume_becomes_buy_vol_and_the_rest_sell_vol(recorded: Any) -> None:
    exchange, _ = recorded
    got = CcxtSource("binance", exchange=exchange).fetch_candles(BTC, 3600, WEEK_START + 144 * HOUR_US,
                                                                 WEEK_START + 168 * HOUR_US)
    raw = raw_klines("klines_1h_day7.json")
    assert list(got.frame["buy_vol"]) == [Decimal(row[9]) for row in raw]
    assert list(got.frame["sell_vol"]) == [Decimal(row[5]) - Decimal(row[9]) for row in raw]
    assert all(b + s == v for b, s, v in zip(got.frame["buy_vol"], got.frame["sell_vol"], got.frame["volume"]))
    assert "parse_ohlcv" not in vars(exchange), "the raw-row capture must not stay on the exchange"


def test_default_page_limit_asks_once_for_exactly_the_range(recorded: Any) -> None:
    exchange, adapter = recorded
    got = CcxtSource("binance", exchange=exchange).fetch_candles(BTC, 3600, WEEK_START + 144 * HOUR_US,
                                                                 WEEK_START + 168 * HOUR_US)
    assert adapter.kline_queries() == [(WEEK_START_MS + 144 * 3_600_000, 24)]
    assert len(got.frame) == 24


def test_only_candles_inside_the_range_are_returned(recorded: Any) -> None:
    exchange, adapter = recorded
    # Jan 2 is missing on the exchange, so its 3-candle page runs to Jan 4, past the range.
    got = CcxtSource("binance", exchange=exchange).fetch_candles(BTC, 86400, WEEK_START, WEEK_START + 3 * DAY_US)
    assert list(got.frame["timestamp"]) == [WEEK_START, WEEK_START + 2 * DAY_US]
    assert adapter.kline_queries() == [(WEEK_START_MS, 3)]


def test_the_still_open_candle_is_dropped(recorded: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    exchange, adapter = recorded
    now = WEEK_START + 2 * DAY_US + 12 * HOUR_US  # Jan 3 12:00: the Jan 3 daily candle is open
    monkeypatch.setattr(ccxt_source, "now_micros", lambda: now)
    got = CcxtSource("binance", exchange=exchange).fetch_candles(BTC, 86400, WEEK_START, WEEK_START + 3 * DAY_US)
    assert adapter.kline_queries() == [(WEEK_START_MS, 2)]
    assert list(got.frame["timestamp"]) == [WEEK_START]


def test_volumes_finer_than_the_amount_step_widen_the_decimals(recorded: Any) -> None:
    exchange, _ = recorded
    got = CcxtSource("binance", exchange=exchange).fetch_candles(BTC, 900, WEEK_START, WEEK_START + 2 * 900_000_000)
    assert (got.market.price_decimals, got.market.volume_decimals) == (2, 8)
    scaled = scale_to_integers(got.frame, got.market)  # would raise PrecisionError if too narrow
    assert list(scaled["volume"]) == [21234567891, 18700000001]
    assert list(scaled["sell_vol"]) == [21234567891 - 10112345678, 18700000001 - 9350000001]
    assert list(scaled["close"]) == [9360137, 9364010]


def test_period_the_exchange_lacks_names_the_ones_it_offers(recorded: Any) -> None:
    exchange, adapter = recorded
    with pytest.raises(InvalidPeriodError) as info:
        CcxtSource("binance", exchange=exchange).fetch_candles(BTC, 2700, WEEK_START, WEEK_START + 2700_000_000)
    message = str(info.value)
    assert "2700s" in message and "1m (60s)" in message and "1h (3600s)" in message and "1w (604800s)" in message
    assert "1M (2592000s)" in message  # the calendar month, under its documented code
    assert adapter.kline_queries() == []


@pytest.mark.parametrize(("seconds", "timeframe"), [
    (60, "1m"), (300, "5m"), (900, "15m"), (3600, "1h"), (14400, "4h"), (86400, "1d"), (604800, "1w"),
    (2592000, "1M"),
])
def test_periods_map_to_ccxt_timeframes(recorded: Any, seconds: int, timeframe: str) -> None:
    exchange, _ = recorded
    assert CcxtSource("binance", exchange=exchange).timeframe_for(seconds) == timeframe


def test_unknown_symbol_is_an_invalid_ticker(recorded: Any) -> None:
    exchange, adapter = recorded
    with pytest.raises(InvalidTickerError, match="does not list DOGE/BTC"):
        CcxtSource("binance", exchange=exchange).fetch_candles(
            parse_ticker("BINANCE:DOGE/BTC"), 3600, WEEK_START, WEEK_START + HOUR_US)
    assert [path for path, _ in adapter.calls] == ["/api/v3/exchangeInfo"]


def test_symbol_refused_by_the_exchange_is_an_invalid_ticker(recorded: Any) -> None:
    exchange, _ = recorded
    # Binance answers HTTP 400 {"code": -1121, "msg": "Invalid symbol."}; ccxt raises BadSymbol.
    with pytest.raises(InvalidTickerError, match="BTC/USDT"):
        CcxtSource("binance", exchange=exchange).fetch_candles(BTC, 3600, WEEK_START + DAY_US, WEEK_START + DAY_US + HOUR_US)


def test_network_failure_is_a_request_failure_with_a_clear_message(recorded: Any) -> None:
    exchange, adapter = recorded
    adapter.fail_with = requests.ConnectionError("Connection refused")
    with pytest.raises(RequestFailedError) as info:
        CcxtSource("binance", exchange=exchange).fetch_candles(BTC, 3600, WEEK_START, WEEK_START + HOUR_US)
    assert isinstance(info.value, DexOrderError)
    assert isinstance(info.value.__cause__, ccxt.NetworkError)
    assert "binance could not be reached" in str(info.value) and "retry" in str(info.value)


def test_binance_weekly_candles_open_on_monday(recorded: Any) -> None:
    exchange, adapter = recorded
    thursday = WEEK_START + DAY_US  # 2025-01-02
    got = CcxtSource("binance", exchange=exchange).fetch_candles(BTC, 604800, thursday, thursday + 2 * 7 * DAY_US)
    monday = WEEK_START + 5 * DAY_US  # 2025-01-06 00:00 UTC
    assert list(got.frame["timestamp"]) == [monday, monday + 7 * DAY_US]
    assert [pd.Timestamp(t, unit="us").day_name() for t in got.frame["timestamp"]] == ["Monday", "Monday"]
    raw = raw_klines("klines_1w_monday.json")
    assert list(got.frame["close"]) == [Decimal(r[4]) for r in raw]
    assert adapter.kline_queries() == [(thursday // 1000, 2)]


def test_binance_monthly_candles_are_calendar_months(recorded: Any) -> None:
    exchange, adapter = recorded
    november, december = 1_730_419_200_000_000, 1_733_011_200_000_000  # 2024-11-01, 2024-12-01 UTC
    got = CcxtSource("binance", exchange=exchange).fetch_candles(BTC, 2592000, november, WEEK_START)
    assert list(got.frame["timestamp"]) == [november, december]
    raw = raw_klines("klines_1M_months.json")
    assert list(got.frame["open"]) == [Decimal(r[1]) for r in raw]
    assert adapter.kline_queries() == [(november // 1000, 2)]


def test_a_month_that_opens_off_the_first_is_refused(recorded: Any) -> None:
    exchange, _ = recorded
    source = CcxtSource("binance", exchange=exchange)
    with pytest.raises(DataError, match="1M period opens"):
        source._check_alignment(1_730_419_200_000 + 86_400_000, 2592000, "1M")


def test_concurrent_fetches_share_one_exchange_safely(recorded: Any) -> None:
    exchange, adapter = recorded
    source = CcxtSource("binance", exchange=exchange, page_limit=100)
    results: list[Any] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            results.append(source.fetch_candles(BTC, 3600, WEEK_START, WEEK_START + 168 * HOUR_US).frame)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(results) == 3 and all(frame.equals(results[0]) for frame in results)
    assert len(adapter.kline_queries()) == 6
    assert "parse_ohlcv" not in vars(exchange)


def test_ticks_convert_to_decimals() -> None:
    assert decimals_of_precision(0.01, ccxt.TICK_SIZE, ccxt) == 2
    assert decimals_of_precision(0.00001, ccxt.TICK_SIZE, ccxt) == 5
    assert decimals_of_precision(1e-8, ccxt.TICK_SIZE, ccxt) == 8
    assert decimals_of_precision(0.25, ccxt.TICK_SIZE, ccxt) == 2
    assert decimals_of_precision(0.5, ccxt.TICK_SIZE, ccxt) == 1
    assert decimals_of_precision(10, ccxt.TICK_SIZE, ccxt) == 0
    assert decimals_of_precision("0.00100000", ccxt.TICK_SIZE, ccxt) == 3
    assert decimals_of_precision(3, ccxt.DECIMAL_PLACES, ccxt) == 3
    assert decimals_of_precision(5, ccxt.SIGNIFICANT_DIGITS, ccxt) is None
    assert decimals_of_precision(None, ccxt.TICK_SIZE, ccxt) is None


def test_unknown_exchange_id_suggests_close_ones() -> None:
    with pytest.raises(UnknownSourceError, match="did you mean binance"):
        CcxtSource("binanse")
    with pytest.raises(UnknownSourceError, match="needs an exchange id"):
        CcxtSource(None)


def test_registry_builds_a_rate_limited_exchange_per_spec() -> None:
    registry = SourceRegistry({"BINANCE": "ccxt:binance"})
    try:
        source = registry.source_for(BTC)
        assert isinstance(source, CcxtSource)
        assert source.exchange.id == "binance" and source.exchange.enableRateLimit is True
        kraken = registry.source_for(parse_ticker("KRAKEN:BTC/USD"))  # default: ccxt:<exchange>
        assert isinstance(kraken, CcxtSource) and kraken.exchange.id == "kraken"
    finally:
        registry.close()


def test_missing_ccxt_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ccxt", None)  # makes `import ccxt` raise ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'dexorder-feeds\[ccxt\]'"):
        CcxtSource("binance")


class _RecordedSourcePlugin:
    """Registers the recorded Binance source under the name ``recorded``."""

    def __init__(self, source: CcxtSource) -> None:
        self.source = source

    @hookimpl
    def dexorder_register_sources(self, register: Any) -> None:
        register("recorded", lambda argument: self.source)


def test_historian_stores_binance_candles_exactly(recorded: Any, warehouse: Any) -> None:
    exchange, adapter = recorded
    source = CcxtSource("binance", exchange=exchange, page_limit=100)
    pm = get_plugin_manager()
    pm.register(_RecordedSourcePlugin(source), name="test-recorded-binance")
    try:
        registry = SourceRegistry({"BINANCE": "recorded"})
        historian = Historian(warehouse, registry)
        note = historian.handle(HistoryRequest(
            request_id="ccxt-week", client_id="test", ticker="BINANCE:BTC/USDT", period_seconds=3600,
            start_time=WEEK_START, end_time=1736294399000000,
        ))
    finally:
        pm.unregister(name="test-recorded-binance")
    assert note.status == Notification.OK, note.error_message
    assert note.row_count == 168
    market = warehouse.read_market("BINANCE:BTC/USDT")
    assert (market.price_decimals, market.volume_decimals) == (2, 5)
    table, _ = warehouse.read_candles("BINANCE:BTC/USDT", 3600, (WEEK_START, WEEK_START + 168 * HOUR_US))
    stored = table.sort_by("timestamp").to_pydict()
    raw = raw_klines("klines_1h_page1.json") + raw_klines("klines_1h_page2.json")
    assert stored["close"] == [int(Decimal(row[4]).scaleb(2)) for row in raw]
    assert stored["volume"] == [int(Decimal(row[5]).scaleb(5)) for row in raw]
    assert stored["buy_vol"] == [int(Decimal(row[9]).scaleb(5)) for row in raw]
    assert len(adapter.kline_queries()) == 2
