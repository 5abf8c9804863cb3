"""One warehouse per conversation: the relay names the warehouse it writes, and a client reading
another one fails its first request with an error naming both, instead of reading nothing.

Against a real ``dexorder-feeds serve`` process on loopback, with real SQLite catalogs; the
"older relay" is a few raw ZeroMQ sockets answering as relays before this check did.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
from relay_process import RelayProcess, free_tcp_port, relay_process, start_relay_process

from dexorder_feeds import HistoryClient, IcebergClient, OHLCClient
from dexorder_feeds.storage.catalog import open_catalog
from dexorder_feeds.storage.warehouse import Warehouse
from dexorder_feeds.vocabulary.errors import WarehouseMismatchError
from dexorder_feeds.vocabulary.identity import WarehouseIdentity, check_same_warehouse
from dexorder_feeds.wire import (
    HistoryRequest,
    Notification,
    RequestReply,
    SubscribeCheck,
    decode_frame,
    encode_frame,
    notification_topic,
    put_warehouse,
    warehouse_of,
)
from dexorder_feeds.wire.errors import WIRE_ERRORS

START = 1735689600000000  # 2025-01-01 00:00 UTC
END = 1736294399000000  # 168 hourly candles


@pytest.fixture(scope="module")
def relay(tmp_path_factory) -> Iterator[RelayProcess]:
    with relay_process(tmp_path_factory.mktemp("identity-relay")) as process:
        yield process


def relay_identity(relay: RelayProcess) -> WarehouseIdentity:
    warehouse = Warehouse(open_catalog(relay.catalog_uri))
    try:
        return warehouse.identity()
    finally:
        warehouse.close()


def run(coro):
    return asyncio.run(coro)


def fresh_ticker(base: str) -> str:
    """A ticker no other test of the process asked a relay for."""
    return f"SIM:{base}{uuid.uuid4().hex[:6].upper()}/USDT"


def test_the_error_is_a_value_error_and_crosses_the_wire():
    assert issubclass(WarehouseMismatchError, ValueError)
    assert WIRE_ERRORS["WarehouseMismatchError"] is WarehouseMismatchError


def test_every_reply_and_notification_names_the_relays_warehouse(relay):
    expected = relay_identity(relay)
    assert expected.ohlc_uuid and expected.coverage_uuid and expected.ohlc_uuid != expected.coverage_uuid
    assert expected.catalog == relay.catalog_uri and expected.namespace == "trading"
    ctx = zmq.Context()
    try:
        dealer, sub = ctx.socket(zmq.DEALER), ctx.socket(zmq.SUB)
        for sock in (dealer, sub):
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.RCVTIMEO, 10_000)
        client_id = uuid.uuid4().hex
        sub.setsockopt(zmq.SUBSCRIBE, notification_topic(client_id))
        sub.connect(relay.notification_endpoint)
        dealer.connect(relay.relay_endpoint)
        dealer.send_multipart([b"", encode_frame(SubscribeCheck(client_id=client_id, request_id="chk"))])
        check_reply = decode_frame(dealer.recv_multipart()[-1])
        assert isinstance(check_reply, RequestReply) and check_reply.accepted
        assert warehouse_of(check_reply) == expected
        request = HistoryRequest(request_id=uuid.uuid4().hex, client_id=client_id, ticker=fresh_ticker("ID"),
                                 period_seconds=3600, start_time=START, end_time=START + 5 * 3_600_000_000)
        dealer.send_multipart([b"", encode_frame(request)])
        reply = decode_frame(dealer.recv_multipart()[-1])
        assert isinstance(reply, RequestReply) and reply.accepted and warehouse_of(reply) == expected
        topic, frame = sub.recv_multipart()
        notification = decode_frame(frame)
        assert isinstance(notification, Notification) and notification.status == Notification.OK
        assert warehouse_of(notification) == expected
        assert notification.iceberg_namespace == "trading" and notification.iceberg_table == "ohlc"
    finally:
        ctx.destroy(linger=0)
    assert f"warehouse=catalog '{relay.catalog_uri}'" in relay.logs()
    assert expected.ohlc_uuid in relay.logs()


def test_ohlc_client_on_another_catalog_fails_its_first_fetch(relay, tmp_path):
    ticker = fresh_ticker("ADA")
    mine = f"sqlite:///{tmp_path / 'mistyped' / 'catalog.db'}"

    async def main():
        async with OHLCClient(iceberg_catalog_uri=mine, relay_endpoint=relay.relay_endpoint,
                              notification_endpoint=relay.notification_endpoint) as client:
            with pytest.raises(WarehouseMismatchError) as caught:
                await client.fetch_ohlc(ticker, 3600, START, END)
            with pytest.raises(WarehouseMismatchError):  # and every fetch after it
                await client.fetch_ohlc(ticker, 3600, START, END)
            return caught.value, client.iceberg.warehouse_identity()

    error, local = run(main())
    theirs = relay_identity(relay)
    text = str(error)
    assert isinstance(error, ValueError)
    assert relay.relay_endpoint in text
    assert relay.catalog_uri in text and mine in text  # both catalogs named
    assert theirs.ohlc_uuid in text and local.ohlc_uuid in text  # both tables named
    assert local.ohlc_uuid != theirs.ohlc_uuid
    assert f"iceberg_catalog_uri={relay.catalog_uri!r}" in text  # what to do
    assert ticker not in relay.logs()  # nothing was asked for: the check comes first


def test_seed_quickstart_with_a_mistyped_catalog_fails_saying_so(relay, tmp_path):
    """The seed's Quick Start, run verbatim, its catalog URI mistyped: an error, not "Fetched 0 candles"."""
    script = Path(__file__).resolve().parents[1] / "examples" / "seed_quickstart.py"
    typo = relay.catalog_uri.replace("catalog.db", "catalgo.db")
    env = {**os.environ, "DEXORDER_CACHE_DIR": str(tmp_path / "cache"), "DEXORDER_CONFIG": str(tmp_path / "none.toml"),
           "DEXORDER_RELAY_ENDPOINT": relay.relay_endpoint,
           "DEXORDER_NOTIFICATION_ENDPOINT": relay.notification_endpoint,
           "DEXORDER_ICEBERG_CATALOG_URI": typo}
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                            cwd=tmp_path, env=env)
    assert result.returncode != 0
    assert "Fetched" not in result.stdout
    assert "WarehouseMismatchError" in result.stderr
    assert f"iceberg_catalog_uri={relay.catalog_uri!r}" in result.stderr and typo in result.stderr


