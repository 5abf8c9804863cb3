"""The relay's parts one by one: the result cache, the subscription bookkeeping, the notifier on
a real XPUB, the scheduler and the intake over a real historian and warehouse, the sockets and
the signal handlers.

The whole relay, spoken to over TCP, is tested in test_relay.py; here each part is driven
directly so its own rules (bounds, expiry, ordering, refusals) are seen on their own.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import signal
from collections.abc import Awaitable, Callable

import pytest
import zmq
import zmq.asyncio

from dexorder_feeds.ingest.historian import Historian
from dexorder_feeds.vocabulary.errors import InvalidRequestError
from dexorder_feeds.relay.intake import MAX_ID_LENGTH, Intake, id_problem
from dexorder_feeds.relay.notifications import Notifier
from dexorder_feeds.relay.results import ResultCache
from dexorder_feeds.relay.scheduling import SHUTDOWN_MESSAGE, OverlapQueue, Scheduler
from dexorder_feeds.relay.signals import SignalHandlers
from dexorder_feeds.relay.sockets import bind_sockets, close_now
from dexorder_feeds.relay.subscriptions import HeldNotification, Subscriptions
from dexorder_feeds.wire import (
    HistoryRequest,
    Notification,
    RequestReply,
    SubscribeCheck,
    decode_frame,
    encode_frame,
    notification_topic,
)

SEED_TICKER = "SIM:BTC/USDT"
SEED_START = 1735689600000000  # 2025-01-01 00:00 UTC
SEED_END = 1736294399000000  # 2025-01-07 23:59:59 UTC -> 168 hourly candles
H = 3600 * 1_000_000
_endpoints = itertools.count()


def note(request_id: str, client_id: str = "alice", **fields: object) -> Notification:
    fields.setdefault("status", Notification.OK)
    return Notification(request_id=request_id, client_id=client_id, **fields)


async def eventually(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Wait for ``condition`` (a generous bound that only catches a hang, never a slow machine)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.01)


# -- ResultCache -------------------------------------------------------------------------------
def test_result_cache_keeps_the_most_recently_used_within_its_bound():
    cache = ResultCache(size=2)
    assert cache.remember(note("a")) and cache.remember(note("b"))
    assert cache.replay("a", "bob") is not None  # "a" is now the most recently used
    cache.remember(note("c"))
    assert len(cache) == 2
    assert "a" in cache and "c" in cache and "b" not in cache
    assert cache.replay("b", "bob") is None


def test_result_cache_of_size_zero_keeps_nothing():
    cache = ResultCache(size=0)
    cache.remember(note("a"))
    assert len(cache) == 0 and cache.replay("a", "alice") is None


def test_result_cache_does_not_keep_a_retry_later():
    cache = ResultCache()
    retry = note("a", status=Notification.ERROR, error_type="RelayUnavailableError", error_message=SHUTDOWN_MESSAGE)
    assert not cache.remember(retry)
    assert "a" not in cache
    failed = note("b", status=Notification.ERROR, error_type="InvalidTickerError", error_message="no such ticker")
    assert cache.remember(failed) and "b" in cache  # a real failure is a result: repeating it fails again


def test_result_cache_replays_a_copy_addressed_to_the_asking_client():
    cache = ResultCache()
    cache.remember(note("a", client_id="alice", row_count=168))
    again = cache.replay("a", "bob")
    assert again is not None
    assert (again.request_id, again.client_id, again.row_count) == ("a", "bob", 168)
    stored = cache.replay("a", "alice")
    assert stored is not None and stored.client_id == "alice"  # the stored one was not readdressed


# -- Subscriptions -----------------------------------------------------------------------------
def held(request_id: str, deadline: float = 100.0, repeat: bool = False) -> HeldNotification:
    return HeldNotification(deadline=deadline, request_id=request_id, frame=request_id.encode(), repeat=repeat)


def test_held_notifications_are_handed_back_in_order_when_their_topic_is_subscribed():
    subs = Subscriptions()
    subs.hold(b"RESPONSE:a", held("1"))
    subs.hold(b"RESPONSE:b", held("2"))
    subs.hold(b"RESPONSE:a", held("3"))
    assert subs.held_count == 3 and not subs.is_live(b"RESPONSE:a")
    assert [h.request_id for h in subs.subscribed(b"RESPONSE:a")] == ["1", "3"]
    assert subs.is_live(b"RESPONSE:a") and subs.held_count == 1
    assert subs.subscribed(b"RESPONSE:a") == []  # handed back once only
    subs.unsubscribed(b"RESPONSE:a")
    assert subs.is_live(b"RESPONSE:a")  # subscribed twice (two connections): one is left
    subs.unsubscribed(b"RESPONSE:a")
    assert not subs.is_live(b"RESPONSE:a") and subs.is_live(b"RESPONSE:b") is False
    assert subs.live_count == 0 and subs.unsubscribed(b"RESPONSE:a") is False


def test_expire_drops_only_what_is_due_and_says_which():
    subs = Subscriptions()
    subs.hold(b"RESPONSE:a", held("early", deadline=10.0))
    subs.hold(b"RESPONSE:a", held("late", deadline=20.0))
    subs.hold(b"RESPONSE:b", held("repeat", deadline=10.0, repeat=True))
    assert subs.expire(now=9.0) == []
    dropped = subs.expire(now=10.0)
    assert sorted((topic, h.request_id, h.repeat) for topic, h in dropped) == [
        (b"RESPONSE:a", "early", False), (b"RESPONSE:b", "repeat", True)]
    assert subs.held_count == 1
    assert [h.request_id for h in subs.subscribed(b"RESPONSE:a")] == ["late"]


def test_wait_live_wakes_on_subscription_and_cleans_up_on_timeout():
    async def main() -> None:
        subs = Subscriptions()
        waiting = asyncio.create_task(subs.wait_live(b"RESPONSE:a", timeout=30))
        await eventually(lambda: subs.waiting(b"RESPONSE:a") == 1, "the check to wait")
        subs.subscribed(b"RESPONSE:a")
        assert await waiting is True
        assert subs.waiting(b"RESPONSE:a") == 0
        assert await subs.wait_live(b"RESPONSE:a", timeout=0) is True  # already live: no wait
        assert await subs.wait_live(b"RESPONSE:nobody", timeout=0.01) is False
        assert subs.waiting(b"RESPONSE:nobody") == 0

    asyncio.run(main())


# -- Notifier on a real XPUB -------------------------------------------------------------------
def run_with_xpub(body: Callable[[zmq.asyncio.Context, zmq.asyncio.Socket, str], Awaitable[None]]) -> None:
    async def main() -> None:
        ctx = zmq.asyncio.Context()
        endpoint = f"inproc://relay-parts-{next(_endpoints)}"
        xpub = ctx.socket(zmq.XPUB)
        xpub.bind(endpoint)
        try:
            await body(ctx, xpub, endpoint)
        finally:
            xpub.close(linger=0)
            ctx.term()

    asyncio.run(main())


def test_notifier_holds_until_the_subscriber_arrives_then_sends_at_once():
    async def body(ctx: zmq.asyncio.Context, xpub: zmq.asyncio.Socket, endpoint: str) -> None:
        notifier = Notifier(xpub, Subscriptions(), hold_seconds=60, secrets={"s3.secret-access-key": "hunter2hunter2"})
        watch = asyncio.create_task(notifier.watch())
        sub = ctx.socket(zmq.SUB)
        try:
            await notifier.publish(note("r1", error_message="bad key hunter2hunter2"))
            assert notifier.subscriptions.held_count == 1
            sub.connect(endpoint)
            sub.subscribe(notification_topic("alice"))
            topic, frame = await asyncio.wait_for(sub.recv_multipart(), 10)
            first = decode_frame(frame)
            assert topic == b"RESPONSE:alice" and first.request_id == "r1"
            assert "hunter2" not in first.error_message and "***" in first.error_message
            assert notifier.subscriptions.held_count == 0
            await notifier.publish(note("r2"))  # live now: sent straight away
            assert notifier.subscriptions.held_count == 0
            assert decode_frame((await asyncio.wait_for(sub.recv_multipart(), 10))[1]).request_id == "r2"
        finally:
            watch.cancel()
            sub.close(linger=0)

    run_with_xpub(body)


def test_notifier_drops_what_nobody_subscribed_to_in_time(caplog):
    caplog.set_level(logging.INFO, logger="dexorder_feeds.relay.server")

    async def body(ctx: zmq.asyncio.Context, xpub: zmq.asyncio.Socket, endpoint: str) -> None:
        notifier = Notifier(xpub, Subscriptions(), hold_seconds=0.05)
        expiry = asyncio.create_task(notifier.expire_held())
        try:
            await notifier.publish(note("first", client_id="ghost"))
            await notifier.publish(note("again", client_id="ghost"), repeat=True)
            await eventually(lambda: notifier.subscriptions.held_count == 0, "the held notifications to expire")
        finally:
            expiry.cancel()

    run_with_xpub(body)
    dropped = {r.getMessage(): r.levelno for r in caplog.records if "dropped" in r.getMessage()}
    assert dropped == {
        "relay: dropped the notification of request first: nobody subscribed to 'RESPONSE:ghost' within 0 s":
            logging.WARNING,
        "relay: dropped a repeated notification of request again: 'RESPONSE:ghost' unsubscribed meanwhile":
            logging.INFO,
    }


# -- OverlapQueue and Scheduler ----------------------------------------------------------------
def tasks(items) -> list:
    return [item.task for item in items]


def test_overlap_queue_finds_earlier_overlapping_requests_and_forgets_finished_ones():
    async def main() -> None:
        queue = OverlapQueue()
        gate = asyncio.Event()
        first = asyncio.create_task(gate.wait())
        other = asyncio.create_task(gate.wait())
        queue.add(("SIM:BTC/USDT", 3600), 0, 10, first)
        queue.add(("SIM:ETH/USDT", 3600), 0, 10, other)
        assert tasks(queue.earlier(("SIM:BTC/USDT", 3600), 10, 20)) == [first]  # touching ends overlap
        assert tasks(queue.earlier(("SIM:BTC/USDT", 3600), 11, 20)) == []
        assert tasks(queue.earlier(("SIM:BTC/USDT", 60), 0, 10)) == []  # another period is another series
        gate.set()
        await asyncio.gather(first, other)
        await asyncio.sleep(0)  # done callbacks run on the next loop turn
        assert len(queue) == 0 and tasks(queue.earlier(("SIM:BTC/USDT", 3600), 0, 10)) == []

    asyncio.run(main())


def test_a_request_waits_for_running_overlapping_ones_never_for_a_chain_of_waiting_ones():
    async def main() -> None:
        queue = OverlapQueue()
        gate = asyncio.Event()
        key = ("SIM:BTC/USDT", 60)
        running = asyncio.create_task(gate.wait())
        queue.add(key, 0, 10, running)  # runs at once
        waiting = asyncio.create_task(gate.wait())
        assert tasks(queue.earlier(key, 5, 20)) == [running]
        entry = queue.add(key, 5, 20, waiting, running=False)  # waits for the first
        # A third one overlapping only the waiting one does not queue behind it (no chain) ...
        assert tasks(queue.earlier(key, 15, 30)) == []
        # ... and one overlapping both waits for the running one only.
        assert tasks(queue.earlier(key, 8, 18)) == [running]
        entry.running = True  # the first is done, the second runs: now it is waited for
        assert tasks(queue.earlier(key, 15, 30)) == [waiting]
        gate.set()
        await asyncio.gather(running, waiting)

    asyncio.run(main())


def test_requests_released_together_store_each_candle_once(warehouse):
    """Overlapping requests that stop waiting at the same moment run together: the shared part
    may be fetched twice, but the committer stores it once and each notification counts it."""
    historian = Historian(warehouse)
    published: list[Notification] = []

    async def publish(notification: Notification) -> None:
        published.append(notification)

    async def main() -> None:
        scheduler = Scheduler(historian, workers=4, results=ResultCache(), publish=publish)
        try:
            scheduler.submit(history_request("first", SEED_START, SEED_START + 24 * H - 1), received=0.0)
            scheduler.submit(history_request("second", SEED_START + 12 * H, SEED_START + 72 * H - 1), received=0.0)
            scheduler.submit(history_request("third", SEED_START + 48 * H, SEED_START + 96 * H - 1), received=0.0)
            scheduler.submit(history_request("fourth", SEED_START + 60 * H, SEED_START + 120 * H - 1), received=0.0)
            await asyncio.gather(*scheduler.running())
        finally:
            scheduler.close()

    asyncio.run(main())
    assert {n.request_id: n.row_count for n in published} == {"first": 24, "second": 60, "third": 48, "fourth": 60}
    assert all(n.status == Notification.OK for n in published)
    stamps = warehouse.read_candles(SEED_TICKER, 3600, (0, 2**62))[0]["timestamp"].to_pylist()
    assert stamps == list(range(SEED_START, SEED_START + 120 * H, H))
    assert warehouse.read_coverage(SEED_TICKER, 3600) == [(SEED_START, SEED_START + 120 * H)]


def test_a_request_overlapping_a_running_one_fetches_the_rest_of_its_range_at_once(warehouse, monkeypatch):
    """While the first request's source call is held, the second (overlapping its end) already
    asks the source for the part the first does not cover; its notification comes after the
    first's, with all its candles, and no candle was asked for or stored twice."""
    import threading

    from dexorder_feeds.ingest.sources.sim import SimulatedSource

    held = threading.Event()
    asked: list[tuple[int, int]] = []
    fetch = SimulatedSource.fetch_candles

    def gated(self, ticker, period_seconds, start, stop):
        asked.append((start, stop))
        if start == SEED_START:  # the first request's call waits until the test lets it go
            assert held.wait(30)
        return fetch(self, ticker, period_seconds, start, stop)

    monkeypatch.setattr(SimulatedSource, "fetch_candles", gated)
    published: list[Notification] = []

    async def publish(notification: Notification) -> None:
        published.append(notification)

    async def main() -> None:
        scheduler = Scheduler(Historian(warehouse), workers=4, results=ResultCache(), publish=publish)
        try:
            scheduler.submit(history_request("first", SEED_START, SEED_START + 48 * H - 1), received=0.0)
            await asyncio.sleep(0.2)  # the first is in its source call
            scheduler.submit(history_request("second", SEED_START + 24 * H, SEED_START + 96 * H - 1, "bob"),
                             received=0.0)
            for _ in range(100):  # the second's own part is asked for while the first is held
                if len(asked) == 2:
                    break
                await asyncio.sleep(0.05)
            assert asked == [(SEED_START, SEED_START + 48 * H), (SEED_START + 48 * H, SEED_START + 96 * H)]
            assert published == []  # the second waits for the first
            held.set()
            await asyncio.gather(*scheduler.running())
        finally:
            held.set()
            scheduler.close()

    asyncio.run(main())
    assert [(n.request_id, n.row_count, n.status) for n in published] == [
        ("first", 48, Notification.OK), ("second", 72, Notification.OK)]
    assert len(asked) == 2  # the second's own run found its whole range stored
    stamps = warehouse.read_candles(SEED_TICKER, 3600, (0, 2**62))[0]["timestamp"].to_pylist()
    assert stamps == list(range(SEED_START, SEED_START + 96 * H, H))
    assert warehouse.read_coverage(SEED_TICKER, 3600) == [(SEED_START, SEED_START + 96 * H)]


