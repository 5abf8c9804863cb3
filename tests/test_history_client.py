"""HistoryClient against a real ``dexorder-feeds serve`` process on loopback ports.

The module's relay serves ``SIM`` plus three ``files`` sources: ``EMPTY`` (an empty directory:
NOT_FOUND), ``BAD`` (a malformed CSV: status ERROR from the historian) and ``MISSING`` (a
directory that does not exist: rejected at validation).
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
import uuid
from pathlib import Path

import pyarrow.compute as pc
import pytest
from relay_process import RelayProcess, free_tcp_port, relay_process

from dexorder_feeds import hookimpl
from dexorder_feeds.vocabulary import errors
from dexorder_feeds.storage.catalog import open_catalog
from dexorder_feeds.client.history_client import HistoryClient
from dexorder_feeds.plugins import get_plugin_manager
from dexorder_feeds.ingest.historian import Historian
from dexorder_feeds.ingest.sources import SourceRegistry
from dexorder_feeds.storage.warehouse import Warehouse
from dexorder_feeds.wire import HistoryRequest, Notification

SEED_TICKER = "SIM:BTC/USDT"
SEED_START = 1735689600000000  # 2025-01-01 00:00 UTC
SEED_END = 1736294399000000  # 2025-01-07 23:59:59 UTC -> 168 hourly candles
HOUR_US = 3600 * 1_000_000
# Inside one hour: no candle timestamp lies in it, so the historian answers NOT_FOUND at once.
EMPTY_START, EMPTY_END = SEED_START + 1, SEED_START + 2


class Recorder:
    """Observer plugin recording the client's events."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sent: list[dict] = []
        self.received: list[dict] = []
        self.sent_event = threading.Event()

    @hookimpl
    def dexorder_request_sent(self, request_id: str, ticker: str, period_seconds: int, start_time: int,
                              end_time: int) -> None:
        with self.lock:
            self.sent.append(dict(request_id=request_id, ticker=ticker, period_seconds=period_seconds,
                                  start_time=start_time, end_time=end_time))
        self.sent_event.set()

    @hookimpl
    def dexorder_notification_received(self, result: dict) -> None:
        with self.lock:
            self.received.append(result)


@pytest.fixture
def recorder():
    rec = Recorder()
    pm = get_plugin_manager()
    pm.register(rec)
    yield rec
    pm.unregister(rec)


