"""Who is subscribed to which notification topic, and the notifications held for a subscriber
that has not arrived yet.

Plain bookkeeping, no sockets: :class:`~dexorder_feeds.relay.notifications.Notifier` feeds it
the XPUB's subscription messages and sends what it hands back. Holding a notification until its
topic is live is what keeps one from being lost to the slow-joiner race.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

__all__ = ["HeldNotification", "Subscriptions"]


@dataclass(frozen=True)
class HeldNotification:
    """A notification waiting for a subscriber to its topic."""

    deadline: float
    """Event-loop time after which it is dropped."""
    request_id: str
    frame: bytes
    """The encoded notification, ready to send."""
    repeat: bool
    """A copy of one already published once (sent again for a repeated request id)."""


class Subscriptions:
    """The live topics, the subscribe checks waiting for a topic, and the held notifications."""

    def __init__(self) -> None:
        self._live: set[bytes] = set()
        self._waiters: dict[bytes, list[asyncio.Future[None]]] = {}
        self._held: dict[bytes, list[HeldNotification]] = {}

    def is_live(self, topic: bytes) -> bool:
        return topic in self._live

    @property
    def held_count(self) -> int:
        """How many notifications are held, over all topics."""
        return sum(len(items) for items in self._held.values())

    def subscribed(self, topic: bytes) -> list[HeldNotification]:
        """Mark ``topic`` live and wake whoever waits for it; return (and forget) what was held
        for it, oldest first: the caller sends those now."""
        self._live.add(topic)
        for waiter in self._waiters.pop(topic, []):
            if not waiter.done():
                waiter.set_result(None)
        return self._held.pop(topic, [])

    def unsubscribed(self, topic: bytes) -> None:
        self._live.discard(topic)

    def hold(self, topic: bytes, notification: HeldNotification) -> None:
        """Keep ``notification`` until ``topic`` is subscribed or its deadline passes."""
        self._held.setdefault(topic, []).append(notification)

    def expire(self, now: float) -> list[tuple[bytes, HeldNotification]]:
        """Drop the held notifications whose deadline is ``now`` or earlier; return them with their topics."""
        dropped: list[tuple[bytes, HeldNotification]] = []
        for topic in list(self._held):
            keep = []
            for item in self._held[topic]:
                if item.deadline <= now:
                    dropped.append((topic, item))
                else:
                    keep.append(item)
            if keep:
                self._held[topic] = keep
            else:
                del self._held[topic]
        return dropped

    async def wait_live(self, topic: bytes, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for ``topic`` to be subscribed; True if it is live."""
        if topic not in self._live:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.setdefault(topic, []).append(waiter)
            try:
                await asyncio.wait_for(waiter, timeout)
            except TimeoutError:
                pass
            finally:
                waiters = self._waiters.get(topic)
                if waiters is not None:
                    if waiter in waiters:
                        waiters.remove(waiter)
                    if not waiters:
                        del self._waiters[topic]
        return topic in self._live

    def waiting(self, topic: bytes) -> int:
        """How many subscribe checks wait for ``topic``."""
        return len(self._waiters.get(topic, []))
