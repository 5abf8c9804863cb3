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
from ...vocabulary.periods import (
    MONTH,
    closed_period_stop,
    is_aligned,
    period_count,
    period_end,
    period_floor,
    period_label,
    shift_periods,
)
from ...vocabulary.ranges import merge_intervals
from ...vocabulary.tickers import Ticker
from ...vocabulary.times import format_micros, now_micros
from . import IngestSource, SourceCandles

__all__ = ["CcxtSource", "MAX_DECIMALS", "DEFAULT_PAGE_LIMIT", "EXACT_SINCE_EXCHANGES", "decimals_of_precision"]

log = logging.getLogger(__name__)

MAX_DECIMALS = 12
DEFAULT_PAGE_LIMIT = 1000
_INT64_MAX = 2**63 - 1
_OHLCV_COLUMNS = ("open", "high", "low", "close", "volume")

EXACT_SINCE_EXCHANGES = frozenset({"binance", "binanceus", "binanceusdm", "binancecoinm"})
"""Exchanges whose candle endpoint documents ``startTime`` as "candles opening at or after it,
oldest first": a page from ``since`` whose first candle opens later proves nothing opened in
between (a listing date, a maintenance gap). Elsewhere that stretch stays unknown."""


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


def unreachable_hint(exchange: str, exchange_id: str) -> str:
    """How to serve ``exchange`` without reaching it: the ways to configure a source."""
    return (
        f"serve {exchange} from candle files instead: --source {exchange}=files:DIR on the command line, "
        f"DEXORDER_SOURCES={exchange}=files:DIR in the environment, sources=[\"{exchange}=files:DIR\"] in "
        "Python, or a [sources] table in the config file (layout of DIR: docs/sources.md). "
        f"With {exchange}=files:DIR,ccxt:{exchange_id} the exchange is asked only for what the files lack."
    )