def history_request(request_id: str, start: int = SEED_START, end: int = SEED_END,
                    client_id: str = "alice") -> HistoryRequest:
    return HistoryRequest(request_id=request_id, client_id=client_id, ticker=SEED_TICKER, period_seconds=3600,
                          start_time=start, end_time=end)


def test_scheduler_runs_overlapping_requests_in_arrival_order_and_remembers_results(warehouse):
    historian = Historian(warehouse)
    published: list[Notification] = []

    async def publish(notification: Notification) -> None:
        published.append(notification)

    async def main() -> None:
        scheduler = Scheduler(historian, workers=2, results=ResultCache(), publish=publish)
        try:
            scheduler.submit(history_request("wide"), received=0.0)
            scheduler.submit(history_request("inside", SEED_START + 24 * H, SEED_START + 48 * H - 1), received=0.0)
            assert len(scheduler) == 2 and "wide" in scheduler and "inside" in scheduler
            await asyncio.gather(*scheduler.running())
        finally:
            scheduler.close()
        assert len(scheduler) == 0
        assert "wide" in scheduler.results and "inside" in scheduler.results

    asyncio.run(main())
    assert [n.request_id for n in published] == ["wide", "inside"]
    assert [Notification.Status.Name(n.status) for n in published] == ["OK", "OK"]
    assert [n.row_count for n in published] == [168, 24]