def test_ohlc_client_on_the_relays_catalog_fetches(relay):
    ticker = fresh_ticker("SOL")

    async def main():
        async with OHLCClient(iceberg_catalog_uri=relay.catalog_uri, relay_endpoint=relay.relay_endpoint,
                              notification_endpoint=relay.notification_endpoint) as client:
            df = await client.fetch_ohlc(ticker, 3600, START, END)
            again = await client.fetch_ohlc(ticker, 3600, START, END)
            return df, again, client.iceberg.warehouse_identity()

    df, again, local = run(main())
    assert len(df) == 168 and len(again) == 168
    assert local == relay_identity(relay)


def test_a_relay_restarted_on_another_warehouse_is_caught_at_the_next_fill(tmp_path):
    """The same endpoints, served again by a relay writing another catalog: the fetch that asked
    it fails once its notification names the other warehouse."""
    first = start_relay_process(tmp_path / "first")
    second = None
    try:
        async def main():
            nonlocal second
            async with OHLCClient(iceberg_catalog_uri=first.catalog_uri, relay_endpoint=first.relay_endpoint,
                                  notification_endpoint=first.notification_endpoint) as client:
                assert len(await client.fetch_ohlc(fresh_ticker("ONE"), 3600, START, END)) == 168
                first.stop()
                second = await asyncio.to_thread(
                    start_relay_process, tmp_path / "second", relay_endpoint=first.relay_endpoint,
                    notification_endpoint=first.notification_endpoint)
                with pytest.raises(WarehouseMismatchError) as caught:
                    await client.fetch_ohlc(fresh_ticker("TWO"), 3600, START, END)
                return caught.value

        error = run(main())
        assert second is not None
        assert second.catalog_uri in str(error) and first.catalog_uri in str(error)
    finally:
        first.stop()
        if second is not None:
            second.stop()


