"""An exchange that cannot be reached: the error names the ways to configure another source.

Unreachable for real: ccxt's requests go to a loopback port nothing listens on, either as the
exchange's API address or as the HTTPS proxy every request goes through (the default,
unconfigured ``ccxt:binance`` source of the embedded client).
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import ccxt
import pytest

from dexorder_feeds import OHLCClient
from dexorder_feeds.ingest.sources.ccxt_source import CcxtSource
from dexorder_feeds.vocabulary.errors import RequestFailedError
from dexorder_feeds.vocabulary.tickers import parse_ticker

JAN1 = 1_735_689_600_000_000
H = 3_600_000_000


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def assert_names_the_ways_to_configure_a_source(message: str) -> None:
    assert "binance could not be reached while loading its markets" in message
    assert "--source BINANCE=files:DIR" in message
    assert "DEXORDER_SOURCES=BINANCE=files:DIR" in message
    assert 'sources=["BINANCE=files:DIR"]' in message
    assert "BINANCE=files:DIR,ccxt:binance" in message  # the fallback chain
    assert "retry" in message


def test_an_exchange_at_a_closed_port_fails_naming_the_ways_to_configure_a_source() -> None:
    port = closed_port()
    exchange = ccxt.binance({"enableRateLimit": False, "timeout": 5000})

    def to_loopback(url: Any) -> Any:
        if isinstance(url, dict):
            return {key: to_loopback(value) for key, value in url.items()}
        if isinstance(url, str) and url.startswith("http"):
            parts = urlsplit(url)
            return urlunsplit(("http", f"127.0.0.1:{port}", parts.path, parts.query, parts.fragment))
        return url

    exchange.urls["api"] = to_loopback(exchange.urls["api"])
    source = CcxtSource("binance", exchange=exchange)
    with pytest.raises(RequestFailedError) as info:
        source.fetch_candles(parse_ticker("BINANCE:BTC/USDT"), 3600, JAN1, JAN1 + H)
    assert isinstance(info.value.__cause__, ccxt.NetworkError)
    assert f"127.0.0.1:{port}" in str(info.value)
    assert_names_the_ways_to_configure_a_source(str(info.value))


def test_the_embedded_default_without_a_configured_source_says_how_to_configure_one(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    proxy = f"http://127.0.0.1:{closed_port()}"
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(name, proxy)
    for name in ("NO_PROXY", "no_proxy", "DEXORDER_SOURCES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DEXORDER_CACHE_DIR", str(tmp_path / "cache"))

    async def main() -> None:
        async with OHLCClient() as client:
            assert dict(client.settings.sources) == {}
            await client.fetch_ohlc("BINANCE:BTC/USDT", 3600, JAN1, JAN1 + 2 * H - 1)

    with pytest.raises(RequestFailedError) as info:
        asyncio.run(main())
    assert_names_the_ways_to_configure_a_source(str(info.value))