@pytest.fixture(scope="module")
def source_dirs(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("sources")
    empty = base / "empty"
    empty.mkdir()
    bad = base / "bad"
    (bad / "BAD" / "BTC-USDT").mkdir(parents=True)
    (bad / "BAD" / "BTC-USDT" / "1h.csv").write_text(
        "timestamp,open,high,low,close,volume\n"
        "2025-01-01T00:00:00Z,100.5,101,99,100,12.5\n"
        "2025-01-01T01:00:00Z,not-a-price,101,99,100,12.5\n"
    )
    return {"empty": empty, "bad": bad}


@pytest.fixture(scope="module")
def relay(tmp_path_factory, source_dirs):
    base = tmp_path_factory.mktemp("relay")
    sources = [f"EMPTY=files:{source_dirs['empty']}", f"BAD=files:{source_dirs['bad']}", "MISSING=files:/nonexistent"]
    with relay_process(base, sources=sources) as process:
        yield process


def _client(relay: RelayProcess, **kwargs) -> HistoryClient:
    return HistoryClient(relay.relay_endpoint, relay.notification_endpoint, **kwargs)


def _read_back(catalog_uri: str, ticker: str, period_seconds: int, interval: tuple[int, int]):
    warehouse = Warehouse(open_catalog(catalog_uri))
    try:
        table, _ = warehouse.read_candles(ticker, period_seconds, interval)
    finally:
        warehouse.close()
    return table


async def _seed_example(relay_endpoint: str, notification_endpoint: str) -> dict:
    # The seed README's HistoryClient example, verbatim but for the endpoints and the ticker
    # (BINANCE needs the network; SIM is the offline synthetic market).
    from dexorder import HistoryClient

    client = HistoryClient(
        relay_endpoint=relay_endpoint,
        notification_endpoint=notification_endpoint
    )
    # CRITICAL: Connect first to prevent race condition
    await client.connect()
    # Now safe to make requests
    result = await client.request_historical_ohlc(
        ticker="SIM:BTC/USDT",
        period_seconds=3600,
        start_time=1735689600000000,
        end_time=1736294399000000
    )
    await client.close()
    return result


def test_seed_example(relay, recorder):
    result = asyncio.run(_seed_example(relay.relay_endpoint, relay.notification_endpoint))
    assert result["status"] == "OK"
    assert result["row_count"] == 168
    assert result["error_message"] is None
    assert result["iceberg_namespace"] == "trading"
    assert result["iceberg_table"] == "ohlc"
    assert isinstance(result["request_id"], str) and result["request_id"]
    # observer events: one request sent, its notification received, same ids and arguments
    assert recorder.sent == [dict(request_id=result["request_id"], ticker=SEED_TICKER, period_seconds=3600,
                                  start_time=SEED_START, end_time=SEED_END)]
    assert recorder.received == [result]
    # the candles really are in the warehouse, once each
    table = _read_back(relay.catalog_uri, SEED_TICKER, 3600, (SEED_START, SEED_END + 1))
    assert table.num_rows == 168
    assert len(pc.unique(table["timestamp"])) == 168
    assert f"relay request {result['request_id']} SIM:BTC/USDT 3600s -> OK queue=" in _wait_log(relay, result["request_id"])


def _wait_log(relay: RelayProcess, text: str) -> str:
    relay.wait_for_log(text, 5)
    return relay.logs()


def test_thousand_fresh_clients_lose_no_notification(relay):
    """1,000 fresh clients (connect, one request, close), 8 at a time: every one gets its notification."""
    n_clients, concurrency = 1000, 8

    async def one(i: int, gate: asyncio.Semaphore) -> tuple[str, dict]:
        async with gate:
            async with _client(relay) as client:
                if i % 100 == 0:  # now and then a real (already ingested) range through the warehouse
                    return "OK", await client.request_historical_ohlc(SEED_TICKER, 3600, SEED_START, SEED_END)
                return "NOT_FOUND", await client.request_historical_ohlc(SEED_TICKER, 3600, EMPTY_START, EMPTY_END)

    async def main() -> list[tuple[str, dict]]:
        gate = asyncio.Semaphore(concurrency)
        return await asyncio.gather(*(one(i, gate) for i in range(n_clients)))

    began = time.perf_counter()
    outcomes = asyncio.run(asyncio.wait_for(main(), 120))
    elapsed = time.perf_counter() - began
    assert len(outcomes) == n_clients
    for expected, result in outcomes:
        assert result["status"] == expected
        assert result["row_count"] == (168 if expected == "OK" else 0)
    assert len({result["request_id"] for _, result in outcomes}) == n_clients
    assert "dropped the notification" not in relay.logs()
    print(f"\n1,000 fresh clients: {elapsed:.2f} s, {elapsed / n_clients * 1e3:.2f} ms per client")
    assert elapsed < 60


def test_concurrent_requests_share_one_client(relay):
    days = 12

    async def main() -> list[dict]:
        async with _client(relay) as client:
            return await asyncio.gather(*(
                client.request_historical_ohlc("SIM:CONC/USDT", 3600, SEED_START + d * 24 * HOUR_US,
                                               SEED_START + (d + 1) * 24 * HOUR_US - 1)
                for d in range(days)
            ))

    results = asyncio.run(main())
    assert [r["status"] for r in results] == ["OK"] * days
    assert [r["row_count"] for r in results] == [24] * days
    assert [r["covered_range"][0] for r in results] == [SEED_START + d * 24 * HOUR_US for d in range(days)]
    assert len({r["request_id"] for r in results}) == days


def test_request_before_connect_connects_first(relay):
    async def main() -> tuple[dict, bool, set]:
        client = _client(relay)
        assert not client.connected
        result = await client.request_historical_ohlc(SEED_TICKER, 3600, EMPTY_START, EMPTY_END)
        connected = client.connected
        await client.close()
        return result, connected, asyncio.all_tasks() - {asyncio.current_task()}

    result, connected, leftover = asyncio.run(main())
    assert result["status"] == "NOT_FOUND"
    assert connected
    assert leftover == set()


def test_limit_travels_to_the_historian(relay):
    async def main() -> dict:
        async with _client(relay) as client:
            return await client.request_historical_ohlc("SIM:LIMIT/USDT", 3600, SEED_START, SEED_END, limit=5)

    result = asyncio.run(main())
    assert result["status"] == "OK"
    assert result["row_count"] == 5
    assert result["covered_range"] == (SEED_START, SEED_START + 5 * HOUR_US)


def test_not_found_is_a_status(relay):
    async def main() -> tuple[dict, dict]:
        async with _client(relay) as client:
            from_files = await client.request_historical_ohlc("EMPTY:BTC/USDT", 3600, SEED_START, SEED_END)
            no_candle_in_range = await client.request_historical_ohlc(SEED_TICKER, 3600, EMPTY_START, EMPTY_END)
            return from_files, no_candle_in_range

    from_files, no_candle_in_range = asyncio.run(main())
    for result in (from_files, no_candle_in_range):
        assert result["status"] == "NOT_FOUND"
        assert result["row_count"] == 0
        assert result["error_message"] is None
    assert from_files["covered_range"] == (SEED_START, SEED_START + 168 * HOUR_US)


def test_status_error_raises_value_error_with_the_servers_message(relay, source_dirs, tmp_path, recorder):
    # What the historian itself says about this request, computed in-process on a scratch warehouse.
    warehouse = Warehouse(open_catalog(f"sqlite:///{tmp_path / 'scratch.db'}"))
    historian = Historian(warehouse, SourceRegistry({"BAD": f"files:{source_dirs['bad']}"}))
    try:
        expected = historian.handle(HistoryRequest(request_id="x", client_id="y", ticker="BAD:BTC/USDT",
                                                   period_seconds=3600, start_time=SEED_START, end_time=SEED_END))
    finally:
        historian.close()
        warehouse.close()
    assert expected.status == Notification.ERROR and expected.error_message

    async def main() -> None:
        async with _client(relay) as client:
            await client.request_historical_ohlc("BAD:BTC/USDT", 3600, SEED_START, SEED_END)

    with pytest.raises(ValueError) as caught:
        asyncio.run(main())
    assert str(caught.value) == expected.error_message
    assert type(caught.value).__name__ == (expected.error_type or "RequestFailedError")
    assert isinstance(caught.value, errors.DexOrderError)
    assert [r["status"] for r in recorder.received] == ["ERROR"]
    assert recorder.received[0]["error_message"] == expected.error_message


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (dict(ticker="BTC-USDT"), errors.InvalidTickerError, "is malformed; expected 'EXCHANGE:BASE/QUOTE'"),
        (dict(ticker="sim:btc/usdt"), errors.InvalidTickerError, "tickers are upper case: 'SIM:BTC/USDT'"),
        (dict(period_seconds=0), errors.InvalidPeriodError, "period_seconds=0 must be positive"),
        (dict(period_seconds=-60), errors.InvalidPeriodError, "must be positive"),
        (dict(start_time=SEED_END, end_time=SEED_START), errors.InvalidTimeRangeError, "is after end_time"),
        (dict(start_time=1735689600, end_time=1736294399), errors.InvalidTimeRangeError,
         "start_time=1735689600 looks like seconds, not microseconds"),
        (dict(end_time=1736294399000), errors.InvalidTimeRangeError, "looks like milliseconds"),
        (dict(limit=0), errors.InvalidRequestError, "limit=0 must be a positive"),
    ],
    ids=["malformed-ticker", "lower-case", "period-0", "negative-period", "start-after-end", "seconds",
         "milliseconds", "limit-0"],
)
def test_bad_input_fails_fast_without_sending(relay, recorder, kwargs, error, message):
    arguments = dict(ticker=SEED_TICKER, period_seconds=3600, start_time=SEED_START, end_time=SEED_END) | kwargs

    async def main() -> None:
        async with _client(relay) as client:
            await client.request_historical_ohlc(**arguments)

    with pytest.raises(error, match=message) as caught:
        asyncio.run(main())
    assert isinstance(caught.value, ValueError)
    assert recorder.sent == []  # rejected before anything was sent


