"""A recording observer plugin for tests: every event, registered on the real plugin manager."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from dexorder_feeds import hookimpl
from dexorder_feeds.plugins import get_plugin_manager


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[tuple[str, int, int, int]] = []
        self.notifications: list[dict] = []
        self.cache_checks: list[tuple[str, int, list]] = []
        self.progress: list[tuple[int, int]] = []

    @hookimpl
    def dexorder_request_sent(self, request_id: str, ticker: str, period_seconds: int, start_time: int, end_time: int) -> None:
        with self.lock:
            self.requests.append((ticker, period_seconds, start_time, end_time))

    @hookimpl
    def dexorder_notification_received(self, result: dict) -> None:
        with self.lock:
            self.notifications.append(result)

    @hookimpl
    def dexorder_cache_checked(self, request: Any, cached_rows: int, missing_ranges: Any) -> None:
        with self.lock:
            self.cache_checks.append((request.ticker, cached_rows, list(missing_ranges)))

    @hookimpl
    def dexorder_progress(self, request: Any, completed: int, total: int) -> None:
        with self.lock:
            self.progress.append((completed, total))


@contextlib.contextmanager
def recording() -> Iterator[Recorder]:
    recorder = Recorder()
    pm = get_plugin_manager()
    pm.register(recorder)
    try:
        yield recorder
    finally:
        pm.unregister(recorder)
