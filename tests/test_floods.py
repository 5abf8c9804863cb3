"""Floods against the relay's notification socket: what a peer may make the relay keep is bounded.

Unit level: :class:`Subscriptions` admits only ``RESPONSE:{client_id}`` topics, at most
``max_per_peer`` per peer and ``max_topics`` in all; a :class:`Notifier` on an ``XPUB_MANUAL``
socket applies only what was admitted (a refused topic never receives a notification).

Against a served relay (a real ``dexorder-feeds serve`` process): a peer speaking raw ZMTP
subscribes to 200,000 topics, first of ~1 KB (the relay disconnects it at the first one), then
shaped like a client's (the relay disconnects it once it floods); the relay's resident memory grows
by under 64 MB and is back near where it was after the peer left, and a good client works during
and after. The figures are printed; ``benchmarks/bench_flood.py`` reports them too.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import sys
import threading
import time
from pathlib import Path

import pytest
import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message
from relay_process import relay_process

from dexorder_feeds.client.history_client import HistoryClient
from dexorder_feeds.relay.notifications import Notifier
from dexorder_feeds.relay.peers import _bytes_received
from dexorder_feeds.relay.sockets import limit_subscription_intake
from dexorder_feeds.relay.subscriptions import MAX_ID_LENGTH, MAX_SUBSCRIPTION_BYTES, Subscriptions, topic_problem
from dexorder_feeds.vocabulary import errors
from dexorder_feeds.wire import Notification, decode_frame, notification_topic

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from bench_flood import flood  # noqa: E402  - the benchmark's raw ZMTP flooder

SEED_START = 1735689600000000  # 2025-01-01 00:00 UTC
HOUR_US = 3600 * 1_000_000
_endpoints = itertools.count()


# -- the bookkeeping -------------------------------------------------------------------------------
@pytest.mark.parametrize("topic,ok", [
    (b"RESPONSE:alice", True),
    (b"RESPONSE:" + b"a" * MAX_ID_LENGTH, True),
    (("RESPONSE:" + "é" * MAX_ID_LENGTH).encode(), True),
    (b"RESPONSE:" + b"a" * (MAX_ID_LENGTH + 1), False),
    (b"RESPONSE:", False),
    (b"", False),
    (b"RESP", False),
    (b"OTHER:alice", False),
    (b"RESPONSE:\xff\xfe", False),
    (b"RESPONSE:a\nb", False),
])
def test_only_response_topics_with_a_client_id_are_admissible(topic, ok):
    assert (topic_problem(topic) == "") is ok
    assert len(topic) + 1 <= MAX_SUBSCRIPTION_BYTES or not ok


def test_admission_caps_each_peer_and_the_total_and_frees_on_leaving():
    subs = Subscriptions(max_per_peer=2, max_topics=3)
    for name in (b"a", b"b"):
        assert subs.admit(b"RESPONSE:" + name, "conn-1") == ""
        subs.subscribed(b"RESPONSE:" + name, "conn-1")
    refused = subs.admit(b"RESPONSE:c", "conn-1")
    assert "per-peer limit" in refused and "conn-1" in refused
    assert subs.refusal(b"RESPONSE:c") == refused
    assert subs.admit(b"RESPONSE:c", "conn-2") == ""  # another peer still may
    subs.subscribed(b"RESPONSE:c", "conn-2")
    assert subs.refusal(b"RESPONSE:c") == ""  # live now: the old refusal is forgotten
    assert "limit of 3 subscriptions" in subs.admit(b"RESPONSE:d", "conn-3")
    assert "RESPONSE:{client_id}" in subs.admit(b"junk", "conn-3")
    assert subs.live_count == 3 and subs.peer_count("conn-1") == 2
    # conn-1 leaves: libzmq reports its topics unsubscribed without saying whose
    assert subs.unsubscribed(b"RESPONSE:a") and subs.unsubscribed(b"RESPONSE:b")
    assert subs.unsubscribed(b"RESPONSE:never") is False
    assert subs.live_count == 1 and subs.peer_count("conn-1") == 0
    assert subs.admit(b"RESPONSE:d", "conn-3") == ""


# -- the notifier on a real XPUB_MANUAL socket -----------------------------------------------------
def test_a_refused_subscription_never_receives_a_notification():
    async def main() -> tuple[list[bytes], int]:
        ctx = zmq.asyncio.Context()
        endpoint = f"inproc://floods-{next(_endpoints)}"
        xpub = ctx.socket(zmq.XPUB)
        xpub.setsockopt(zmq.XPUB_MANUAL, 1)
        xpub.bind(endpoint)
        notifier = Notifier(xpub, Subscriptions(max_per_peer=2, max_topics=100), hold_seconds=60, manual=True)
        watch = asyncio.create_task(notifier.watch())
        sub = ctx.socket(zmq.SUB)
        try:
            sub.connect(endpoint)
            for name in ("a", "b", "c", "d"):  # c and d are over this peer's limit of 2
                sub.subscribe(notification_topic(name))
            sub.subscribe(b"")  # everything: not a client's topic, never applied
            await _eventually(lambda: notifier.refused == 3, "three refusals")
            for name in ("c", "d", "a", "b"):
                await notifier.publish(Notification(request_id=f"r-{name}", client_id=name, status=Notification.OK))
            got = []
            while len(got) < 2:
                topic, frame = await asyncio.wait_for(sub.recv_multipart(), 10)
                got.append(decode_frame(frame).request_id.encode())
            extra = await sub.poll(300)  # nothing else arrives (c and d were held, never sent)
            return got, extra
        finally:
            watch.cancel()
            sub.close(linger=0)
            xpub.close(linger=0)
            ctx.term()

    got, extra = asyncio.run(main())
    assert got == [b"r-a", b"r-b"] and extra == 0


async def _eventually(condition, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.01)


# -- what libzmq takes in from a peer ------------------------------------------------------------------
def test_libzmq_takes_in_a_flood_no_faster_than_the_relay_reads_it():
    """libzmq records every subscription message it moves out of a connection's pipe until that
    connection ends, and it moves them in a loop that lasts as long as its I/O thread keeps the
    pipe filled: the relay's notification socket keeps both the pipe (``RCVHWM``) and the
    kernel's buffer (``RCVBUF``) small, so a flood waits in the flooder's own buffers until the
    relay reads it (and the relay looks for a flooder every 128 messages it reads)."""
    ctx = zmq.Context()
    xpub = ctx.socket(zmq.XPUB)
    limit_subscription_intake(xpub)
    xpub.bind("tcp://127.0.0.1:0")
    monitor = xpub.get_monitor_socket(zmq.EVENT_ACCEPTED)
    flooding = threading.Thread(target=flood, daemon=True,
                                args=(xpub.getsockopt_string(zmq.LAST_ENDPOINT), 200_000,
                                      lambda: b"RESPONSE:" + secrets.token_hex(16).encode(), 0.1))
    try:
        flooding.start()
        assert monitor.poll(10_000), "the flooder never connected"
        fd = int(parse_monitor_message(monitor.recv_multipart())["value"])
        time.sleep(1)  # nobody reads the socket: what has the relay's side taken in?
        unread = _bytes_received(fd)
        for _ in range(1000):
            assert xpub.poll(10_000)
            xpub.recv()
        time.sleep(0.2)
        after_reading = _bytes_received(fd)
        print(f"\ntaken in unread: {unread:,} bytes; after reading 1,000 messages: {after_reading:,} bytes "
              f"(the flood is {200_000 * 45:,} bytes)")
        assert unread < 256 * 1024
        assert after_reading < unread + 1000 * 45 + 256 * 1024
    finally:
        monitor.close(linger=0)
        xpub.close(linger=0)
        ctx.term()
        flooding.join(timeout=30)


# -- a served relay ---------------------------------------------------------------------------------
def _good_client(relay) -> str:
    async def main() -> str:
        async with HistoryClient(relay.relay_endpoint, relay.notification_endpoint, connect_timeout=30) as client:
            result = await client.request_historical_ohlc("SIM:GOOD/USDT", 3600, SEED_START,
                                                          SEED_START + 24 * HOUR_US - 1, timeout=60)
            return result["status"]

    return asyncio.run(main())


@pytest.mark.parametrize("shape", ["oversized", "client-shaped"])
def test_subscription_flood_is_cut_off_and_memory_stays_bounded(tmp_path, shape):
    topics = 200_000
    make = {"oversized": lambda: b"RESPONSE:" + secrets.token_hex(495).encode(),  # ~1 KB
            "client-shaped": lambda: b"RESPONSE:" + secrets.token_hex(16).encode()}[shape]
    with relay_process(tmp_path / "relay", workers=1) as relay:
        assert _good_client(relay) == "OK"
        time.sleep(1)
        before = relay.rss_kb()
        peak = before
        sent, cut_off = flood(relay.notification_endpoint, topics, make)
        for _ in range(40):  # the relay reads what arrived
            peak = max(peak, relay.rss_kb())
            time.sleep(0.05)
        during = _good_client(relay)
        peak = max(peak, relay.rss_kb())
        flood.last_socket.close()
        time.sleep(3)
        after = relay.rss_kb()
        assert _good_client(relay) == "OK"
        logs = relay.logs()
    print(f"\n{shape} subscription flood of {topics:,} topics: {sent:,} sent before the relay cut the peer off; "
          f"relay RSS {before / 1024:.0f} MB, peak +{(peak - before) / 1024:.1f} MB, "
          f"{(after - before) / 1024:+.1f} MB after the peer left")
    assert during == "OK"
    assert cut_off  # the relay closed the peer's connection
    if shape == "oversized":  # ~200 MB cannot all sit in socket buffers: cut off part-way
        assert sent < topics
    assert (peak - before) < 64 * 1024
    assert (after - before) < 16 * 1024
    if shape == "client-shaped":
        assert "disconnected the notification peer" in logs


def test_a_client_refused_by_the_subscription_limit_is_told_so(tmp_path):
    """With the total limit reached, a new client's connect fails at once with the reason, not
    after its whole connect timeout with a guess."""
    from dexorder_feeds.ingest.historian import Historian
    from dexorder_feeds.relay.server import RelayServer
    from dexorder_feeds.storage.catalog import open_catalog
    from dexorder_feeds.storage.warehouse import Warehouse

    warehouse = Warehouse(open_catalog(f"sqlite:///{tmp_path / 'catalog.db'}"))
    server = RelayServer(Historian(warehouse), "tcp://127.0.0.1:*", "tcp://127.0.0.1:*", max_topics=1)
    try:
        server.start()

        async def main() -> BaseException | None:
            async with HistoryClient(server.relay_endpoint, server.notification_endpoint):
                second = HistoryClient(server.relay_endpoint, server.notification_endpoint, connect_timeout=20)
                began = time.monotonic()
                try:
                    await second.connect()
                except BaseException as exc:  # noqa: BLE001 - checked below
                    return exc
                finally:
                    await second.close()
                    print(f"\nrefused connect answered in {time.monotonic() - began:.2f} s")
            return None

        refused = asyncio.run(main())
    finally:
        server.stop()
        warehouse.close()
    assert isinstance(refused, errors.RelayUnavailableError), refused
    assert "limit of 1 subscriptions" in str(refused)


def test_serve_takes_the_subscription_limits_from_its_command_line(tmp_path):
    with relay_process(tmp_path / "relay", extra_args=["--max-topics", "1"]) as relay:
        async def main() -> BaseException | None:
            async with HistoryClient(relay.relay_endpoint, relay.notification_endpoint):
                try:
                    async with HistoryClient(relay.relay_endpoint, relay.notification_endpoint, connect_timeout=20):
                        return None
                except BaseException as exc:  # noqa: BLE001 - checked below
                    return exc

        refused = asyncio.run(main())
        logs = relay.logs()
    assert isinstance(refused, errors.RelayUnavailableError), refused
    assert "limit of 1 subscriptions" in str(refused)
    assert "refused a subscription" in logs
