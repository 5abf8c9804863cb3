"""The relay server, spoken to with raw ZeroMQ sockets, against a real ``dexorder-feeds serve``.

Also: the envelope rule (REQ, DEALER with and without delimiter, a ``zmq.proxy`` device),
idempotent request ids, racing requests, held notifications (slow joiners), graceful SIGTERM,
and a few in-process :class:`RelayServer` checks of its time limits.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator

import pyarrow.compute as pc
import pytest
import zmq
from relay_process import RelayProcess, free_tcp_port, relay_process

from dexorder_feeds import hookimpl
from dexorder_feeds.vocabulary import errors
from dexorder_feeds.storage.catalog import open_catalog
from dexorder_feeds.config import Settings
from dexorder_feeds.client.history_client import HistoryClient
from dexorder_feeds.plugins import get_plugin_manager
from dexorder_feeds.relay.server import MAX_MESSAGE_BYTES, RelayServer
from dexorder_feeds.storage.warehouse import Warehouse
from dexorder_feeds.wire import (
    MAX_FRAME_BYTES,
    HistoryRequest,
    Notification,
    RequestReply,
    SubscribeCheck,
    decode_frame,
    encode_frame,
    notification_topic,
)

SEED_TICKER = "SIM:BTC/USDT"
SEED_START = 1735689600000000
SEED_END = 1736294399000000
DAY_US = 86400 * 1_000_000
EMPTY_START, EMPTY_END = SEED_START + 1, SEED_START + 2  # no candle in range: NOT_FOUND at once
RECV_MS = 5000


@pytest.fixture(scope="module")
def relay(tmp_path_factory) -> Iterator[RelayProcess]:
    with relay_process(tmp_path_factory.mktemp("relay")) as process:
        yield process


@pytest.fixture(scope="module")
def ctx() -> Iterator[zmq.Context]:
    context = zmq.Context()
    yield context
    context.term()


def _socket(ctx: zmq.Context, kind: int, endpoint: str) -> zmq.Socket:
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, RECV_MS)
    sock.connect(endpoint)
    return sock


class Peer:
    """A raw client: a DEALER (sending the empty delimiter) and a SUB on its own topic."""

    def __init__(self, ctx: zmq.Context, relay: RelayProcess, client_id: str | None = None) -> None:
        self.client_id = client_id or uuid.uuid4().hex
        self.dealer = _socket(ctx, zmq.DEALER, relay.relay_endpoint)
        self.sub = ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.RCVTIMEO, RECV_MS)
        self.sub.setsockopt(zmq.SUBSCRIBE, notification_topic(self.client_id))
        self.sub.connect(relay.notification_endpoint)
        reply = self.ask(encode_frame(SubscribeCheck(client_id=self.client_id, request_id="check")))
        assert reply.accepted, reply.reason

    def ask(self, payload: bytes) -> RequestReply:
        self.dealer.send_multipart([b"", payload])
        frames = self.dealer.recv_multipart()
        assert frames[0] == b""  # our delimiter came back in front of the reply
        reply = decode_frame(frames[-1], expect=(RequestReply,))
        return reply  # type: ignore[return-value]

    def request(self, ticker: str = SEED_TICKER, period: int = 3600, start: int = EMPTY_START,
                end: int = EMPTY_END, request_id: str | None = None) -> HistoryRequest:
        return HistoryRequest(request_id=request_id or uuid.uuid4().hex, client_id=self.client_id, ticker=ticker,
                              period_seconds=period, start_time=start, end_time=end)

    def notification(self, timeout_ms: int = RECV_MS) -> Notification:
        self.sub.setsockopt(zmq.RCVTIMEO, timeout_ms)
        topic, frame = self.sub.recv_multipart()
        assert topic == notification_topic(self.client_id)
        return decode_frame(frame, expect=(Notification,))  # type: ignore[return-value]

    def no_notification(self, wait_ms: int = 300) -> bool:
        return not self.sub.poll(wait_ms)

    def close(self) -> None:
        self.dealer.close(0)
        self.sub.close(0)


@pytest.fixture
def peer(ctx, relay) -> Iterator[Peer]:
    p = Peer(ctx, relay)
    yield p
    p.close()


def _assert_serves(peer: Peer) -> None:
    """The relay still accepts and completes a good request."""
    request = peer.request()
    reply = peer.ask(encode_frame(request))
    assert reply.accepted and reply.request_id == request.request_id
    notification = peer.notification()
    assert notification.request_id == request.request_id
    assert notification.status == Notification.NOT_FOUND


def _valid_request_frame() -> bytes:
    return encode_frame(HistoryRequest(request_id="r" * 20, client_id="c" * 20, ticker=SEED_TICKER,
                                       period_seconds=3600, start_time=SEED_START, end_time=SEED_END))


BAD_FRAMES = {
    "garbage": (b"\x8f\x00garbage bytes, not a frame", "unsupported wire version 143"),
    "empty": (b"", "too short"),
    "one-byte": (b"\x01", "too short"),
    "truncated": (_valid_request_frame()[:-7], "malformed HistoryRequest payload"),
    "unknown-version": (b"\x02" + _valid_request_frame()[1:], "unsupported wire version 2"),
    "unknown-type": (b"\x01\x09" + _valid_request_frame()[2:], "unknown message type 9"),
    "malformed-protobuf": (b"\x01\x01\xff\xff\xff\xff", "malformed HistoryRequest payload"),
    "wrong-type-reply": (encode_frame(RequestReply(request_id="rr", accepted=True)), "a RequestReply is not a request"),
    "wrong-type-notification": (encode_frame(Notification(request_id="nn", status=Notification.OK)),
                                "a Notification is not a request"),
    "oversized": (b"\x01\x01" + b"\x00" * MAX_FRAME_BYTES, f"exceeds the {MAX_FRAME_BYTES}-byte limit"),
    "no-request-id": (encode_frame(HistoryRequest(client_id="c", ticker=SEED_TICKER, period_seconds=3600,
                                                  start_time=SEED_START, end_time=SEED_END)),
                      "needs a request_id and a client_id"),
    "check-without-client": (encode_frame(SubscribeCheck(request_id="k")), "needs a client_id"),
}


@pytest.mark.parametrize("name", list(BAD_FRAMES))
def test_invalid_frames_get_a_protocol_error_reply(peer, name):
    payload, reason = BAD_FRAMES[name]
    reply = peer.ask(payload)
    assert not reply.accepted
    assert reply.error_type == "ProtocolError"
    assert reason in reply.reason
    if name.startswith("wrong-type"):
        assert reply.request_id in ("rr", "nn")  # echoed so a client can match it
    _assert_serves(peer)


def test_unusable_envelope_is_dropped_with_a_log_line(ctx, relay, peer):
    dealer = _socket(ctx, zmq.DEALER, relay.relay_endpoint)
    try:
        dealer.send_multipart([b""] * 40 + [encode_frame(peer.request())])
        assert not dealer.poll(300)  # no reply is possible
        assert relay.wait_for_log("dropping a message with an unusable envelope (42 frames)", 5)
    finally:
        dealer.close(0)
    _assert_serves(peer)


def test_frame_over_libzmq_limit_disconnects_the_peer_only(ctx, relay, peer):
    dealer = _socket(ctx, zmq.DEALER, relay.relay_endpoint)
    try:
        dealer.send_multipart([b"", b"\x01\x01" + b"\x00" * MAX_MESSAGE_BYTES])
        assert not dealer.poll(300)
    finally:
        dealer.close(0)
    _assert_serves(peer)


def test_req_and_bare_dealer_get_replies_by_the_envelope_rule(ctx, relay, peer):
    req = _socket(ctx, zmq.REQ, relay.relay_endpoint)
    bare = _socket(ctx, zmq.DEALER, relay.relay_endpoint)
    try:
        request = peer.request()
        req.send(encode_frame(request))
        reply = decode_frame(req.recv(), expect=(RequestReply,))
        assert reply.accepted and reply.request_id == request.request_id
        assert peer.notification().request_id == request.request_id
        req.send(b"garbage")  # a REQ is not wedged by a rejection either
        assert "unsupported wire version" in decode_frame(req.recv()).reason

        second = peer.request()
        bare.send(encode_frame(second))  # no delimiter: the reply comes back without one
        frames = bare.recv_multipart()
        assert len(frames) == 1
        assert decode_frame(frames[0]).request_id == second.request_id
        assert peer.notification().request_id == second.request_id
    finally:
        req.close(0)
        bare.close(0)


def test_through_a_zmq_proxy_device(relay):
    """ROUTER/DEALER ``zmq.proxy`` between the clients and the relay: the envelope rule at work."""
    context = zmq.Context()
    front_endpoint = f"tcp://127.0.0.1:{free_tcp_port()}"
    frontend, backend = context.socket(zmq.ROUTER), context.socket(zmq.DEALER)
    control_in, control_out = context.socket(zmq.PAIR), context.socket(zmq.PAIR)
    for sock in (frontend, backend, control_in, control_out):
        sock.setsockopt(zmq.LINGER, 0)
    frontend.bind(front_endpoint)
    backend.connect(relay.relay_endpoint)
    control_in.bind("inproc://proxy-control")
    control_out.connect("inproc://proxy-control")
    device = threading.Thread(target=zmq.proxy_steerable, args=(frontend, backend, None, control_in), daemon=True)
    device.start()

    async def main() -> tuple[dict, dict]:
        async with HistoryClient(front_endpoint, relay.notification_endpoint) as client:
            return await asyncio.gather(
                client.request_historical_ohlc(SEED_TICKER, 3600, SEED_START, SEED_END),
                client.request_historical_ohlc(SEED_TICKER, 3600, EMPTY_START, EMPTY_END),
            )

    try:
        ok, not_found = asyncio.run(main())
        req = _socket(context, zmq.REQ, front_endpoint)
        req.send(b"\x01\x07")
        rejected = decode_frame(req.recv())
        req.close(0)
    finally:
        control_out.send(b"TERMINATE")
        device.join(5)
        for sock in (frontend, backend, control_in, control_out):
            sock.close(0)
        context.term()
    assert not device.is_alive()
    assert ok["status"] == "OK" and ok["row_count"] == 168
    assert not_found["status"] == "NOT_FOUND"
    assert not rejected.accepted and "unknown message type 7" in rejected.reason


def _coverage_rows(catalog_uri: str, request_id: str) -> int:
    warehouse = Warehouse(open_catalog(catalog_uri))
    try:
        table = warehouse.read_coverage_table()
    finally:
        warehouse.close()
    return int(pc.sum(pc.equal(table["request_id"], request_id)).as_py() or 0)


def test_repeated_request_id_runs_once(relay, peer):
    # a month of 1-minute candles: long enough that the repeat arrives while it runs
    request = peer.request("SIM:REPEAT/USDT", 60, SEED_START, SEED_START + 30 * DAY_US - 1)
    first, again = peer.ask(encode_frame(request)), peer.ask(encode_frame(request))
    assert first.accepted and again.accepted
    done = peer.notification(20_000)
    assert done.status == Notification.OK and done.row_count == 30 * 1440
    assert peer.no_notification(300)  # the in-flight repeat published nothing of its own
    assert relay.wait_for_log(f"request {request.request_id} repeated while in flight", 1)

    after = peer.ask(encode_frame(request))  # after completion: the stored notification again
    assert after.accepted
    republished = peer.notification()
    assert republished == done
    assert relay.wait_for_log(f"request {request.request_id} repeated after it finished", 1)

    log_text = relay.logs()
    assert log_text.count(f"dexorder_feeds.ingest.historian: request {request.request_id} ") == 1
    assert log_text.count(f"relay request {request.request_id} ") == 1
    assert _coverage_rows(relay.catalog_uri, request.request_id) == 1


def test_racing_requests_for_one_range_store_each_candle_once(ctx, relay, peer):
    other = Peer(ctx, relay)
    try:
        start, end = SEED_START, SEED_START + 7 * DAY_US - 1
        requests = [peer.request("SIM:RACE/USDT", 60, start, end), peer.request("SIM:RACE/USDT", 60, start, end),
                    other.request("SIM:RACE/USDT", 60, start, end)]
        peer.dealer.send_multipart([b"", encode_frame(requests[0])])
        peer.dealer.send_multipart([b"", encode_frame(requests[1])])
        other.dealer.send_multipart([b"", encode_frame(requests[2])])
        replies = [decode_frame(peer.dealer.recv_multipart()[-1]) for _ in range(2)]
        replies.append(decode_frame(other.dealer.recv_multipart()[-1]))
        assert all(r.accepted for r in replies)
        notifications = [peer.notification(20_000), peer.notification(20_000), other.notification(20_000)]
    finally:
        other.close()
    assert sorted(n.request_id for n in notifications) == sorted(r.request_id for r in requests)
    assert {(n.status, n.row_count) for n in notifications} == {(Notification.OK, 7 * 1440)}

    warehouse = Warehouse(open_catalog(relay.catalog_uri))
    try:
        table, _ = warehouse.read_candles("SIM:RACE/USDT", 60, (start, end + 1))
    finally:
        warehouse.close()
    assert table.num_rows == 7 * 1440
    assert len(pc.unique(table["timestamp"])) == 7 * 1440


def test_notification_is_held_until_the_subscription_lands(ctx, relay):
    """The slow-joiner fix: a notification for a topic nobody subscribed yet waits for it."""
    client_id = uuid.uuid4().hex
    dealer = _socket(ctx, zmq.DEALER, relay.relay_endpoint)
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    try:
        request = HistoryRequest(request_id=uuid.uuid4().hex, client_id=client_id, ticker=SEED_TICKER,
                                 period_seconds=3600, start_time=EMPTY_START, end_time=EMPTY_END)
        dealer.send_multipart([b"", encode_frame(request)])
        assert decode_frame(dealer.recv_multipart()[-1]).accepted
        assert relay.wait_for_log(f"relay request {request.request_id} ", 5)  # done, nobody listening
        time.sleep(0.2)
        sub.setsockopt(zmq.SUBSCRIBE, notification_topic(client_id))
        sub.connect(relay.notification_endpoint)
        assert sub.poll(5000), "the held notification never arrived"
        topic, frame = sub.recv_multipart()
        assert topic == notification_topic(client_id)
        assert decode_frame(frame).request_id == request.request_id
    finally:
        dealer.close(0)
        sub.close(0)


def test_rejections_carry_the_error_class(peer):
    bad = [
        (peer.request(ticker="nope"), "InvalidTickerError", "malformed"),
        (peer.request(period=0), "InvalidPeriodError", "must be a positive"),
        (peer.request(start=SEED_END, end=SEED_START), "InvalidTimeRangeError", "swap them"),
        (peer.request(start=1735689600, end=1736294399), "InvalidTimeRangeError", "looks like seconds"),
    ]
    for request, error_type, reason in bad:
        reply = peer.ask(encode_frame(request))
        assert not reply.accepted
        assert reply.request_id == request.request_id
        assert reply.error_type == error_type
        assert reason in reply.reason
    assert peer.no_notification(200)  # a rejected request is never run


def test_bind_conflict_exits_with_a_clear_error(relay, tmp_path):
    command = [sys.executable, "-m", "dexorder_feeds.cli", "serve", "--relay-endpoint", relay.relay_endpoint,
               "--notification-endpoint", f"tcp://127.0.0.1:{free_tcp_port()}",
               "--iceberg-catalog-uri", f"sqlite:///{tmp_path / 'catalog.db'}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60,
                          env={"DEXORDER_CACHE_DIR": str(tmp_path), "DEXORDER_CONFIG": str(tmp_path / "c.toml"),
                               "PATH": "/usr/bin:/bin"})
    assert done.returncode == 2
    assert f"cannot bind the relay endpoint '{relay.relay_endpoint}'" in done.stderr
    assert "choose another address or port" in done.stderr


class _SentFlag:
    def __init__(self) -> None:
        self.sent: list[str] = []
        self.event = threading.Event()

    @hookimpl
    def dexorder_request_sent(self, request_id: str, ticker: str, period_seconds: int, start_time: int,
                              end_time: int) -> None:
        self.sent.append(ticker)
        if len(self.sent) >= 2:
            self.event.set()


def test_sigterm_finishes_running_commits_and_exits_0(tmp_path):
    """SIGTERM while a long request runs and another waits in the queue: the running one commits
    and is notified, the queued one is told to retry, the process exits 0, the warehouse is whole.
    (Three years of 1-minute candles: the worker is busy with the source's answer long enough,
    as it is free for the next request once the fill waits for the committer.)"""
    year = (SEED_START - 2 * 365 * DAY_US, SEED_START + 365 * DAY_US - 1)
    flag = _SentFlag()
    pm = get_plugin_manager()
    pm.register(flag)
    try:
        with relay_process(tmp_path / "relay", workers=1) as relay:
            async def main() -> list[object]:
                async with HistoryClient(relay.relay_endpoint, relay.notification_endpoint) as client:
                    running = asyncio.create_task(client.request_historical_ohlc("SIM:TERM/USDT", 60, *year))
                    await asyncio.sleep(0.05)
                    queued = asyncio.create_task(client.request_historical_ohlc("SIM:QUEUED/USDT", 3600,
                                                                                SEED_START, SEED_END, timeout=15))
                    return await asyncio.gather(running, queued, return_exceptions=True)

            def terminate() -> tuple[float, int]:
                assert flag.event.wait(10)
                time.sleep(0.3)  # both accepted; the first is in the historian, the second queued
                began = time.perf_counter()
                relay.proc.send_signal(signal.SIGTERM)
                return began, relay.proc.wait(30)

            outcome: dict[str, tuple[float, int]] = {}
            thread = threading.Thread(target=lambda: outcome.setdefault("exit", terminate()))
            thread.start()
            running, queued = asyncio.run(main())
            thread.join(40)
            signalled, returncode = outcome["exit"]
            exited_after = time.perf_counter() - signalled
            logs = relay.logs()
    finally:
        pm.unregister(flag)

    assert returncode == 0
    assert exited_after < 30, exited_after  # ~1-2 s when idle: the year of candles commits first
    assert "SIGTERM received" in logs and "relay stopped" in logs
    assert isinstance(running, dict), running
    assert running["status"] == "OK" and running["row_count"] == 3 * 365 * 1440
    # the queued one was told to retry: sent again under the same id, and with no relay back
    # within its timeout, a ConnectionError saying so
    assert isinstance(queued, errors.RelayUnavailableError), queued
    assert isinstance(queued, ConnectionError)
    assert "shut down before this request started" in str(queued) and "sent again" in str(queued)

    warehouse = Warehouse(open_catalog(relay.catalog_uri))
    try:
        table, _ = warehouse.read_candles("SIM:TERM/USDT", 60, (year[0], year[1] + 1))
        coverage = warehouse.read_coverage("SIM:TERM/USDT", 60)
        queued_rows, _ = warehouse.read_candles("SIM:QUEUED/USDT", 3600, (SEED_START, SEED_END + 1))
    finally:
        warehouse.close()
    assert table.num_rows == 3 * 365 * 1440
    assert len(pc.unique(table["timestamp"])) == 3 * 365 * 1440
    assert coverage == [(year[0], year[1] + 1)]
    assert queued_rows.num_rows == 0


# -- in-process: the time limits, with short settings ------------------------------------------
@pytest.fixture
def inprocess_relay(catalog_uri) -> Iterator[RelayServer]:
    settings = Settings(iceberg_catalog_uri=catalog_uri, relay_endpoint="tcp://127.0.0.1:*",
                        notification_endpoint="tcp://127.0.0.1:*")
    server = RelayServer.from_settings(settings, workers=2, subscribe_check_wait=0.3, notification_hold=0.3)
    server.start()
    yield server
    server.stop()


def test_subscribe_check_and_hold_time_limits(ctx, inprocess_relay, caplog):
    caplog.set_level(logging.INFO, logger="dexorder_feeds.relay.server")
    server = inprocess_relay
    assert server.ready and server.relay_endpoint.startswith("tcp://127.0.0.1:")
    dealer = _socket(ctx, zmq.DEALER, server.relay_endpoint)
    try:
        began = time.perf_counter()
        dealer.send_multipart([b"", encode_frame(SubscribeCheck(client_id="nobody", request_id="k1"))])
        reply = decode_frame(dealer.recv_multipart()[-1])
        assert 0.25 < time.perf_counter() - began < 3
        assert not reply.accepted and reply.request_id == "k1"
        assert "RESPONSE:nobody" in reply.reason and "notification endpoint" in reply.reason

        request = HistoryRequest(request_id="held-1", client_id="nobody", ticker=SEED_TICKER, period_seconds=3600,
                                 start_time=EMPTY_START, end_time=EMPTY_END)
        dealer.send_multipart([b"", encode_frame(request)])
        assert decode_frame(dealer.recv_multipart()[-1]).accepted
        deadline = time.monotonic() + 5
        while "dropped the notification of request held-1" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "dropped the notification of request held-1" in caplog.text
    finally:
        dealer.close(0)


def test_inprocess_server_stops_and_frees_its_ports(catalog_uri):
    settings = Settings(iceberg_catalog_uri=catalog_uri, relay_endpoint="tcp://127.0.0.1:*",
                        notification_endpoint="tcp://127.0.0.1:*")
    with RelayServer.from_settings(settings) as server:
        endpoint = server.relay_endpoint

        async def main() -> dict:
            async with HistoryClient(server.relay_endpoint, server.notification_endpoint) as client:
                return await client.request_historical_ohlc(SEED_TICKER, 3600, SEED_START, SEED_END)

        assert asyncio.run(main())["row_count"] == 168
    again = Settings(iceberg_catalog_uri=catalog_uri, relay_endpoint=endpoint, notification_endpoint="tcp://127.0.0.1:*")
    with RelayServer.from_settings(again) as second:  # the port is free again
        assert second.relay_endpoint == endpoint
