"""The sync face: run the async core on one lazily started daemon event-loop thread.

Works in a plain script, inside a running event loop (a notebook cell: the caller's loop is not
touched, the call blocks on the background loop), and from many threads at once. The original
exception is re-raised in the caller; timeouts are honoured; the loop is recreated after a fork.

:func:`close_sync_clients` (also run at interpreter exit) stops the shared clients, the loop's
worker threads and the loop thread itself, and closes the loop: afterwards no thread, socket or
task of the sync face is left. The next blocking call starts a fresh loop.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import os
import threading
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any, TypeVar

import pandas as pd

from ..config import resolve_settings
from ..vocabulary.errors import ClientClosedError, RequestTimeoutError

__all__ = ["run_sync", "fetch_ohlc", "fetch_many", "price_scale", "shared_client", "get_loop", "close_sync_clients"]

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None
_clients: dict[tuple, Any] = {}


def _reset_after_fork() -> None:
    global _loop, _thread, _lock
    _loop, _thread, _lock = None, None, threading.Lock()
    _clients.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def get_loop() -> asyncio.AbstractEventLoop:
    """The background loop (started on first use)."""
    global _loop, _thread
    with _lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            thread = threading.Thread(target=run, name="dexorder-sync-loop", daemon=True)
            thread.start()
            ready.wait()
            _loop, _thread = loop, thread
        return _loop


def run_sync(coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
    """Run ``coro`` on the background loop and return its result (or raise its exception)."""
    loop = get_loop()
    if threading.current_thread() is _thread:
        coro.close()
        raise RuntimeError("run_sync called from the dexorder sync loop itself; await the coroutine instead")
    future = asyncio.run_coroutine_threadsafe(coro, loop)
    try:
        return future.result(timeout)
    except concurrent.futures.TimeoutError:
        if future.done():
            raise  # the coroutine's own TimeoutError (a RequestTimeoutError): it says what timed out
        future.cancel()
        raise RequestTimeoutError(f"the call did not finish within {timeout} s") from None
    except concurrent.futures.CancelledError:
        # Only a cancellation on the background loop gets here (nobody cancels the future from
        # this side but the timeout above): never hand an empty CancelledError to the caller.
        raise ClientClosedError("the call was cancelled on the dexorder background loop "
                                "(its client closed or the process is exiting); call it again") from None


async def shared_client(settings: Any) -> Any:
    """The started OHLCClient shared by every sync call with these settings (await it on the
    background loop, e.g. ``run_sync(shared_client(settings))`` or from a coroutine run there)."""
    from .ohlc_client import OHLCClient

    client = _clients.get(settings.key())
    if client is None:
        client = OHLCClient(settings=settings)
        _clients[settings.key()] = client
    await client.start()
    return client


async def _fetch(settings: Any, args: tuple, request_timeout: float | None,
                 as_of: str | int | None = None, prices: str = "integer") -> pd.DataFrame:
    client = await shared_client(settings)
    return await client.fetch_ohlc(*args, request_timeout=request_timeout, as_of=as_of, prices=prices)


def _settings(**kwargs: Any) -> Any:
    return resolve_settings(**{k: v for k, v in kwargs.items() if v is not None})


def fetch_ohlc(
    ticker: str,
    period_seconds: int | str,
    start_time: Any,
    end_time: Any,
    request_timeout: float | None = None,
    *,
    iceberg_catalog_uri: str | None = None,
    relay_endpoint: str | None = None,
    notification_endpoint: str | None = None,
    namespace: str | None = None,
    catalog_properties: Mapping[str, Any] | None = None,
    sources: Mapping[str, str] | list[str] | None = None,
    as_of: str | int | None = None,
    prices: str = "integer",
    settle_seconds: float | None = None,
) -> pd.DataFrame:
    """Blocking :meth:`OHLCClient.fetch_ohlc` on a shared client per settings.

    Settings not given come from the environment and config file, as for ``OHLCClient``.
    ``prices``: ``"integer"`` (the seed's stored integers, default), ``"decimal"`` or ``"float"``.
    """
    from ..vocabulary.markets import check_price_kind

    check_price_kind(prices)
    settings = _settings(
        iceberg_catalog_uri=iceberg_catalog_uri, relay_endpoint=relay_endpoint,
        notification_endpoint=notification_endpoint, namespace=namespace,
        catalog_properties=catalog_properties, sources=sources, settle_seconds=settle_seconds,
    )
    return run_sync(_fetch(settings, (ticker, period_seconds, start_time, end_time), request_timeout, as_of,
                           prices))


async def _fetch_many(settings: Any, args: tuple, kwargs: dict[str, Any]) -> Any:
    client = await shared_client(settings)
    return await client.fetch_many(*args, **kwargs)


def fetch_many(
    tickers: str | Iterable[str],
    periods: int | str | Iterable[int | str],
    start_time: Any,
    end_time: Any,
    request_timeout: float | None = None,
    *,
    iceberg_catalog_uri: str | None = None,
    relay_endpoint: str | None = None,
    notification_endpoint: str | None = None,
    namespace: str | None = None,
    catalog_properties: Mapping[str, Any] | None = None,
    sources: Mapping[str, str] | list[str] | None = None,
    as_of: str | int | None = None,
    prices: str = "integer",
    concurrency: int | None = None,
    return_exceptions: bool = False,
    on_done: Callable[[tuple[str, int], Any, float], None] | None = None,
    settle_seconds: float | None = None,
) -> dict[tuple[str, int], Any]:
    """Blocking :meth:`OHLCClient.fetch_many`: every ticker × period over one range, fetched
    concurrently on the shared client; ``{(ticker, period_seconds): frame}``.

    A failed series raises :class:`~dexorder_feeds.vocabulary.errors.FetchManyError` once the
    others have finished (their frames in its ``results``), or with ``return_exceptions=True``
    maps to its exception. ``on_done`` runs on the background loop's thread.
    """
    from .ohlc_client import DEFAULT_CONCURRENCY

    settings = _settings(
        iceberg_catalog_uri=iceberg_catalog_uri, relay_endpoint=relay_endpoint,
        notification_endpoint=notification_endpoint, namespace=namespace,
        catalog_properties=catalog_properties, sources=sources, settle_seconds=settle_seconds,
    )
    kwargs: dict[str, Any] = dict(as_of=as_of, prices=prices, return_exceptions=return_exceptions, on_done=on_done,
                                  concurrency=DEFAULT_CONCURRENCY if concurrency is None else concurrency)
    return run_sync(_fetch_many(settings, (tickers, periods, start_time, end_time, request_timeout), kwargs))


async def _price_scale(settings: Any, ticker: str) -> Any:
    client = await shared_client(settings)
    return await client.price_scale(ticker)


def price_scale(ticker: str, **settings: Any) -> Any:
    """Blocking :meth:`OHLCClient.price_scale` (the market's decimals) on the shared client."""
    return run_sync(_price_scale(_settings(**settings), ticker))


async def _close_all() -> None:
    clients = list(_clients.values())
    _clients.clear()
    for client in clients:
        try:
            await client.stop()
        except Exception:  # closing anyway: one client's failure must not keep the others open
            pass
    await asyncio.get_running_loop().shutdown_default_executor()  # joins the to_thread workers


def close_sync_clients(timeout: float = 5.0) -> None:
    """Stop the shared clients and the background loop (also run at interpreter exit)."""
    global _loop, _thread
    with _lock:
        loop, thread = _loop, _thread
        _loop, _thread = None, None
    if loop is None or loop.is_closed():
        return
    try:
        asyncio.run_coroutine_threadsafe(_close_all(), loop).result(timeout)
    except Exception:  # exiting anyway: never hang or fail at exit
        pass
    try:
        loop.call_soon_threadsafe(loop.stop)
    except RuntimeError:  # closed meanwhile
        return
    if thread is not None:
        thread.join(timeout)
    if not loop.is_running() and not loop.is_closed():
        loop.close()


atexit.register(close_sync_clients)
