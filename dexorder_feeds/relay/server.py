"""The relay server: the historian's ZeroMQ front door (``dexorder-feeds serve``).

How it works inside: docs/internals.md, "The relay server".
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import signal
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import zmq
import zmq.asyncio

from ..auth import (
    ServerCurve,
    configure_server_socket,
    describe,
    reload_authorized_keys,
    server_curve,
    start_authenticator,
)
from ..storage.catalog import scrub
from ..config import Settings
from ..vocabulary.errors import DexOrderError, InvalidRequestError, ProtocolError
from ..wire import (
    HistoryRequest,
    Notification,
    RequestReply,
    SubscribeCheck,
    decode_frame,
    encode_frame,
    notification_topic,
)
from ..ingest.historian import DEFAULT_MAX_RANGE_CANDLES, Historian
from ..wire.errors import wire_name

__all__ = [
    "RelayServer",
    "serve",
    "DEFAULT_WORKERS",
    "NOTIFICATION_HOLD_SECONDS",
    "SUBSCRIBE_CHECK_WAIT_SECONDS",
    "RESULT_CACHE_SIZE",
    "MAX_MESSAGE_BYTES",
    "MAX_ID_LENGTH",
    "MAX_PENDING_CHECKS",
    "DEFAULT_MAX_QUEUED",
]

log = logging.getLogger(__name__)

DEFAULT_WORKERS = 4
NOTIFICATION_HOLD_SECONDS = 30.0
SUBSCRIBE_CHECK_WAIT_SECONDS = 5.0
RESULT_CACHE_SIZE = 10_000
SOCKET_BACKLOG = 1024
MAX_MESSAGE_BYTES = 1 << 20
MAX_ENVELOPE_FRAMES = 32
FINAL_FLUSH_LINGER_MS = 1000
MAX_ID_LENGTH = 128
MAX_PENDING_CHECKS = 10_000
DEFAULT_MAX_QUEUED = 10_000
HEARTBEAT_IVL_MS = 10_000
HEARTBEAT_TIMEOUT_MS = 30_000
_SIGHUP = (signal.SIGHUP,) if hasattr(signal, "SIGHUP") else ()
_SHUTDOWN_MESSAGE = "the relay shut down before this request started; send it again"


class RelayServer:
    """The relay: a ROUTER for requests and an XPUB for notifications, in front of a historian.

    Run it with ``await server.run()`` on an event loop of its own, or in a background thread
    with :meth:`start` / :meth:`stop` (also a context manager). Endpoints may use a wildcard port
    (``tcp://127.0.0.1:*``); the bound ones are :attr:`relay_endpoint` and
    :attr:`notification_endpoint` once the server is ready.
    """

    def __init__(
        self,
        historian: Historian,
        relay_endpoint: str,
        notification_endpoint: str,
        *,
        workers: int = DEFAULT_WORKERS,
        notification_hold: float = NOTIFICATION_HOLD_SECONDS,
        subscribe_check_wait: float = SUBSCRIBE_CHECK_WAIT_SECONDS,
        result_cache_size: int = RESULT_CACHE_SIZE,
        max_queued: int = DEFAULT_MAX_QUEUED,
        curve: ServerCurve | None = None,
        secrets: Mapping[str, Any] | None = None,
        owns_historian: bool = False,
    ) -> None:
        if workers < 1:
            raise InvalidRequestError(f"workers={workers} must be at least 1")
        self.historian = historian
        self.relay_endpoint = relay_endpoint
        self.notification_endpoint = notification_endpoint
        self.workers = workers
        self.notification_hold = notification_hold
        self.subscribe_check_wait = subscribe_check_wait
        self.result_cache_size = result_cache_size
        self.max_queued = max_queued
        self.curve = curve
        self._secrets = dict(secrets or {})  # catalog properties: their secret values never go on the wire
        self._owns_historian = owns_historian
        self._authenticator: Any = None

        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._stop_requested = False
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._thread_error: BaseException | None = None
        self._signals_seen = 0

        self._router: zmq.asyncio.Socket | None = None
        self._xpub: zmq.asyncio.Socket | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._live_topics: set[bytes] = set()
        self._topic_waiters: dict[bytes, list[asyncio.Future[None]]] = {}
        self._held: dict[bytes, list[tuple[float, str, bytes, bool]]] = {}
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        self._ranges: dict[tuple[str, int], list[tuple[int, int, asyncio.Task[None]]]] = {}
        self._results: OrderedDict[str, Notification] = OrderedDict()
        self._tasks: set[asyncio.Task[Any]] = set()

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        workers: int = DEFAULT_WORKERS,
        max_range_candles: int = DEFAULT_MAX_RANGE_CANDLES,
        **options: Any,
    ) -> RelayServer:
        """A relay with its own warehouse and historian built from ``settings`` (closed at exit)."""
        from ..storage.catalog import open_catalog
        from ..storage.warehouse import Warehouse
        from ..ingest.sources import SourceRegistry

        if not settings.relay_endpoint or not settings.notification_endpoint:
            raise InvalidRequestError("the relay needs both relay_endpoint and notification_endpoint to bind")
        options.setdefault("curve", server_curve(settings))  # key files are checked before anything starts
        options.setdefault("secrets", settings.catalog_properties)
        warehouse = Warehouse(open_catalog(settings.iceberg_catalog_uri, settings.catalog_properties), settings.namespace)
        historian = Historian(warehouse, SourceRegistry(settings.sources), max_range_candles=max_range_candles)
        return cls(historian, settings.relay_endpoint, settings.notification_endpoint,
                   workers=workers, owns_historian=True, **options)

    # -- lifecycle -----------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """True once both sockets are bound and requests are served."""
        return self._ready.is_set()

    def request_stop(self) -> None:
        """Ask the server to shut down gracefully (thread-safe, idempotent)."""
        self._stop_requested = True
        loop, event = self._loop, self._stop_event
        if loop is None or event is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            event.set()
        else:
            loop.call_soon_threadsafe(event.set)

    def start(self, timeout: float = 30.0) -> RelayServer:
        """Run the server in a daemon thread with its own event loop; return once it is ready."""
        if self._thread is not None:
            raise RuntimeError("this RelayServer was already started; create a new one")
        self._thread = threading.Thread(target=self._thread_main, name="dexorder-relay", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout) or self._thread_error is not None:
            error = self._thread_error
            self.stop()
            if error is not None:
                raise error
            raise TimeoutError(f"the relay did not become ready within {timeout} s")
        return self

    def stop(self, timeout: float = 60.0) -> None:
        """Shut down gracefully and wait for the server thread (see docs/internals.md)."""
        self.request_stop()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("the relay thread did not stop within %.0f s", timeout)

    def __enter__(self) -> RelayServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _thread_main(self) -> None:
        try:
            asyncio.run(self.run())
        except BaseException as exc:  # start() re-raises it; after start, the log is all there is
            self._thread_error = exc
            if self._ready.is_set():
                log.exception("the relay stopped with an error")
        finally:
            self._ready.set()

    async def run(self, *, handle_signals: bool = False) -> None:
        """Bind, serve until :meth:`request_stop` (or SIGINT/SIGTERM), then shut down gracefully."""
        if self._loop is not None:
            raise RuntimeError("a RelayServer runs once; create a new one")
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._stop_event = asyncio.Event()
        if self._stop_requested:
            self._stop_event.set()
        if handle_signals:
            self._install_signal_handlers(loop)
        ctx = zmq.asyncio.Context()
        try:
            await loop.run_in_executor(None, self.historian.warehouse.ensure_tables)
            if self.curve is not None:
                self._authenticator = start_authenticator(ctx, self.curve)
            self._router, self._xpub = self._bind(ctx)
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=self.workers, thread_name_prefix="dexorder-historian"
            )
            background = [
                loop.create_task(self._watch_subscriptions(), name="relay-subscriptions"),
                loop.create_task(self._expire_held(), name="relay-expiry"),
            ]
            serving = loop.create_task(self._serve_requests(), name="relay-requests")
            log.info("relay ready request=%s notification=%s workers=%d auth=%s",
                     self.relay_endpoint, self.notification_endpoint, self.workers, describe(self.curve))
            self._ready.set()
            await self._stop_event.wait()
            await self._shutdown(serving, background)
        finally:
            for sock in (self._router, self._xpub):
                if sock is not None and not sock.closed:
                    sock.close(linger=0)
            if self._authenticator is not None:
                self._authenticator.stop()
                self._authenticator = None
            ctx.term()
            if self._executor is not None:
                self._executor.shutdown(wait=True, cancel_futures=True)
            if self._owns_historian:
                self.historian.close()
                self.historian.warehouse.close()
            if handle_signals:
                for sig in (signal.SIGINT, signal.SIGTERM, *_SIGHUP):
                    try:
                        loop.remove_signal_handler(sig)
                    except (NotImplementedError, RuntimeError, ValueError):
                        pass
            log.info("relay stopped")

    def _install_signal_handlers(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in _SIGHUP:
            try:
                loop.add_signal_handler(sig, self.reload_keys)
            except (NotImplementedError, RuntimeError):
                pass
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
            except (NotImplementedError, RuntimeError):  # not the main thread, or Windows
                signal.signal(sig, lambda signum, frame: loop.call_soon_threadsafe(self._on_signal, signum))

    def reload_keys(self) -> None:
        """Re-read the directory of admitted client keys (SIGHUP); a no-op without CURVE."""
        if self.curve is None or self._authenticator is None:
            log.info("SIGHUP received: no CURVE keys to reload")
            return
        try:
            reload_authorized_keys(self._authenticator, self.curve)
        except Exception:
            log.exception("reloading the admitted client keys failed; the previous set stays in force")

    def _on_signal(self, sig: int) -> None:
        self._signals_seen += 1
        name = signal.Signals(sig).name
        if self._signals_seen > 1:
            log.warning("second %s: exiting now without waiting for %d running requests", name, len(self._in_flight))
            os._exit(1)
        log.info("%s received: shutting down after %d requests in flight", name, len(self._in_flight))
        self.request_stop()

    def _bind(self, ctx: zmq.asyncio.Context) -> tuple[zmq.asyncio.Socket, zmq.asyncio.Socket]:
        router = ctx.socket(zmq.ROUTER)
        xpub = ctx.socket(zmq.XPUB)
        for sock in (router, xpub):
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.BACKLOG, SOCKET_BACKLOG)
            sock.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS)
            sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)
            configure_server_socket(sock, self.curve)
        router.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        xpub.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        xpub.setsockopt(zmq.SNDHWM, 10_000)
        for sock, endpoint, what in ((router, self.relay_endpoint, "relay"),
                                     (xpub, self.notification_endpoint, "notification")):
            try:
                sock.bind(endpoint)
            except zmq.ZMQError as exc:
                router.close(linger=0)
                xpub.close(linger=0)
                raise InvalidRequestError(
                    f"cannot bind the {what} endpoint {endpoint!r}: {exc}; "
                    "is another relay running there? choose another address or port"
                ) from None
        self.relay_endpoint = router.getsockopt_string(zmq.LAST_ENDPOINT)
        self.notification_endpoint = xpub.getsockopt_string(zmq.LAST_ENDPOINT)
        return router, xpub

    async def _shutdown(self, serving: asyncio.Task[None], background: list[asyncio.Task[Any]]) -> None:
        serving.cancel()
        for task in list(self._tasks):  # validations and subscribe checks not answered yet
            task.cancel()
        await asyncio.gather(serving, *self._tasks, return_exceptions=True)
        assert self._router is not None and self._executor is not None
        self._router.close(linger=0)  # stop taking requests
        self._executor.shutdown(wait=False, cancel_futures=True)  # queued ones get an ERROR to retry
        running = list(self._in_flight.values())
        if running:
            log.info("waiting for %d requests to finish their commits", len(running))
            await asyncio.gather(*running, return_exceptions=True)
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        dropped = sum(len(items) for items in self._held.values())
        if dropped:
            log.warning("relay shutting down: dropping %d notifications whose subscribers never arrived", dropped)
        assert self._xpub is not None
        self._xpub.close(linger=FINAL_FLUSH_LINGER_MS)  # bounded: lets the last notifications leave

    def _spawn(self, coro: Any, name: str) -> None:
        assert self._loop is not None
        task = self._loop.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- requests ------------------------------------------------------------------------------
    async def _serve_requests(self) -> None:
        assert self._router is not None
        while True:
            try:
                frames = await self._router.recv_multipart()
            except zmq.ZMQError as exc:
                if exc.errno == zmq.ETERM or self._router.closed:
                    return
                log.warning("relay: receive failed (%s); continuing", exc)
                continue
            try:
                await self._handle_frames(frames)
            except asyncio.CancelledError:
                raise
            except Exception:  # never let one message stop the relay
                log.exception("relay: unexpected error while handling a message; continuing")

    async def _handle_frames(self, frames: list[bytes]) -> None:
        received = time.perf_counter()
        if len(frames) < 2 or len(frames) > MAX_ENVELOPE_FRAMES:
            log.warning("relay: dropping a message with an unusable envelope (%d frames)", len(frames))
            return
        envelope, payload = frames[:-1], frames[-1]
        try:
            message = decode_frame(payload)
        except ProtocolError as exc:
            log.warning("relay: rejecting an invalid frame of %d bytes: %s", len(payload), exc)
            await self._reply(envelope, RequestReply(accepted=False, reason=str(exc), error_type="ProtocolError"))
            return
        if isinstance(message, (HistoryRequest, SubscribeCheck)):
            problem = self._id_problem(message)
            if problem:
                log.warning("relay: rejecting a %s: %s", type(message).__name__, problem)
                await self._reply(envelope, RequestReply(request_id=message.request_id[:MAX_ID_LENGTH], accepted=False,
                                                         reason=problem, error_type="ProtocolError"))
                return
            if len(self._tasks) >= MAX_PENDING_CHECKS:
                log.warning("relay: %d validations and checks pending; refusing %s for now", len(self._tasks),
                            message.request_id)
                await self._reply(envelope, RequestReply(
                    request_id=message.request_id, accepted=False, error_type="RelayUnavailableError",
                    reason="the relay is overloaded; retry in a moment"))
                return
        if isinstance(message, HistoryRequest):
            self._spawn(self._on_history_request(envelope, message, received), name="relay-accept")
        elif isinstance(message, SubscribeCheck):
            self._spawn(self._answer_subscribe_check(envelope, message), name="relay-subscribe-check")
        else:
            request_id = getattr(message, "request_id", "")
            reason = (f"a {type(message).__name__} is not a request; send a HistoryRequest or a SubscribeCheck")
            log.warning("relay: rejecting a %s frame (request %r)", type(message).__name__, request_id)
            await self._reply(envelope, RequestReply(request_id=request_id, accepted=False, reason=reason,
                                                     error_type="ProtocolError"))

    @staticmethod
    def _id_problem(message: HistoryRequest | SubscribeCheck) -> str:
        for name in ("request_id", "client_id"):
            value = getattr(message, name)
            if len(value) > MAX_ID_LENGTH:
                return f"{name} of {len(value)} characters is longer than {MAX_ID_LENGTH}"
            if not value.isprintable():
                return f"{name} must be printable text"
        return ""

    async def _reply(self, envelope: list[bytes], reply: RequestReply) -> None:
        assert self._router is not None
        if reply.reason and self._secrets:
            reply.reason = scrub(reply.reason, self._secrets)
        try:
            await self._router.send_multipart([*envelope, encode_frame(reply)])
        except zmq.ZMQError as exc:  # the peer vanished, or we are shutting down
            log.info("relay: could not reply to request %r: %s", reply.request_id, exc)

    async def _on_history_request(self, envelope: list[bytes], request: HistoryRequest, received: float) -> None:
        request_id = request.request_id
        if not request_id or not request.client_id:
            await self._reply(envelope, RequestReply(
                request_id=request_id, accepted=False, error_type="ProtocolError",
                reason="a HistoryRequest needs a request_id and a client_id"))
            return
        assert self._loop is not None
        try:
            # validation may build the exchange's source (files, ccxt): keep it off the loop
            await self._loop.run_in_executor(None, self.historian.validate, request)
        except DexOrderError as exc:
            log.info("relay rejected request %s (%s %ss): %s: %s", request_id, request.ticker,
                     request.period_seconds, type(exc).__name__, exc)
            await self._reply(envelope, RequestReply(request_id=request_id, accepted=False, reason=str(exc),
                                                     error_type=wire_name(exc)))
            return
        except Exception as exc:
            log.exception("relay: validating request %s failed", request_id)
            await self._reply(envelope, RequestReply(request_id=request_id, accepted=False,
                                                     reason=f"internal error validating the request: {exc}"))
            return
        if self._router is None or self._router.closed:
            return  # shutting down: no reply, the client retries elsewhere
        if (len(self._in_flight) >= self.max_queued and request_id not in self._in_flight
                and request_id not in self._results):
            log.warning("relay: %d requests queued or running; refusing %s for now", len(self._in_flight), request_id)
            await self._reply(envelope, RequestReply(
                request_id=request_id, accepted=False, error_type="RelayUnavailableError",
                reason=f"the relay is overloaded ({len(self._in_flight)} requests queued); retry in a moment"))
            return
        await self._reply(envelope, RequestReply(request_id=request_id, accepted=True))
        if request_id in self._in_flight:
            log.info("relay: request %s repeated while in flight; not run again", request_id)
            return
        stored = self._results.get(request_id)
        if stored is not None:
            self._results.move_to_end(request_id)
            again = Notification()
            again.CopyFrom(stored)
            again.client_id = request.client_id
            log.info("relay: request %s repeated after it finished; publishing its notification again", request_id)
            await self._publish(again, repeat=True)
            return
        key = (request.ticker, request.period_seconds)
        ranges = self._ranges.setdefault(key, [])
        earlier = [task for start, end, task in ranges if start <= request.end_time and request.start_time <= end]
        task = self._loop.create_task(self._run_request(request, received, earlier), name=f"relay-request-{request_id}")
        self._in_flight[request_id] = task
        entry = (request.start_time, request.end_time, task)
        ranges.append(entry)
        task.add_done_callback(lambda _task: self._forget_range(key, entry))

    def _forget_range(self, key: tuple[str, int], entry: tuple[int, int, asyncio.Task[None]]) -> None:
        ranges = self._ranges.get(key)
        if ranges is not None:
            ranges.remove(entry)
            if not ranges:
                del self._ranges[key]

    async def _run_request(self, request: HistoryRequest, received: float,
                           earlier: list[asyncio.Task[None]]) -> None:
        assert self._executor is not None
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
                notification = Notification(request_id=request.request_id, client_id=request.client_id,
                                            status=Notification.ERROR, error_message=_SHUTDOWN_MESSAGE,
                                            error_type="RelayUnavailableError")
                started = finished = time.perf_counter()
        except RuntimeError:  # the executor was shut down before the job was submitted
            notification = Notification(request_id=request.request_id, client_id=request.client_id,
                                        status=Notification.ERROR, error_message=_SHUTDOWN_MESSAGE,
                                        error_type="RelayUnavailableError")
        finally:
            self._in_flight.pop(request.request_id, None)
        if notification.error_type != "RelayUnavailableError":
            self._results[request.request_id] = notification
            self._results.move_to_end(request.request_id)
            while len(self._results) > self.result_cache_size:
                self._results.popitem(last=False)
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

    # -- subscriptions and notifications ---------------------------------------------------------
    async def _watch_subscriptions(self) -> None:
        assert self._xpub is not None
        while True:
            try:
                message = await self._xpub.recv()
            except zmq.ZMQError as exc:
                if exc.errno == zmq.ETERM or self._xpub.closed:
                    return
                log.warning("relay: subscription receive failed (%s); continuing", exc)
                continue
            if not message:
                continue
            topic = message[1:]
            if message[0] == 1:
                self._live_topics.add(topic)
                for waiter in self._topic_waiters.pop(topic, []):
                    if not waiter.done():
                        waiter.set_result(None)
                for _deadline, _request_id, frame, _repeat in self._held.pop(topic, []):
                    await self._send_notification(topic, frame)
            elif message[0] == 0:
                self._live_topics.discard(topic)

    async def _publish(self, notification: Notification, *, repeat: bool = False) -> None:
        """Send a notification now if its topic is live, else hold it (``repeat``: a copy of one
        already published once, sent again for a repeated request id)."""
        assert self._loop is not None
        if notification.error_message and self._secrets:
            notification.error_message = scrub(notification.error_message, self._secrets)
        topic = notification_topic(notification.client_id)
        frame = encode_frame(notification)
        if topic in self._live_topics:
            await self._send_notification(topic, frame)
        else:
            log.debug("relay: holding the notification of %s until %r is subscribed", notification.request_id, topic)
            deadline = self._loop.time() + self.notification_hold
            self._held.setdefault(topic, []).append((deadline, notification.request_id, frame, repeat))

    async def _send_notification(self, topic: bytes, frame: bytes) -> None:
        assert self._xpub is not None
        try:
            await self._xpub.send_multipart([topic, frame])
        except zmq.ZMQError as exc:
            log.warning("relay: could not publish on %r: %s", topic, exc)

    async def _expire_held(self) -> None:
        assert self._loop is not None
        while True:
            await asyncio.sleep(min(1.0, max(self.notification_hold / 4, 0.05)))
            now = self._loop.time()
            for topic in list(self._held):
                keep = []
                for item in self._held[topic]:
                    if item[0] <= now and item[3]:  # its first copy went out when the request finished
                        log.info("relay: dropped a repeated notification of request %s: %r unsubscribed meanwhile",
                                 item[1], topic.decode(errors="replace"))
                    elif item[0] <= now:
                        log.warning("relay: dropped the notification of request %s: nobody subscribed to %r within %.0f s",
                                    item[1], topic.decode(errors="replace"), self.notification_hold)
                    else:
                        keep.append(item)
                if keep:
                    self._held[topic] = keep
                else:
                    del self._held[topic]

    async def _answer_subscribe_check(self, envelope: list[bytes], check: SubscribeCheck) -> None:
        assert self._loop is not None
        if not check.client_id:
            await self._reply(envelope, RequestReply(request_id=check.request_id, accepted=False,
                                                     error_type="ProtocolError", reason="a SubscribeCheck needs a client_id"))
            return
        topic = notification_topic(check.client_id)
        if topic not in self._live_topics:
            waiter: asyncio.Future[None] = self._loop.create_future()
            self._topic_waiters.setdefault(topic, []).append(waiter)
            try:
                await asyncio.wait_for(waiter, self.subscribe_check_wait)
            except TimeoutError:
                pass
            finally:
                waiters = self._topic_waiters.get(topic)
                if waiters is not None:
                    if waiter in waiters:
                        waiters.remove(waiter)
                    if not waiters:
                        del self._topic_waiters[topic]
        if topic in self._live_topics:
            await self._reply(envelope, RequestReply(request_id=check.request_id, accepted=True))
        else:
            await self._reply(envelope, RequestReply(
                request_id=check.request_id, accepted=False, error_type="RelayUnavailableError",
                reason=(f"no subscription to {topic.decode(errors='replace')!r} reached the relay within "
                        f"{self.subscribe_check_wait:g} s; check the notification endpoint")))


def serve(
    settings: Settings,
    *,
    workers: int = DEFAULT_WORKERS,
    max_range_candles: int = DEFAULT_MAX_RANGE_CANDLES,
) -> None:
    """Run the relay and historian until SIGINT or SIGTERM, then shut down gracefully.

    Logs ``relay ready request=… notification=…`` at INFO once both sockets are bound.
    """
    server = RelayServer.from_settings(settings, workers=workers, max_range_candles=max_range_candles)
    asyncio.run(server.run(handle_signals=True))
