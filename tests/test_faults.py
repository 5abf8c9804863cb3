"""Faults against real processes: a relay that is down, killed, restarted or frozen; a historian
killed with SIGKILL in the middle of an Iceberg commit; a full disk and a read-only warehouse.

What must hold every time: the caller gets the candles or a clear error within its timeout
(never a hang), the warehouse never holds part of a commit, and no candle is ever stored twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow.compute as pc
import pytest
import zmq
from relay_process import RelayProcess, free_tcp_port, relay_process, start_relay_process

from dexorder_feeds import hookimpl
from dexorder_feeds.vocabulary import errors
from dexorder_feeds.storage.catalog import open_catalog
from dexorder_feeds.client.ohlc_client import OHLCClient
from dexorder_feeds.plugins import get_plugin_manager
from dexorder_feeds.storage.warehouse import Warehouse
from dexorder_feeds.wire import HistoryRequest, RequestReply, decode_frame, encode_frame

SEED_START = 1735689600000000  # 2025-01-01 00:00 UTC
DAY_US = 86400 * 1_000_000
HOUR_US = 3600 * 1_000_000
MINUTE_US = 60 * 1_000_000
PIECE = 100_000  # one history request's worth of 1-minute candles (the fetcher's split size)
PIECE_END = SEED_START + PIECE * MINUTE_US - 1


class SentWatcher:
    """Observer plugin: an event set when the client has sent its first history request."""

    def __init__(self) -> None:
        self.sent = threading.Event()
        self.request_ids: list[str] = []

    @hookimpl
    def dexorder_request_sent(self, request_id: str, ticker: str, period_seconds: int, start_time: int,
                              end_time: int) -> None:
        self.request_ids.append(request_id)
        self.sent.set()


@pytest.fixture
def watcher() -> Iterator[SentWatcher]:
    plugin = SentWatcher()
    pm = get_plugin_manager()
    pm.register(plugin)
    yield plugin
    pm.unregister(plugin)


def _remote(relay: RelayProcess, request_timeout: float) -> OHLCClient:
    return OHLCClient(iceberg_catalog_uri=relay.catalog_uri, relay_endpoint=relay.relay_endpoint,
                      notification_endpoint=relay.notification_endpoint, request_timeout=request_timeout)


def _stored(catalog_uri: str, ticker: str, period: int, interval: tuple[int, int]) -> tuple[int, int, list]:
    """(rows, distinct timestamps, coverage) of a ticker, read with a fresh Warehouse."""
    warehouse = Warehouse(open_catalog(catalog_uri))
    try:
        table, _ = warehouse.read_candles(ticker, period, interval)
        coverage = warehouse.read_coverage(ticker, period)
    finally:
        warehouse.close()
    return table.num_rows, len(pc.unique(table["timestamp"])), coverage


def _kill_after_sent(watcher: SentWatcher, relay: RelayProcess, delay: float, then=None) -> threading.Thread:
    def run() -> None:
        if watcher.sent.wait(30):
            time.sleep(delay)
            os.kill(relay.pid, signal.SIGKILL)
            if then is not None:
                then()

    thread = threading.Thread(target=run, name="killer")
    thread.start()
    return thread


# -- the relay ----------------------------------------------------------------------------------
def test_relay_down_at_start_is_a_connection_error_within_the_timeout(tmp_path):
    client = OHLCClient(iceberg_catalog_uri=f"sqlite:///{tmp_path / 'catalog.db'}",
                        relay_endpoint=f"tcp://127.0.0.1:{free_tcp_port()}",
                        notification_endpoint=f"tcp://127.0.0.1:{free_tcp_port()}", request_timeout=1.0)

    async def main() -> None:
        try:
            await client.fetch_ohlc("SIM:DOWN/USDT", 3600, SEED_START, SEED_START + 9 * HOUR_US)
        finally:
            await client.stop()

    began = time.perf_counter()
    with pytest.raises(ConnectionError, match="did not confirm this client's subscription") as caught:
        asyncio.run(main())
    elapsed = time.perf_counter() - began
    assert isinstance(caught.value, errors.RelayUnavailableError)
    assert elapsed < 1.0 + 3, elapsed


def test_relay_killed_mid_request_and_restarted_the_fetch_succeeds(tmp_path, watcher, caplog):
    """SIGKILL while the historian works on the request, a new relay on the same endpoints: the
    client sees its notification connection come back, sends the same request id again, and the
    fetch completes with every candle exactly once."""
    ticker, end = "SIM:RESTART/USDT", SEED_START + 2 * PIECE * MINUTE_US - 1  # two requests
    restarted: dict[str, RelayProcess] = {}
    relay = start_relay_process(tmp_path / "relay", workers=1)
    try:
        killer = _kill_after_sent(watcher, relay, 0.15, then=lambda: restarted.setdefault("relay", relay.restart()))

        async def main():
            async with _remote(relay, request_timeout=60) as client:
                return await client.fetch_ohlc(ticker, 60, SEED_START, end)

        began = time.perf_counter()
        with caplog.at_level(logging.INFO, logger="dexorder_feeds.client.history_client"):
            frame = asyncio.run(main())
        elapsed = time.perf_counter() - began
        killer.join()
        new = restarted["relay"]
        new_log = new.logs()
    finally:
        relay.stop()
        if "relay" in restarted:
            restarted["relay"].stop()
    assert relay.proc.returncode == -signal.SIGKILL
    assert len(frame) == 2 * PIECE and frame["timestamp"].is_unique
    assert "notification connection to" in caplog.text and "is back" in caplog.text
    assert "reconnected; sending request" in caplog.text
    resent = [rid for rid in watcher.request_ids if f"relay request {rid} " in new_log]
    assert resent, "the restarted relay never saw a re-sent request"
    rows, distinct, _ = _stored(relay.catalog_uri, ticker, 60, (SEED_START, end + 1))
    assert rows == distinct == 2 * PIECE
    print(f"\nrelay killed and restarted mid-request: fetch done in {elapsed:.2f} s, "
          f"{len(resent)} requests re-sent to the new relay")
    assert elapsed < 60


def test_notification_lost_the_fetch_returns_what_the_warehouse_holds(tmp_path, watcher, caplog):
    """The relay dies after taking the request (its notification never comes); meanwhile another
    writer stores the range. At its timeout the client reads the warehouse and returns the
    candles instead of failing."""
    ticker = "SIM:LOST/USDT"
    with relay_process(tmp_path / "relay", workers=1) as relay:
        killer = _kill_after_sent(watcher, relay, 0.05)

        async def other_writer() -> int:
            watcher.sent.wait(30)
            # an in-process historian on the same warehouse fills the range meanwhile
            async with OHLCClient(iceberg_catalog_uri=relay.catalog_uri) as embedded:
                return len(await embedded.fetch_ohlc(ticker, 60, SEED_START, PIECE_END))

        async def main():
            async with _remote(relay, request_timeout=3) as client:
                fetch = asyncio.create_task(client.fetch_ohlc(ticker, 60, SEED_START, PIECE_END))
                filled = await asyncio.to_thread(lambda: asyncio.run(other_writer()))
                return filled, await fetch

        began = time.perf_counter()
        with caplog.at_level(logging.WARNING, logger="dexorder_feeds.client.fetcher"):
            filled, frame = asyncio.run(main())
        elapsed = time.perf_counter() - began
        killer.join()
        assert relay.proc.wait(5) == -signal.SIGKILL
    assert filled == PIECE
    assert len(frame) == PIECE and frame["timestamp"].is_unique
    assert "the notification was lost: returning the stored candles" in caplog.text
    assert elapsed < 3 + 3, elapsed


@pytest.mark.parametrize("stored", [True, False], ids=["range-stored", "range-missing"])
@pytest.mark.parametrize("error", [errors.RequestTimeoutError, errors.RelayUnavailableError])
def test_fetcher_reads_the_warehouse_before_giving_up(tmp_path, stored, error):
    """The fetcher's logic alone (a fake transport): the fill fails as a lost notification does;
    the candles are returned if the warehouse holds them now, else the error reaches the caller."""
    from dexorder_feeds.config import resolve_settings
    from dexorder_feeds.client.fetcher import FetchContext, Fetcher
    from dexorder_feeds.client.iceberg_client import IcebergClient
    from dexorder_feeds.vocabulary.requests import FetchRequest
    from dexorder_feeds.ingest.historian import Historian
    from dexorder_feeds.client.transport import HistoryTransport

    class LosingTransport(HistoryTransport):
        async def request_historical_ohlc(self, ticker, period_seconds, start_time, end_time, timeout=30.0,
                                          limit=None):
            if stored:  # the historian did the work; only its notification never came
                await asyncio.to_thread(historian.handle, HistoryRequest(
                    request_id=uuid.uuid4().hex, client_id="x", ticker=ticker, period_seconds=period_seconds,
                    start_time=start_time, end_time=end_time))
            raise error("no completion notification (lost)")

    uri = f"sqlite:///{tmp_path / 'catalog.db'}"
    warehouse = Warehouse(open_catalog(uri))
    historian = Historian(warehouse)
    context = FetchContext(IcebergClient(warehouse=warehouse), LosingTransport(), resolve_settings(iceberg_catalog_uri=uri),
                           get_plugin_manager().hook, 5.0)
    request = FetchRequest.create("SIM:LOSS/USDT", 3600, SEED_START, SEED_START + 47 * HOUR_US)
    try:
        if stored:
            frame = asyncio.run(Fetcher(context).fetch(request))
            assert len(frame) == 48 and frame["timestamp"].is_unique
        else:
            with pytest.raises(error, match="lost"):
                asyncio.run(Fetcher(context).fetch(request))
    finally:
        historian.close()
        warehouse.close()


# -- the historian, killed in the middle of a commit ----------------------------------------------
def _files(directory: Path, suffix: str) -> set[str]:
    if not directory.exists():
        return set()
    return {str(p) for p in directory.rglob(f"*{suffix}")}


def _kill_when(relay: RelayProcess, appeared, timeout: float = 20.0) -> bool:
    """Poll (~1 ms) until ``appeared()`` is true, then SIGKILL at once. False if the relay ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if appeared():
            os.kill(relay.pid, signal.SIGKILL)
            relay.proc.wait(5)
            return True
        if relay.proc.poll() is not None:
            return False
        time.sleep(0.001)
    os.kill(relay.pid, signal.SIGKILL)
    relay.proc.wait(5)
    return False


