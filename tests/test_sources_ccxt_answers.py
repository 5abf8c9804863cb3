"""What a ccxt answer proves: ``SourceCandles.checked`` against known exchange quirks.

Each test mounts recorded HTTP responses, in the exchange's own wire format (Binance
``/api/v3/klines`` arrays, OKX ``{"code", "msg", "data"}`` rows), as the transport of a real
ccxt exchange object: request building, ccxt's own filtering and parsing all run. A response
is matched on method, path and the exact query, as in ``tests/test_sources_ccxt.py``; a
request without a recording fails the test.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import ccxt
import pytest
import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

from dexorder_feeds.hookspecs import hookimpl
from dexorder_feeds.ingest.historian import Historian
from dexorder_feeds.ingest.sources import SourceRegistry, ccxt_source
from dexorder_feeds.ingest.sources.ccxt_source import CcxtSource
from dexorder_feeds.plugins import get_plugin_manager
from dexorder_feeds.vocabulary.errors import RequestFailedError
from dexorder_feeds.vocabulary.tickers import parse_ticker
from dexorder_feeds.wire import HistoryRequest, Notification

BINANCE_INFO = Path(__file__).parent / "data" / "ccxt" / "binance" / "exchangeInfo.json"
H_MS = 3_600_000
H = H_MS * 1000
DAY = 24 * H
JAN1_MS = 1_735_689_600_000  # 2025-01-01 00:00 UTC
JAN1 = JAN1_MS * 1000
BTC = parse_ticker("BINANCE:BTC/USDT")


class Recorded(BaseAdapter):
    """A ``requests`` transport answering recorded (method, path, query) -> (status, body)."""

    def __init__(self, host: str) -> None:
        super().__init__()
        self.host = host
        self.responses: dict[tuple[str, str, tuple[tuple[str, str], ...]], tuple[int, bytes]] = {}
        self.calls: list[tuple[str, dict[str, str]]] = []
        self.unmatched: list[str] = []
        self._lock = threading.Lock()

    def record(self, path: str, query: dict[str, Any], body: Any, status: int = 200) -> None:
        key = ("GET", path, tuple(sorted((k, str(v)) for k, v in query.items())))
        self.responses[key] = (status, body if isinstance(body, bytes) else json.dumps(body).encode())

    def send(self, request: Any, stream: bool = False, timeout: Any = None, verify: Any = True,
             cert: Any = None, proxies: Any = None) -> requests.Response:
        url = urlsplit(request.url)
        query = dict(parse_qsl(url.query))
        with self._lock:
            self.calls.append((url.path, query))
        found = self.responses.get((request.method, url.path, tuple(sorted(query.items()))))
        response = requests.Response()
        response.url, response.request, response.encoding = request.url, request, "utf-8"
        response.headers = CaseInsensitiveDict({"Content-Type": "application/json;charset=UTF-8"})
        if url.netloc != self.host or found is None:
            with self._lock:
                self.unmatched.append(request.url)
            response.status_code, response.reason = 404, "Not Found"
            response._content = b'{"code":-1,"msg":"no recording for this request"}'
            return response
        response.status_code, response.reason = found[0], "OK"
        response._content = found[1]
        return response

    def close(self) -> None:
        pass

    def queries(self, path: str) -> list[dict[str, str]]:
        return [q for p, q in self.calls if p == path]


def binance_kline(open_ms: int, i: int, period_ms: int = H_MS) -> list[Any]:
    """One candle as Binance's /api/v3/klines sends it (strings with 8 decimals)."""
    price = 94000 + 7 * (i % 50)
    return [open_ms, f"{price:.8f}", f"{price + 25:.8f}", f"{price - 20:.8f}", f"{price + 5:.8f}",
            f"{10 + i % 7}.12345000", open_ms + period_ms - 1, f"{(10 + i % 7) * price:.8f}", 1000 + i,
            f"{5 + i % 3}.10000000", f"{(5 + i % 3) * price:.8f}", "0"]