@pytest.mark.parametrize(
    ("ticker", "period", "error", "message"),
    [
        ("MISSING:BTC/USDT", 3600, errors.UnknownSourceError, "/nonexistent does not exist"),
        (SEED_TICKER, 400 * 86400, errors.InvalidPeriodError, "longer than a year"),
    ],
    ids=["source-directory-missing", "period-over-a-year"],
)
def test_relay_rejection_raises_the_servers_error_class(relay, recorder, ticker, period, error, message):
    async def main() -> None:
        async with _client(relay) as client:
            await client.request_historical_ohlc(ticker, period, SEED_START, SEED_END)

    with pytest.raises(error, match=message):
        asyncio.run(main())
    assert len(recorder.sent) == 1 and recorder.received == []  # sent, rejected, no notification


def test_relay_unreachable_raises_connection_error_within_the_timeout():
    port = free_tcp_port()  # nothing listens here
    endpoint, notify = f"tcp://127.0.0.1:{port}", f"tcp://127.0.0.1:{free_tcp_port()}"

    async def connect_explicitly() -> float:
        client = HistoryClient(endpoint, notify, connect_timeout=1.5)
        began = time.perf_counter()
        try:
            await client.connect()
        finally:
            elapsed = time.perf_counter() - began
            await client.close()
        return elapsed

    async def request_only() -> float:
        client = HistoryClient(endpoint, notify)
        began = time.perf_counter()
        try:
            await client.request_historical_ohlc(SEED_TICKER, 3600, SEED_START, SEED_END, timeout=1.5)
        finally:
            elapsed = time.perf_counter() - began
            await client.close()
            assert asyncio.all_tasks() == {asyncio.current_task()}
        return elapsed

    for attempt in (connect_explicitly, request_only):
        began = time.perf_counter()
        with pytest.raises(ConnectionError, match="did not confirm this client's subscription") as caught:
            asyncio.run(attempt())
        elapsed = time.perf_counter() - began
        assert isinstance(caught.value, errors.RelayUnavailableError)
        assert 1.4 <= elapsed < 1.5 + 2, elapsed


