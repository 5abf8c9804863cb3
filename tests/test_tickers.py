"""Ticker validation: the pattern, upper-case hint, and no path tricks."""

from __future__ import annotations

import pytest

from dexorder_feeds.vocabulary.errors import InvalidTickerError
from dexorder_feeds.vocabulary.tickers import parse_ticker


def test_parse():
    t = parse_ticker("BINANCE:BTC/USDT")
    assert (t.exchange, t.base, t.quote, t.settle) == ("BINANCE", "BTC", "USDT", None)
    assert str(t) == "BINANCE:BTC/USDT" and t.symbol == "BTC/USDT"
    assert parse_ticker("BYBIT:BTC/USDT:USDT").symbol == "BTC/USDT:USDT"


@pytest.mark.parametrize(
    "value",
    ["BTC/USDT", "BINANCE:BTCUSDT", "BINANCE:", ":BTC/USDT", "BINANCE:BTC/", "BIN ANCE:BTC/USDT",
     "BINANCE:../../etc/passwd", "BINANCE:BTC/../x", "BINANCE:.BTC/USDT", "BINANCE:BTC/USDT\n", "", 42, None],
)
def test_malformed(value):
    with pytest.raises(InvalidTickerError):
        parse_ticker(value)


def test_lower_case_gets_a_hint():
    with pytest.raises(InvalidTickerError, match="BINANCE:BTC/USDT"):
        parse_ticker("binance:btc/usdt")