def test_a_request_queued_when_the_scheduler_stops_is_told_to_retry_and_not_remembered(warehouse):
    published: list[Notification] = []

    async def publish(notification: Notification) -> None:
        published.append(notification)

    async def main() -> None:
        scheduler = Scheduler(Historian(warehouse), workers=1, results=ResultCache(), publish=publish)
        scheduler.stop_queue()
        scheduler.submit(history_request("late"), received=0.0)
        await asyncio.gather(*scheduler.running())
        scheduler.close()
        assert "late" not in scheduler.results and len(scheduler) == 0

    asyncio.run(main())
    [retry] = published
    assert retry.status == Notification.ERROR and retry.error_type == "RelayUnavailableError"
    assert retry.error_message == SHUTDOWN_MESSAGE and retry.client_id == "alice"


# -- Intake ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("fields", "problem"), [
    ({"request_id": "r" * (MAX_ID_LENGTH + 1), "client_id": "c"}, f"longer than {MAX_ID_LENGTH}"),
    ({"request_id": "r", "client_id": "c\n"}, "client_id must be printable text"),
    ({"request_id": "r" * MAX_ID_LENGTH, "client_id": "c"}, ""),
])
def test_id_problem(fields, problem):
    found = id_problem(SubscribeCheck(**fields))
    assert (problem in found) if problem else found == ""


