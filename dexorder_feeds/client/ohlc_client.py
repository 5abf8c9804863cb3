"""``OHLCClient``: the seed's high-level API with smart caching.

``OHLCClient()`` with no arguments, environment or config file uses a warehouse in the user's
cache directory and the in-process historian (the embedded default). With ``relay_endpoint`` and
``notification_endpoint`` configured, gap fills go through the relay.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, Union, overload

import pandas as pd

from ..config import Settings, resolve_settings
from ..vocabulary.errors import ClientClosedError, FetchManyError, InvalidRequestError
from ..vocabulary.periods import parse_period, period_label
from ..vocabulary.times import now_micros, to_micros
from .fetcher import FetchContext, Fetcher
from .iceberg_client import FetchRequest, IcebergClient
from ..vocabulary.markets import MarketInfo, check_price_kind, real_prices
from ..plugins import get_plugin_manager
from .transport import HistoryTransport

__all__ = ["OHLCClient", "SeriesKey", "DEFAULT_CONCURRENCY", "series_keys"]

log = logging.getLogger(__name__)

#: A series of ``fetch_many``: the ticker as given and the period in seconds.
SeriesKey = tuple[str, int]
#: How many series ``fetch_many`` fetches at once unless told otherwise.
DEFAULT_CONCURRENCY = 8
#: ``on_done(key, frame or exception, seconds)``: called as each series of ``fetch_many`` finishes.
OnDone = Callable[[SeriesKey, Union[pd.DataFrame, BaseException], float], None]


def _as_list(value: Any, scalar: tuple[type, ...]) -> list[Any]:
    if isinstance(value, scalar):
        return [value]
    try:
        return list(value)
    except TypeError:
        return [value]  # not iterable: let the ticker or period parser say what is wrong with it


def series_keys(tickers: Any, periods: Any) -> list[SeriesKey]:
    """Every ``(ticker, period_seconds)`` of ``tickers`` × ``periods`` (each one value or an
    iterable), in order, duplicates dropped; a malformed period raises ``InvalidPeriodError``."""
    keys: dict[SeriesKey, None] = {}
    for ticker in _as_list(tickers, (str,)):
        for period in _as_list(periods, (str, int)):
            keys[(ticker, parse_period(period))] = None
    return list(keys)


class OHLCClient:
    """Fetch OHLC candles: cached ones from Iceberg, missing ones through the historian.

    Lifecycle: ``await start()`` (or ``async with``), any number of ``fetch_ohlc``, then
    ``await stop()``. A fetch before ``start()`` starts the client; one after ``stop()`` raises
    :class:`~dexorder_feeds.vocabulary.errors.ClientClosedError`. A client belongs to the event loop it
    was started on.
    """

    def __init__(
        self,
        iceberg_catalog_uri: str | None = None,
        relay_endpoint: str | None = None,
        notification_endpoint: str | None = None,
        namespace: str | None = None,
        *,
        catalog_properties: Mapping[str, Any] | None = None,
        sources: Mapping[str, str] | list[str] | None = None,
        request_timeout: float | None = None,
        config_file: str | None = None,
        settings: Settings | None = None,
        settle_seconds: float | None = None,
    ) -> None:
        self.settings = settings or resolve_settings(
            iceberg_catalog_uri=iceberg_catalog_uri,
            relay_endpoint=relay_endpoint,
            notification_endpoint=notification_endpoint,
            namespace=namespace,
            catalog_properties=catalog_properties,
            sources=sources,
            request_timeout=request_timeout,
            config_file=config_file,
            settle_seconds=settle_seconds,
        )
        self._fetcher: Fetcher | None = None
        self._history: HistoryTransport | None = None
        self._iceberg: IcebergClient | None = None
        self._start_lock: asyncio.Lock | None = None
        self._historian: Any = None  # the shared in-process historian this client holds (embedded)
        self._closed = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else "started" if self._fetcher else "new"
        return f"<OHLCClient {state} {self.settings!r}>"

    @property
    def iceberg(self) -> IcebergClient:
        """The client's :class:`IcebergClient` (available once started)."""
        if self._iceberg is None:
            raise ClientClosedError("the client is not started; call await client.start() first")
        return self._iceberg

    async def start(self) -> None:
        """Open the warehouse and connect the history transport (subscribing first)."""
        if self._closed:
            raise ClientClosedError("this OHLCClient was stopped; create a new one")
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self._fetcher is not None:
                return
            settings = self.settings
            history: HistoryTransport
            if settings.embedded:
                from .embedded import EmbeddedHistory, acquire_historian

                historian = await asyncio.to_thread(acquire_historian, settings)
                self._historian = historian
                iceberg = IcebergClient(warehouse=historian.warehouse)
                history = EmbeddedHistory(historian, secrets=settings.catalog_properties)
            else:
                from ..auth import client_curve
                from .history_client import DEFAULT_CONNECT_TIMEOUT, HistoryClient

                curve = client_curve(settings)  # bad key files fail before anything connects
                iceberg = await asyncio.to_thread(
                    IcebergClient, settings.iceberg_catalog_uri, settings.namespace,
                    catalog_properties=settings.catalog_properties,
                )
                assert settings.relay_endpoint and settings.notification_endpoint
                history = HistoryClient(settings.relay_endpoint, settings.notification_endpoint, curve=curve,
                                        connect_timeout=min(DEFAULT_CONNECT_TIMEOUT, settings.request_timeout))
            try:
                await asyncio.to_thread(iceberg.warehouse.ensure_tables)
                await history.connect()
            except BaseException:
                await history.close()
                await self._release_historian()
                raise
            self._iceberg, self._history = iceberg, history
            self._fetcher = Fetcher(FetchContext(iceberg, history, settings, get_plugin_manager().hook,
                                                 settings.request_timeout))

    async def stop(self) -> None:
        """Close sockets, tasks and threads; the client cannot be used afterwards. Idempotent.

        Remote mode closes the HistoryClient's sockets; embedded mode stops its worker threads
        and, if it was the last client of the in-process historian, the committer thread too.
        """
        self._closed = True
        history, self._history, self._fetcher = self._history, None, None
        try:
            if history is not None:
                await history.close()
        finally:
            await self._release_historian()

    async def _release_historian(self) -> None:
        historian, self._historian = self._historian, None
        if historian is not None:
            from .embedded import release_historian

            await asyncio.to_thread(release_historian, historian)

    async def __aenter__(self) -> OHLCClient:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def fetch_ohlc(
        self,
        ticker: str,
        period_seconds: int | str,
        start_time: Any,
        end_time: Any,
        request_timeout: float | None = None,
        *,
        as_of: str | int | None = None,
        prices: str = "integer",
    ) -> pd.DataFrame:
        """Candles with timestamps in ``[start_time, end_time]``: from the cache, missing ranges
        requested from the historian first.

        Times are integer µs, ``datetime``, ``pandas.Timestamp`` or ISO strings (naive = UTC);
        ``period_seconds`` is seconds or ``1m``/``1h``/…; ``request_timeout`` defaults to the
        client's (30 s). Returns the seed's DataFrame sorted by timestamp, integer columns, with
        ``attrs["snapshot_id"]`` naming the Iceberg snapshot read, ``attrs["content_hash"]`` the
        candles (see docs/reproducibility.md) and ``attrs["quality"]`` its
        :class:`~dexorder_feeds.vocabulary.quality.QualityReport`.

        ``as_of`` (a pin name or a snapshot id) reads exactly that snapshot and fills nothing:
        a closed period it does not hold raises ``MissingAtSnapshotError``.

        ``prices="decimal"`` gives exact ``Decimal`` prices and volumes instead (``Decimal(int) /
        10**decimals`` at the market's decimals, None where a value is absent), ``"float"`` the
        nearest floats (NaN where absent); both add a ``time`` column (the period start as a UTC
        datetime) after ``timestamp``.
        """
        check_price_kind(prices)
        request = FetchRequest.create(ticker, period_seconds, start_time, end_time, as_of)
        if self._closed:
            raise ClientClosedError("this OHLCClient was stopped; create a new one")
        if self._fetcher is None:
            await self.start()
        assert self._fetcher is not None
        frame = await self._fetcher.fetch(request, request_timeout)
        if prices == "integer":
            return frame
        market = await self.price_scale(request.ticker) if len(frame) else None
        return real_prices(frame, market, prices)

    @overload
    async def fetch_many(
        self, tickers: str | Iterable[str], periods: int | str | Iterable[int | str], start_time: Any,
        end_time: Any, request_timeout: float | None = None, *, as_of: str | int | None = None,
        prices: str = "integer", concurrency: int = DEFAULT_CONCURRENCY, return_exceptions: Literal[False] = False,
        on_done: OnDone | None = None,
    ) -> dict[SeriesKey, pd.DataFrame]: ...

    @overload
    async def fetch_many(
        self, tickers: str | Iterable[str], periods: int | str | Iterable[int | str], start_time: Any,
        end_time: Any, request_timeout: float | None = None, *, as_of: str | int | None = None,
        prices: str = "integer", concurrency: int = DEFAULT_CONCURRENCY, return_exceptions: Literal[True],
        on_done: OnDone | None = None,
    ) -> dict[SeriesKey, pd.DataFrame | BaseException]: ...

    async def fetch_many(
        self,
        tickers: str | Iterable[str],
        periods: int | str | Iterable[int | str],
        start_time: Any,
        end_time: Any,
        request_timeout: float | None = None,
        *,
        as_of: str | int | None = None,
        prices: str = "integer",
        concurrency: int = DEFAULT_CONCURRENCY,
        return_exceptions: bool = False,
        on_done: OnDone | None = None,
    ) -> dict[SeriesKey, Any]:
        """Every ticker × period over one range, ``concurrency`` series at a time.

        Returns ``{(ticker, period_seconds): frame}`` in the order given (tickers as given,
        periods in seconds), each frame exactly what :meth:`fetch_ohlc` returns for it, with its
        ``attrs`` (``quality``, ``snapshot_id``, ``content_hash``). Relative times (``"now"``,
        ``"30 days ago"``) are read once, so every series covers the same range.

        Arguments that make no valid request (a malformed ticker or period, a bad range) raise at
        once, before anything is fetched. A series that fails while fetching (an unknown
        exchange, a timeout…) does not stop the others: once all have finished,
        :class:`~dexorder_feeds.vocabulary.errors.FetchManyError` is raised, its ``errors``
        mapping each failed series to its exception and its ``results`` holding every frame
        that was fetched. With ``return_exceptions=True`` nothing is raised: a failed series
        maps to its exception instead (as ``asyncio.gather`` does).

        ``on_done(key, frame_or_exception, seconds)`` is called on the event loop as each series
        finishes (for progress bars; ``seconds`` is that series' own fetch time).
        """
        check_price_kind(prices)
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise InvalidRequestError(f"concurrency={concurrency!r} must be a positive integer (series fetched at once)")
        keys = series_keys(tickers, periods)
        now = now_micros()
        start = to_micros(start_time, name="start_time", round_up=True, now=now)
        end = to_micros(end_time, name="end_time", now=now)
        for ticker, period in keys:  # every request valid before any is sent
            FetchRequest.create(ticker, period, start, end, as_of)
        if self._closed:
            raise ClientClosedError("this OHLCClient was stopped; create a new one")
        if self._fetcher is None:
            await self.start()
        gate = asyncio.Semaphore(concurrency)
        outcomes: dict[SeriesKey, pd.DataFrame | BaseException] = {}

        async def one(key: SeriesKey) -> None:
            async with gate:
                began = time.perf_counter()
                result: pd.DataFrame | BaseException
                try:
                    result = await self.fetch_ohlc(key[0], key[1], start, end, request_timeout, as_of=as_of,
                                                   prices=prices)
                except Exception as exc:  # kept for the caller; cancellation still propagates
                    result = exc
                outcomes[key] = result
                if on_done is not None:
                    on_done(key, result, time.perf_counter() - began)

        await asyncio.gather(*(one(key) for key in keys))
        ordered = {key: outcomes[key] for key in keys}
        if return_exceptions:
            return ordered
        failed = {key: value for key, value in ordered.items() if isinstance(value, BaseException)}
        if failed:
            lines = [f"  {ticker} {period_label(period)}: {type(exc).__name__}: {exc}"
                     for (ticker, period), exc in failed.items()]
            raise FetchManyError(
                f"{len(failed)} of {len(keys)} series failed (the others' frames are in .results):\n"
                + "\n".join(lines),
                errors=failed, results={key: value for key, value in ordered.items() if key not in failed},
            )
        return ordered

    async def forget(self, ticker: str, period_seconds: int | str | None = None, start_time: Any = None,
                     end_time: Any = None, *, candles: bool = False) -> Any:
        """Forget ingested ranges so the next fetch asks the source again (and with
        ``candles=True`` delete the stored candles there); see :meth:`IcebergClient.forget`."""
        if self._closed:
            raise ClientClosedError("this OHLCClient was stopped; create a new one")
        if self._fetcher is None:
            await self.start()
        return await asyncio.to_thread(self.iceberg.forget, ticker, period_seconds, start_time, end_time,
                                       candles=candles)

    async def price_scale(self, ticker: str) -> MarketInfo | None:
        """The market's decimals (through the ``dexorder_price_scale`` hook), or None if unknown."""
        if self._fetcher is None:
            await self.start()
        assert self._fetcher is not None
        context = self._fetcher.context
        return await asyncio.to_thread(context.hook.dexorder_price_scale, context=context, ticker=ticker)