def test_seed_pattern_history_client_then_iceberg_client_on_another_catalog(relay, tmp_path):
    ticker = fresh_ticker("DOT")
    mine = f"sqlite:///{tmp_path / 'other' / 'catalog.db'}"

    async def ask():
        client = HistoryClient(relay_endpoint=relay.relay_endpoint, notification_endpoint=relay.notification_endpoint)
        await client.connect()
        try:
            result = await client.request_historical_ohlc(ticker=ticker, period_seconds=3600, start_time=START,
                                                          end_time=END)
            return result, client.warehouse_identity
        finally:
            await client.close()

    result, said = run(ask())
    theirs = relay_identity(relay)
    assert result["status"] == "OK" and result["row_count"] == 168
    assert said == theirs
    assert result["iceberg_table_uuid"] == theirs.ohlc_uuid and result["iceberg_catalog"] == relay.catalog_uri

    iceberg = IcebergClient(mine)
    with pytest.raises(WarehouseMismatchError) as caught:
        iceberg.query_ohlc(ticker, 3600, START, END)
    assert relay.catalog_uri in str(caught.value) and mine in str(caught.value)
    assert theirs.ohlc_uuid in str(caught.value)
    with pytest.raises(WarehouseMismatchError):
        iceberg.has_data(ticker, 3600, START, END)
    with pytest.raises(WarehouseMismatchError):
        iceberg.find_missing_ranges(ticker, 3600, START, END)
    # a range the relay was not asked for, or another ticker, reads as before
    assert len(iceberg.query_ohlc(ticker, 3600, START - 48 * 3_600_000_000, START - 1)) == 0
    assert len(iceberg.query_ohlc(fresh_ticker("XRP"), 3600, START, END)) == 0

    # the relay's own catalog reads the candles
    right = IcebergClient(relay.catalog_uri)
    assert len(right.query_ohlc(ticker, 3600, START, END)) == 168
    assert right.has_data(ticker, 3600, START, END)


def test_a_warehouse_holding_the_range_is_no_mismatch(relay, tmp_path):
    """A copy kept on purpose: another warehouse that has the candles reads them, no error."""
    ticker = fresh_ticker("LNK")
    copy = f"sqlite:///{tmp_path / 'copy' / 'catalog.db'}"

    async def main():
        async with HistoryClient(relay.relay_endpoint, relay.notification_endpoint) as client:
            await client.request_historical_ohlc(ticker, 3600, START, END)
        async with OHLCClient(iceberg_catalog_uri=copy) as embedded:  # embedded: fills its own warehouse
            return len(await embedded.fetch_ohlc(ticker, 3600, START, END))

    assert run(main()) == 168
    iceberg = IcebergClient(copy)
    assert iceberg.warehouse_identity().differs_from(relay_identity(relay))
    assert len(iceberg.query_ohlc(ticker, 3600, START, END)) == 168


def test_same_uri_other_tables_says_so():
    relay = WarehouseIdentity("sqlite:///catalog.db", "trading", "ohlc", "aaaa", "coverage", "bbbb")
    local = WarehouseIdentity("sqlite:///catalog.db", "trading", "ohlc", "cccc", "coverage", "dddd")
    with pytest.raises(WarehouseMismatchError, match="resolves to another database") as caught:
        check_same_warehouse(relay, local, relay_endpoint="tcp://relay:5555")
    assert "aaaa" in str(caught.value) and "cccc" in str(caught.value)
    check_same_warehouse(relay, relay)  # the same warehouse passes
    check_same_warehouse(None, local)  # a relay that does not say (older versions): no check
    unknown = WarehouseIdentity("sqlite:///x.db", "trading")  # uuids unknown: nothing to compare
    check_same_warehouse(unknown, local)


def test_no_secret_reaches_the_wire_identity(tmp_path):
    warehouse = Warehouse(open_catalog(f"sqlite:///{tmp_path / 'c.db'}"))
    try:
        identity = warehouse.identity()
    finally:
        warehouse.close()
    reply = RequestReply(request_id="r", accepted=True)
    put_warehouse(reply, identity)
    assert warehouse_of(decode_frame(encode_frame(reply))) == identity
    from dexorder_feeds.storage.catalog import catalog_label

    class FakeCatalog:  # only the two attributes catalog_label reads
        name = "dexorder"
        properties = {"uri": "postgresql+psycopg://feeds:hunter2@db:5432/iceberg?sslpassword=x", "type": "sql"}

    label, location = catalog_label(FakeCatalog())
    assert "hunter2" not in label and "sslpassword" not in label and "db:5432/iceberg" in label
    assert location == ""

    class RestCatalog:
        name = "dexorder"
        properties = {"uri": "http://catalog:8181", "type": "rest", "warehouse": "s3://bucket/wh",
                      "credential": "key:topsecret"}

    assert catalog_label(RestCatalog()) == ("http://catalog:8181", "s3://bucket/wh")


