"""The relay's signals: SIGINT/SIGTERM shut down gracefully (a second one exits at once) and
SIGHUP re-reads the admitted client keys.

Exiting at once on the second signal never leaves a half-written commit: Iceberg commits are atomic.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable

__all__ = ["SignalHandlers"]

log = logging.getLogger("dexorder_feeds.relay.server")  # one logger for the whole relay

_SIGHUP = (signal.SIGHUP,) if hasattr(signal, "SIGHUP") else ()


class SignalHandlers:
    """Handlers calling ``on_stop`` (first SIGINT/SIGTERM) and ``on_reload`` (SIGHUP);
    ``in_flight`` counts the running requests for the log line."""

    def __init__(self, *, on_stop: Callable[[], None], on_reload: Callable[[], None],
                 in_flight: Callable[[], int]) -> None:
        self._on_stop = on_stop
        self._on_reload = on_reload
        self._in_flight = in_flight
        self.signals_seen = 0

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in _SIGHUP:
            try:
                loop.add_signal_handler(sig, self._on_reload)
            except (NotImplementedError, RuntimeError):
                pass
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self.on_signal, sig)
            except (NotImplementedError, RuntimeError):  # not the main thread, or Windows
                signal.signal(sig, lambda signum, frame: loop.call_soon_threadsafe(self.on_signal, signum))

    @staticmethod
    def remove(loop: asyncio.AbstractEventLoop) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM, *_SIGHUP):
            try:
                loop.remove_signal_handler(sig)
            except (NotImplementedError, RuntimeError, ValueError):
                pass

    def on_signal(self, sig: int) -> None:
        self.signals_seen += 1
        name = signal.Signals(sig).name
        if self.signals_seen > 1:
            log.warning("second %s: exiting now without waiting for %d running requests", name, self._in_flight())
            os._exit(1)
        log.info("%s received: shutting down after %d requests in flight", name, self._in_flight())
        self._on_stop()
