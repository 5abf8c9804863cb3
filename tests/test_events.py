"""Observer events: one guarded path (``events.emit``); a raising observer never fails a fetch.

The raising observer is registered on the real plugin manager under a name of its own, as an
entry-point plugin is, and checked in the three modes: embedded (the default), through a real
``dexorder-feeds serve`` process, and a plain ``HistoryClient``.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import dexorder_feeds
from dexorder_feeds import HistoryClient, OHLCClient, fetch_ohlc
from dexorder_feeds.events import emit
from dexorder_feeds.hookspecs import OBSERVER_EVENTS, hookimpl
from dexorder_feeds.plugins import get_plugin_manager
from dexorder_feeds.vocabulary.requests import FetchRequest

from conftest import SEED_START
from observer import recording

H = 3_600_000_000
EVENT_LOGGER = "dexorder_feeds.events"


class Raising:
    """An observer whose every event handler raises."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def _fail(self, event: str) -> None:
        self.calls.append(event)
        raise RuntimeError(f"observer bug in {event}")

    @hookimpl
    def dexorder_cache_checked(self, request, cached_rows, missing_ranges):
        self._fail("dexorder_cache_checked")

    @hookimpl
    def dexorder_request_sent(self, request_id, ticker, period_seconds, start_time, end_time):
        self._fail("dexorder_request_sent")

    @hookimpl
    def dexorder_notification_received(self, result):
        self._fail("dexorder_notification_received")

    @hookimpl
    def dexorder_progress(self, request, completed, total):
        self._fail("dexorder_progress")


@contextlib.contextmanager
def installed(plugin: object) -> Iterator[str]:
    """Register ``plugin`` under a fresh name, like an entry point; yield the name."""
    name = f"raising-{uuid.uuid4().hex[:8]}"
    pm = get_plugin_manager()
    pm.register(plugin, name=name)
    try:
        yield name
    finally:
        pm.unregister(plugin)


def failures_logged(caplog: pytest.LogCaptureFixture, plugin_name: str) -> dict[str, int]:
    """How often each event's failure of ``plugin_name`` was logged at ERROR, with a traceback."""
    counts: dict[str, int] = {}
    for record in caplog.records:
        if record.name == EVENT_LOGGER and record.levelno == logging.ERROR and plugin_name in record.getMessage():
            assert record.exc_info is not None, "the first failure is logged with its traceback"
            event = next(e for e in OBSERVER_EVENTS if e in record.getMessage())
            counts[event] = counts.get(event, 0) + 1
    return counts


def test_a_raising_observer_leaves_embedded_fetches_intact_and_is_logged_once(caplog):
    caplog.set_level(logging.DEBUG, logger=EVENT_LOGGER)
    raising = Raising()
    with installed(raising) as name, recording() as recorder:
        first = fetch_ohlc("SIM:BTC/USDT", 3600, SEED_START, SEED_START + 23 * H)
        again = fetch_ohlc("SIM:BTC/USDT", 3600, SEED_START + 24 * H, SEED_START + 47 * H)
    assert len(first) == 24 and len(again) == 24
    assert first["timestamp"].tolist() == [SEED_START + i * H for i in range(24)]
    # every event reached the raising observer, twice, and the observer beside it too
    assert sorted(set(raising.calls)) == sorted(OBSERVER_EVENTS)
    assert raising.calls.count("dexorder_request_sent") == 2
    assert len(recorder.requests) == 2 and len(recorder.notifications) == 2 and len(recorder.progress) == 2
    assert failures_logged(caplog, name) == {event: 1 for event in OBSERVER_EVENTS}


def test_a_raising_observer_leaves_relay_fetches_intact(relay_server, caplog):
    caplog.set_level(logging.DEBUG, logger=EVENT_LOGGER)
    raising = Raising()
    relay = relay_server
    start = SEED_START + 300 * 24 * H  # a range no other test of the session's relay asks for
    with installed(raising) as name, recording() as recorder:
        async def main() -> tuple[int, int]:
            async with OHLCClient(relay.catalog_uri, relay.relay_endpoint, relay.notification_endpoint) as client:
                first = await client.fetch_ohlc("SIM:EVENTS/USDT", 3600, start, start + 23 * H)
                cached = await client.fetch_ohlc("SIM:EVENTS/USDT", 3600, start, start + 23 * H)
                return len(first), len(cached)

        assert asyncio.run(main()) == (24, 24)
        assert relay.proc.poll() is None
    assert len(recorder.requests) == 1 and recorder.notifications[0]["status"] == "OK"
    assert [rows for _, rows, _ in recorder.cache_checks] == [0, 24]
    assert sorted(set(raising.calls)) == sorted(OBSERVER_EVENTS)
    assert failures_logged(caplog, name) == {event: 1 for event in OBSERVER_EVENTS}


