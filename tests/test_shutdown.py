"""Clean shutdown: ``OHLCClient.stop()``, ``HistoryClient.close()`` and the sync bridge leave no
thread, no open ZeroMQ socket and no task behind, and a process that used them exits promptly,
also when it forgot to close them.
"""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator

import pytest
import zmq
from relay_process import RelayProcess, relay_process

import dexorder_feeds
from dexorder_feeds.client.history_client import HistoryClient
from dexorder_feeds.client.ohlc_client import OHLCClient
from dexorder_feeds.client.sync import close_sync_clients

SEED_TICKER = "SIM:BTC/USDT"
SEED_START = 1735689600000000
SEED_END = 1736294399000000
HOUR_US = 3600 * 1_000_000


@pytest.fixture(scope="module")
def relay(tmp_path_factory) -> Iterator[RelayProcess]:
    with relay_process(tmp_path_factory.mktemp("shutdown-relay")) as process:
        yield process


def _process_lifetime_threads() -> set[threading.Thread]:
    """pyiceberg's own reader pool: one per process, shared by every scan, never shut down by
    pyiceberg (its idle threads end with the interpreter, without delaying exit)."""
    from pyiceberg.utils.concurrent import ExecutorFactory

    return set(getattr(ExecutorFactory.get_or_create(), "_threads", ()))


def _threads() -> set[str]:
    allowed = _process_lifetime_threads()
    return {f"{t.name}#{t.ident}" for t in threading.enumerate() if t.is_alive() and t not in allowed}


def _open_sockets() -> list[zmq.Socket]:
    gc.collect()
    return [o for o in gc.get_objects() if isinstance(o, zmq.Socket) and not o.closed]