def test_relay_killed_mid_wait_raises_instead_of_hanging(tmp_path, recorder):
    timeout = 4.0
    began = 0.0
    with relay_process(tmp_path / "relay", workers=1) as relay:
        async def main() -> None:
            nonlocal began
            async with _client(relay) as client:
                began = time.perf_counter()
                # a year of 1-minute candles: the historian needs well over a second for it
                await client.request_historical_ohlc("SIM:KILL/USDT", 60, SEED_START,
                                                     SEED_START + 365 * 86400 * 1_000_000 - 1, timeout=timeout)

        def killer() -> None:
            if recorder.sent_event.wait(timeout):
                time.sleep(0.3)  # the relay accepts in about a millisecond; the historian is busy
                os.kill(relay.pid, signal.SIGKILL)

        thread = threading.Thread(target=killer)
        thread.start()
        with pytest.raises((TimeoutError, ConnectionError)) as caught:
            asyncio.run(main())
        elapsed = time.perf_counter() - began
        thread.join()
        assert relay.proc.wait(5) == -signal.SIGKILL
    assert isinstance(caught.value, errors.DexOrderError)
    assert elapsed < timeout + 2, elapsed
    assert recorder.received == []


def test_closed_client(relay, recorder):
    async def main() -> tuple[BaseException | None, BaseException | None]:
        client = _client(relay)
        await client.connect()
        # a request still waiting when the client is closed gets ClientClosedError
        waiting = asyncio.create_task(client.request_historical_ohlc(
            "SIM:CLOSE/USDT", 60, SEED_START, SEED_START + 90 * 86400 * 1_000_000 - 1))
        while not recorder.sent:
            await asyncio.sleep(0.005)
        await client.close()
        await client.close()  # idempotent
        waited = (await asyncio.gather(waiting, return_exceptions=True))[0]
        try:
            await client.request_historical_ohlc(SEED_TICKER, 3600, SEED_START, SEED_END)
        except BaseException as exc:  # noqa: BLE001 - inspected below
            used = exc
        else:
            used = None
        assert asyncio.all_tasks() == {asyncio.current_task()}
        return waited, used

    waited, used = asyncio.run(main())
    assert isinstance(waited, errors.ClientClosedError)
    assert isinstance(used, errors.ClientClosedError)
    assert "create a new one" in str(used)
    with pytest.raises(errors.ClientClosedError):
        asyncio.run(_connect_closed(relay))


async def _connect_closed(relay: RelayProcess) -> None:
    client = _client(relay)
    await client.close()
    await client.connect()


def test_client_ids_are_unique_and_respected(relay):
    async def main() -> tuple[str, dict]:
        explicit = f"tester-{uuid.uuid4().hex[:8]}"
        async with _client(relay, client_id=explicit) as client:
            return client.client_id, await client.request_historical_ohlc(SEED_TICKER, 3600, EMPTY_START, EMPTY_END)

    client_id, result = asyncio.run(main())
    assert client_id.startswith("tester-")
    assert result["status"] == "NOT_FOUND"
    assert HistoryClient("tcp://a:1", "tcp://a:2").client_id != HistoryClient("tcp://a:1", "tcp://a:2").client_id


def test_bad_endpoint_is_a_value_error():
    async def main() -> None:
        async with HistoryClient("not-an-endpoint", "tcp://127.0.0.1:1"):
            pass

    with pytest.raises(errors.InvalidRequestError, match="is not a ZeroMQ endpoint"):
        asyncio.run(main())


def test_client_ids_sharing_a_prefix_get_only_their_own_notifications(relay, caplog):
    """SUB matches topic prefixes: RESPONSE:pfx also receives RESPONSE:pfx-2's notifications."""
    prefix = uuid.uuid4().hex[:8]

    async def main() -> tuple[dict, dict]:
        async with _client(relay, client_id=prefix) as short, _client(relay, client_id=prefix + "-2") as long:
            return await asyncio.gather(
                short.request_historical_ohlc(SEED_TICKER, 3600, EMPTY_START, EMPTY_END),
                long.request_historical_ohlc(SEED_TICKER, 3600, SEED_START, SEED_END),
            )

    with caplog.at_level("DEBUG", logger="dexorder_feeds.client.history_client"):
        short_result, long_result = asyncio.run(main())
    assert short_result["status"] == "NOT_FOUND"
    assert long_result["status"] == "OK" and long_result["row_count"] == 168
    assert "invalid notification" not in caplog.text
