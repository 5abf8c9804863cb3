"""Who is subscribed to which notification topic, and the notifications held for a subscriber
that has not arrived yet.

Plain bookkeeping, no sockets: :class:`~dexorder_feeds.relay.notifications.Notifier` feeds it
the XPUB's subscription messages and sends what it hands back. Holding a notification until its
topic is live is what keeps one from being lost to the slow-joiner race.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
from typing import Any
from collections import Counter
from dataclasses import dataclass

__all__ = ["HeldNotification", "Subscriptions", "topic_problem", "release_freed_memory", "MAX_ID_LENGTH",
           "TOPIC_PREFIX", "MAX_SUBSCRIPTION_BYTES", "DEFAULT_MAX_TOPICS_PER_PEER", "DEFAULT_MAX_TOPICS"]

MAX_ID_LENGTH = 128
"""Longest request or client id, in characters."""
TOPIC_PREFIX = b"RESPONSE:"
MAX_SUBSCRIPTION_BYTES = 1 + len(TOPIC_PREFIX) + 4 * MAX_ID_LENGTH
"""The longest subscription message a client can need (``\x01RESPONSE:`` and a client id of
:data:`MAX_ID_LENGTH` characters of up to 4 UTF-8 bytes): the XPUB's largest message, so libzmq
disconnects a peer sending longer ones before it stores them."""
DEFAULT_MAX_TOPICS_PER_PEER = 1_000
"""Live topics one peer (a CURVE key, else an IP address) may hold."""
DEFAULT_MAX_TOPICS = 10_000
"""Live topics in total."""


def topic_problem(topic: bytes) -> str:
    """Why ``topic`` is not one a client may subscribe to, or ``""``: only
    ``RESPONSE:{client_id}`` with a printable client id of at most :data:`MAX_ID_LENGTH` characters."""
    if not topic.startswith(TOPIC_PREFIX):
        return "a topic must be RESPONSE:{client_id}"
    try:
        client_id = topic[len(TOPIC_PREFIX):].decode()
    except UnicodeDecodeError:
        return "the client id of a topic must be UTF-8 text"
    if not client_id or len(client_id) > MAX_ID_LENGTH or not client_id.isprintable():
        return f"the client id of a topic must be 1 to {MAX_ID_LENGTH} printable characters"
    return ""


_libc: Any = None


def release_freed_memory() -> None:
    """Hand memory freed by libzmq and Python back to the system (glibc's ``malloc_trim``; a
    no-op elsewhere), so the relay's RSS returns to its level after a flooding peer leaves."""
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        _libc.malloc_trim(0)
    except (OSError, AttributeError):
        _libc = False


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
    """The live topics, the subscribe checks waiting for a topic, and the held notifications.

    A topic is admitted (:meth:`admit`) only in the ``RESPONSE:{client_id}`` form, and only while
    its peer holds fewer than ``max_per_peer`` live topics and all peers fewer than ``max_topics``:
    so what a peer can make the relay keep is bounded.
    """

    def __init__(self, *, max_per_peer: int = DEFAULT_MAX_TOPICS_PER_PEER,
                 max_topics: int = DEFAULT_MAX_TOPICS) -> None:
        self.max_per_peer = max_per_peer
        self.max_topics = max_topics
        self._live: dict[bytes, list[str]] = {}  # topic -> the peers subscribed to it, in order
        self._count = 0  # live (topic, peer) pairs
        self._per_peer: Counter[str] = Counter()
        self._refused: dict[bytes, str] = {}  # recent refusals, for the subscribe check's answer
        self._waiters: dict[bytes, list[asyncio.Future[None]]] = {}
        self._held: dict[bytes, list[HeldNotification]] = {}

    def is_live(self, topic: bytes) -> bool:
        return topic in self._live

    @property
    def live_count(self) -> int:
        """How many subscriptions are live, over all peers."""
        return self._count

    def peer_count(self, peer: str) -> int:
        return self._per_peer.get(peer, 0)

    def admit(self, topic: bytes, peer: str = "") -> str:
        """``""`` if ``peer`` may subscribe to ``topic`` now, else why not (remembered for
        :meth:`refusal`)."""
        problem = topic_problem(topic)
        if not problem and self._per_peer.get(peer, 0) >= self.max_per_peer:
            problem = (f"{peer or 'this peer'} already holds {self.max_per_peer} subscriptions "
                       "(the relay's per-peer limit)")
        if not problem and self._count >= self.max_topics:
            problem = f"the relay holds its limit of {self.max_topics} subscriptions; retry later"
        if problem and not topic_problem(topic):
            if len(self._refused) >= 1_000:
                self._refused.pop(next(iter(self._refused)))
            self._refused[topic] = problem
            for waiter in self._waiters.pop(topic, []):  # a subscribe check waiting learns it at once
                if not waiter.done():
                    waiter.set_result(None)
        return problem

    def refusal(self, topic: bytes) -> str:
        """Why the last subscription to ``topic`` was refused, or ``""``."""
        return self._refused.get(topic, "")

    @property
    def held_count(self) -> int:
        """How many notifications are held, over all topics."""
        return sum(len(items) for items in self._held.values())

    def subscribed(self, topic: bytes, peer: str = "") -> list[HeldNotification]:
        """Mark ``topic`` live (for ``peer``) and wake whoever waits for it; return (and forget)
        what was held for it, oldest first: the caller sends those now."""
        self._live.setdefault(topic, []).append(peer)
        self._count += 1
        self._per_peer[peer] += 1
        self._refused.pop(topic, None)
        for waiter in self._waiters.pop(topic, []):
            if not waiter.done():
                waiter.set_result(None)
        return self._held.pop(topic, [])

    def unsubscribed(self, topic: bytes, peer: str | None = None) -> bool:
        """One subscription to ``topic`` ended (``peer``'s, or when libzmq does not say whose
        because the peer left, the oldest); False if none was live."""
        peers = self._live.get(topic)
        if not peers:
            return False
        removed = peer if peer is not None and peer in peers else peers[0]
        peers.remove(removed)
        if not peers:
            del self._live[topic]
        self._count -= 1
        self._per_peer[removed] -= 1
        if self._per_peer[removed] <= 0:
            del self._per_peer[removed]
        return True

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
