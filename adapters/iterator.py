"""Candles one by one, with exact ``Decimal`` prices: ``candles(...)`` and ``acandles(...)``.

::

    for candle in dexorder_feeds.candles("SIM:BTC/USDT", "1h", "2025-01-01", "2025-02-01"):
        print(candle.time, candle.close)          # Decimal('36142.07')

    async for candle in dexorder_feeds.acandles("SIM:BTC/USDT", "1h", "2025-01-01", "2025-02-01"):
        ...

Each value is exactly ``Decimal(stored_int) / 10**decimals`` (kept at the market's precision:
``Decimal('100.00')`` for a 2-decimal market). The range is read in pages of ``page_size``
candles, in order, and turned into ``Candle`` objects a chunk at a time, so memory stays bounded
however long the range is. The sync ``candles`` reads the next page while the current one is
being consumed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timezone
from decimal import Context, Decimal
from itertools import repeat
from typing import Any, NamedTuple

import numpy as np

from ..vocabulary.periods import shift_periods
from ..vocabulary.requests import FetchRequest
from ..client.ohlc_client import OHLCClient
from ..client.sync import get_loop, run_sync
from ..vocabulary.times import now_micros
from ..vocabulary.quality import QualityReport
from ._source import (
    Fetched,
    check_fill_ratio,
    check_max_fill_ratio,
    check_missing,
    client_settings,
    fetch_candles,
    period_end,
    sync_client,
)

__all__ = ["Candle", "CandleIterator", "AsyncCandleIterator", "candles", "acandles", "DEFAULT_PAGE_SIZE"]

#: Candles per fetch: one page in flight and one being consumed bound the memory.
DEFAULT_PAGE_SIZE = 50_000
# Candle objects are built this many at a time from a page's integer arrays.
_CHUNK = 4096

_VALUE_FIELDS = ("open", "high", "low", "close", "volume", "buy_vol", "sell_vol", "open_interest")


class Candle(NamedTuple):
    """One candle; immutable. Prices and volumes are exact ``Decimal`` values.

    ``timestamp`` is the period start in integer µs since the epoch (UTC) and ``time`` (also
    ``open_time``) the same instant as an aware UTC ``datetime``; ``close_time`` is the period's
    end (exclusive, aware UTC): the candle's values exist only from then on. ``buy_vol``, ``sell_vol`` and ``open_interest`` are
    None where the source does not give them. With ``missing="nan"`` a missing period's values
    are ``Decimal('NaN')``.
    """

    ticker: str
    period_seconds: int
    timestamp: int
    time: datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    buy_vol: Decimal | None
    sell_vol: Decimal | None
    open_interest: Decimal | None
    close_time: datetime

    @property
    def open_time(self) -> datetime:
        """The period start (the same as ``time``)."""
        return self.time


_NAN = Decimal("NaN")
_CONTEXT = Context(prec=40)
_scaleb = Decimal.scaleb
_new_candle = tuple.__new__
_fromtimestamp = datetime.fromtimestamp
_UTC = timezone.utc


def _decimals(values: Any, decimals: int) -> list[Decimal | None]:
    """Exact Decimals of a column of stored integers (None where null).

    ``Decimal(int).scaleb(-decimals)`` is exactly ``Decimal(int) / 10**decimals``, at the
    market's exponent. It runs in a private context of 40 digits (a stored int64 has at most
    19), so no precision setting of the caller can round it.
    """
    mask = values.isna().to_numpy()
    if mask.all():
        return [None] * len(mask)
    ints = values.to_numpy(dtype=np.int64, na_value=0).tolist()
    out: list[Any] = list(map(Decimal, ints))
    if decimals:
        out = list(map(_scaleb, out, repeat(-decimals), repeat(_CONTEXT)))
    if mask.any():
        for i in np.flatnonzero(mask).tolist():
            out[i] = None
    return out


def _times(timestamps: np.ndarray) -> list[datetime]:
    """Aware UTC datetimes of integer µs timestamps (exact: whole seconds, then the µs)."""
    seconds, micros = np.divmod(timestamps, 1_000_000)
    out = list(map(_fromtimestamp, seconds.tolist(), repeat(_UTC)))
    if micros.any():
        for i in np.flatnonzero(micros).tolist():
            out[i] = out[i].replace(microsecond=int(micros[i]))
    return out


def _page_candles(fetched: Fetched) -> Iterator[Candle]:
    """The candles of one fetched page, built a chunk at a time."""
    frame, market = fetched.frame, fetched.market
    if not len(frame):
        return
    assert market is not None
    ticker, period = fetched.request.ticker, fetched.request.period_seconds
    missing_rows = frame["open"].isna().to_numpy()
    for lo in range(0, len(frame), _CHUNK):
        chunk = frame.iloc[lo:lo + _CHUNK]
        stamps = chunk["timestamp"].to_numpy(dtype=np.int64)
        timestamps = stamps.tolist()
        columns = [_decimals(chunk[name], market.decimals_for(name)) for name in _VALUE_FIELDS]
        if missing_rows[lo:lo + _CHUNK].any():
            for column in columns:  # a missing period ("nan"): NaN values, not None
                for i in np.flatnonzero(missing_rows[lo:lo + _CHUNK]).tolist():
                    column[i] = _NAN
        n = len(timestamps)
        closes = _times(np.asarray(period_end(stamps, period), dtype=np.int64))
        rows = zip([ticker] * n, [period] * n, timestamps, _times(stamps), *columns, closes)
        for row in rows:
            yield _new_candle(Candle, row)


class _Pager:
    """Plans the pages of a range and carries what the missing policy needs between pages."""

    def __init__(
        self, ticker: object, period: object, start: object, end: object, page_size: int, missing: str,
        max_fill_ratio: float | None = None, as_of: str | int | None = None,
    ) -> None:
        if not isinstance(page_size, int) or page_size <= 0:
            raise ValueError(f"page_size={page_size!r} must be a positive integer")
        check_missing(missing)
        self.max_fill_ratio = check_max_fill_ratio(max_fill_ratio)
        self.quality: QualityReport | None = None  # of the pages read so far
        self.request = FetchRequest.create(ticker, period, start, end if end is not None else now_micros(), as_of)
        self.snapshot_ids: list[int | None] = []  # per page read
        self.content_hashes: list[str | None] = []
        self.page_size = page_size
        self.missing = missing
        interval = self.request.interval
        self.next_start: int | None = interval[0] if interval else None
        self.started = False  # a candle was seen: later pages continue its grid
        self.previous: dict[str, Any] | None = None

    def next_page(self) -> tuple[int, int] | None:
        """The next page's inclusive ``(first, last)`` candle timestamps, or None when done."""
        interval = self.request.interval
        if interval is None or self.next_start is None or self.next_start >= interval[1]:
            return None
        first = self.next_start
        stop = min(shift_periods(self.request.period_seconds, first, self.page_size), interval[1])
        self.next_start = stop
        return first, stop - 1

    async def fetch(self, client: OHLCClient, page: tuple[int, int], request_timeout: float | None) -> Fetched:
        fetched = await fetch_candles(
            client, self.request.ticker, self.request.period_seconds, page[0], page[1], missing=self.missing,
            request_timeout=request_timeout, grid_start=page[0] if self.started else None,
            previous=self.previous, as_of=self.request.as_of,
        )
        self.snapshot_ids.append(fetched.snapshot_id)
        self.content_hashes.append(fetched.content_hash)
        self.quality = fetched.quality if self.quality is None else self.quality.combine(fetched.quality)
        check_fill_ratio(self.quality, self.max_fill_ratio)
        frame = fetched.frame
        closes = frame["close"].dropna()
        if len(closes):
            # Later pages continue the grid, and ffill carries this page's last values.
            self.started = True
            last = {column: frame[column].dropna() for column in ("open_interest", "buy_vol", "sell_vol")}
            self.previous = {column: int(values.iloc[-1]) if len(values) else None for column, values in last.items()}
            self.previous["close"] = int(closes.iloc[-1])
        return fetched


