"""The XPUB side of the relay: it follows the subscriptions and publishes each notification as
``[b"RESPONSE:{client_id}", frame]``, at once if its topic is live, else held until the
subscription lands (for up to the hold time)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import zmq
import zmq.asyncio

from ..storage.catalog import scrub
from ..wire import Notification, encode_frame, notification_topic
from .subscriptions import HeldNotification, Subscriptions, release_freed_memory, topic_problem

__all__ = ["Notifier", "NOTIFICATION_HOLD_SECONDS"]

log = logging.getLogger("dexorder_feeds.relay.server")  # one logger for the whole relay

NOTIFICATION_HOLD_SECONDS = 30.0
FLOOD_BATCH = 128  # after this many subscription messages read in a row, look for a flooding peer
_RELEASE_EVERY = 256  # hand freed memory back to the system after this many ended subscriptions


def _peer_of(frame: zmq.Frame) -> str:
    """Who sent a subscription: its CURVE key (the ZAP user id), else its IP address; ``""``
    when libzmq does not say (an unsubscription made because the peer left)."""
    for name in ("User-Id", "Peer-Address"):
        try:
            value = frame.get(name)
        except (zmq.ZMQError, KeyError, ValueError):
            continue
        if value:
            return str(value)
    return ""


class Notifier:
    """Publishes notifications on ``xpub``; :meth:`watch` and :meth:`expire_held` run as tasks
    while the relay serves."""

    def __init__(self, xpub: zmq.asyncio.Socket, subscriptions: Subscriptions, *,
                 hold_seconds: float = NOTIFICATION_HOLD_SECONDS, secrets: Mapping[str, Any] | None = None,
                 manual: bool = False, on_flood: Callable[[str], object] | None = None) -> None:
        self.subscriptions = subscriptions
        self.hold_seconds = hold_seconds
        self.refused = 0  # subscriptions refused so far
        self._xpub = xpub
        self._manual = manual  # the XPUB has XPUB_MANUAL: a subscription applies only once admitted here
        self._secrets = dict(secrets or {})  # catalog properties: their secret values never go on the wire
        self._released = 0  # subscriptions ended since freed memory was last handed back
        self._last_refusal_log = -1e9
        self._on_flood = on_flood  # called when a peer may be flooding
        self._last_flood_call = -1e9

    async def watch(self) -> None:
        """Read the subscription messages (``\\x01topic`` / ``\\x00topic``) until the socket closes.

        With ``manual`` (``XPUB_MANUAL``), a subscription takes effect only if
        :meth:`Subscriptions.admit` allows it: the relay applies it on the peer's connection
        itself; a refused one is never applied, so nothing is ever published on it.
        """
        # Read with a blocking-API twin of the socket, never awaiting between a subscription's
        # recv and its SUBSCRIBE: libzmq applies SUBSCRIBE to the connection of the last message
        # read, and a send from another task in between (which processes libzmq's commands, such
        # as a peer leaving) could change or clear that.
        reader: zmq.Socket[bytes] = zmq.Socket.shadow(self._xpub.underlying)
        while True:
            try:
                await self._xpub.poll()
            except zmq.ZMQError as exc:
                if exc.errno == zmq.ETERM or self._xpub.closed:
                    return
                log.warning("relay: subscription poll failed (%s); continuing", exc)
                continue
            batch = 0  # messages read in a row: many at once means a peer floods
            while not self._xpub.closed:
                batch += 1
                if batch % FLOOD_BATCH == 0:
                    self._flood(f"{batch} subscription messages arrived at once")
                try:
                    frame = reader.recv(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                except zmq.ZMQError as exc:
                    if exc.errno == zmq.ETERM or self._xpub.closed:
                        return
                    log.warning("relay: subscription receive failed (%s); continuing", exc)
                    break
                send_now = self._on_message(reader, frame)
                for topic, held_frame in send_now:
                    await self._send(topic, held_frame)
            if batch > FLOOD_BATCH or self._released >= _RELEASE_EVERY:
                self._released = 0  # what a flood or many leaving peers freed goes back to the system
                release_freed_memory()

    def _on_message(self, reader: zmq.Socket, frame: zmq.Frame) -> list[tuple[bytes, bytes]]:
        """Apply one subscription message; returns the held notifications to send now."""
        message = frame.bytes
        if not message:
            return []
        topic = message[1:]
        if message[0] == 1:
            peer = _peer_of(frame)
            problem = self.subscriptions.admit(topic, peer) if self._manual else ""
            if problem:
                self._log_refusal(topic, peer, problem)
                if not topic_problem(topic):  # over a limit, not malformed (those disconnect at once)
                    self._flood(problem)
                return []
            if self._manual:
                try:  # applies to the connection the message just read came from
                    reader.setsockopt(zmq.SUBSCRIBE, topic)
                except zmq.ZMQError as exc:
                    log.warning("relay: could not apply a subscription: %s", exc)
                    return []
            return [(topic, held.frame) for held in self.subscriptions.subscribed(topic, peer)]
        if message[0] == 0:
            if self._manual:
                try:
                    reader.setsockopt(zmq.UNSUBSCRIBE, topic)
                except zmq.ZMQError:
                    pass
            if self.subscriptions.unsubscribed(topic, _peer_of(frame) or None):
                self._released += 1
        return []

    def _flood(self, why: str) -> None:
        """A peer may be flooding: let ``on_flood`` look (at most ten times a second)."""
        now = time.monotonic()
        if self._on_flood is not None and now - self._last_flood_call >= 0.1:
            self._last_flood_call = now
            self._on_flood(why)

    def _log_refusal(self, topic: bytes, peer: str, problem: str) -> None:
        self.refused += 1
        now = time.monotonic()
        if now - self._last_refusal_log >= 10:  # one line per 10 s, however many arrive
            self._last_refusal_log = now
            log.warning("relay: refused a subscription to %r from %s: %s (%d refused so far)",
                        topic[:60].decode(errors="replace"), peer or "a peer", problem, self.refused)

    async def publish(self, notification: Notification, *, repeat: bool = False) -> None:
        """Send ``notification`` now if its topic is live, else hold it (``repeat``: a copy of one
        already published once, sent again for a repeated request id)."""
        if notification.error_message and self._secrets:
            notification.error_message = scrub(notification.error_message, self._secrets)
        topic = notification_topic(notification.client_id)
        frame = encode_frame(notification)
        if self.subscriptions.is_live(topic):
            await self._send(topic, frame)
        else:
            log.debug("relay: holding the notification of %s until %r is subscribed", notification.request_id, topic)
            deadline = asyncio.get_running_loop().time() + self.hold_seconds
            self.subscriptions.hold(topic, HeldNotification(deadline, notification.request_id, frame, repeat))

    async def _send(self, topic: bytes, frame: bytes) -> None:
        try:
            await self._xpub.send_multipart([topic, frame])
        except zmq.ZMQError as exc:
            log.warning("relay: could not publish on %r: %s", topic, exc)

    async def expire_held(self) -> None:
        """Drop held notifications whose subscriber did not arrive in time, one log line each."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(1.0, max(self.hold_seconds / 4, 0.05)))
            for topic, held in self.subscriptions.expire(loop.time()):
                if held.repeat:  # its first copy went out when the request finished
                    log.info("relay: dropped a repeated notification of request %s: %r unsubscribed meanwhile",
                             held.request_id, topic.decode(errors="replace"))
                else:
                    log.warning("relay: dropped the notification of request %s: nobody subscribed to %r within %.0f s",
                                held.request_id, topic.decode(errors="replace"), self.hold_seconds)
