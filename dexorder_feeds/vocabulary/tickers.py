"""Tickers: ``EXCHANGE:BASE/QUOTE`` (optionally ``:SETTLE`` for derivatives), upper case.

The pattern is strict on purpose: a ticker becomes a partition value and part of request ids,
so it can never contain a path separator sequence, whitespace or a leading dot.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from .errors import InvalidTickerError

__all__ = ["Ticker", "parse_ticker"]

_SYMBOL = r"[A-Z0-9][A-Z0-9._-]{0,31}"
_TICKER_RE = re.compile(rf"^(?P<exchange>[A-Z][A-Z0-9_]{{0,31}}):(?P<base>{_SYMBOL})/(?P<quote>{_SYMBOL})(?::(?P<settle>{_SYMBOL}))?$")


class Ticker(NamedTuple):
    """A parsed ticker."""

    exchange: str
    base: str
    quote: str
    settle: str | None = None

    @property
    def symbol(self) -> str:
        """The exchange-side symbol, e.g. ``BTC/USDT`` (ccxt's unified form)."""
        tail = f":{self.settle}" if self.settle else ""
        return f"{self.base}/{self.quote}{tail}"

    def __str__(self) -> str:
        return f"{self.exchange}:{self.symbol}"


def parse_ticker(value: object) -> Ticker:
    """Parse and validate a ticker such as ``BINANCE:BTC/USDT``."""
    if not isinstance(value, str):
        raise InvalidTickerError(f"ticker must be a string like 'BINANCE:BTC/USDT', not {type(value).__name__}")
    match = _TICKER_RE.fullmatch(value)
    if match is None or ".." in value:
        hint = ""
        if value != value.upper() and _TICKER_RE.fullmatch(value.upper()):
            hint = f"; tickers are upper case: {value.upper()!r}"
        raise InvalidTickerError(
            f"ticker {value!r} is malformed; expected 'EXCHANGE:BASE/QUOTE' like 'BINANCE:BTC/USDT'{hint}"
        )
    return Ticker(match["exchange"], match["base"], match["quote"], match["settle"])