def test_the_error_names_a_rest_catalogs_warehouse_property():
    relay = WarehouseIdentity("http://catalog:8181", "trading", "ohlc", "aaaa", "coverage", "bbbb", "s3://team/")
    local = WarehouseIdentity("http://catalog:8181", "trading", "ohlc", "cccc", "coverage", "dddd", "s3://mine/")
    with pytest.raises(WarehouseMismatchError) as caught:
        check_same_warehouse(relay, local)
    text = str(caught.value)
    assert "iceberg_catalog_uri='http://catalog:8181'" in text and "warehouse='s3://team/'" in text
    assert "(warehouse 's3://mine/')" in text and "resolves to another database" not in text


# -- an older relay: it names no warehouse, so nothing is checked --------------------------------
class OldRelay:
    """Raw ROUTER + XPUB answering as a relay did before it named its warehouse: every
    SubscribeCheck accepted, every HistoryRequest accepted and answered NOT_FOUND."""

    def __init__(self) -> None:
        self.ctx = zmq.Context()
        self.router = self.ctx.socket(zmq.ROUTER)
        self.xpub = self.ctx.socket(zmq.XPUB)
        for sock in (self.router, self.xpub):
            sock.setsockopt(zmq.LINGER, 0)
        self.relay_endpoint = f"tcp://127.0.0.1:{free_tcp_port()}"
        self.notification_endpoint = f"tcp://127.0.0.1:{free_tcp_port()}"
        self.router.bind(self.relay_endpoint)
        self.xpub.bind(self.notification_endpoint)
        self.live: set[bytes] = set()
        self.requests: list[HistoryRequest] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # the test asserts none happened
            self.errors.append(exc)

    def _loop(self) -> None:
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        while not self._stop.is_set():
            self._note_subscriptions()
            if not poller.poll(20):
                continue
            *envelope, payload = self.router.recv_multipart()
            message = decode_frame(payload)
            if isinstance(message, SubscribeCheck):
                for _ in range(250):  # up to 5 s for the subscription, as a relay holds a check
                    if notification_topic(message.client_id) in self.live:
                        break
                    self._note_subscriptions(wait_ms=20)
                self.router.send_multipart([*envelope, encode_frame(
                    RequestReply(request_id=message.request_id, accepted=True))])
            elif isinstance(message, HistoryRequest):
                self.requests.append(message)
                self.router.send_multipart([*envelope, encode_frame(
                    RequestReply(request_id=message.request_id, accepted=True))])
                notification = Notification(
                    request_id=message.request_id, client_id=message.client_id, status=Notification.NOT_FOUND,
                    iceberg_namespace="trading", iceberg_table="ohlc", covered_start=message.start_time,
                    covered_end=message.end_time + 1)
                self.xpub.send_multipart([notification_topic(message.client_id), encode_frame(notification)])

    def _note_subscriptions(self, wait_ms: int = 0) -> None:
        """Read every subscription message waiting on the XPUB (the topics live now)."""
        while self.xpub.poll(wait_ms):
            wait_ms = 0
            event = self.xpub.recv()
            if event[:1] == b"\x01":
                self.live.add(event[1:])
            elif event[:1] == b"\x00":
                self.live.discard(event[1:])

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.ctx.destroy(linger=0)


def test_an_older_relay_that_names_no_warehouse_is_not_checked(tmp_path):
    old = OldRelay()
    ticker = fresh_ticker("OLD")
    mine = f"sqlite:///{tmp_path / 'c.db'}"
    try:
        async def main():
            async with HistoryClient(old.relay_endpoint, old.notification_endpoint) as history:
                result = await history.request_historical_ohlc(ticker, 3600, START, START + 3 * 3_600_000_000)
                said = history.warehouse_identity
            async with OHLCClient(iceberg_catalog_uri=mine, relay_endpoint=old.relay_endpoint,
                                  notification_endpoint=old.notification_endpoint) as client:
                df = await client.fetch_ohlc(ticker, 3600, START, START + 3 * 3_600_000_000)
            return result, said, df

        result, said, df = run(main())
    finally:
        old.close()
    assert not old.errors
    assert said is None and "iceberg_table_uuid" not in result
    assert result["status"] == "NOT_FOUND"
    assert len(old.requests) == 2  # the client's request went out: no check stopped it
    assert len(df) == 0  # and what it reads is its own warehouse, as before
    assert len(IcebergClient(mine).query_ohlc(ticker, 3600, START, START + 3 * 3_600_000_000)) == 0