def _send_raw(relay: RelayProcess, request: HistoryRequest) -> None:
    ctx = zmq.Context.instance()
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.setsockopt(zmq.RCVTIMEO, 5000)
    try:
        dealer.connect(relay.relay_endpoint)
        dealer.send_multipart([b"", encode_frame(request)])
        reply = decode_frame(dealer.recv_multipart()[-1], expect=(RequestReply,))
        assert reply.accepted, reply.reason
    finally:
        dealer.close(0)


def test_sigkill_during_a_commit_leaves_no_partial_range_and_the_next_fetch_fills_it(tmp_path):
    """Kill -9 the serve process at both ends of an Iceberg commit of 100,000 candles: when its
    data file appears (nothing committed yet) and when the new table metadata appears (all
    written, the catalog not yet pointing at it). Each time the warehouse holds all of that commit or none of it, never a duplicate;
    then a new relay fills every range."""
    base = tmp_path / "relay"
    relay = start_relay_process(base, workers=1)
    data_root = base / "warehouse" / "trading" / "ohlc"
    outcomes: dict[str, tuple[bool, int, int, list]] = {}
    tickers = {"data-file": "SIM:CRASHA/USDT", "metadata": "SIM:CRASHC/USDT"}
    try:
        for phase, ticker in tickers.items():
            before_json = _files(data_root / "metadata", ".metadata.json")
            partition = data_root / "data" / f"ticker={ticker.replace(':', '%3A').replace('/', '%2F')}"
            if phase == "data-file":
                def trigger(partition: Path = partition) -> bool:
                    return bool(_files(partition, ".parquet"))
            else:
                def trigger(before: set[str] = before_json) -> bool:
                    return bool(_files(data_root / "metadata", ".metadata.json") - before)
            _send_raw(relay, HistoryRequest(request_id=uuid.uuid4().hex, client_id="crash", ticker=ticker,
                                            period_seconds=60, start_time=SEED_START, end_time=PIECE_END))
            hit = _kill_when(relay, trigger)
            rows, distinct, coverage = _stored(relay.catalog_uri, ticker, 60, (SEED_START, PIECE_END + 1))
            outcomes[phase] = (hit, rows, distinct, coverage)
            relay.stop()
            relay = relay.restart()

        for phase, (hit, rows, distinct, coverage) in outcomes.items():
            assert hit, f"{phase}: the commit window was never seen"
            assert rows in (0, PIECE), f"{phase}: a partial commit of {rows} candles is visible"
            assert distinct == rows, f"{phase}: duplicates"
            if coverage:  # coverage is recorded after the candles, never before
                assert rows == PIECE and coverage == [(SEED_START, SEED_START + PIECE * MINUTE_US)]

        async def refill() -> list[int]:
            async with _remote(relay, request_timeout=60) as client:
                frames = [await client.fetch_ohlc(t, 60, SEED_START, PIECE_END) for t in tickers.values()]
            return [len(f) for f in frames if f["timestamp"].is_unique]

        assert asyncio.run(refill()) == [PIECE] * len(tickers)
        for ticker in tickers.values():
            rows, distinct, _ = _stored(relay.catalog_uri, ticker, 60, (SEED_START, PIECE_END + 1))
            assert rows == distinct == PIECE
    finally:
        relay.stop()
    print("\nSIGKILL mid-commit, rows visible after the kill: "
          + ", ".join(f"{phase}={rows}" for phase, (_, rows, _, _) in outcomes.items()))


