"""``ccxt:EXCHANGE`` – candles from a real exchange through ccxt (needs the network).

How it works inside: docs/internals.md, "The ccxt source".
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import threading
from collections.abc import Callable, Iterator
from decimal import Decimal, InvalidOperation
from typing import Any

import numpy as np
import pandas as pd

from ...vocabulary.errors import (
    DataError,
    InvalidPeriodError,
    InvalidTickerError,
    RequestFailedError,
    UnknownSourceError,
    missing_dependency,
)
from ...vocabulary.markets import MarketInfo
from ...vocabulary.tickers import Ticker
from ...vocabulary.times import format_micros, now_micros
from . import IngestSource, SourceCandles

__all__ = ["CcxtSource", "MAX_DECIMALS", "DEFAULT_PAGE_LIMIT", "decimals_of_precision"]

log = logging.getLogger(__name__)

MAX_DECIMALS = 12
DEFAULT_PAGE_LIMIT = 1000
_INT64_MAX = 2**63 - 1
_OHLCV_COLUMNS = ("open", "high", "low", "close", "volume")


def _import_ccxt() -> Any:
    try:
        import ccxt
    except ImportError as exc:
        raise missing_dependency("ccxt", "ccxt") from exc
    return ccxt


def _to_decimal(value: Any) -> Decimal | None:
    """ccxt's number (float, int, str or Decimal) as the exact decimal it was parsed from."""
    if value is None:
        return None
    try:
        result = Decimal(repr(value)) if isinstance(value, float) else Decimal(str(value))
    except InvalidOperation as exc:
        raise DataError(f"the exchange returned {value!r} where a number belongs") from exc
    if not result.is_finite():
        raise DataError(f"the exchange returned {value!r} where a finite number belongs")
    return result


def _places(value: Decimal | None) -> int:
    """Decimal places a value needs: ``Decimal('0.00120')`` -> 4."""
    if value is None or value == 0:
        return 0
    return max(0, -int(value.normalize().as_tuple().exponent))


def decimals_of_precision(precision: Any, mode: int, ccxt: Any) -> int | None:
    """A ccxt market precision (``TICK_SIZE`` 0.01 or ``DECIMAL_PLACES`` 2) as decimals.

    None when it cannot be told (missing, or ``SIGNIFICANT_DIGITS`` mode).
    """
    if precision is None:
        return None
    if mode == ccxt.TICK_SIZE:
        tick = _to_decimal(precision)
        return None if tick is None or tick <= 0 else _places(tick)
    if mode == ccxt.DECIMAL_PLACES:
        return max(0, int(precision))
    return None