class CcxtSource(IngestSource):
    """Candles from one ccxt exchange (``ccxt:binance``).

    ``exact_since`` says whether the exchange's ``since`` means "the first candle at or after"
    (default: true for :data:`EXACT_SINCE_EXCHANGES`); ``page_limit`` caps the candles asked per call.
    """

    name = "ccxt"

    def __init__(
        self,
        exchange_id: str | None,
        *,
        exchange: Any = None,
        page_limit: int = DEFAULT_PAGE_LIMIT,
        exact_since: bool | None = None,
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
        self.exact_since = self.exchange_id in EXACT_SINCE_EXCHANGES if exact_since is None else exact_since
        if not exchange.has.get("fetchOHLCV"):
            raise UnknownSourceError(f"ccxt's {self.exchange_id} offers no candles (fetchOHLCV); choose another source")
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"CcxtSource({self.exchange_id!r})"

    # -- errors ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def _translate_errors(self, action: str, symbol: str | None = None, exchange: str | None = None) -> Iterator[None]:
        """ccxt's exceptions as dexorder_feeds errors, the most specific match first."""
        ccxt = self._ccxt
        try:
            yield
        except ccxt.BadSymbol as exc:
            raise InvalidTickerError(f"{self.exchange_id} does not list {symbol or 'this symbol'} ({exc})") from exc
        except ccxt.NetworkError as exc:
            hint = unreachable_hint(exchange or self.exchange_id.upper(), self.exchange_id)
            raise RequestFailedError(
                f"{self.exchange_id} could not be reached while {action} ({type(exc).__name__}: {exc}). "
                f"Check the network connection and retry later, or {hint}"
            ) from exc
        except ccxt.BaseError as exc:
            raise RequestFailedError(
                f"{self.exchange_id} refused {action} ({type(exc).__name__}: {exc})"
            ) from exc

    # -- markets and timeframes ---------------------------------------------------------
    def offered_periods(self) -> dict[int, str]:
        """The exchange's timeframes by period in seconds (``1M`` as :data:`MONTH`; no years)."""
        offered: dict[int, str] = {}
        for timeframe in self.exchange.timeframes or {}:
            if timeframe == "1M":
                offered.setdefault(MONTH, timeframe)
                continue
            if timeframe[-1:] in ("M", "y"):
                continue
            try:
                seconds = int(self.exchange.parse_timeframe(timeframe))
            except (ValueError, self._ccxt.BaseError):
                continue
            if seconds == MONTH:
                continue  # a fixed 30-day timeframe would be read as a calendar month
            offered.setdefault(seconds, timeframe)
        return offered

    def periods(self, ticker: Ticker) -> list[int] | None:
        return sorted(self.offered_periods())

    def timeframe_for(self, period_seconds: int) -> str:
        """The exchange's timeframe for a period; :class:`InvalidPeriodError` if it has none."""
        offered = self.offered_periods()
        timeframe = offered.get(period_seconds)
        if timeframe is None:
            listing = ", ".join(f"{tf} ({s}s)" for s, tf in sorted(offered.items())) or "none"
            raise InvalidPeriodError(
                f"{self.exchange_id} has no {period_label(period_seconds)} ({period_seconds}s) candles; it offers {listing}"
            )
        return timeframe

    def _market(self, ticker: Ticker) -> dict[str, Any]:
        with self._translate_errors("loading its markets", exchange=ticker.exchange):
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
        self, symbol: str, timeframe: str, since_ms: int, limit: int, buy_index: int | None,
        exchange_name: str | None = None,
    ) -> tuple[list[list[Any]], dict[int, Any]]:
        """One ``fetch_ohlcv`` call; with ``buy_index``, also the raw rows' taker-buy volume by ms.

        ccxt's unified candle drops Binance's taker-buy column, so the raw rows are seen on their
        way through the exchange's own ``parse_ohlcv`` (under the lock, for this call only).
        """
        exchange = self.exchange
        if buy_index is None:
            with self._translate_errors(f"fetching {symbol} {timeframe} candles", symbol, exchange_name):
                return exchange.fetch_ohlcv(symbol, timeframe, since=since_ms, limit=limit), {}
        raw_rows: list[Any] = []
        shadowed = "parse_ohlcv" in vars(exchange)
        original: Callable[..., list[Any]] = exchange.parse_ohlcv

        def parse_and_keep(ohlcv: Any, market: Any = None) -> list[Any]:
            raw_rows.append(ohlcv)
            return original(ohlcv, market)

        exchange.parse_ohlcv = parse_and_keep
        try:
            with self._translate_errors(f"fetching {symbol} {timeframe} candles", symbol, exchange_name):
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
        """Candles in ``[start, stop)``, and ``checked``: the parts the exchange's answers vouch for.

        How the pages are read (docs/sources.md, "What a ccxt answer proves"): every page proves
        the span from its first to its last candle (a gap inside one page is a gap on the
        exchange); the stretch between where a page was asked from and its first candle is
        proven only for exchanges whose ``since`` is documented as "the first candle at or
        after" (:data:`EXACT_SINCE_EXCHANGES`), and never when the page reaches the exchange's
        newest candle or, elsewhere, starts past all it was asked for (the signatures of an
        exchange that ignored ``since``: a warning, and where ``since`` is not known exact, an
        error if nothing of the range is left). Elsewhere a
        page exactly one candle late is asked once more from a period earlier. An empty page
        proves nothing; paging jumps ahead past it to look for later candles. Candles outside
        the range are dropped and prove nothing about it.
        """
        with self._lock:
            market = self._market(ticker)
            timeframe = self.timeframe_for(period_seconds)
            symbol = market["symbol"]
            buy_index = self._buy_volume_index(market)
            now_ms = now_micros() // 1000
            newest_stop_ms = closed_period_stop(period_seconds, now_ms * 1000) // 1000
            start_ms = -(-start // 1000)
            end_ms = min(-(-stop // 1000), newest_stop_ms)  # closed only
            candles: dict[int, list[Any]] = {}
            buys: dict[int, Any] = {}
            spans: list[tuple[int, int]] = []
            ignored_since: list[tuple[int, int, int]] = []  # (asked from, first, last) of suspect pages
            since, calls, empty_run, empty_pages = start_ms, 0, 0, 0
            retried: set[int] = set()  # where a page one candle short was asked again from, and from where
            while since < end_ms:
                limit = min(self.page_limit, period_count(period_seconds, since * 1000, end_ms * 1000))
                rows, page_buys = self._fetch_page(symbol, timeframe, since, limit, buy_index, ticker.exchange)
                calls += 1
                buys.update(page_buys)
                stamps = sorted({int(row[0]) for row in rows})
                if not stamps:
                    # An empty page proves nothing (ccxt #26252: [] for history the exchange does
                    # hold). Jump ahead, further each time, to find later candles; what is jumped
                    # over stays unknown. The jumps double, so a range costs log2(pages) calls.
                    empty_pages += 1
                    since = shift_periods(period_seconds, since * 1000, limit * 2**empty_run) // 1000
                    empty_run += 1
                    continue
                empty_run = 0
                for row in rows:
                    self._check_alignment(int(row[0]), period_seconds, timeframe)
                    candles[int(row[0])] = row
                first, last = stamps[0], stamps[-1]
                page_stop = period_end(period_seconds, last * 1000) // 1000
                if (not self.exact_since and since not in retried and since > 0
                        and first == shift_periods(period_seconds, since * 1000, 1) // 1000):
                    # One candle short at its front edge (OKX's exclusive `before`, ccxt #21036,
                    # #21049): ask once more from a period earlier, so the edge falls inside a page.
                    retried.add(since)
                    since = shift_periods(period_seconds, since * 1000, -1) // 1000
                    retried.add(since)
                    continue
                if first <= since:
                    proven_from = first
                elif page_stop >= newest_stop_ms or (
                        not self.exact_since and first >= shift_periods(period_seconds, since * 1000, limit) // 1000):
                    # Starts late and runs to the newest candle, or (where `since` is not known
                    # to be exact) starts past everything it was asked for: the exchange may
                    # have ignored `since` and sent its latest candles (ccxt #4449, #7981, #6490).
                    ignored_since.append((since, first, last))
                    proven_from = first
                else:
                    proven_from = since if self.exact_since else first
                spans.append((proven_from, page_stop))
                if page_stop <= since:
                    break  # the page does not advance: the rest stays unknown
                since = page_stop
        kept = sorted(ms for ms in candles if start_ms <= ms < end_ms)
        checked = [(max(a * 1000, start), min(b * 1000, end_ms * 1000)) for a, b in merge_intervals(spans)]
        checked = [(a, b) for a, b in checked if a < b]
        log.info("%s %s %s: %d candles in %d calls (%d empty) for [%s, %s); vouched for %s", self.exchange_id,
                 symbol, timeframe, len(kept), calls, empty_pages, format_micros(start), format_micros(stop),
                 ", ".join(f"[{format_micros(a)}, {format_micros(b)})" for a, b in checked) or "nothing")
        for asked, first, last in ignored_since:
            log.warning(
                "%s answered %s %s candles from %s to %s when asked from %s: it has none before %s "
                "or it ignores `since` and sends only its latest candles; the time before %s is left unknown",
                self.exchange_id, symbol, timeframe, format_micros(first * 1000), format_micros(last * 1000),
                format_micros(asked * 1000), format_micros(first * 1000), format_micros(first * 1000))
        if ignored_since and not kept and not checked and not self.exact_since:
            # Where `since` is exact (Binance), the same answer means a market listed less than a
            # page ago: nothing is proven, but it is no error.
            asked, first, last = ignored_since[0]
            raise RequestFailedError(
                f"{self.exchange_id} answered {symbol} {timeframe} candles only from {format_micros(first * 1000)} "
                f"when asked for [{format_micros(start)}, {format_micros(stop)}): it has none that old, "
                f"or it ignores `since` and serves only its latest candles (ccxt's {self.exchange_id} may not page "
                "through history). Nothing was stored or recorded for this range. For older candles put another "
                f"source first: --source {ticker.exchange}=files:DIR,ccxt:{self.exchange_id}"
            )
        frame = self._frame([candles[ms] for ms in kept], buys if buy_index is not None else None)
        return SourceCandles(self._market_info(ticker, market, frame), frame, scaled=False, checked=checked)

    def _check_alignment(self, ms: int, period_seconds: int, timeframe: str) -> None:
        if not is_aligned(period_seconds, np.array([ms * 1000]))[0]:
            raise DataError(
                f"{self.exchange_id}'s {timeframe} candles open at {format_micros(ms * 1000)}, not where a "
                f"{period_label(period_seconds)} period opens (weeks open Monday 00:00 UTC, months on the 1st, "
                f"other periods on multiples of their length since the epoch); take {timeframe} candles from "
                "another source or use a shorter period, which dexorder-feeds can aggregate"
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