def test_intake_refuses_beyond_max_queued_and_replays_a_finished_request(warehouse):
    historian = Historian(warehouse)

    async def main() -> list[RequestReply]:
        ctx = zmq.asyncio.Context()
        endpoint = f"inproc://relay-parts-{next(_endpoints)}"
        router, xpub, dealer = ctx.socket(zmq.ROUTER), ctx.socket(zmq.XPUB), ctx.socket(zmq.DEALER)
        router.bind(endpoint)
        xpub.bind(endpoint + "-notes")
        dealer.connect(endpoint)
        notifier = Notifier(xpub, Subscriptions(), hold_seconds=60)
        scheduler = Scheduler(historian, workers=1, results=ResultCache(), publish=notifier.publish)
        intake = Intake(router, historian, scheduler, notifier, max_queued=0)
        intake.start()

        async def ask(request: HistoryRequest) -> RequestReply:
            await dealer.send_multipart([b"", encode_frame(request)])
            reply = decode_frame((await asyncio.wait_for(dealer.recv_multipart(), 30))[-1])
            assert isinstance(reply, RequestReply)
            return reply

        try:
            refused = await ask(history_request("full"))  # nothing is queued, but the bound is 0
            scheduler.results.remember(note("done", client_id="alice", row_count=168))
            replayed = await ask(history_request("done", client_id="bob"))  # a result: allowed past the bound
            assert len(scheduler) == 0  # replayed from the cache, not run again
            held = notifier.subscriptions.subscribed(b"RESPONSE:bob")
            assert [h.request_id for h in held] == ["done"] and held[0].repeat
            assert decode_frame(held[0].frame).client_id == "bob"
            return [refused, replayed]
        finally:
            await intake.stop()
            scheduler.close()
            for sock in (xpub, dealer):
                sock.close(linger=0)
            ctx.term()

    refused, replayed = asyncio.run(main())
    assert not refused.accepted and refused.error_type == "RelayUnavailableError"
    assert "retry" in refused.reason
    assert replayed.accepted and replayed.request_id == "done"