class CcxtSource(IngestSource):
    """Candles from one ccxt exchange (``ccxt:binance``)."""

    name = "ccxt"

    def __init__(
        self,
        exchange_id: str | None,
        *,
        exchange: Any = None,
        page_limit: int = DEFAULT_PAGE_LIMIT,
    ) -> None:
        self._ccxt = _import_ccxt()
        if page_limit <= 0:
            raise ValueError(f"page_limit={page_limit} must be positive")
        self.page_limit = page_limit
        self._owns_exchange = exchange is None
        if exchange is None:
            if not exchange_id or not exchange_id.strip():
                raise UnknownSourceError("the ccxt source needs an exchange id: use ccxt:binance (or another ccxt id)")
            exchange_id = exchange_id.strip().lower()
            if exchange_id not in self._ccxt.exchanges:
                close = difflib.get_close_matches(exchange_id, self._ccxt.exchanges, n=3)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise UnknownSourceError(f"ccxt has no exchange {exchange_id!r}{hint}")
            exchange = getattr(self._ccxt, exchange_id)({"enableRateLimit": True})
        self.exchange = exchange
        self.exchange_id: str = exchange_id.strip().lower() if exchange_id else str(exchange.id)
        if not exchange.has.get("fetchOHLCV"):
            raise UnknownSourceError(f"ccxt's {self.exchange_id} offers no candles (fetchOHLCV); choose another source")
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"CcxtSource({self.exchange_id!r})"

    # -- errors ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def _translate_errors(self, action: str, symbol: str | None = None) -> Iterator[None]:
        """ccxt's exceptions as dexorder_feeds errors, the most specific match first."""
        ccxt = self._ccxt
        try:
            yield
        except ccxt.BadSymbol as exc:
            raise InvalidTickerError(f"{self.exchange_id} does not list {symbol or 'this symbol'} ({exc})") from exc
        except ccxt.NetworkError as exc:
            raise RequestFailedError(
                f"{self.exchange_id} could not be reached while {action} ({type(exc).__name__}: {exc}); "
                "check the network connection and retry later"
            ) from exc
        except ccxt.BaseError as exc:
            raise RequestFailedError(
                f"{self.exchange_id} refused {action} ({type(exc).__name__}: {exc})"
            ) from exc

    # -- markets and timeframes ---------------------------------------------------------
    def offered_periods(self) -> dict[int, str]:
        """The exchange's timeframes by period in seconds (no month or year timeframes)."""
        offered: dict[int, str] = {}
        for timeframe in self.exchange.timeframes or {}:
            if timeframe[-1:] in ("M", "y"):
                continue
            try:
                seconds = int(self.exchange.parse_timeframe(timeframe))
            except (ValueError, self._ccxt.BaseError):
                continue
            offered.setdefault(seconds, timeframe)
        return offered

    def timeframe_for(self, period_seconds: int) -> str:
        """The exchange's timeframe for a period; :class:`InvalidPeriodError` if it has none."""
        offered = self.offered_periods()
        timeframe = offered.get(period_seconds)
        if timeframe is None:
            listing = ", ".join(f"{tf} ({s}s)" for s, tf in sorted(offered.items())) or "none"
            raise InvalidPeriodError(
                f"{self.exchange_id} has no {period_seconds}s candles; it offers {listing}"
            )
        return timeframe

    def _market(self, ticker: Ticker) -> dict[str, Any]:
        with self._translate_errors("loading its markets"):
            markets = self.exchange.load_markets()
        symbol = ticker.symbol
        market = markets.get(symbol)
        if market is None:
            close = difflib.get_close_matches(symbol, list(markets), n=3)
            hint = f"; close matches: {', '.join(close)}" if close else ""
            raise InvalidTickerError(f"{ticker}: {self.exchange_id} does not list {symbol}{hint}")
        return market

    def _market_decimals(self, market: dict[str, Any]) -> tuple[int | None, int | None]:
        precision = market.get("precision") or {}
        mode = self.exchange.precisionMode
        return (
            decimals_of_precision(precision.get("price"), mode, self._ccxt),
            decimals_of_precision(precision.get("amount"), mode, self._ccxt),
        )

    def _buy_volume_index(self, market: dict[str, Any]) -> int | None:
        """Where a raw kline row holds the taker-buy base volume (Binance family only)."""
        if not self.exchange_id.startswith("binance"):
            return None
        return 10 if market.get("inverse") else 9

    # -- fetching -------------------------------------------------------------------------
    def _fetch_page(
        self, symbol: str, timeframe: str, since_ms: int, limit: int, buy_index: int | None
    ) -> tuple[list[list[Any]], dict[int, Any]]:
        """One ``fetch_ohlcv`` call; with ``buy_index``, also the raw rows' taker-buy volume by ms.

        ccxt's unified candle drops Binance's taker-buy column, so the raw rows are seen on their
        way through the exchange's own ``parse_ohlcv`` (under the lock, for this call only).
        """
        exchange = self.exchange
        if buy_index is None:
            with self._translate_errors(f"fetching {symbol} {timeframe} candles", symbol):
                return exchange.fetch_ohlcv(symbol, timeframe, since=since_ms, limit=limit), {}
        raw_rows: list[Any] = []
        shadowed = "parse_ohlcv" in vars(exchange)
        original: Callable[..., list[Any]] = exchange.parse_ohlcv

        def parse_and_keep(ohlcv: Any, market: Any = None) -> list[Any]:
            raw_rows.append(ohlcv)
            return original(ohlcv, market)

        exchange.parse_ohlcv = parse_and_keep
        try:
            with self._translate_errors(f"fetching {symbol} {timeframe} candles", symbol):
                rows = exchange.fetch_ohlcv(symbol, timeframe, since=since_ms, limit=limit)
        finally:
            if shadowed:
                exchange.parse_ohlcv = original
            else:
                del exchange.parse_ohlcv
        buys: dict[int, Any] = {}
        for raw in raw_rows:
            if isinstance(raw, (list, tuple)) and len(raw) > buy_index:
                buys[int(raw[0])] = raw[buy_index]
        return rows, buys

    def fetch_candles(self, ticker: Ticker, period_seconds: int, start: int, stop: int) -> SourceCandles:
        period_ms = period_seconds * 1000
        with self._lock:
            market = self._market(ticker)
            timeframe = self.timeframe_for(period_seconds)
            symbol = market["symbol"]
            buy_index = self._buy_volume_index(market)
            now_ms = now_micros() // 1000
            start_ms = -(-start // 1000)
            end_ms = min(-(-stop // 1000), now_ms - period_ms + 1)  # only closed periods
            candles: dict[int, list[Any]] = {}
            buys: dict[int, Any] = {}
            since, calls = start_ms, 0
            while since < end_ms:
                limit = min(self.page_limit, -(-(end_ms - since) // period_ms))
                rows, page_buys = self._fetch_page(symbol, timeframe, since, limit, buy_index)
                calls += 1
                buys.update(page_buys)
                if not rows:
                    break
                for row in rows:
                    self._check_alignment(int(row[0]), period_ms, timeframe)
                    candles[int(row[0])] = row
                last = max(int(row[0]) for row in rows)
                if last < since:
                    break
                since = last + period_ms
        kept = sorted(ms for ms in candles if start_ms <= ms < end_ms)
        log.info("%s %s %s: %d candles in %d calls for [%s, %s)", self.exchange_id, symbol, timeframe,
                 len(kept), calls, format_micros(start), format_micros(stop))
        frame = self._frame([candles[ms] for ms in kept], buys if buy_index is not None else None)
        return SourceCandles(self._market_info(ticker, market, frame), frame, scaled=False)

    def _check_alignment(self, ms: int, period_ms: int, timeframe: str) -> None:
        if ms % period_ms:
            raise DataError(
                f"{self.exchange_id}'s {timeframe} candles open at {format_micros(ms * 1000)}, not on a "
                f"multiple of {period_ms // 1000}s since the epoch; dexorder-feeds stores epoch-aligned "
                f"periods only, so take {timeframe} candles from another source or use a shorter period"
            )

    @staticmethod
    def _frame(rows: list[list[Any]], buys: dict[int, Any] | None) -> pd.DataFrame:
        frame = pd.DataFrame({"timestamp": np.array([int(r[0]) * 1000 for r in rows], dtype=np.int64)})
        for i, name in enumerate(_OHLCV_COLUMNS, start=1):
            frame[name] = pd.Series([_to_decimal(r[i]) if len(r) > i else None for r in rows], dtype=object)
        if buys is not None:
            buy = [_to_decimal(buys.get(int(r[0]))) for r in rows]
            sell = [v - b if v is not None and b is not None else None for v, b in zip(frame["volume"], buy)]
            frame["buy_vol"] = pd.Series(buy, dtype=object)
            frame["sell_vol"] = pd.Series(sell, dtype=object)
        return frame

    def _market_info(self, ticker: Ticker, market: dict[str, Any], frame: pd.DataFrame) -> MarketInfo:
        """Decimals wide enough for the market's precision and for every value returned."""
        price_precision, amount_precision = self._market_decimals(market)
        chosen: list[int] = []
        for columns, precision in ((("open", "high", "low", "close"), price_precision),
                                   (("volume", "buy_vol", "sell_vol"), amount_precision)):
            values = [v for c in columns if c in frame.columns for v in frame[c] if v is not None]
            seen = max((_places(v) for v in values), default=0)
            decimals = min(MAX_DECIMALS, max(seen, precision or 0))
            largest = max((abs(v) for v in values), default=Decimal(0))
            while decimals > seen and largest.scaleb(decimals) > _INT64_MAX:
                decimals -= 1  # the precision's extra places are unused; keep the values storable
            if largest.scaleb(decimals) > _INT64_MAX:
                raise DataError(
                    f"{ticker}: value {largest} with {decimals} decimals does not fit a 64-bit integer"
                )
            chosen.append(decimals)
        return MarketInfo(str(ticker), chosen[0], chosen[1])

    def close(self) -> None:
        if self._owns_exchange:
            with contextlib.suppress(Exception):
                self.exchange.close()