def hours(first_ms: int, count: int) -> list[list[Any]]:
    return [binance_kline(first_ms + k * H_MS, (first_ms - JAN1_MS) // H_MS + k) for k in range(count)]


@pytest.fixture
def binance() -> Any:
    adapter = Recorded("api.binance.com")
    adapter.record("/api/v3/exchangeInfo", {}, BINANCE_INFO.read_bytes())
    session = requests.Session()
    session.mount("https://", adapter)
    exchange = ccxt.binance({"enableRateLimit": False, "session": session,
                             "options": {"fetchMarkets": ["spot"], "defaultType": "spot"}})

    def klines(start_ms: int, limit: int, rows: list[list[Any]], interval: str = "1h") -> None:
        adapter.record("/api/v3/klines", {"symbol": "BTCUSDT", "interval": interval, "startTime": start_ms,
                                          "limit": limit}, rows)

    yield exchange, adapter, klines
    assert adapter.unmatched == [], "the source made requests that have no recording"


def asked(adapter: Recorded) -> list[tuple[int, int]]:
    return [(int(q["startTime"]), int(q["limit"])) for q in adapter.queries("/api/v3/klines")]


def timestamps(got: Any) -> list[int]:
    return [int(t) for t in got.frame["timestamp"]]


# -- pages that start later than asked ------------------------------------------------------

def test_a_page_starting_late_leaves_the_gap_before_it_unknown(binance: Any) -> None:
    exchange, adapter, klines = binance
    klines(JAN1_MS, 10, hours(JAN1_MS + 3 * H_MS, 7))  # asked from 00:00, first candle 03:00
    got = CcxtSource("binance", exchange=exchange, exact_since=False).fetch_candles(BTC, 3600, JAN1, JAN1 + 10 * H)
    assert timestamps(got) == [JAN1 + k * H for k in range(3, 10)]
    assert got.checked == [(JAN1 + 3 * H, JAN1 + 10 * H)]  # 00:00-03:00 may hide candles


def test_binance_startTime_semantics_prove_the_gap_before_a_late_page(binance: Any) -> None:
    exchange, adapter, klines = binance
    klines(JAN1_MS, 10, hours(JAN1_MS + 3 * H_MS, 7))
    got = CcxtSource("binance", exchange=exchange).fetch_candles(BTC, 3600, JAN1, JAN1 + 10 * H)
    assert got.checked == [(JAN1, JAN1 + 10 * H)]  # "klines opening at or after startTime": none before 03:00


def test_a_later_page_that_skips_ahead_leaves_what_it_skipped_unknown(binance: Any) -> None:
    exchange, adapter, klines = binance
    klines(JAN1_MS, 10, hours(JAN1_MS, 10))
    klines(JAN1_MS + 10 * H_MS, 10, hours(JAN1_MS + 15 * H_MS, 5))  # the second page jumps to 15:00
    got = CcxtSource("binance", exchange=exchange, page_limit=10, exact_since=False).fetch_candles(
        BTC, 3600, JAN1, JAN1 + 20 * H)
    assert asked(adapter) == [(JAN1_MS, 10), (JAN1_MS + 10 * H_MS, 10)]
    assert got.checked == [(JAN1, JAN1 + 10 * H), (JAN1 + 15 * H, JAN1 + 20 * H)]
    assert len(got.frame) == 15


def test_a_short_page_does_not_end_the_paging(binance: Any) -> None:
    exchange, adapter, klines = binance
    # The exchange sends 6 of the 10 asked (a page cap below ccxt's limit): the rest is asked for.
    klines(JAN1_MS, 10, hours(JAN1_MS, 6))
    klines(JAN1_MS + 6 * H_MS, 4, hours(JAN1_MS + 6 * H_MS, 4))
    got = CcxtSource("binance", exchange=exchange, exact_since=False).fetch_candles(BTC, 3600, JAN1, JAN1 + 10 * H)
    assert asked(adapter) == [(JAN1_MS, 10), (JAN1_MS + 6 * H_MS, 4)]
    assert timestamps(got) == [JAN1 + k * H for k in range(10)]
    assert got.checked == [(JAN1, JAN1 + 10 * H)]


def test_overlapping_pages_give_each_candle_once_and_no_bogus_checked_range(binance: Any) -> None:
    exchange, adapter, klines = binance
    klines(JAN1_MS, 10, hours(JAN1_MS, 10))
    # The second page repeats 06:00-09:00 before going on (ccxt drops what opens before `since`).
    klines(JAN1_MS + 10 * H_MS, 10, hours(JAN1_MS + 6 * H_MS, 14))
    got = CcxtSource("binance", exchange=exchange, page_limit=10, exact_since=False).fetch_candles(
        BTC, 3600, JAN1, JAN1 + 20 * H)
    assert timestamps(got) == [JAN1 + k * H for k in range(20)]
    assert got.checked == [(JAN1, JAN1 + 20 * H)]


def test_candles_outside_the_asked_range_are_dropped_and_prove_nothing_beyond_it(binance: Any) -> None:
    exchange, adapter, klines = binance
    klines(JAN1_MS + 2 * H_MS, 3, hours(JAN1_MS + 2 * H_MS, 8))  # ccxt keeps the first 3 it was asked for
    got = CcxtSource("binance", exchange=exchange).fetch_candles(BTC, 3600, JAN1 + 2 * H, JAN1 + 5 * H)
    assert timestamps(got) == [JAN1 + 2 * H, JAN1 + 3 * H, JAN1 + 4 * H]
    assert got.checked == [(JAN1 + 2 * H, JAN1 + 5 * H)]


def test_asking_again_from_a_period_earlier_happens_once_per_position(binance: Any) -> None:
    exchange, adapter, klines = binance
    klines(JAN1_MS, 3, hours(JAN1_MS + H_MS, 2))  # one short at its front edge
    klines(JAN1_MS - H_MS, 4, hours(JAN1_MS - H_MS, 1))  # asked again: only the candle before
    got = CcxtSource("binance", exchange=exchange, exact_since=False).fetch_candles(BTC, 3600, JAN1, JAN1 + 3 * H)
    assert asked(adapter) == [(JAN1_MS, 3), (JAN1_MS - H_MS, 4), (JAN1_MS, 3)]  # then on, no loop
    assert timestamps(got) == [JAN1 + H, JAN1 + 2 * H]  # the candle before the range is dropped
    assert got.checked == [(JAN1 + H, JAN1 + 3 * H)]


# -- `since` ignored: the latest candles instead (ccxt #4449 kraken, #7981 huobi, #6490) ------------

def test_latest_candles_instead_of_the_asked_ones_prove_nothing_even_on_binance(
        binance: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    exchange, adapter, klines = binance
    now = JAN1 + 7 * DAY + 30 * 60_000_000  # Jan 8 00:30
    monkeypatch.setattr(ccxt_source, "now_micros", lambda: now)
    latest = hours(JAN1_MS + 7 * DAY // 1000 - 23 * H_MS, 24)  # Jan 7 01:00 .. Jan 8 00:00 (open)
    klines(JAN1_MS, 24, latest)
    with caplog.at_level(logging.WARNING):
        got = CcxtSource("binance", exchange=exchange).fetch_candles(BTC, 3600, JAN1, JAN1 + DAY)
    # On Binance this is a market listed less than a page ago: no error, but nothing proven.
    assert got.frame.empty and got.checked == []
    assert "ignores `since`" in caplog.text


def test_latest_candles_instead_of_the_asked_ones_fail_where_since_is_not_known_exact(
        binance: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    exchange, adapter, klines = binance
    monkeypatch.setattr(ccxt_source, "now_micros", lambda: JAN1 + 7 * DAY + 30 * 60_000_000)
    klines(JAN1_MS, 24, hours(JAN1_MS + 7 * DAY // 1000 - 23 * H_MS, 24))
    with pytest.raises(RequestFailedError) as info:
        CcxtSource("binance", exchange=exchange, exact_since=False).fetch_candles(BTC, 3600, JAN1, JAN1 + DAY)
    message = str(info.value)
    assert "ignores `since`" in message and "Nothing was stored" in message
    assert "--source BINANCE=files:DIR,ccxt:binance" in message


def test_latest_candles_overlapping_the_range_keep_only_their_own_span(
        binance: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    exchange, adapter, klines = binance
    now = JAN1 + 7 * DAY + 30 * 60_000_000  # Jan 8 00:30
    monkeypatch.setattr(ccxt_source, "now_micros", lambda: now)
    asked_from = JAN1_MS + 6 * DAY // 1000  # Jan 7 00:00, 24 hours asked
    klines(asked_from, 24, hours(asked_from + 12 * H_MS, 13))  # 12:00 .. Jan 8 00:00 (the open candle)
    got = CcxtSource("binance", exchange=exchange).fetch_candles(BTC, 3600, JAN1 + 6 * DAY, JAN1 + 7 * DAY)
    assert timestamps(got) == [JAN1 + 6 * DAY + k * H for k in range(12, 24)]
    assert got.checked == [(JAN1 + 6 * DAY + 12 * H, JAN1 + 7 * DAY)]  # 00:00-12:00 stays unknown


# -- empty pages (ccxt #26252: [] for history the exchange holds) -----------------------------------

def test_an_empty_page_is_unknown_and_paging_jumps_past_it(binance: Any) -> None:
    exchange, adapter, klines = binance
    klines(JAN1_MS, 24, [])
    klines(JAN1_MS + 24 * H_MS, 24, hours(JAN1_MS + 24 * H_MS, 24))
    klines(JAN1_MS + 48 * H_MS, 24, hours(JAN1_MS + 48 * H_MS, 24))
    got = CcxtSource("binance", exchange=exchange, page_limit=24).fetch_candles(BTC, 3600, JAN1, JAN1 + 3 * DAY)
    assert asked(adapter) == [(JAN1_MS, 24), (JAN1_MS + 24 * H_MS, 24), (JAN1_MS + 48 * H_MS, 24)]
    assert got.checked == [(JAN1 + DAY, JAN1 + 3 * DAY)]  # Jan 1 stays unknown, never "empty"
    assert len(got.frame) == 48


def test_only_empty_pages_check_nothing_in_a_bounded_number_of_calls(binance: Any) -> None:
    exchange, adapter, klines = binance
    for start in (JAN1_MS, JAN1_MS + 24 * H_MS, JAN1_MS + 72 * H_MS):
        klines(start, 24, [])
    got = CcxtSource("binance", exchange=exchange, page_limit=24).fetch_candles(BTC, 3600, JAN1, JAN1 + 7 * DAY)
    # Jumps of 1, 2, 4 pages: Jan 1, Jan 2, Jan 4, then past Jan 8.
    assert asked(adapter) == [(JAN1_MS, 24), (JAN1_MS + 24 * H_MS, 24), (JAN1_MS + 72 * H_MS, 24)]
    assert got.checked == [] and got.frame.empty


# -- whole days missing at one exchange (jesse #78) ----------------------------------------------------

def _day_missing(klines: Any) -> None:
    klines(JAN1_MS, 24, hours(JAN1_MS, 24))
    klines(JAN1_MS + 24 * H_MS, 24, hours(JAN1_MS + 48 * H_MS, 24))  # asked Jan 2: Jan 3 comes back


def test_a_missing_day_between_contiguous_binance_pages_is_checked_empty(binance: Any) -> None:
    exchange, adapter, klines = binance
    _day_missing(klines)
    got = CcxtSource("binance", exchange=exchange, page_limit=24).fetch_candles(BTC, 3600, JAN1, JAN1 + 3 * DAY)
    assert len(got.frame) == 48
    assert got.checked == [(JAN1, JAN1 + 3 * DAY)]


def test_a_missing_day_at_a_page_edge_stays_unknown_without_exact_since(binance: Any) -> None:
    exchange, adapter, klines = binance
    _day_missing(klines)
    got = CcxtSource("binance", exchange=exchange, page_limit=24, exact_since=False).fetch_candles(
        BTC, 3600, JAN1, JAN1 + 3 * DAY)
    assert got.checked == [(JAN1, JAN1 + DAY), (JAN1 + 2 * DAY, JAN1 + 3 * DAY)]


def test_a_missing_day_inside_one_page_is_checked_empty_anywhere(binance: Any) -> None:
    exchange, adapter, klines = binance
    klines(JAN1_MS, 72, hours(JAN1_MS, 24) + hours(JAN1_MS + 48 * H_MS, 24))
    got = CcxtSource("binance", exchange=exchange, exact_since=False).fetch_candles(BTC, 3600, JAN1, JAN1 + 3 * DAY)
    assert asked(adapter) == [(JAN1_MS, 72)]
    assert got.checked == [(JAN1, JAN1 + 3 * DAY)]


# -- OKX: a page one candle short at its edge (ccxt #21049) ----------------------------------------

OKX_INSTRUMENT = {
    "instType": "SPOT", "instId": "BTC-USDT", "uly": "", "instFamily": "", "baseCcy": "BTC", "quoteCcy": "USDT",
    "settleCcy": "", "ctVal": "", "ctMult": "", "ctValCcy": "", "optType": "", "stk": "",
    "listTime": "1548133413000", "expTime": "", "lever": "10", "tickSz": "0.1", "lotSz": "0.00000001",
    "minSz": "0.00001", "ctType": "", "alias": "", "state": "live", "maxLmtSz": "9999999999",
    "maxMktSz": "1000000", "maxTwapSz": "", "maxIcebergSz": "", "maxTriggerSz": "", "maxStopSz": "",
    "ruleType": "normal",
}


def okx_row(open_ms: int, i: int) -> list[str]:
    """One OKX candle: ts, o, h, l, c, vol (base), volCcy, volCcyQuote, confirm."""
    price = 94000 + i
    return [str(open_ms), f"{price}.1", f"{price + 20}.5", f"{price - 15}.2", f"{price + 3}.4",
            f"{1 + i % 5}.25", f"{(1 + i % 5) * price}", f"{(1 + i % 5) * price}", "1"]


@pytest.fixture
def okx() -> Any:
    adapter = Recorded("www.okx.com")
    adapter.record("/api/v5/public/instruments", {"instType": "SPOT"},
                   {"code": "0", "msg": "", "data": [OKX_INSTRUMENT]})
    session = requests.Session()
    session.mount("https://", adapter)
    exchange = ccxt.okx({"enableRateLimit": False, "session": session,
                         "options": {"fetchMarkets": {"types": ["spot"]}, "defaultType": "spot"}})
    yield exchange, adapter
    assert adapter.unmatched == [], "the source made requests that have no recording"


def okx_candles(adapter: Recorded, since_ms: int, limit: int, first_ms: int, count: int) -> None:
    """Record OKX's answer to ccxt's request from `since_ms`: `count` rows from `first_ms`, newest first."""
    rows = [okx_row(first_ms + k * H_MS, (first_ms - JAN1_MS) // H_MS + k) for k in range(count - 1, -1, -1)]
    adapter.record("/api/v5/market/history-candles",
                   {"instId": "BTC-USDT", "bar": "1H", "limit": limit, "before": since_ms - 1,
                    "after": since_ms + limit * H_MS},
                   {"code": "0", "msg": "", "data": rows})


def test_okx_page_one_candle_short_at_its_edge_is_asked_again_from_a_period_earlier(okx: Any) -> None:
    exchange, adapter = okx
    # ccxt asks before=since-1 & after=since+limit*period; this OKX answer still lacks the candle
    # at `since` (its `before` taken as exclusive, ccxt #21036/#21049): 4 rows of the 5 asked.
    okx_candles(adapter, JAN1_MS, 5, JAN1_MS + H_MS, 4)
    # Asked again from 23:00 the day before, it sends (again one short) 00:00 .. 04:00.
    okx_candles(adapter, JAN1_MS - H_MS, 6, JAN1_MS, 5)
    got = CcxtSource("okx", exchange=exchange).fetch_candles(parse_ticker("OKX:BTC/USDT"), 3600, JAN1, JAN1 + 5 * H)
    assert [(int(q["before"]) + 1, int(q["limit"])) for q in adapter.queries("/api/v5/market/history-candles")] == [
        (JAN1_MS, 5), (JAN1_MS - H_MS, 6)]
    assert timestamps(got) == [JAN1 + k * H for k in range(5)]
    assert [str(v) for v in got.frame["close"]] == [okx_row(0, k)[4] for k in range(5)]
    assert got.checked == [(JAN1, JAN1 + 5 * H)]
    assert (got.market.price_decimals, got.market.volume_decimals) == (1, 8)


def test_okx_edge_candle_still_missing_after_the_second_ask_stays_unknown(okx: Any) -> None:
    exchange, adapter = okx
    okx_candles(adapter, JAN1_MS, 5, JAN1_MS + H_MS, 4)
    okx_candles(adapter, JAN1_MS - H_MS, 6, JAN1_MS + H_MS, 4)  # no 00:00 candle either way
    got = CcxtSource("okx", exchange=exchange).fetch_candles(parse_ticker("OKX:BTC/USDT"), 3600, JAN1, JAN1 + 5 * H)
    assert len(adapter.queries("/api/v5/market/history-candles")) == 2  # asked again once, not more
    assert timestamps(got) == [JAN1 + k * H for k in range(1, 5)]
    assert got.checked == [(JAN1 + H, JAN1 + 5 * H)]  # 00:00 was not answered for: asked again later


# -- Kraken: OHLC serves only its latest candles, whatever `since` says (ccxt #4449) -----------------

KRAKEN_PAIRS = {"error": [], "result": {"XXBTZUSD": {
    "altname": "XBTUSD", "wsname": "XBT/USD", "aclass_base": "currency", "base": "XXBT", "aclass_quote": "currency",
    "quote": "ZUSD", "lot": "unit", "cost_decimals": 5, "pair_decimals": 1, "lot_decimals": 8, "lot_multiplier": 1,
    "leverage_buy": [2, 3, 4, 5], "leverage_sell": [2, 3, 4, 5], "fees": [[0, 0.4]], "fees_maker": [[0, 0.25]],
    "fee_volume_currency": "ZUSD", "margin_call": 80, "margin_stop": 40, "ordermin": "0.00005", "costmin": "0.5",
    "tick_size": "0.1", "status": "online"}}}
KRAKEN_ASSETS = {"error": [], "result": {
    "XXBT": {"aclass": "currency", "altname": "XBT", "decimals": 10, "display_decimals": 5, "status": "enabled"},
    "ZUSD": {"aclass": "currency", "altname": "USD", "decimals": 4, "display_decimals": 2, "status": "enabled"}}}
FEB1 = JAN1 + 31 * DAY
XBT = parse_ticker("KRAKEN:BTC/USD")


def kraken_latest(count: int) -> dict[str, Any]:
    """GET /0/public/OHLC as Kraken answers it: its latest `count` hourly candles up to Feb 1 00:00
    (the open one last), each [time s, open, high, low, close, vwap, volume, trades]."""
    rows = []
    for k in range(count):
        t = (FEB1 - (count - 1 - k) * H) // 1_000_000
        price = 102000 + k
        rows.append([t, f"{price}.0", f"{price + 30}.5", f"{price - 20}.1", f"{price + 4}.2", f"{price + 1}.7",
                     f"{k % 4 + 1}.50000000", 100 + k])
    return {"error": [], "result": {"XXBTZUSD": rows, "last": rows[-1][0]}}


@pytest.fixture
def kraken(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(ccxt_source, "now_micros", lambda: FEB1 + 30 * 60_000_000)  # Feb 1 00:30
    adapter = Recorded("api.kraken.com")
    adapter.record("/0/public/Assets", {}, KRAKEN_ASSETS)
    adapter.record("/0/public/AssetPairs", {}, KRAKEN_PAIRS)
    session = requests.Session()
    session.mount("https://", adapter)
    exchange = ccxt.kraken({"enableRateLimit": False, "session": session})
    yield exchange, adapter
    assert adapter.unmatched == [], "the source made requests that have no recording"


def test_kraken_answering_old_history_with_its_latest_candles_fails_clearly(
        kraken: Any, caplog: pytest.LogCaptureFixture) -> None:
    exchange, adapter = kraken
    # ccxt sends since - 1 period in seconds; Kraken answers with its latest candles anyway.
    adapter.record("/0/public/OHLC", {"pair": "XXBTZUSD", "interval": 60, "since": (JAN1 - H) // 1_000_000},
                   kraken_latest(48))
    with caplog.at_level(logging.WARNING), pytest.raises(RequestFailedError) as info:
        CcxtSource("kraken", exchange=exchange).fetch_candles(XBT, 3600, JAN1, JAN1 + DAY)
    message = str(info.value)
    assert "kraken answered BTC/USD 1h candles only from 2025-01-30" in message
    assert "ignores `since`" in message and "Nothing was stored" in message
    assert "--source KRAKEN=files:DIR,ccxt:kraken" in message
    assert "ignores `since`" in caplog.text


def test_kraken_serves_a_range_inside_its_latest_candles(kraken: Any) -> None:
    exchange, adapter = kraken
    day = (FEB1 - DAY, FEB1)
    adapter.record("/0/public/OHLC", {"pair": "XXBTZUSD", "interval": 60, "since": (day[0] - H) // 1_000_000},
                   kraken_latest(48))
    got = CcxtSource("kraken", exchange=exchange).fetch_candles(XBT, 3600, *day)
    assert timestamps(got) == list(range(day[0], day[1], H))
    assert got.checked == [day]
    assert [str(v) for v in got.frame["close"]][:2] == ["102027.2", "102028.2"]  # k = 23, 24 of the 48
    assert (got.market.price_decimals, got.market.volume_decimals) == (1, 8)


def test_a_since_ignoring_answer_stores_nothing_through_the_historian(kraken: Any, warehouse: Any) -> None:
    exchange, adapter = kraken
    adapter.record("/0/public/OHLC", {"pair": "XXBTZUSD", "interval": 60, "since": (JAN1 - H) // 1_000_000},
                   kraken_latest(48))
    source = CcxtSource("kraken", exchange=exchange)

    class Plugin:
        @hookimpl
        def dexorder_register_sources(self, register: Any) -> None:
            register("recorded-kraken", lambda argument: source)

    pm = get_plugin_manager()
    pm.register(Plugin(), name="test-recorded-kraken")
    try:
        historian = Historian(warehouse, SourceRegistry({"KRAKEN": "recorded-kraken"}))
        note = historian.handle(HistoryRequest(
            request_id="latest", client_id="test", ticker=str(XBT), period_seconds=3600,
            start_time=JAN1, end_time=JAN1 + DAY - 1))
    finally:
        pm.unregister(name="test-recorded-kraken")
    assert note.status == Notification.ERROR
    assert "ignores `since`" in note.error_message
    table, _ = warehouse.read_candles(str(XBT), 3600, (JAN1, FEB1 + DAY))
    assert table.num_rows == 0
    assert warehouse.read_coverage(str(XBT), 3600) == []
