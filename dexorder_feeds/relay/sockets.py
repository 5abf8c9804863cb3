"""The relay's two sockets: a ROUTER for requests and an XPUB for notifications.

Both are bound with the same limits against floods (backlog, largest message: a subscription
message is never longer than the longest ``RESPONSE:{client_id}`` topic), heartbeats that
drop dead peers (so a vanished subscriber's topic is released) and, when configured, CURVE.
"""

from __future__ import annotations

from dataclasses import dataclass

import zmq
import zmq.asyncio

from ..auth import ServerCurve, configure_server_socket
from ..vocabulary.errors import InvalidRequestError
from .subscriptions import MAX_SUBSCRIPTION_BYTES

__all__ = [
    "BoundSockets",
    "ConnectionLabels",
    "bind_sockets",
    "limit_subscription_intake",
    "close_now",
    "SOCKET_BACKLOG",
    "MAX_MESSAGE_BYTES",
    "NOTIFICATION_SNDHWM",
    "FINAL_FLUSH_LINGER_MS",
    "HEARTBEAT_IVL_MS",
    "HEARTBEAT_TIMEOUT_MS",
]

SOCKET_BACKLOG = 1024
MAX_MESSAGE_BYTES = 1 << 20  # libzmq disconnects a peer that sends a larger frame
NOTIFICATION_SNDHWM = 10_000
SUBSCRIPTION_RCVHWM = 2
SUBSCRIPTION_RCVBUF = 32 * 1024
FINAL_FLUSH_LINGER_MS = 1000  # how long the last notifications may take to leave at shutdown
HEARTBEAT_IVL_MS = 10_000
HEARTBEAT_TIMEOUT_MS = 30_000


@dataclass(frozen=True)
class BoundSockets:
    """The bound sockets and the endpoints they actually got (a wildcard port resolved)."""

    router: zmq.asyncio.Socket
    xpub: zmq.asyncio.Socket
    relay_endpoint: str
    notification_endpoint: str


ZAP_ENDPOINT = "inproc://zeromq.zap.01"
CONNECTION_LABEL_DOMAIN = "dexorder-notifications"


class ConnectionLabels:
    """Without CURVE: the ZAP handler of the XPUB's connections. It admits every one (NULL
    security admits everyone anyway) and gives each a user id of its own (``conn-<n>``), so every
    subscription message says which connection sent it and the per-peer limit of
    :class:`~dexorder_feeds.relay.subscriptions.Subscriptions` counts per connection (with
    CURVE, the user id is the client's key instead)."""

    def __init__(self, ctx: zmq.asyncio.Context) -> None:
        self._sock = ctx.socket(zmq.REP)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.bind(ZAP_ENDPOINT)
        self._count = 0

    async def serve(self) -> None:
        while True:
            try:
                frames = await self._sock.recv_multipart()
            except zmq.ZMQError:
                return
            if len(frames) < 2:
                continue  # not a ZAP request; REP still expects an answer, which libzmq never reads
            self._count += 1
            try:
                await self._sock.send_multipart([b"1.0", frames[1], b"200", b"OK", f"conn-{self._count}".encode(), b""])
            except zmq.ZMQError:
                return

    def close(self) -> None:
        close_now(self._sock)


def limit_subscription_intake(xpub: zmq.Socket) -> None:
    """The notification socket's limits on what a peer can make libzmq take in and keep."""
    xpub.setsockopt(zmq.SNDHWM, NOTIFICATION_SNDHWM)
    # Subscriptions are applied by the relay, not by libzmq: only RESPONSE:{client_id} topics,
    # within the per-peer and total limits (see relay.subscriptions). And no subscription
    # message may be longer than the longest such topic: libzmq disconnects the peer before it
    # stores a longer one.
    xpub.setsockopt(zmq.XPUB_MANUAL, 1)
    xpub.setsockopt(zmq.MAXMSGSIZE, MAX_SUBSCRIPTION_BYTES)
    # libzmq 4.3 records every subscription message it moves out of a connection's pipe until
    # the connection ends (~1.6 KB each), and it moves them whenever the relay touches the
    # socket, in a loop that lasts as long as its I/O thread keeps the pipe filled: with the
    # pipe 100 deep, one call could take in a whole flood (200,000 topics, 300 MB) before the
    # relay read any of it. A pipe of 2 ends that loop after a message or two, so libzmq takes
    # in no more than the relay reads, and the relay looks for a flooder every 128 it reads.
    xpub.setsockopt(zmq.RCVHWM, SUBSCRIPTION_RCVHWM)
    # And a small kernel buffer: what a peer sent before the relay shut its connection down is
    # still read (and recorded) by libzmq, so only this much can be queued per peer. A client
    # sends one subscription and heartbeats; a flooder waits in its own buffers.
    xpub.setsockopt(zmq.RCVBUF, SUBSCRIPTION_RCVBUF)


def bind_sockets(ctx: zmq.asyncio.Context, relay_endpoint: str, notification_endpoint: str,
                 curve: ServerCurve | None) -> BoundSockets:
    """Bind the ROUTER on ``relay_endpoint`` and the XPUB on ``notification_endpoint``.

    Raises :class:`InvalidRequestError` saying which endpoint is taken (nothing stays open then).
    """
    router = ctx.socket(zmq.ROUTER)
    xpub = ctx.socket(zmq.XPUB)
    for sock in (router, xpub):
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.BACKLOG, SOCKET_BACKLOG)
        sock.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)
        configure_server_socket(sock, curve)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
    limit_subscription_intake(xpub)
    if curve is None:  # each connection labelled by ConnectionLabels (which must be bound first)
        xpub.setsockopt(zmq.ZAP_DOMAIN, CONNECTION_LABEL_DOMAIN.encode())
    for sock, endpoint, what in ((router, relay_endpoint, "relay"), (xpub, notification_endpoint, "notification")):
        try:
            sock.bind(endpoint)
        except zmq.ZMQError as exc:
            close_now(router, xpub)
            raise InvalidRequestError(
                f"cannot bind the {what} endpoint {endpoint!r}: {exc}; "
                "is another relay running there? choose another address or port"
            ) from None
    return BoundSockets(router, xpub, router.getsockopt_string(zmq.LAST_ENDPOINT),
                        xpub.getsockopt_string(zmq.LAST_ENDPOINT))


def close_now(*sockets: zmq.asyncio.Socket | None) -> None:
    """Close every socket not closed yet, dropping whatever it still holds (linger 0)."""
    for sock in sockets:
        if sock is not None and not sock.closed:
            sock.close(linger=0)
