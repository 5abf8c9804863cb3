"""Running accepted requests: a pool of historian threads, one run per ``request_id``,
overlapping ranges of one ticker and period fetched once, and the workers shared fairly
between clients (round-robin by ``client_id``: one client's backlog does not hold up another's
request).

A request whose range overlaps running ones fetches at once only the parts of its range no
running request covers (each part runs as a request of its own, seen by later requests as
running), waits for those running requests and its parts, then runs whole: its candles are
stored by then, so that run only counts them (or fetches what a failed one left). Under many
clients asking for overlapping windows most candles are fetched once, and a request waits for
one round of commits, not for the overlapping request's round and then its own. It does not
wait for one that is itself waiting (no chains of waits). A worker is free again once its fill
is queued for the committer (group commit).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ..ingest.historian import Historian
from ..vocabulary.ranges import candle_interval, merge_intervals, subtract_intervals
from ..vocabulary.errors import RelayUnavailableError
from ..wire import HistoryRequest, Notification, put_warehouse
from ..wire.errors import wire_name
from .results import ResultCache

__all__ = ["Scheduler", "OverlapQueue", "FairQueue", "DEFAULT_WORKERS", "SHUTDOWN_MESSAGE"]

log = logging.getLogger("dexorder_feeds.relay.server")  # one logger for the whole relay

DEFAULT_WORKERS = 4
SHUTDOWN_MESSAGE = "the relay shut down before this request started; send it again"

Publish = Callable[[Notification], Awaitable[None]]


@dataclass(eq=False)
class _Running:
    start: int
    end: int
    task: asyncio.Task[None]
    running: bool = True  # False while it waits for earlier overlapping requests


class OverlapQueue:
    """The requests queued or running, per (ticker, period), with their time ranges."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, int], list[_Running]] = {}

    def __len__(self) -> int:
        """How many (ticker, period) pairs have requests queued or running."""
        return len(self._by_key)

    def earlier(self, key: tuple[str, int], start: int, end: int) -> list[_Running]:
        """The running requests for ``key`` whose range meets ``[start, end]``.

        One that still waits for earlier ones itself is left out: a request waits for at most
        one round of running requests, never for a chain of requests each waiting for the one
        before (under many overlapping windows such a chain grew to a dozen commits long).
        Requests that stop waiting at the same moment may fetch a shared part twice; the
        committer's duplicate check stores each candle once."""
        return [item for item in self._by_key.get(key, [])
                if item.running and item.start <= end and start <= item.end]

    def add(self, key: tuple[str, int], start: int, end: int, task: asyncio.Task[None], *,
            running: bool = True) -> _Running:
        """Track ``task`` until it is done (``running=False``: it waits; set ``running`` when it starts)."""
        item = _Running(start, end, task, running)
        self._by_key.setdefault(key, []).append(item)
        task.add_done_callback(lambda _task: self._forget(key, item))
        return item

    def _forget(self, key: tuple[str, int], item: _Running) -> None:
        items = self._by_key.get(key)
        if items is not None:
            items.remove(item)
            if not items:
                del self._by_key[key]


