"""The ROUTER side of the relay: every request frame is checked and answered with a
``RequestReply``; accepted history requests go to the scheduler.

Replies follow the envelope rule (every frame received before the payload goes back in front of
the reply), so REQ sockets, DEALERs sending an empty delimiter and devices between them all
work. A history request is validated at once and answered ``accepted`` or rejected with its
error's wire name; a ``SubscribeCheck`` is accepted once the client's topic is live. Frames that
are not valid wire messages get a ``ProtocolError`` rejection, or one log line when the envelope
itself is unusable. Against floods: ids over :data:`MAX_ID_LENGTH` are refused, and beyond
:data:`MAX_PENDING_CHECKS` validations and checks waiting, or ``max_queued`` requests queued
or running, new ones are answered ``RelayUnavailableError`` (retry later).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine, Mapping
from typing import Any

import zmq
import zmq.asyncio

from ..ingest.historian import Historian
from ..storage.catalog import scrub
from ..vocabulary.errors import DexOrderError, ProtocolError, RelayUnavailableError
from ..wire import (
    SUBSCRIPTION_REFUSED,
    HistoryRequest,
    RequestReply,
    SubscribeCheck,
    decode_frame,
    encode_frame,
    notification_topic,
    put_warehouse,
)
from ..wire.errors import wire_name
from .notifications import Notifier
from .results import ResultCache
from .scheduling import Scheduler
from .subscriptions import MAX_ID_LENGTH

__all__ = ["Intake", "id_problem", "MAX_ENVELOPE_FRAMES", "MAX_ID_LENGTH", "MAX_PENDING_CHECKS",
           "DEFAULT_MAX_QUEUED", "SUBSCRIBE_CHECK_WAIT_SECONDS"]

log = logging.getLogger("dexorder_feeds.relay.server")  # one logger for the whole relay

MAX_ENVELOPE_FRAMES = 32
MAX_PENDING_CHECKS = 10_000
DEFAULT_MAX_QUEUED = 10_000
SUBSCRIBE_CHECK_WAIT_SECONDS = 5.0

_PROTOCOL = wire_name(ProtocolError)
_RETRY = wire_name(RelayUnavailableError)


def id_problem(message: HistoryRequest | SubscribeCheck) -> str:
    """Why the request or client id of ``message`` is refused, or ``""`` if both are fine."""
    for name in ("request_id", "client_id"):
        value = getattr(message, name)
        if len(value) > MAX_ID_LENGTH:
            return f"{name} of {len(value)} characters is longer than {MAX_ID_LENGTH}"
        if not value.isprintable():
            return f"{name} must be printable text"
    return ""


class Intake:
    """Reads ``router`` from :meth:`start` until :meth:`stop`."""

    def __init__(self, router: zmq.asyncio.Socket, historian: Historian, scheduler: Scheduler, notifier: Notifier,
                 *, max_queued: int = DEFAULT_MAX_QUEUED, subscribe_check_wait: float = SUBSCRIBE_CHECK_WAIT_SECONDS,
                 secrets: Mapping[str, Any] | None = None) -> None:
        self.historian = historian
        self.scheduler = scheduler
        self.notifier = notifier
        self.max_queued = max_queued
        self.subscribe_check_wait = subscribe_check_wait
        self._router = router
        self._secrets = dict(secrets or {})  # catalog properties: their secret values never go on the wire
        self._serving: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()  # validations and subscribe checks not answered yet

    @property
    def results(self) -> ResultCache:
        return self.scheduler.results

    def start(self) -> None:
        self._serving = asyncio.get_running_loop().create_task(self._serve(), name="relay-requests")

    async def stop(self) -> None:
        """Stop reading, drop the checks not answered yet, and close the ROUTER: no new requests."""
        if self._serving is not None:
            self._serving.cancel()
        for task in list(self._pending):
            task.cancel()
        await asyncio.gather(*(t for t in (self._serving,) if t is not None), *self._pending, return_exceptions=True)
        self._router.close(linger=0)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _serve(self) -> None:
        while True:
            try:
                frames = await self._router.recv_multipart()
            except zmq.ZMQError as exc:
                if exc.errno == zmq.ETERM or self._router.closed:
                    return
                log.warning("relay: receive failed (%s); continuing", exc)
                continue
            try:
                await self.handle_frames(frames)
            except asyncio.CancelledError:
                raise
            except Exception:  # never let one message stop the relay
                log.exception("relay: unexpected error while handling a message; continuing")

    async def handle_frames(self, frames: list[bytes]) -> None:
        received = time.perf_counter()
        if len(frames) < 2 or len(frames) > MAX_ENVELOPE_FRAMES:
            log.warning("relay: dropping a message with an unusable envelope (%d frames)", len(frames))
            return
        envelope, payload = frames[:-1], frames[-1]
        try:
            message = decode_frame(payload)
        except ProtocolError as exc:
            log.warning("relay: rejecting an invalid frame of %d bytes: %s", len(payload), exc)
            await self._reply(envelope, RequestReply(accepted=False, reason=str(exc), error_type=_PROTOCOL))
            return
        if isinstance(message, (HistoryRequest, SubscribeCheck)):
            problem = id_problem(message)
            if problem:
                log.warning("relay: rejecting a %s: %s", type(message).__name__, problem)
                await self._reply(envelope, RequestReply(request_id=message.request_id[:MAX_ID_LENGTH], accepted=False,
                                                         reason=problem, error_type=_PROTOCOL))
                return
            if len(self._pending) >= MAX_PENDING_CHECKS:
                log.warning("relay: %d validations and checks pending; refusing %s for now", len(self._pending),
                            message.request_id)
                await self._reply(envelope, RequestReply(
                    request_id=message.request_id, accepted=False, error_type=_RETRY,
                    reason="the relay is overloaded; retry in a moment"))
                return
        if isinstance(message, HistoryRequest):
            self._spawn(self._on_history_request(envelope, message, received), name="relay-accept")
        elif isinstance(message, SubscribeCheck):
            self._spawn(self._answer_subscribe_check(envelope, message), name="relay-subscribe-check")
        else:
            request_id = getattr(message, "request_id", "")
            reason = f"a {type(message).__name__} is not a request; send a HistoryRequest or a SubscribeCheck"
            log.warning("relay: rejecting a %s frame (request %r)", type(message).__name__, request_id)
            await self._reply(envelope, RequestReply(request_id=request_id, accepted=False, reason=reason,
                                                     error_type=_PROTOCOL))

    async def _reply(self, envelope: list[bytes], reply: RequestReply) -> None:
        if reply.reason and self._secrets:
            reply.reason = scrub(reply.reason, self._secrets)
        # every reply says which warehouse this relay writes: a client reading another one fails at once
        put_warehouse(reply, self.historian.warehouse.identity(load=False))
        try:
            await self._router.send_multipart([*envelope, encode_frame(reply)])
        except zmq.ZMQError as exc:  # the peer vanished, or we are shutting down
            log.info("relay: could not reply to request %r: %s", reply.request_id, exc)

    async def _on_history_request(self, envelope: list[bytes], request: HistoryRequest, received: float) -> None:
        request_id = request.request_id
        if not request_id or not request.client_id:
            await self._reply(envelope, RequestReply(
                request_id=request_id, accepted=False, error_type=_PROTOCOL,
                reason="a HistoryRequest needs a request_id and a client_id"))
            return
        try:
            # validation may build the exchange's source (files, ccxt): keep it off the loop
            await asyncio.get_running_loop().run_in_executor(None, self.historian.validate, request)
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
        if self._router.closed:
            return  # shutting down: no reply, the client retries elsewhere
        queued = len(self.scheduler)
        if queued >= self.max_queued and request_id not in self.scheduler and request_id not in self.results:
            log.warning("relay: %d requests queued or running; refusing %s for now", queued, request_id)
            await self._reply(envelope, RequestReply(
                request_id=request_id, accepted=False, error_type=_RETRY,
                reason=f"the relay is overloaded ({queued} requests queued); retry in a moment"))
            return
        await self._reply(envelope, RequestReply(request_id=request_id, accepted=True))
        if request_id in self.scheduler:
            log.info("relay: request %s repeated while in flight; not run again", request_id)
            return
        again = self.results.replay(request_id, request.client_id)
        if again is not None:
            log.info("relay: request %s repeated after it finished; publishing its notification again", request_id)
            await self.notifier.publish(again, repeat=True)
            return
        self.scheduler.submit(request, received)

    async def _answer_subscribe_check(self, envelope: list[bytes], check: SubscribeCheck) -> None:
        if not check.client_id:
            await self._reply(envelope, RequestReply(request_id=check.request_id, accepted=False,
                                                     error_type=_PROTOCOL, reason="a SubscribeCheck needs a client_id"))
            return
        topic = notification_topic(check.client_id)
        subscriptions = self.notifier.subscriptions
        live = subscriptions.is_live(topic) or (
            not subscriptions.refusal(topic) and await subscriptions.wait_live(topic, self.subscribe_check_wait))
        refused = subscriptions.refusal(topic)
        if live:
            await self._reply(envelope, RequestReply(request_id=check.request_id, accepted=True))
        elif refused:
            await self._reply(envelope, RequestReply(
                request_id=check.request_id, accepted=False, error_type=_RETRY,
                reason=f"{SUBSCRIPTION_REFUSED} to {topic.decode(errors='replace')!r}: {refused}"))
        else:
            await self._reply(envelope, RequestReply(
                request_id=check.request_id, accepted=False, error_type=_RETRY,
                reason=(f"no subscription to {topic.decode(errors='replace')!r} reached the relay within "
                        f"{self.subscribe_check_wait:g} s; check the notification endpoint")))