def candles(
    ticker: str,
    period: int | str,
    start: Any,
    end: Any = None,
    *,
    page_size: int = DEFAULT_PAGE_SIZE,
    missing: str = "drop",
    max_fill_ratio: float | None = None,
    as_of: str | int | None = None,
    client: OHLCClient | None = None,
    **settings: Any,
) -> CandleIterator:
    """Iterate the candles of ``ticker`` with timestamps in ``[start, end]`` (end: default now).

    ``period`` is seconds or ``1m``/``1h``/…; times are int µs, ``datetime``, ``pandas.Timestamp``
    or ISO strings (naive = UTC). ``missing`` is what a period without a stored candle becomes:
    ``"drop"`` (default), ``"nan"`` (``Decimal('NaN')`` values) or ``"ffill"`` (flat at the
    previous close, zero volume). ``client`` is an ``OHLCClient`` (used on the sync loop), or
    give the client settings (``iceberg_catalog_uri``, ``relay_endpoint``, …) as keywords.

    The iterator's ``quality`` is the data-quality report of the pages read so far (complete
    once the iteration ends). With ``max_fill_ratio`` (0 to 1), reading a page after which more
    than that share of the candles read was made up by ``missing`` raises
    :class:`~dexorder_feeds.vocabulary.errors.FillRatioError`.
    """
    pager = _Pager(ticker, period, start, end, page_size, missing, max_fill_ratio, as_of)
    options = client_settings(settings)
    timeout = options.get("request_timeout")
    return CandleIterator(_sync_candles(pager, client, options, timeout), pager)