def test_a_raising_observer_leaves_history_client_requests_intact(relay_server, caplog):
    caplog.set_level(logging.DEBUG, logger=EVENT_LOGGER)
    raising = Raising()
    relay = relay_server
    with installed(raising) as name:
        async def main() -> list[dict]:
            async with HistoryClient(relay.relay_endpoint, relay.notification_endpoint) as client:
                return [await client.request_historical_ohlc("SIM:EVENTS/BTC", 3600, SEED_START + i * 24 * H,
                                                             SEED_START + i * 24 * H + 23 * H) for i in range(3)]

        results = asyncio.run(main())
    assert [r["status"] for r in results] == ["OK"] * 3 and [r["row_count"] for r in results] == [24] * 3
    assert raising.calls == ["dexorder_request_sent", "dexorder_notification_received"] * 3
    assert failures_logged(caplog, name) == {"dexorder_request_sent": 1, "dexorder_notification_received": 1}
    repeats = [r for r in caplog.records if r.name == EVENT_LOGGER and r.levelno == logging.DEBUG
               and name in r.getMessage()]
    assert len(repeats) == 4  # two more failures of each event, at DEBUG


def test_emit_calls_observers_in_pluggys_order_with_only_the_arguments_they_name():
    seen: list[tuple[str, object]] = []

    class First:
        @hookimpl(tryfirst=True)
        def dexorder_progress(self, completed):
            seen.append(("first", completed))

    class Last:
        @hookimpl(trylast=True)
        def dexorder_progress(self, request, total):
            seen.append(("last", (request.ticker, total)))

    request = FetchRequest.create("SIM:BTC/USDT", 3600, SEED_START, SEED_START + H)
    with installed(Last()), installed(First()):
        emit("dexorder_progress", request=request, completed=1, total=2)
    assert seen == [("first", 1), ("last", ("SIM:BTC/USDT", 2))]


def test_emit_refuses_pipeline_steps_and_wrong_arguments():
    request = FetchRequest.create("SIM:BTC/USDT", 3600, SEED_START, SEED_START + H)
    with pytest.raises(ValueError, match="not an observer event"):
        emit("dexorder_read_cache", context=None, request=request)
    with pytest.raises(ValueError, match="completed"):
        emit("dexorder_progress", request=request, total=2)


def test_wrapper_and_coroutine_observers_are_skipped_with_one_error_each(caplog):
    caplog.set_level(logging.DEBUG, logger=EVENT_LOGGER)
    calls: list[str] = []

    class Wrapping:
        @hookimpl(wrapper=True)
        def dexorder_notification_received(self, result):
            calls.append("wrapper")
            return (yield)

    class Async:
        @hookimpl
        async def dexorder_notification_received(self, result):
            calls.append("coroutine ran")

    class Plain:
        @hookimpl
        def dexorder_notification_received(self, result):
            calls.append("plain")

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a never-awaited coroutine would warn
        with installed(Wrapping()) as wrapping, installed(Async()) as coroutine, installed(Plain()):
            for _ in range(2):
                emit("dexorder_notification_received", result={"status": "OK"})
    assert calls == ["plain", "plain"]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len([m for m in errors if wrapping in m and "wrapper" in m]) == 1
    assert len([m for m in errors if coroutine in m and "coroutine" in m]) == 1


def test_every_event_in_the_package_goes_through_emit():
    """No module calls an event hook directly: only ``events.emit`` does (a grep, as an AST walk)."""
    package = Path(dexorder_feeds.__file__).parent
    direct = []
    for path in package.rglob("*.py"):
        if path.name in ("hookspecs.py", "events.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and node.attr in OBSERVER_EVENTS:
                direct.append(f"{path.relative_to(package)}:{node.lineno} .{node.attr}")
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
                    and len(node.args) > 1 and isinstance(node.args[0], ast.Attribute) and node.args[0].attr == "hook"):
                direct.append(f"{path.relative_to(package)}:{node.lineno} getattr(….hook, …)")
    assert not direct, f"call these through dexorder_feeds.events.emit: {direct}"
    emitted = {node.args[0].value for path in package.rglob("*.py")
               for node in ast.walk(ast.parse(path.read_text()))
               if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "emit"
               and node.args and isinstance(node.args[0], ast.Constant)}
    assert emitted == set(OBSERVER_EVENTS)
