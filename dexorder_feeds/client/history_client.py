"""``HistoryClient``: history requests to the relay over ZeroMQ, as the seed documents it.

How it works inside: docs/internals.md, "HistoryClient".
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from ..vocabulary import errors
from ..vocabulary.identity import WarehouseIdentity
from ..auth import ClientCurve, configure_client_socket
from ..events import emit
from .transport import (
    HistoryTransport,
    check_request_args,
    error_from_type,
    raise_for_error,
    result_from_notification,
)
from ..vocabulary.errors import ProtocolError
from ..wire import (
    SUBSCRIPTION_REFUSED,
    HistoryRequest,
    Notification,
    RequestReply,
    SubscribeCheck,
    decode_frame,
    encode_frame,
    notification_topic,
    warehouse_of,
)
from . import relay_warehouses

__all__ = ["HistoryClient", "DEFAULT_CONNECT_TIMEOUT", "DEFAULT_REPLY_TIMEOUT", "DEFAULT_MAX_ATTEMPTS",
           "DEFAULT_RECHECK_INTERVAL"]

log = logging.getLogger(__name__)

DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_REPLY_TIMEOUT = 5.0
DEFAULT_MAX_ATTEMPTS: int | None = None  # send until the request's timeout passes
DEFAULT_RECHECK_INTERVAL = 10.0
HEARTBEAT_IVL_MS = 5_000
HEARTBEAT_TIMEOUT_MS = 15_000
_HANDSHAKE_FAILURES: dict[int, str] = {
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: "the relay refused this client's key",
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "the handshake failed (CURVE on one side only, or another protocol)",
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "the handshake failed",
}
_MONITOR_EVENTS = zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED
for _event in _HANDSHAKE_FAILURES:
    _MONITOR_EVENTS |= _event
# The relay holds a SubscribeCheck up to 5 s waiting for the subscription; give it that plus slack.
_CHECK_ATTEMPT_SECONDS = 8.0
# After a "retry" notification (the relay shut down before running the request), wait this long
# before sending it again: the old relay's connections close meanwhile.
_RESEND_PAUSE_SECONDS = 0.5


class HistoryClient(HistoryTransport):
    """Submit history requests to the relay and wait for their completion notifications."""

    def __init__(
        self,
        relay_endpoint: str,
        notification_endpoint: str,
        client_id: str | None = None,
        *,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        reply_timeout: float = DEFAULT_REPLY_TIMEOUT,
        max_attempts: int | None = DEFAULT_MAX_ATTEMPTS,
        recheck_interval: float | None = DEFAULT_RECHECK_INTERVAL,
        curve: ClientCurve | None = None,
        context: zmq.asyncio.Context | None = None,
    ) -> None:
        if not relay_endpoint or not notification_endpoint:
            raise errors.InvalidRequestError("HistoryClient needs both relay_endpoint and notification_endpoint")
        if connect_timeout <= 0 or reply_timeout <= 0 or (max_attempts is not None and max_attempts < 1):
            raise errors.InvalidRequestError("connect_timeout and reply_timeout must be positive, max_attempts >= 1 "
                                             "(or None: until the request's timeout)")
        if recheck_interval is not None and recheck_interval <= 0:
            raise errors.InvalidRequestError("recheck_interval must be positive seconds, or None for never")
        self.relay_endpoint = relay_endpoint
        self.notification_endpoint = notification_endpoint
        self.client_id = client_id or uuid.uuid4().hex
        self.connect_timeout = connect_timeout
        self.reply_timeout = reply_timeout
        self.max_attempts = max_attempts
        self.recheck_interval = recheck_interval
        self._curve = curve
        self._context = context
        self._topic = notification_topic(self.client_id)

        self._loop: asyncio.AbstractEventLoop | None = None
        self._connect_lock: asyncio.Lock | None = None
        self._connected = False
        self._closed = False
        self._sub: zmq.asyncio.Socket | None = None
        self._dealer: zmq.asyncio.Socket | None = None
        self._generation = 0
        self._dealer_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # every receiver ever started, until it ends
        self._replies: dict[str, asyncio.Future[RequestReply]] = {}
        self._notifications: dict[str, asyncio.Future[Notification]] = {}
        # the notification connection, as the SUB socket's monitor reports it
        self._monitor: zmq.asyncio.Socket | None = None
        self._link_changed: asyncio.Future[None] | None = None
        self._handshakes = 0
        self._reconnects = 0
        self._refused: str | None = None
        self._link_lost = False  # the notification connection dropped and has not come back yet
        self._warehouse: WarehouseIdentity | None = None  # what the relay last said it writes

    def __repr__(self) -> str:
        state = "closed" if self._closed else "connected" if self._connected else "new"
        return (f"HistoryClient(relay_endpoint={self.relay_endpoint!r}, "
                f"notification_endpoint={self.notification_endpoint!r}, client_id={self.client_id!r}, {state})")

    @property
    def connected(self) -> bool:
        """True once ``connect()`` proved the notification subscription live at the relay."""
        return self._connected and not self._closed

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def warehouse_identity(self) -> WarehouseIdentity | None:
        """The warehouse the relay writes (catalog, namespace, table uuids), as its last reply or
        notification said; ``None`` before ``connect()`` or from a relay that does not say (older
        versions). Read it with an ``IcebergClient`` on the same catalog: see docs/architecture.md."""
        return self._warehouse

    # -- lifecycle -------------------------------------------------------------------------------
    async def __aenter__(self) -> HistoryClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def connect(self) -> None:
        """Subscribe to this client's notifications and wait until the relay sees the subscription.

        Raises :class:`~dexorder_feeds.vocabulary.errors.RelayUnavailableError` (a ``ConnectionError``) if the
        relay does not confirm it within ``connect_timeout`` seconds. Calling it again is a no-op.
        """
        await self._connect(self.connect_timeout)

    async def _connect(self, timeout: float) -> None:
        self._check_open()
        loop = self._check_loop()
        if self._connect_lock is None:
            self._connect_lock = asyncio.Lock()
        async with self._connect_lock:
            self._check_open()
            if self._connected:
                return
            deadline = loop.time() + timeout
            try:
                context = self._context or zmq.asyncio.Context.instance()
                sub = context.socket(zmq.SUB)
                self._sub = sub
                self._prepare_socket(sub)
                sub.setsockopt(zmq.SUBSCRIBE, self._topic)
                self._monitor = sub.get_monitor_socket(_MONITOR_EVENTS, f"inproc://dexorder-history-{uuid.uuid4().hex}")
                self._start_task(self._watch_link(self._monitor), "history-link")
                self._connect_socket(sub, self.notification_endpoint, "notification_endpoint")
                self._start_task(self._receive_notifications(sub), "history-notifications")
                self._open_dealer()
                await self._confirm_subscription(deadline, timeout)
            except BaseException:
                self._teardown()
                await self._drain_tasks()
                raise
            self._connected = True
            log.debug("HistoryClient %s connected to %s / %s", self.client_id, self.relay_endpoint,
                      self.notification_endpoint)

    async def close(self) -> None:
        """Cancel the background tasks and close the sockets (linger 0). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._connected = False
        self._teardown()
        await self._drain_tasks()

    async def _drain_tasks(self) -> None:
        """Wait for the cancelled receivers to end (only possible on their own loop)."""
        try:
            same_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            same_loop = False
        if self._tasks and same_loop:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _start_task(self, coro: Any, name: str) -> asyncio.Task[None]:
        assert self._loop is not None
        task = self._loop.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _teardown(self) -> None:
        """Fail pending waits, cancel tasks, close sockets (no await: safe from any state)."""
        closed = errors.ClientClosedError(f"HistoryClient {self.client_id} was closed while a request waited")
        for waits in (self._replies, self._notifications):
            for future in waits.values():
                if not future.done():
                    future.set_exception(closed)
                    future.exception()  # the waiter (if any) still gets it; no "never retrieved" noise
            waits.clear()
        for task in self._tasks:
            if not task.done():
                task.cancel()
        if self._link_changed is not None and not self._link_changed.done():
            self._link_changed.set_result(None)
        self._link_changed = None
        if self._sub is not None and not self._sub.closed and self._monitor is not None:
            try:
                self._sub.disable_monitor()
            except zmq.ZMQError:
                pass
        for sock in (self._monitor, self._sub, self._dealer):
            if sock is not None and not sock.closed:
                sock.close(linger=0)
        self._sub = self._dealer = self._monitor = None
        self._dealer_task = None
        self._handshakes = 0
        self._link_lost = False
        self._refused = None

    def _check_open(self) -> None:
        if self._closed:
            raise errors.ClientClosedError(f"HistoryClient {self.client_id} is closed; create a new one")

    def _check_loop(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            raise RuntimeError("a HistoryClient belongs to the event loop that first used it; "
                               "create one client per event loop")
        return loop

    @staticmethod
    def _connect_socket(sock: zmq.asyncio.Socket, endpoint: str, name: str) -> None:
        try:
            sock.connect(endpoint)
        except zmq.ZMQError as exc:
            raise errors.InvalidRequestError(
                f"{name}={endpoint!r} is not a ZeroMQ endpoint like 'tcp://host:5555': {exc}"
            ) from None

    def _open_dealer(self) -> None:
        assert self._loop is not None
        context = self._context or zmq.asyncio.Context.instance()
        dealer = context.socket(zmq.DEALER)
        self._prepare_socket(dealer)
        dealer.setsockopt(zmq.IMMEDIATE, 1)
        try:
            self._connect_socket(dealer, self.relay_endpoint, "relay_endpoint")
        except BaseException:
            dealer.close(linger=0)
            raise
        self._dealer = dealer
        self._generation += 1
        self._dealer_task = self._start_task(self._receive_replies(dealer), "history-replies")

    def _prepare_socket(self, sock: zmq.asyncio.Socket) -> None:
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)
        configure_client_socket(sock, self._curve)

    def _reset_dealer(self, generation: int) -> None:
        """Lazy Pirate: drop the DEALER and its queued messages, open a fresh one."""
        if generation != self._generation or self._closed:
            return  # another request already reset it
        if self._dealer_task is not None:
            self._dealer_task.cancel()
        if self._dealer is not None:
            self._dealer.close(linger=0)
        self._dealer = None
        self._open_dealer()

    # -- the notification connection -------------------------------------------------------------
    def _link_future(self) -> asyncio.Future[None]:
        """A future resolved at the next change of the notification connection."""
        assert self._loop is not None
        if self._link_changed is None or self._link_changed.done():
            self._link_changed = self._loop.create_future()
        return self._link_changed

    def _signal_link(self) -> None:
        if self._link_changed is not None and not self._link_changed.done():
            self._link_changed.set_result(None)

    async def _watch_link(self, monitor: zmq.asyncio.Socket) -> None:
        """Follow the SUB socket's monitor: handshakes (first or again), drops, refusals."""
        while True:
            try:
                frames = await monitor.recv_multipart()
                event = parse_monitor_message(frames)
            except (zmq.ZMQError, asyncio.CancelledError):
                return
            except Exception:  # a malformed monitor message: never fatal
                log.debug("HistoryClient %s: unreadable monitor event", self.client_id, exc_info=True)
                continue
            kind = event["event"]
            if kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._handshakes += 1
                self._refused = None
                self._link_lost = False
                if self._handshakes > 1:
                    self._reconnects += 1
                    log.info("HistoryClient %s: the notification connection to %s is back; re-sending %d waiting "
                             "requests", self.client_id, self.notification_endpoint, len(self._notifications))
            elif kind == zmq.EVENT_DISCONNECTED:
                self._link_lost = True
                log.info("HistoryClient %s: lost the notification connection to %s; reconnecting",
                         self.client_id, self.notification_endpoint)
            elif kind in _HANDSHAKE_FAILURES:
                self._refused = _HANDSHAKE_FAILURES[kind]
                log.warning("HistoryClient %s: %s at %s", self.client_id, self._refused, self.notification_endpoint)
            self._signal_link()

    def _refused_error(self) -> errors.RelayUnavailableError:
        hint = ("ask the relay's operator to admit this client's public key" if self._curve is not None
                else "the relay may require CURVE: set curve_secret_key and curve_server_key")
        return errors.RelayUnavailableError(
            f"{self._refused} at {self.notification_endpoint} (client {self.client_id}); {hint}"
        )

    # -- background receivers --------------------------------------------------------------------
    async def _receive_replies(self, dealer: zmq.asyncio.Socket) -> None:
        while True:
            try:
                frames = await dealer.recv_multipart()
            except (zmq.ZMQError, asyncio.CancelledError):
                return
            try:
                reply = decode_frame(frames[-1], expect=(RequestReply,))
            except ProtocolError as exc:
                log.warning("HistoryClient %s: ignoring an invalid reply from the relay: %s", self.client_id, exc)
                continue
            self._note_warehouse(reply)
            future = self._replies.get(reply.request_id)
            if future is not None and not future.done():
                future.set_result(reply)

    async def _receive_notifications(self, sub: zmq.asyncio.Socket) -> None:
        while True:
            try:
                frames = await sub.recv_multipart()
            except (zmq.ZMQError, asyncio.CancelledError):
                return
            if frames[0] != self._topic:
                continue  # SUB matches prefixes: RESPONSE:abc also receives RESPONSE:abcd's
            try:
                if len(frames) != 2:
                    raise ProtocolError(f"a notification must be [topic, frame], got {len(frames)} frames")
                notification = decode_frame(frames[1], expect=(Notification,))
            except ProtocolError as exc:
                log.warning("HistoryClient %s: ignoring an invalid notification: %s", self.client_id, exc)
                continue
            self._note_warehouse(notification)
            future = self._notifications.get(notification.request_id)
            if future is not None and not future.done():
                future.set_result(notification)
            else:
                log.debug("HistoryClient %s: notification for %s nobody waits for", self.client_id,
                          notification.request_id)

    def _note_warehouse(self, message: RequestReply | Notification) -> None:
        warehouse = warehouse_of(message)
        if warehouse is not None:
            self._warehouse = warehouse

    # -- request / reply -------------------------------------------------------------------------
    async def _confirm_subscription(self, deadline: float, timeout: float) -> None:
        assert self._loop is not None
        loop = self._loop
        last_reason = ""
        while (remaining := deadline - loop.time()) > 0:
            if self._refused:
                raise self._refused_error()
            check = SubscribeCheck(client_id=self.client_id, request_id=uuid.uuid4().hex)
            exchange = loop.create_task(self._exchange(check.request_id, encode_frame(check),
                                                       min(remaining, _CHECK_ATTEMPT_SECONDS)))
            try:
                while not exchange.done():
                    await asyncio.wait({exchange, self._link_future()}, return_when=asyncio.FIRST_COMPLETED)
                    if self._refused and not exchange.done():
                        raise self._refused_error()
                reply = exchange.result()
            finally:
                if not exchange.done():
                    exchange.cancel()
                    await asyncio.gather(exchange, return_exceptions=True)
                self._replies.pop(check.request_id, None)
            if reply is None:
                continue
            if reply.accepted:
                return
            last_reason = reply.reason
            if reply.reason.startswith(SUBSCRIPTION_REFUSED):  # a limit at the relay: waiting will not help
                raise errors.RelayUnavailableError(
                    f"{reply.reason} (relay {self.relay_endpoint}, client {self.client_id}); retry later, or ask "
                    "the relay's operator to raise its subscription limits")
            if reply.error_type not in ("RelayUnavailableError", ""):
                raise error_from_type(reply.error_type, reply.reason, default=errors.ProtocolError)
        if last_reason:
            raise errors.RelayUnavailableError(
                f"the relay at {self.relay_endpoint} answered, but did not see this client's subscription on "
                f"{self.notification_endpoint} within {timeout:g} s ({last_reason})"
            )
        raise errors.RelayUnavailableError(
            f"the relay at {self.relay_endpoint} did not confirm this client's subscription on "
            f"{self.notification_endpoint} within {timeout:g} s; check that `dexorder-feeds serve` runs "
            "there and that both endpoints are right"
        )

    async def _exchange(self, request_id: str, frame: bytes, wait: float,
                        on_sent: Any = None) -> RequestReply | None:
        """Send one frame and wait up to ``wait`` seconds for its reply; on silence reset the
        DEALER and return None."""
        assert self._loop is not None
        future = self._replies.get(request_id)
        if future is None or future.done():
            future = self._loop.create_future()
            self._replies[request_id] = future
        dealer, generation = self._dealer, self._generation
        if dealer is None:
            self._check_open()
            raise errors.RelayUnavailableError("the connection to the relay was reset; try again")
        attempt_deadline = self._loop.time() + wait
        # The send is a future of its own, never awaited directly: when another request resets
        # the DEALER (or close() closes it) while this send is blocked, pyzmq cancels the send
        # future. That is "no reply on this socket", not a cancellation of this request, so it
        # must never surface as CancelledError (only a cancellation of this task itself does).
        send: asyncio.Future[Any] = asyncio.ensure_future(dealer.send_multipart([b"", frame]))
        try:
            await asyncio.wait({send}, timeout=wait)
            if not send.done() or send.cancelled() or send.exception() is not None:
                self._check_open()  # closed under us by close(): ClientClosedError
                self._reset_dealer(generation)
                return None
            if on_sent is not None:
                on_sent()
            await asyncio.wait({future}, timeout=max(attempt_deadline - self._loop.time(), 0))
            if not future.done():
                self._check_open()
                self._reset_dealer(generation)
                return None
            return future.result()
        finally:
            if not send.done():
                send.cancel()
            elif not send.cancelled():
                send.exception()  # retrieved: no "exception was never retrieved" noise
            if future.done():
                self._replies.pop(request_id, None)

    def _build_request(self, ticker: Any, period_seconds: Any, start_time: Any, end_time: Any,
                       limit: int | None) -> HistoryRequest:
        name, period, start, end = check_request_args(ticker, period_seconds, start_time, end_time, limit)
        request = HistoryRequest(request_id=uuid.uuid4().hex, client_id=self.client_id, ticker=name,
                                 period_seconds=period, start_time=start, end_time=end)
        if limit is not None:
            request.limit = limit
        return request

    async def request_historical_ohlc(
        self,
        ticker: str,
        period_seconds: int,
        start_time: int,
        end_time: int,
        timeout: float = 30.0,
        limit: int | None = None,
    ) -> dict[str, Any]:
        """Ask the historian for the candles in ``[start_time, end_time]`` (µs, inclusive) and wait
        until they are stored. Returns the seed's result dict (``request_id``, ``status``,
        ``error_message``, ``iceberg_namespace``, ``iceberg_table``, ``row_count``), plus
        ``iceberg_catalog`` and ``iceberg_table_uuid`` (the warehouse written: read it with an
        ``IcebergClient`` on that catalog) when the relay names them.

        Raises ``ValueError`` subclasses for bad input, a rejection or status ``ERROR``;
        ``ConnectionError`` (:class:`~dexorder_feeds.vocabulary.errors.RelayUnavailableError`) when the relay
        does not answer; ``TimeoutError`` (:class:`~dexorder_feeds.vocabulary.errors.RequestTimeoutError`)
        when no notification arrives within ``timeout`` seconds.
        """
        self._check_open()
        loop = self._check_loop()
        if not timeout or timeout <= 0:
            raise errors.InvalidRequestError(f"timeout={timeout!r} must be a positive number of seconds")
        request = self._build_request(ticker, period_seconds, start_time, end_time, limit)
        request_id = request.request_id
        deadline = loop.time() + timeout
        if not self._connected:
            await self._connect(min(self.connect_timeout, timeout))

        try:
            notification = await self._run_request(request, deadline, timeout)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # this request itself was cancelled by its caller
            # A future of ours was cancelled under us (a socket closed while it was used): never
            # hand a CancelledError to a caller that did not cancel anything.
            self._check_open()
            raise errors.RelayUnavailableError(
                f"the connection to the relay at {self.relay_endpoint} was reset while request {request_id} "
                "waited; the request is safe to send again") from None
        finally:
            self._notifications.pop(request_id, None)
            self._replies.pop(request_id, None)

        result = result_from_notification(notification)
        emit("dexorder_notification_received", result=result)
        if notification.status in (Notification.OK, Notification.NOT_FOUND) and notification.covered_end:
            # for an IcebergClient of this process that reads the range: see relay_warehouses
            relay_warehouses.record(request.ticker, request.period_seconds,
                                    (notification.covered_start, notification.covered_end),
                                    warehouse_of(notification), self.relay_endpoint)
        if notification.error_type == "RelayUnavailableError":
            raise errors.RelayUnavailableError(
                f"{notification.error_message} (the relay at {self.relay_endpoint} did not run request "
                f"{request_id} within {timeout:g} s)")
        return raise_for_error(result)

    async def _run_request(self, request: HistoryRequest, deadline: float, timeout: float) -> Notification:
        """Send ``request`` and wait for its notification. A notification saying "retry"
        (the relay shut down before running it: a graceful restart) sends it again under the
        same id while the deadline allows, so a restart inside the timeout completes the fetch."""
        assert self._loop is not None
        loop = self._loop
        request_id = request.request_id
        first = True
        shut_down = ""  # what the relay said when it shut down before running the request
        while True:
            notified: asyncio.Future[Notification] = loop.create_future()
            self._notifications[request_id] = notified  # before sending: no notification can be missed
            try:
                reply = await self._send_request(request, deadline, timeout, announce=first)
            except errors.RelayUnavailableError as exc:
                if not shut_down:
                    raise
                raise errors.RelayUnavailableError(
                    f"{shut_down}: request {request_id} was sent again, but no relay answered at "
                    f"{self.relay_endpoint} within its {timeout:g} s timeout. Check that `dexorder-feeds serve` "
                    "runs there; the request is safe to send again") from exc
            first = False
            if not reply.accepted:
                raise self._rejection(reply)
            notification = await self._await_notification(request, notified, deadline, timeout)
            if notification.error_type != "RelayUnavailableError":
                return notification
            if deadline - loop.time() <= _RESEND_PAUSE_SECONDS:
                return notification
            shut_down = notification.error_message.split(";")[0] or "the relay shut down before running it"
            log.info("HistoryClient %s: the relay did not run request %s (%s); sending it again",
                     self.client_id, request_id, notification.error_message)
            await asyncio.sleep(_RESEND_PAUSE_SECONDS)  # the old relay's connection goes meanwhile

    @staticmethod
    def _rejection(reply: RequestReply) -> errors.DexOrderError:
        if reply.error_type == "RelayUnavailableError":  # overloaded or shutting down: retry later
            return errors.RelayUnavailableError(reply.reason or "the relay cannot take requests now; retry")
        return error_from_type(reply.error_type, reply.reason or "the relay rejected the request",
                               default=errors.InvalidRequestError)

    async def _await_notification(self, request: HistoryRequest, notified: asyncio.Future[Notification],
                                  deadline: float, timeout: float) -> Notification:
        """Wait for the notification; re-send the request (same id) when the notification
        connection comes back and every ``recheck_interval`` seconds (see docs/internals.md)."""
        assert self._loop is not None
        loop = self._loop
        frame = encode_frame(request)
        interval = self.recheck_interval or float("inf")
        next_check = loop.time() + interval
        seen_reconnects = self._reconnects
        unanswered = 0  # re-sends in a row the relay did not answer
        while not notified.done() and (remaining := deadline - loop.time()) > 0:
            await asyncio.wait({notified, self._link_future()}, timeout=min(remaining, max(next_check - loop.time(), 0)),
                               return_when=asyncio.FIRST_COMPLETED)
            if notified.done():
                break
            self._check_open()
            reconnected = self._reconnects != seen_reconnects
            if not reconnected and loop.time() < next_check:
                continue  # a drop or a refusal: wait for the connection to come back
            seen_reconnects = self._reconnects
            wait = min(self.reply_timeout, deadline - loop.time())
            if wait <= 0:
                break
            log.info("HistoryClient %s: %s; sending request %s again", self.client_id,
                     "reconnected" if reconnected else f"no notification after {interval:g} s", request.request_id)
            reply = await self._exchange(request.request_id, frame, wait)
            next_check = loop.time() + interval
            if notified.done():
                break
            if reply is None:
                unanswered += 1
            elif not reply.accepted:
                raise self._rejection(reply)
            else:
                unanswered = 0
        if notified.done():
            return notified.result()
        self._check_open()
        what = (f"request {request.request_id} ({request.ticker} {request.period_seconds}s "
                f"[{request.start_time}, {request.end_time}])")
        if self._link_lost:
            raise errors.RelayUnavailableError(
                f"lost the connection to the relay at {self.notification_endpoint} while {what} waited, and it did "
                f"not come back within {timeout:g} s. Check that `dexorder-feeds serve` runs there; the request is "
                "safe to send again"
            )
        if unanswered:
            raise errors.RelayUnavailableError(
                f"the relay at {self.relay_endpoint} stopped answering while {what} waited; no notification within "
                f"{timeout:g} s. Check that `dexorder-feeds serve` runs there; the request is safe to send again"
            )
        raise errors.RequestTimeoutError(
            f"no completion notification for {what} within {timeout:g} s; "
            "the historian may still be working: retry with a longer timeout"
        )

    async def _send_request(self, request: HistoryRequest, deadline: float, timeout: float, *,
                            announce: bool = True) -> RequestReply:
        assert self._loop is not None
        frame = encode_frame(request)
        sent = not announce  # dexorder_request_sent once per request, not per re-send

        def on_sent() -> None:
            nonlocal sent
            if not sent:
                sent = True
                emit("dexorder_request_sent", request_id=request.request_id, ticker=request.ticker,
                     period_seconds=request.period_seconds, start_time=request.start_time,
                     end_time=request.end_time)

        attempts = 0
        limit = self.max_attempts
        while (limit is None or attempts < limit) and (remaining := deadline - self._loop.time()) > 0:
            attempts += 1
            reply = await self._exchange(request.request_id, frame, min(self.reply_timeout, remaining), on_sent)
            if reply is not None:
                return reply
            log.info("HistoryClient %s: no reply to request %s from %s (attempt %d%s); reset the socket",
                     self.client_id, request.request_id, self.relay_endpoint, attempts,
                     f" of {limit}" if limit is not None else "")
        self._replies.pop(request.request_id, None)
        raise errors.RelayUnavailableError(
            f"the relay at {self.relay_endpoint} did not answer request {request.request_id} "
            f"({attempts} attempts within {timeout:g} s); check that `dexorder-feeds serve` runs there"
        )