class _PagesRead:
    """What an iteration has read so far, page by page."""

    _pager: _Pager

    @property
    def snapshot_ids(self) -> list[int | None]:
        """The snapshot each page read (one, with ``as_of``)."""
        return list(self._pager.snapshot_ids)

    @property
    def content_hashes(self) -> list[str | None]:
        """Each page's content hash (``attrs["content_hash"]`` of that page's fetch)."""
        return list(self._pager.content_hashes)

    @property
    def quality(self) -> QualityReport | None:
        """The data-quality report of the pages read so far (None before the first)."""
        return self._pager.quality


class CandleIterator(_PagesRead, Iterator[Candle]):
    """The candles of :func:`candles`, one by one; ``quality`` reports on the pages read so far."""

    def __init__(self, candles: Iterator[Candle], pager: _Pager) -> None:
        self._candles = candles
        self._pager = pager

    def __iter__(self) -> CandleIterator:
        return self

    def __next__(self) -> Candle:
        return next(self._candles)

    def close(self) -> None:
        """Stop reading (the page in flight is cancelled)."""
        close = getattr(self._candles, "close", None)
        if close is not None:
            close()


def _sync_candles(
    pager: _Pager, client: OHLCClient | None, options: dict[str, Any], timeout: float | None
) -> Iterator[Candle]:
    resolved = run_sync(sync_client(client, options))
    loop = get_loop()

    def submit(page: tuple[int, int]) -> concurrent.futures.Future[Fetched]:
        return asyncio.run_coroutine_threadsafe(pager.fetch(resolved, page, timeout), loop)

    page = pager.next_page()
    pending = submit(page) if page is not None else None
    try:
        while pending is not None:
            fetched = pending.result()
            page = pager.next_page()
            # Read the next page while this one is consumed (at most two pages in memory).
            pending = submit(page) if page is not None else None
            yield from _page_candles(fetched)
            del fetched
    finally:
        if pending is not None:
            pending.cancel()


def acandles(
    ticker: str,
    period: int | str,
    start: Any,
    end: Any = None,
    *,
    page_size: int = DEFAULT_PAGE_SIZE,
    missing: str = "drop",
    max_fill_ratio: float | None = None,
    as_of: str | int | None = None,
    client: OHLCClient | None = None,
    **settings: Any,
) -> AsyncCandleIterator:
    """The ``async for`` twin of :func:`candles`, on the caller's event loop.

    Without ``client``, an ``OHLCClient`` with the given settings is started on the caller's
    loop for the iteration and stopped at its end. ``quality`` as for :func:`candles`.
    """
    pager = _Pager(ticker, period, start, end, page_size, missing, max_fill_ratio, as_of)
    options = client_settings(settings)
    timeout = options.get("request_timeout")
    if client is not None and options:
        raise TypeError("pass either client=... or client settings, not both")
    return AsyncCandleIterator(_async_candles(pager, client, options, timeout), pager)


async def _async_candles(
    pager: _Pager, client: OHLCClient | None, options: dict[str, Any], timeout: float | None
) -> AsyncIterator[Candle]:
    own = client is None
    if client is None:
        client = OHLCClient(**options)
    try:
        page = pager.next_page()
        while page is not None:
            fetched = await pager.fetch(client, page, timeout)
            page = pager.next_page()
            for candle in _page_candles(fetched):
                yield candle
    finally:
        if own:
            await client.stop()


class AsyncCandleIterator(_PagesRead, AsyncIterator[Candle]):
    """The candles of :func:`acandles`; ``quality`` reports on the pages read so far."""

    def __init__(self, candles: AsyncIterator[Candle], pager: _Pager) -> None:
        self._candles = candles
        self._pager = pager

    def __aiter__(self) -> AsyncCandleIterator:
        return self

    async def __anext__(self) -> Candle:
        return await self._candles.__anext__()

    async def aclose(self) -> None:
        """Stop reading (and stop the client the iteration started)."""
        aclose = getattr(self._candles, "aclose", None)
        if aclose is not None:
            await aclose()
