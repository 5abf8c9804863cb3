"""The XPUB side of the relay: it follows the subscriptions and publishes each notification as
``[b"RESPONSE:{client_id}", frame]``, at once if its topic is live, else held until the
subscription lands (for up to the hold time)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import zmq
import zmq.asyncio

from ..storage.catalog import scrub
from ..wire import Notification, encode_frame, notification_topic
from .subscriptions import HeldNotification, Subscriptions

__all__ = ["Notifier", "NOTIFICATION_HOLD_SECONDS"]

log = logging.getLogger("dexorder_feeds.relay.server")  # one logger for the whole relay

NOTIFICATION_HOLD_SECONDS = 30.0


class Notifier:
    """Publishes notifications on ``xpub``; :meth:`watch` and :meth:`expire_held` run as tasks
    while the relay serves."""

    def __init__(self, xpub: zmq.asyncio.Socket, subscriptions: Subscriptions, *,
                 hold_seconds: float = NOTIFICATION_HOLD_SECONDS, secrets: Mapping[str, Any] | None = None) -> None:
        self.subscriptions = subscriptions
        self.hold_seconds = hold_seconds
        self._xpub = xpub
        self._secrets = dict(secrets or {})  # catalog properties: their secret values never go on the wire

    async def watch(self) -> None:
        """Read the subscription messages (``\\x01topic`` / ``\\x00topic``) until the socket closes."""
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
                for held in self.subscriptions.subscribed(topic):
                    await self._send(topic, held.frame)
            elif message[0] == 0:
                self.subscriptions.unsubscribed(topic)

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