# -- sockets and signals -----------------------------------------------------------------------
def test_bind_sockets_resolves_wildcard_ports_and_says_when_an_endpoint_is_taken():
    ctx = zmq.asyncio.Context()
    try:
        first = bind_sockets(ctx, "tcp://127.0.0.1:*", "tcp://127.0.0.1:*", None)
        try:
            assert first.relay_endpoint.startswith("tcp://127.0.0.1:") and not first.relay_endpoint.endswith(":*")
            assert first.notification_endpoint != first.relay_endpoint
            with pytest.raises(InvalidRequestError) as taken:
                bind_sockets(ctx, "tcp://127.0.0.1:*", first.notification_endpoint, None)
            assert "notification endpoint" in str(taken.value) and "choose another address or port" in str(taken.value)
        finally:
            close_now(first.router, first.xpub)
        assert first.router.closed and first.xpub.closed
    finally:
        ctx.destroy(linger=0)


def test_the_first_shutdown_signal_asks_to_stop_and_sighup_reloads():
    calls: list[str] = []
    handlers = SignalHandlers(on_stop=lambda: calls.append("stop"), on_reload=lambda: calls.append("reload"),
                              in_flight=lambda: 3)
    handlers.on_signal(signal.SIGTERM)
    assert calls == ["stop"] and handlers.signals_seen == 1

    async def main() -> None:  # installed on a loop in the main thread: SIGHUP reaches on_reload
        loop = asyncio.get_running_loop()
        handlers.install(loop)
        try:
            assert signal.getsignal(signal.SIGHUP) not in (signal.SIG_DFL, signal.SIG_IGN, None)
            os.kill(os.getpid(), signal.SIGHUP)
            await eventually(lambda: "reload" in calls, "SIGHUP to call on_reload")
        finally:
            SignalHandlers.remove(loop)

    asyncio.run(main())
    assert calls == ["stop", "reload"]
