"""The relay server: the historian's ZeroMQ front door (``dexorder-feeds serve``).

How it works inside: docs/internals.md, "The relay server". :class:`RelayServer` composes the
parts: :mod:`.sockets` (binding, CURVE), :mod:`.intake` (the ROUTER: checking and answering
requests), :mod:`.scheduling` (historian threads, overlapping ranges), :mod:`.results` (finished
requests, for repeats), :mod:`.notifications` and :mod:`.subscriptions` (the XPUB, held
notifications), :mod:`.signals`; :mod:`.entry` holds :func:`serve`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Mapping
from typing import Any

import zmq.asyncio

from ..auth import ServerCurve, describe, reload_authorized_keys, server_curve, start_authenticator
from ..config import Settings
from ..storage.catalog import scrub
from ..ingest.historian import DEFAULT_MAX_RANGE_CANDLES, Historian
from ..vocabulary.errors import InvalidRequestError
from .intake import (
    DEFAULT_MAX_QUEUED,
    MAX_ENVELOPE_FRAMES,
    MAX_ID_LENGTH,
    MAX_PENDING_CHECKS,
    SUBSCRIBE_CHECK_WAIT_SECONDS,
    Intake,
)
from .notifications import NOTIFICATION_HOLD_SECONDS, Notifier
from .peers import PeerGuard
from .results import RESULT_CACHE_SIZE, ResultCache
from .scheduling import DEFAULT_WORKERS, Scheduler
from .signals import SignalHandlers
from .sockets import (
    FINAL_FLUSH_LINGER_MS,
    MAX_MESSAGE_BYTES,
    BoundSockets,
    ConnectionLabels,
    bind_sockets,
    close_now,
)
from .subscriptions import DEFAULT_MAX_TOPICS, DEFAULT_MAX_TOPICS_PER_PEER, MAX_SUBSCRIPTION_BYTES, Subscriptions

__all__ = [
    "RelayServer",
    "DEFAULT_WORKERS",
    "NOTIFICATION_HOLD_SECONDS",
    "SUBSCRIBE_CHECK_WAIT_SECONDS",
    "RESULT_CACHE_SIZE",
    "MAX_MESSAGE_BYTES",
    "MAX_ENVELOPE_FRAMES",
    "MAX_ID_LENGTH",
    "MAX_PENDING_CHECKS",
    "DEFAULT_MAX_QUEUED",
    "DEFAULT_MAX_TOPICS_PER_PEER",
    "DEFAULT_MAX_TOPICS",
    "MAX_SUBSCRIPTION_BYTES",
]

log = logging.getLogger(__name__)

RECHECK_SECONDS = 2.0
"""How often the relay's historian looks whether files behind stored ranges changed (a stat
per file of each files-served ticker; nothing more when nothing changed)."""


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
        max_topics_per_peer: int = DEFAULT_MAX_TOPICS_PER_PEER,
        max_topics: int = DEFAULT_MAX_TOPICS,
        curve: ServerCurve | None = None,
        secrets: Mapping[str, Any] | None = None,
        owns_historian: bool = False,
        recheck_seconds: float = RECHECK_SECONDS,
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
        self.max_topics_per_peer = max_topics_per_peer
        self.max_topics = max_topics
        self.curve = curve
        self._secrets = dict(secrets or {})  # catalog properties: their secret values never go on the wire
        self._owns_historian = owns_historian
        self.recheck_seconds = recheck_seconds
        self._authenticator: Any = None

        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._stop_requested = False
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._thread_error: BaseException | None = None
        self._scheduler: Scheduler | None = None  # the parts exist while run() runs

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
        historian = Historian(warehouse, SourceRegistry(settings.sources), max_range_candles=max_range_candles,
                              settle_seconds=settings.settle_seconds)
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

    def reload_keys(self) -> None:
        """Re-read the directory of admitted client keys (SIGHUP); a no-op without CURVE."""
        if self.curve is None or self._authenticator is None:
            log.info("SIGHUP received: no CURVE keys to reload")
            return
        try:
            reload_authorized_keys(self._authenticator, self.curve)
        except Exception:
            log.exception("reloading the admitted client keys failed; the previous set stays in force")

    async def _recheck_sources(self) -> None:
        """Every :attr:`recheck_seconds`, let the historian re-check ranges whose source data
        changed (files added, edited, appended): clients read coverage themselves and would
        never ask for a range recorded before the change."""
        loop = asyncio.get_running_loop()
        said = ""
        while True:
            await asyncio.sleep(self.recheck_seconds)
            try:
                await loop.run_in_executor(None, self.historian.revalidate_all)
                said = ""
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a changed stored candle, an unreadable file: said once, retried
                message = scrub(str(exc), self._secrets)
                if message != said:
                    log.warning("re-checking changed source data: %s", message)
                    said = message

    def _in_flight_count(self) -> int:
        return len(self._scheduler) if self._scheduler is not None else 0

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
            SignalHandlers(on_stop=self.request_stop, on_reload=self.reload_keys,
                           in_flight=self._in_flight_count).install(loop)
        ctx = zmq.asyncio.Context()
        sockets: BoundSockets | None = None
        labels: ConnectionLabels | None = None
        guard: PeerGuard | None = None
        try:
            await loop.run_in_executor(None, self.historian.warehouse.ensure_tables)
            # what a process's first commit does once, done before the first request waits on it
            await loop.run_in_executor(None, self.historian.warehouse.prepare_writes)
            # load the table uuids once: every reply and notification names the warehouse written
            warehouse = await loop.run_in_executor(None, self.historian.warehouse.identity)
            if self.curve is not None:
                self._authenticator = start_authenticator(ctx, self.curve)
            else:
                labels = ConnectionLabels(ctx)
            sockets = bind_sockets(ctx, self.relay_endpoint, self.notification_endpoint, self.curve)
            self.relay_endpoint, self.notification_endpoint = sockets.relay_endpoint, sockets.notification_endpoint
            subscriptions = Subscriptions(max_per_peer=self.max_topics_per_peer, max_topics=self.max_topics)
            guard = PeerGuard(sockets.xpub)
            notifier = Notifier(sockets.xpub, subscriptions, hold_seconds=self.notification_hold,
                                secrets=self._secrets, manual=True, on_flood=guard.disconnect_flooder)
            self._scheduler = Scheduler(self.historian, workers=self.workers,
                                        results=ResultCache(self.result_cache_size), publish=notifier.publish)
            intake = Intake(sockets.router, self.historian, self._scheduler, notifier, max_queued=self.max_queued,
                            subscribe_check_wait=self.subscribe_check_wait, secrets=self._secrets)
            background = [
                loop.create_task(notifier.watch(), name="relay-subscriptions"),
                loop.create_task(notifier.expire_held(), name="relay-expiry"),
                loop.create_task(guard.watch(), name="relay-peers"),
            ]
            if labels is not None:
                background.append(loop.create_task(labels.serve(), name="relay-connection-labels"))
            if self.recheck_seconds > 0:
                background.append(loop.create_task(self._recheck_sources(), name="relay-recheck"))
            intake.start()
            log.info("relay ready request=%s notification=%s workers=%d auth=%s warehouse=%s",
                     self.relay_endpoint, self.notification_endpoint, self.workers, describe(self.curve),
                     warehouse.describe())
            self._ready.set()
            await self._stop_event.wait()
            await self._shutdown(intake, self._scheduler, notifier, sockets, background)
        finally:
            if guard is not None:
                guard.close()
            if sockets is not None:
                close_now(sockets.router, sockets.xpub)
            if labels is not None:
                labels.close()
            if self._authenticator is not None:
                self._authenticator.stop()
                self._authenticator = None
            ctx.term()
            if self._scheduler is not None:
                self._scheduler.close()
            if self._owns_historian:
                self.historian.close()
                self.historian.warehouse.close()
            if handle_signals:
                SignalHandlers.remove(loop)
            log.info("relay stopped")

    @staticmethod
    async def _shutdown(intake: Intake, scheduler: Scheduler, notifier: Notifier, sockets: BoundSockets,
                        background: list[asyncio.Task[None]]) -> None:
        """The ROUTER closes first (no new requests); requests queued but not started get an
        ERROR notification saying to retry; running ones finish their commit and publish; then
        the XPUB closes with a short bounded linger so those last notifications leave."""
        await intake.stop()
        scheduler.stop_queue()
        running = scheduler.running()
        if running:
            log.info("waiting for %d requests to finish their commits", len(running))
            await asyncio.gather(*running, return_exceptions=True)
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        dropped = notifier.subscriptions.held_count
        if dropped:
            log.warning("relay shutting down: dropping %d notifications whose subscribers never arrived", dropped)
        sockets.xpub.close(linger=FINAL_FLUSH_LINGER_MS)
