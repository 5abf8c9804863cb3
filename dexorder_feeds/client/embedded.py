"""The embedded default: the historian in-process, writing the same warehouse, no sockets.

One :class:`~dexorder_feeds.ingest.historian.Historian` (and so one committer thread) per
warehouse per process is shared by every client that uses it: :func:`acquire_historian` counts
its users and :func:`release_historian` closes it (its committer thread and ingest sources) when
the last one lets go, so a stopped client leaves no thread behind.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
import uuid
from collections.abc import Mapping
from typing import Any

from ..storage.catalog import open_catalog, scrub
from ..config import Settings
from ..vocabulary.errors import ClientClosedError, RequestTimeoutError
from ..events import emit
from ..ingest.historian import Historian
from ..ingest.sources import SourceRegistry
from .transport import HistoryTransport, check_request_args, result_from_notification, raise_for_error
from ..storage.warehouse import Warehouse
from ..wire import HistoryRequest, Notification

__all__ = ["EmbeddedHistory", "acquire_historian", "release_historian"]

_historians: dict[tuple, Historian] = {}
_users: dict[tuple, int] = {}
_lock = threading.Lock()
_EXECUTOR_WORKERS = 4


def _forget_after_fork() -> None:
    global _lock
    _historians.clear()  # their committer threads did not survive the fork
    _users.clear()
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


def _key(settings: Settings) -> tuple:
    return (settings.iceberg_catalog_uri, settings.namespace, tuple(sorted(settings.catalog_properties.items())),
            tuple(sorted(settings.sources.items())), settings.settle_seconds)


def acquire_historian(settings: Settings) -> Historian:
    """The process's historian for a warehouse (created on first use); pair with :func:`release_historian`."""
    key = _key(settings)
    with _lock:
        historian = _historians.get(key)
        if historian is None:
            warehouse = Warehouse(open_catalog(settings.iceberg_catalog_uri, settings.catalog_properties), settings.namespace)
            historian = Historian(warehouse, SourceRegistry(settings.sources), settle_seconds=settings.settle_seconds)
            _historians[key] = historian
        _users[key] = _users.get(key, 0) + 1
        return historian


def release_historian(historian: Historian) -> None:
    """One user less; the last one closes the historian's sources and committer thread."""
    with _lock:
        key = next((k for k, h in _historians.items() if h is historian), None)
        if key is None:
            return
        _users[key] -= 1
        if _users[key] > 0:
            return
        del _historians[key], _users[key]
    historian.close()
    historian.warehouse.close()  # joins the committer after the commits already queued


class EmbeddedHistory(HistoryTransport):
    """A :class:`HistoryTransport` that runs the historian in worker threads of this process."""

    def __init__(self, historian: Historian, *, secrets: Mapping[str, Any] | None = None) -> None:
        self.historian = historian
        self._secrets = dict(secrets or {})  # catalog properties whose secret values never reach a message
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._closed = False

    def revalidate(self, ticker: str, period_seconds: int | None = None) -> int:
        """The historian re-checks what changed source data backs (see :meth:`Historian.revalidate`)."""
        if self._closed:
            raise ClientClosedError("this EmbeddedHistory is closed; create a new client")
        return self.historian.revalidate(ticker, period_seconds)

    async def connect(self) -> None:
        if self._closed:
            raise ClientClosedError("this EmbeddedHistory is closed; create a new client")
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(_EXECUTOR_WORKERS, thread_name_prefix="dexorder-historian")

    async def request_historical_ohlc(
        self,
        ticker: str,
        period_seconds: int,
        start_time: int,
        end_time: int,
        timeout: float = 30.0,
        limit: int | None = None,
    ) -> dict[str, Any]:
        name, period, start, end = check_request_args(ticker, period_seconds, start_time, end_time, limit)
        if self._executor is None:
            await self.connect()
        assert self._executor is not None
        request = HistoryRequest(request_id=uuid.uuid4().hex, client_id="embedded", ticker=name,
                                 period_seconds=period, start_time=start, end_time=end, limit=limit)
        emit("dexorder_request_sent", request_id=request.request_id, ticker=name, period_seconds=period,
             start_time=start, end_time=end)
        loop = asyncio.get_running_loop()
        executor = self._executor

        async def handle() -> Notification:
            # The worker thread is free again once the fill is queued for the committer, which
            # commits it together with the other fills that finished meanwhile.
            committed = await loop.run_in_executor(executor, self.historian.begin, request)
            return await asyncio.wrap_future(committed)

        future = asyncio.ensure_future(handle())
        try:
            notification = await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            raise RequestTimeoutError(
                f"the in-process historian did not finish {name} within {timeout} s; "
                "raise request_timeout or fetch a smaller range"
            ) from None
        if notification.error_message and self._secrets:
            notification.error_message = scrub(notification.error_message, self._secrets)
        result = result_from_notification(notification)
        emit("dexorder_notification_received", result=result)
        return raise_for_error(result)

    async def close(self) -> None:
        self._closed = True
        if self._executor is not None:
            executor, self._executor = self._executor, None
            await asyncio.get_running_loop().run_in_executor(None, executor.shutdown, True)