class FairQueue:
    """``slots`` worker slots shared fairly between clients: a free slot goes to the waiting
    client that got the fewest slots since the queue was last empty, so a client with a backlog
    takes one slot per turn and another client's request waits for one slot to come free, not
    behind the whole backlog."""

    def __init__(self, slots: int) -> None:
        self._free = slots
        self._waiting: OrderedDict[str, deque[asyncio.Future[None]]] = OrderedDict()
        self._served: Counter[str] = Counter()  # slots each client got since the queue was last empty
        self._closed = False

    def __len__(self) -> int:
        """How many requests wait for a slot."""
        return sum(len(queue) for queue in self._waiting.values())

    async def acquire(self, client_id: str) -> None:
        """Wait for a slot, in this client's turn. RuntimeError once :meth:`close` was called."""
        if self._closed:
            raise RuntimeError("the scheduler is stopping")
        if self._free > 0 and not self._waiting:
            self._free -= 1
            self._served[client_id] += 1
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(client_id, deque()).append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled() and turn.exception() is None:
                self.release()  # the slot was ours already: pass it on
            else:
                queue = self._waiting.get(client_id)
                if queue is not None and turn in queue:
                    queue.remove(turn)
                    if not queue:
                        del self._waiting[client_id]
            raise

    def release(self) -> None:
        """Give the slot to the waiting client served least so far (first come first among
        equals; that client then goes to the back)."""
        while self._waiting:
            client_id = min(self._waiting, key=lambda name: self._served[name])
            queue = self._waiting[client_id]
            turn = queue.popleft()
            if queue:
                self._waiting.move_to_end(client_id)
            else:
                del self._waiting[client_id]
            if not turn.done():
                turn.set_result(None)
                self._served[client_id] += 1
                return
        self._free += 1
        self._served.clear()  # nobody waits: start counting afresh

    def close(self) -> None:
        """Every request still waiting gets RuntimeError (and is told to retry)."""
        self._closed = True
        for queue in self._waiting.values():
            for turn in queue:
                if not turn.done():
                    turn.set_exception(RuntimeError("the scheduler is stopping"))
        self._waiting.clear()


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
        self._fair = FairQueue(workers)

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
        running = self._overlaps.earlier(key, request.start_time, request.end_time)
        waits_for = [item.task for item in running]  # and the parts below, before the task first runs
        entry: list[_Running] = []
        loop = asyncio.get_running_loop()
        task = loop.create_task(self._run(request, received, waits_for, entry),
                                name=f"relay-request-{request.request_id}")
        self._in_flight[request.request_id] = task
        entry.append(self._overlaps.add(key, request.start_time, request.end_time, task, running=not running))
        if running and not request.HasField("limit"):  # with a limit, the rest is not known here
            for start, end in _uncovered(request, running):
                part = loop.create_task(self._run_part(request, start, end),
                                        name=f"relay-part-{request.request_id}-{start}")
                self._overlaps.add(key, start, end, part)
                waits_for.append(part)

    def stop_queue(self) -> None:
        """Start no more requests: those queued get an ERROR notification saying to retry."""
        self._fair.close()
        self._executor.shutdown(wait=False, cancel_futures=True)

    @property
    def waiting(self) -> int:
        """How many requests wait for a worker (not counting those behind an overlapping one)."""
        return len(self._fair)

    def close(self) -> None:
        """Wait for the historian threads to end."""
        self._executor.shutdown(wait=True, cancel_futures=True)

    async def _run(self, request: HistoryRequest, received: float, earlier: list[asyncio.Task[None]],
                   entry: list[_Running]) -> None:
        started = finished = time.perf_counter()
        try:
            if earlier:  # overlapping requests that came first: their candles are then stored, not redone
                await asyncio.wait(earlier)
                for item in entry:
                    item.running = True
            await self._fair.acquire(request.client_id)  # one worker, in this client's turn
            committed: concurrent.futures.Future[Notification] | None = None
            try:
                job = self._executor.submit(self._timed_begin, request)
                try:
                    begun, started = await asyncio.wrap_future(job)
                    committed = begun
                except asyncio.CancelledError:
                    if not job.cancelled():
                        raise
                    notification = _retry_later(request)
                    started = finished = time.perf_counter()
            finally:
                self._fair.release()
            if committed is not None:
                # The worker is free for the next request while the committer commits this
                # fill together with the others that finished meanwhile.
                notification = await asyncio.wrap_future(committed)
                # the table uuids as this request's reads just loaded them: no catalog round trip
                put_warehouse(notification, self.historian.warehouse.identity(load=False))
                finished = time.perf_counter()
        except RuntimeError:  # stopping: the request was not started
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

    async def _run_part(self, request: HistoryRequest, start: int, end: int) -> None:
        """Fetch and commit the candles of ``request`` in ``[start, end]`` (a part no running
        request covers) in this client's turn. Its notification is not sent: the request's own
        run after it reports, and redoes what failed here."""
        part = HistoryRequest()
        part.CopyFrom(request)
        part.start_time, part.end_time = start, end
        try:
            await self._fair.acquire(request.client_id)
        except RuntimeError:  # stopping
            return
        try:
            job = self._executor.submit(self.historian.begin, part)
            committed = await asyncio.wrap_future(job)
        except (RuntimeError, asyncio.CancelledError):  # stopping: the request's own run says so
            return
        finally:
            self._fair.release()
        await asyncio.wrap_future(committed)  # never raises: an error is in the notification

    def _timed_begin(self, request: HistoryRequest) -> tuple[concurrent.futures.Future[Notification], float]:
        started = time.perf_counter()
        try:
            return self.historian.begin(request), started
        except Exception as exc:  # begin() never raises; this is a last line of defence
            log.exception("relay: the historian raised on request %s", request.request_id)
            failed: concurrent.futures.Future[Notification] = concurrent.futures.Future()
            failed.set_result(Notification(
                request_id=request.request_id, client_id=request.client_id, status=Notification.ERROR,
                error_message=f"internal error in the historian: {type(exc).__name__}: {exc}"))
            return failed, started


def _uncovered(request: HistoryRequest, running: list[_Running]) -> list[tuple[int, int]]:
    """The parts of the request's range (inclusive µs) that none of ``running`` covers and
    that hold a candle (none for a request the historian will refuse: its own run says why)."""
    try:
        period_us = request.period_seconds * 1_000_000
        covered = merge_intervals([(item.start, item.end + 1) for item in running])
        parts = subtract_intervals((request.start_time, request.end_time + 1), covered)
        return [(start, stop - 1) for start, stop in parts if candle_interval(start, stop - 1, period_us) is not None]
    except Exception:  # noqa: BLE001 - a bad period or range: nothing to fetch ahead
        return []


def _retry_later(request: HistoryRequest) -> Notification:
    return Notification(request_id=request.request_id, client_id=request.client_id, status=Notification.ERROR,
                        error_message=SHUTDOWN_MESSAGE, error_type=wire_name(RelayUnavailableError))