# -- the disk: full, then read-only ---------------------------------------------------------------
def _run(*command: str) -> bool:
    return subprocess.run(command, capture_output=True).returncode == 0


@contextlib.contextmanager
def small_disk(path: Path, size: str) -> Iterator[bool]:
    """A tmpfs of ``size`` at ``path`` (yields True), or just the directory (False) where
    mounting is not permitted."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = os.geteuid() == 0 and _run("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
    try:
        yield mounted
    finally:
        if mounted and not _run("umount", str(path)):
            _run("umount", "-l", str(path))


def _limit_file_size() -> None:  # in the serve child when tmpfs cannot be mounted
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))


def test_disk_full_then_read_only_are_clear_errors_and_nothing_is_half_written(tmp_path):
    """A 1 MB tmpfs under the relay's warehouse: a ~1.8 MB commit (100,000 one-minute candles at
    ~18 bytes each) fails with "disk full" and leaves
    the table as it was; with space again the same fetch fills it; a read-only data directory is
    a clear error too, while reads go on. (Without permission to mount, RLIMIT_FSIZE in the
    serve process stands in for the full disk.)"""
    disk = tmp_path / "disk"
    week = (SEED_START, SEED_START + 7 * DAY_US - 1)
    big = (SEED_START, PIECE_END)
    with small_disk(disk, "1m") as mounted:
        options = {} if mounted else {"preexec_fn": _limit_file_size}
        with relay_process(disk, workers=1, **options) as relay:
            # one client and one reader, opened before the disk fills up
            reader = Warehouse(open_catalog(relay.catalog_uri))
            reader.ensure_tables()

            def stored(ticker: str, period: int, interval: tuple[int, int]) -> tuple[int, int, list]:
                table, _ = reader.read_candles(ticker, period, (interval[0], interval[1] + 1))
                return table.num_rows, len(pc.unique(table["timestamp"])), reader.read_coverage(ticker, period)

            async def main() -> None:
                async with _remote(relay, request_timeout=30) as client:
                    assert len(await client.fetch_ohlc("SIM:SMALL/USDT", 3600, *week)) == 168
                    with pytest.raises(errors.DexOrderError) as full:  # ~1.8 MB of candles on a 1 MB disk
                        await client.fetch_ohlc("SIM:BIG/USDT", 60, *big)
                    message = str(full.value)
                    assert isinstance(full.value, ValueError), repr(full.value)  # status ERROR: the seed's ValueError
                    assert "writing candles of SIM:BIG/USDT failed" in message, message
                    if mounted:
                        assert "No space left on device" in message and "disk" in message and "full" in message
                    else:
                        assert "File too large" in message, message
                    # nothing half-written: the failed range is absent, the earlier one intact
                    assert stored("SIM:BIG/USDT", 60, big) == (0, 0, [])
                    assert stored("SIM:SMALL/USDT", 3600, week)[:2] == (168, 168)
                    if not mounted:
                        return  # read-only needs a mount; tests/test_warehouse.py covers it in-process

                    # space freed: the same fetch now fills the range, once
                    assert _run("mount", "-o", "remount,size=64m", str(disk))
                    frame = await client.fetch_ohlc("SIM:BIG/USDT", 60, *big)
                    assert len(frame) == PIECE and frame["timestamp"].is_unique
                    assert stored("SIM:BIG/USDT", 60, big)[:2] == (PIECE, PIECE)

                    # the data directory becomes a read-only mount
                    data_dir = disk / "warehouse" / "trading" / "ohlc" / "data"
                    assert _run("mount", "--bind", str(data_dir), str(data_dir))
                    try:
                        assert _run("mount", "-o", "remount,bind,ro", str(data_dir))
                        with pytest.raises(errors.DexOrderError) as read_only:
                            await client.fetch_ohlc("SIM:SMALL/USDT", 3600, week[1] + 1, week[1] + 7 * DAY_US)
                        assert "Read-only file system" in str(read_only.value), str(read_only.value)
                        assert "not writable" in str(read_only.value)
                        assert len(await client.fetch_ohlc("SIM:SMALL/USDT", 3600, *week)) == 168  # reads go on
                    finally:
                        if not _run("umount", str(data_dir)):
                            _run("umount", "-l", str(data_dir))
                    assert stored("SIM:SMALL/USDT", 3600, (week[0], week[1] + 7 * DAY_US))[:2] == (168, 168)

            try:
                asyncio.run(main())
            finally:
                reader.close()
