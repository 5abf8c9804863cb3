"""Disconnecting the notification peer that floods the relay with subscriptions.

The relay applies only the subscriptions it admits (``XPUB_MANUAL``, see :mod:`.subscriptions`),
but libzmq 4.3 still records every subscription message a connection sends until that connection
ends, and ZeroMQ offers no call to end one connection of a socket. So the relay follows the
XPUB's TCP connections itself (the socket monitor's ``ACCEPTED`` events carry each file
descriptor) and, when a peer goes past its subscription limit or many subscription messages
arrive at once, shuts down the connection that sent the most bytes per second: the flooder. libzmq then sees the connection end,
drops what it recorded for it, and the relay hands the freed memory back to the system.

Linux only (``TCP_INFO``'s byte counter); elsewhere the guard does nothing and the limits of
:mod:`.subscriptions` still decide what is applied.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
import sys
import time

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

__all__ = ["PeerGuard", "FLOOD_BYTES"]

log = logging.getLogger("dexorder_feeds.relay.server")  # one logger for the whole relay

FLOOD_BYTES = 32 * 1024
"""Bytes a connection must have sent to be taken for a flooder."""
_TCP_INFO_BYTES_RECEIVED = 128  # offset of tcpi_bytes_received (u64) in Linux's struct tcp_info
_TCP_INFO_SIZE = 136
_EVENTS = zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_CLOSED


def _bytes_received(fd: int) -> int | None:
    """Bytes the TCP connection ``fd`` received so far, or None if it is not one (any more)."""
    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError:
        return None
    try:
        if sock.type != socket.SOCK_STREAM or sock.family not in (socket.AF_INET, socket.AF_INET6):
            return None
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
        if len(info) < _TCP_INFO_SIZE:
            return None
        return int(struct.unpack_from("=Q", info, _TCP_INFO_BYTES_RECEIVED)[0])
    except OSError:
        return None
    finally:
        sock.close()  # the duplicate only: the connection stays libzmq's


def _names(fd: int) -> tuple[object, object] | None:
    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError:
        return None
    try:
        return sock.getsockname(), sock.getpeername()
    except OSError:
        return None
    finally:
        sock.close()


class PeerGuard:
    """Follows the XPUB's TCP connections (:meth:`watch`); :meth:`disconnect_flooder` ends the
    one that floods."""

    def __init__(self, xpub: zmq.asyncio.Socket) -> None:
        self.enabled = sys.platform.startswith("linux") and hasattr(socket, "TCP_INFO")
        self.disconnected = 0
        self._monitor: zmq.asyncio.Socket | None = None
        self._xpub = xpub
        self._connections: dict[int, tuple[int, float]] = {}  # fd -> (bytes received, time) when accepted
        self._names: dict[int, tuple[object, object]] = {}  # fd -> (local, peer) address when accepted
        if self.enabled:
            self._monitor = xpub.get_monitor_socket(_EVENTS)

    async def watch(self) -> None:
        """Track accepted and closed connections until the monitor closes."""
        monitor = self._monitor
        if monitor is None:
            return
        while True:
            try:
                message = await monitor.recv_multipart()
            except (zmq.ZMQError, asyncio.CancelledError):
                return
            self._apply(message)

    def _apply(self, message: list[bytes]) -> None:
        try:
            event = parse_monitor_message(message)
            fd = int(event["value"])
        except Exception:  # a malformed monitor message: never fatal
            return
        if event["event"] == zmq.EVENT_ACCEPTED:
            names = _names(fd)
            if names is not None:
                self._names[fd] = names
                self._connections[fd] = (_bytes_received(fd) or 0, time.monotonic())
        else:
            self._forget(fd)

    def _catch_up(self) -> None:
        """Apply the monitor events already waiting: the Notifier reads a flood without awaiting,
        so :meth:`watch` may not have seen the flooder's ``ACCEPTED`` event yet."""
        if self._monitor is None or self._monitor.closed:
            return
        reader: zmq.Socket[bytes] = zmq.Socket.shadow(self._monitor.underlying)
        while True:
            try:
                message = reader.recv_multipart(zmq.NOBLOCK)
            except zmq.ZMQError:  # nothing waiting (EAGAIN), or the monitor is closing
                return
            self._apply(message)

    def disconnect_flooder(self, why: str) -> bool:
        """Shut down the connection that sent the relay the most bytes per second since it was
        accepted, among those that sent more than :data:`FLOOD_BYTES` (a client sends one
        subscription of under 600 bytes and a heartbeat every few seconds); True if one was."""
        if not self.enabled:
            return False
        self._catch_up()
        if not self._connections:
            return False
        now = time.monotonic()
        rates: dict[int, float] = {}
        totals: dict[int, int] = {}
        for fd, (first, since) in list(self._connections.items()):
            received = _bytes_received(fd)
            if received is None:
                self._forget(fd)
                continue
            totals[fd] = received - first
            if totals[fd] >= FLOOD_BYTES:
                rates[fd] = totals[fd] / max(now - since, 1.0)
        if not rates:
            return False
        fd = max(rates, key=lambda k: rates[k])
        try:
            sock = socket.socket(fileno=os.dup(fd))
        except OSError:
            return False
        try:
            if (sock.getsockname(), sock.getpeername()) != self._names.get(fd):
                return False  # that descriptor is another connection by now
            peer = sock.getpeername()
            sock.shutdown(socket.SHUT_RDWR)  # libzmq sees the connection end and cleans up after it
        except OSError:
            return False
        finally:
            sock.close()
        self._forget(fd)
        self.disconnected += 1
        log.warning("relay: disconnected the notification peer %s: %s (it sent %d bytes, %.0f per second)",
                    peer, why, totals[fd], rates[fd])
        return True

    def _forget(self, fd: int) -> None:
        self._connections.pop(fd, None)
        self._names.pop(fd, None)

    def close(self) -> None:
        if self._monitor is not None:
            try:
                self._xpub.disable_monitor()
            except zmq.ZMQError:
                pass
            self._monitor.close(linger=0)
            self._monitor = None