class Baseline:
    """Threads and open sockets before; ``check()`` waits (briefly) until they are back to it."""

    def __init__(self) -> None:
        close_sync_clients()
        self.threads = _threads()
        self.sockets = len(_open_sockets())

    def check(self, timeout: float = 3.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            extra = _threads() - self.threads
            if not extra or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        assert not extra, f"threads left behind: {sorted(extra)}"
        assert len(_open_sockets()) == self.sockets, [s for s in _open_sockets()]


def _remote(relay: RelayProcess) -> OHLCClient:
    return OHLCClient(iceberg_catalog_uri=relay.catalog_uri, relay_endpoint=relay.relay_endpoint,
                      notification_endpoint=relay.notification_endpoint)


async def _no_other_tasks() -> None:
    await asyncio.sleep(0)
    assert asyncio.all_tasks() == {asyncio.current_task()}, asyncio.all_tasks()


def test_ohlc_client_stop_remote_leaves_nothing(relay):
    baseline = Baseline()

    async def main() -> int:
        client = _remote(relay)
        frame = await client.fetch_ohlc("SIM:STOP/USDT", 3600, SEED_START, SEED_END)
        await client.stop()
        await client.stop()  # idempotent
        await _no_other_tasks()
        return len(frame)

    assert asyncio.run(main()) == 168
    baseline.check()


def test_ohlc_client_stop_embedded_leaves_nothing(tmp_path):
    baseline = Baseline()

    async def main() -> int:
        async with OHLCClient(iceberg_catalog_uri=f"sqlite:///{tmp_path / 'catalog.db'}") as first, \
                OHLCClient(iceberg_catalog_uri=f"sqlite:///{tmp_path / 'catalog.db'}") as second:
            frames = await asyncio.gather(first.fetch_ohlc(SEED_TICKER, 3600, SEED_START, SEED_END),
                                          second.fetch_ohlc(SEED_TICKER, 3600, SEED_START, SEED_END))
            await first.stop()  # the other client still uses the shared historian
            assert len(await second.fetch_ohlc("SIM:OTHER/USDT", 3600, SEED_START, SEED_END)) == 168
        await _no_other_tasks()
        return sum(len(f) for f in frames)

    assert asyncio.run(main()) == 2 * 168
    baseline.check()  # the committer thread went with the last client


def test_history_client_close_leaves_nothing_even_mid_request(relay):
    baseline = Baseline()

    async def main() -> BaseException | None:
        client = HistoryClient(relay.relay_endpoint, relay.notification_endpoint)
        await client.connect()
        assert (await client.request_historical_ohlc(SEED_TICKER, 3600, SEED_START, SEED_END))["status"] == "OK"
        waiting = asyncio.create_task(client.request_historical_ohlc(
            "SIM:CLOSING/USDT", 60, SEED_START, SEED_START + 60 * 86400 * 1_000_000 - 1))
        await asyncio.sleep(0.05)
        await client.close()
        outcome = (await asyncio.gather(waiting, return_exceptions=True))[0]
        await _no_other_tasks()
        return outcome

    outcome = asyncio.run(main())
    assert isinstance(outcome, dexorder_feeds.vocabulary.errors.ClientClosedError)
    baseline.check()


def test_a_failed_connect_leaves_nothing(relay):
    baseline = Baseline()

    async def main() -> None:
        client = HistoryClient(relay.relay_endpoint, "tcp://127.0.0.1:9", connect_timeout=0.5)
        with pytest.raises(ConnectionError):
            await client.connect()
        await client.close()
        await _no_other_tasks()

    asyncio.run(main())
    baseline.check()


def test_the_sync_bridge_closes_its_loop_thread_and_clients(relay, tmp_path):
    baseline = Baseline()
    embedded = dexorder_feeds.fetch_ohlc(SEED_TICKER, 3600, SEED_START, SEED_END,
                                         iceberg_catalog_uri=f"sqlite:///{tmp_path / 'catalog.db'}")
    remote = dexorder_feeds.fetch_ohlc("SIM:SYNC/USDT", 3600, SEED_START, SEED_END,
                                       iceberg_catalog_uri=relay.catalog_uri, relay_endpoint=relay.relay_endpoint,
                                       notification_endpoint=relay.notification_endpoint)
    assert len(embedded) == len(remote) == 168
    assert any(t.name == "dexorder-sync-loop" for t in threading.enumerate())
    close_sync_clients()
    baseline.check()
    # and it starts again on demand
    again = dexorder_feeds.fetch_ohlc(SEED_TICKER, 3600, SEED_START, SEED_START + 5 * HOUR_US,
                                      iceberg_catalog_uri=f"sqlite:///{tmp_path / 'catalog.db'}")
    assert len(again) == 6
    close_sync_clients()
    baseline.check()


SCRIPTS = {
    "sync-remote": """
        import dexorder_feeds
        df = dexorder_feeds.fetch_ohlc("SIM:EXIT/USDT", 3600, {start}, {end}, iceberg_catalog_uri={uri!r},
                                       relay_endpoint={relay!r}, notification_endpoint={notify!r})
        print(len(df))
    """,
    "async-forgot-to-stop": """
        import asyncio
        from dexorder_feeds import OHLCClient
        async def main():
            client = OHLCClient(iceberg_catalog_uri={uri!r}, relay_endpoint={relay!r}, notification_endpoint={notify!r})
            print(len(await client.fetch_ohlc("SIM:EXIT/USDT", 3600, {start}, {end})))  # no stop()
        asyncio.run(main())
    """,
    "history-client-forgot-to-close": """
        import asyncio
        from dexorder_feeds import HistoryClient
        async def main():
            client = HistoryClient({relay!r}, {notify!r})
            await client.connect()
            print((await client.request_historical_ohlc("SIM:EXIT/USDT", 3600, {start}, {end}))["row_count"])
        asyncio.run(main())
    """,
}


@pytest.mark.parametrize("name", list(SCRIPTS))
def test_a_process_that_used_the_relay_exits_promptly(relay, tmp_path, name):
    script = textwrap.dedent(SCRIPTS[name]).format(start=SEED_START, end=SEED_END, uri=relay.catalog_uri,
                                                   relay=relay.relay_endpoint, notify=relay.notification_endpoint)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEXORDER_")}
    env.update(DEXORDER_CACHE_DIR=str(tmp_path), DEXORDER_CONFIG=str(tmp_path / "c.toml"), PYTHONUNBUFFERED="1")
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # the work is done once it printed
        printed = time.perf_counter()
        returncode = process.wait(timeout=30)
        exit_seconds = time.perf_counter() - printed
    finally:
        if process.poll() is None:
            process.kill()
        _, stderr = process.communicate()
    assert returncode == 0, stderr
    assert line.strip() == "168"
    assert exit_seconds < 3, f"the interpreter took {exit_seconds:.1f} s to exit"
