"""Running accepted requests: a pool of historian threads, one run per ``request_id``, and
overlapping ranges of one ticker and period one after the other.

A request whose range overlaps one that came first waits (holding no worker) until that one is
done, then finds its candles stored and only fetches and commits what is left: under many
clients asking for overlapping windows each candle is fetched and committed once instead of
racing through the single committer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ..ingest.historian import Historian
from ..vocabulary.errors import RelayUnavailableError
from ..wire import HistoryRequest, Notification
from ..wire.errors import wire_name
from .results import ResultCache

__all__ = ["Scheduler", "OverlapQueue", "DEFAULT_WORKERS", "SHUTDOWN_MESSAGE"]

log = logging.getLogger("dexorder_feeds.relay.server")  # one logger for the whole relay

DEFAULT_WORKERS = 4
SHUTDOWN_MESSAGE = "the relay shut down before this request started; send it again"

Publish = Callable[[Notification], Awaitable[None]]


@dataclass(eq=False)
class _Running:
    start: int
    end: int
    task: asyncio.Task[None]


class OverlapQueue:
    """The requests queued or running, per (ticker, period), with their time ranges."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, int], list[_Running]] = {}

    def __len__(self) -> int:
        """How many (ticker, period) pairs have requests queued or running."""
        return len(self._by_key)

    def earlier(self, key: tuple[str, int], start: int, end: int) -> list[asyncio.Task[None]]:
        """The tasks of the requests for ``key`` whose range meets ``[start, end]``."""
        return [item.task for item in self._by_key.get(key, []) if item.start <= end and start <= item.end]

    def add(self, key: tuple[str, int], start: int, end: int, task: asyncio.Task[None]) -> None:
        """Track ``task`` until it is done."""
        item = _Running(start, end, task)
        self._by_key.setdefault(key, []).append(item)
        task.add_done_callback(lambda _task: self._forget(key, item))

    def _forget(self, key: tuple[str, int], item: _Running) -> None:
        items = self._by_key.get(key)
        if items is not None:
            items.remove(item)
            if not items:
                del self._by_key[key]


class Scheduler:
    """Runs requests on ``workers`` historian threads, so one slow ticker does not hold up the
    others; each finished notification is remembered in ``results``, handed to ``publish``, and
    one log line gives its timings (queue wait, historian, total)."""

    def __init__(self, historian: Historian, *, workers: int = DEFAULT_WORKERS, results: ResultCache,
                 publish: Publish) -> None:
        self.historian = historian
        self.results = results
        self._publish = publish
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=workers,
                                                               thread_name_prefix="dexorder-historian")
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        self._overlaps = OverlapQueue()

    def __len__(self) -> int:
        """How many requests are queued or running."""
        return len(self._in_flight)

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._in_flight

    def running(self) -> list[asyncio.Task[None]]:
        return list(self._in_flight.values())

    def submit(self, request: HistoryRequest, received: float) -> None:
        """Queue ``request`` (received at ``perf_counter()`` time ``received``) behind the
        overlapping ones that came first. Its ``request_id`` must not be in flight already."""
        key = (request.ticker, request.period_seconds)
        earlier = self._overlaps.earlier(key, request.start_time, request.end_time)
        task = asyncio.get_running_loop().create_task(self._run(request, received, earlier),
                                                      name=f"relay-request-{request.request_id}")
        self._in_flight[request.request_id] = task
        self._overlaps.add(key, request.start_time, request.end_time, task)

    def stop_queue(self) -> None:
        """Start no more requests: those queued get an ERROR notification saying to retry."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        """Wait for the historian threads to end."""
        self._executor.shutdown(wait=True, cancel_futures=True)

    async def _run(self, request: HistoryRequest, received: float, earlier: list[asyncio.Task[None]]) -> None:
        started = finished = time.perf_counter()
        try:
            if earlier:  # overlapping requests that came first: their candles are then stored, not redone
                await asyncio.wait(earlier)
            job = self._executor.submit(self._timed_handle, request)
            try:
                notification, started, finished = await asyncio.wrap_future(job)
            except asyncio.CancelledError:
                if not job.cancelled():
                    raise
                notification = _retry_later(request)
                started = finished = time.perf_counter()
        except RuntimeError:  # the executor was shut down before the job was submitted
            notification = _retry_later(request)
        finally:
            self._in_flight.pop(request.request_id, None)
        self.results.remember(notification)
        await self._publish(notification)
        done = time.perf_counter()
        log.info("relay request %s %s %ss -> %s queue=%.1fms historian=%.1fms total=%.1fms",
                 request.request_id, request.ticker, request.period_seconds,
                 Notification.Status.Name(notification.status), (started - received) * 1e3,
                 (finished - started) * 1e3, (done - received) * 1e3)

    def _timed_handle(self, request: HistoryRequest) -> tuple[Notification, float, float]:
        started = time.perf_counter()
        try:
            notification = self.historian.handle(request)
        except Exception as exc:  # handle() never raises; this is a last line of defence
            log.exception("relay: the historian raised on request %s", request.request_id)
            notification = Notification(request_id=request.request_id, client_id=request.client_id,
                                        status=Notification.ERROR,
                                        error_message=f"internal error in the historian: {type(exc).__name__}: {exc}")
        return notification, started, time.perf_counter()


def _retry_later(request: HistoryRequest) -> Notification:
    return Notification(request_id=request.request_id, client_id=request.client_id, status=Notification.ERROR,
                        error_message=SHUTDOWN_MESSAGE, error_type=wire_name(RelayUnavailableError))
