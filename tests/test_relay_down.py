"""The relay-down matrix: a fetch of several requests through a ``dexorder-feeds serve`` process
that is killed (SIGKILL) or shut down (SIGTERM) while it works, and comes back on the same ports
and catalog after 5, 20 or 60 s, or never.

What must hold every time: the fetch ends with every candle exactly once, or with
``RelayUnavailableError`` / ``RequestTimeoutError`` (a ``ConnectionError`` / ``TimeoutError``);
never ``CancelledError`` (a BaseException that ``except Exception`` misses), in async use, in the
blocking ``dexorder_feeds.fetch_ohlc`` and in the CLI (one line, non-zero exit). A restart inside
the timeout completes the fetch, after a crash and after a graceful shutdown alike: what the old
relay accepted but had not run is sent again under the same request id.

The 5 s cases run by default; 20 s, 60 s and "never" are behind the ``load`` marker
(``pytest -m load tests/test_relay_down.py``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from relay_process import RelayProcess, entry_point_plugin, start_relay_process

from dexorder_feeds import hookimpl
from dexorder_feeds.client.ohlc_client import OHLCClient
from dexorder_feeds.plugins import get_plugin_manager
from dexorder_feeds.storage.catalog import open_catalog
from dexorder_feeds.storage.warehouse import Warehouse
from dexorder_feeds.vocabulary import errors

SEED_START = 1735689600000000  # 2025-01-01 00:00 UTC
MINUTE_US = 60 * 1_000_000
PIECE = 100_000  # the fetcher's split size, in candles
PIECES = 4  # the fill sends 4 at a time: with one worker, one runs and three wait in the queue
TIMEOUT = 40.0

# The relay's SIM source, slowed to an exchange's pace: a fill then takes long enough for the
# outage to land while the relay works (in-process SIM fills 400,000 candles in well under the
# 0.3 s the outage waits). Installed as an entry-point plugin on the relay's PYTHONPATH.
SLOW_PLUGIN = """
import time
from dexorder_feeds.ingest.sources.sim import SimulatedSource
from dexorder_feeds.plugin import hookimpl


class SlowSim(SimulatedSource):
    name = "slowsim"

    def fetch_candles(self, ticker, period_seconds, start, stop):
        time.sleep(1.0)
        return super().fetch_candles(ticker, period_seconds, start, stop)


@hookimpl
def dexorder_register_sources(register):
    register("slowsim", lambda argument: SlowSim())
"""


@pytest.fixture(scope="module")
def slow_relay_options(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """``start_relay_process`` options for a relay whose SIM answers after a second."""
    env = entry_point_plugin(tmp_path_factory.mktemp("slow-sim-site"), "relay_down_slow_sim", SLOW_PLUGIN)
    return {"sources": ["SIM=slowsim"], "env": env}


class SentWatcher:
    """Observer: set once the client sent its first history request."""

    def __init__(self) -> None:
        self.sent = threading.Event()

    @hookimpl
    def dexorder_request_sent(self, request_id: str, ticker: str, period_seconds: int, start_time: int,
                              end_time: int) -> None:
        self.sent.set()


@pytest.fixture
def watcher() -> Iterator[SentWatcher]:
    plugin = SentWatcher()
    pm = get_plugin_manager()
    pm.register(plugin)
    yield plugin
    pm.unregister(plugin)


class Outage:
    """In a thread: once the first request is sent, signal the relay, wait for it to exit, stay
    down ``down`` seconds (None: for good), then start a new relay on the same endpoints."""

    def __init__(self, relay: RelayProcess, watcher: SentWatcher, sig: int, down: float | None,
                 options: dict) -> None:
        self.relay, self.watcher, self.sig, self.down, self.options = relay, watcher, sig, down, options
        self.new: RelayProcess | None = None
        self.exit_code: int | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="outage")
        self.thread.start()

    def _run(self) -> None:
        if not self.watcher.sent.wait(60):
            return
        time.sleep(0.3)  # the first request runs, the others wait in the relay's queue
        os.kill(self.relay.pid, self.sig)
        self.exit_code = self.relay.proc.wait()
        if self.down is None or self.stop.wait(self.down):
            return
        self.new = start_relay_process(self.relay.base_dir, catalog_uri=self.relay.catalog_uri, workers=1,
                                       relay_endpoint=self.relay.relay_endpoint,
                                       notification_endpoint=self.relay.notification_endpoint, **self.options)

    def finish(self) -> None:
        self.stop.set()
        self.thread.join()
        self.relay.stop()
        if self.new is not None:
            self.new.stop()


def _stored(catalog_uri: str, ticker: str, interval: tuple[int, int]) -> tuple[int, int]:
    warehouse = Warehouse(open_catalog(catalog_uri))
    try:
        table, _ = warehouse.read_candles(ticker, 60, interval)
    finally:
        warehouse.close()
    return table.num_rows, len(set(table["timestamp"].to_pylist()))


def _case(sig: int, down: float | None) -> object:
    name = f"{signal.Signals(sig).name}-{'never' if down is None else f'{down:g}s'}"
    marks = [] if down == 5 else [pytest.mark.load]
    return pytest.param(sig, down, id=name, marks=marks)


MATRIX = [_case(sig, down) for sig in (signal.SIGKILL, signal.SIGTERM) for down in (5, 20, 60, None)]


@pytest.mark.parametrize("sig,down", MATRIX)
def test_relay_down_matrix(tmp_path, watcher, slow_relay_options, sig, down):
    ticker = f"SIM:DOWN{signal.Signals(sig).name[3:]}{down or 0}/USDT"
    end = SEED_START + PIECES * PIECE * MINUTE_US - 1
    relay = start_relay_process(tmp_path / "relay", workers=1, **slow_relay_options)
    outage = Outage(relay, watcher, sig, down, slow_relay_options)
    outcome: BaseException | None = None
    frame = None
    began = time.perf_counter()
    try:
        async def main():
            async with OHLCClient(iceberg_catalog_uri=relay.catalog_uri, relay_endpoint=relay.relay_endpoint,
                                  notification_endpoint=relay.notification_endpoint,
                                  request_timeout=TIMEOUT) as client:
                return await client.fetch_ohlc(ticker, 60, SEED_START, end)

        try:
            frame = asyncio.run(main())
        except BaseException as exc:  # noqa: BLE001 - what escapes is exactly what is checked
            outcome = exc
        elapsed = time.perf_counter() - began
    finally:
        outage.finish()
    what = "candles" if outcome is None else f"{type(outcome).__name__}: {outcome}"
    print(f"\nrelay {signal.Signals(sig).name}, back after {down if down is not None else 'never'} s "
          f"(timeout {TIMEOUT:g} s): {what[:160]} in {elapsed:.1f} s")
    assert not isinstance(outcome, (asyncio.CancelledError, KeyboardInterrupt)), what
    if down is not None and down < TIMEOUT / 2:
        # back well inside the timeout: the fetch completes, every candle exactly once
        assert outcome is None, what
        assert outage.new is not None
    if outcome is None:
        assert frame is not None and len(frame) == PIECES * PIECE and frame["timestamp"].is_unique
        rows, distinct = _stored(relay.catalog_uri, ticker, (SEED_START, end + 1))
        assert rows == distinct == PIECES * PIECE
    else:
        assert isinstance(outcome, (errors.RelayUnavailableError, errors.RequestTimeoutError)), what
        assert isinstance(outcome, (ConnectionError, TimeoutError))
    if sig == signal.SIGKILL:
        assert outage.exit_code == -signal.SIGKILL
    else:
        assert outage.exit_code == 0, relay.logs()[-2000:]


_BLOCKING = """
import sys, dexorder_feeds
try:
    dexorder_feeds.fetch_ohlc({ticker!r}, 60, {start}, {end}, iceberg_catalog_uri={catalog!r},
                              relay_endpoint={relay!r}, notification_endpoint={notify!r}, request_timeout={timeout})
except BaseException as exc:
    print("RAISED", type(exc).__module__, type(exc).__name__, isinstance(exc, (ConnectionError, TimeoutError)))
    sys.exit(3)
print("DONE")
"""


@pytest.mark.parametrize("face", ["blocking", "cli"])
def test_relay_killed_for_good_blocking_and_cli_give_one_clear_error(tmp_path, watcher, slow_relay_options, face):
    """SIGKILL during the fetch, never back: the blocking fetch raises a ConnectionError or
    TimeoutError (not concurrent.futures.CancelledError); the CLI prints one line and exits 2."""
    relay = start_relay_process(tmp_path / "relay", workers=1, **slow_relay_options)
    ticker = f"SIM:GONE{face.upper()}/USDT"
    end = SEED_START + PIECES * PIECE * MINUTE_US - 1
    timeout = 8
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEXORDER_")}
    env["DEXORDER_CONFIG"] = str(tmp_path / "none.toml")
    env["DEXORDER_CACHE_DIR"] = str(tmp_path / "cache")
    if face == "blocking":
        command = [sys.executable, "-c", _BLOCKING.format(
            ticker=ticker, start=SEED_START, end=end, catalog=relay.catalog_uri, relay=relay.relay_endpoint,
            notify=relay.notification_endpoint, timeout=timeout)]
    else:
        command = [sys.executable, "-m", "dexorder_feeds.cli", "fetch", ticker, "--period", "60",
                   "--start", str(SEED_START), "--end", str(end), "--no-progress", "-o", str(tmp_path / "out.csv"),
                   "--iceberg-catalog-uri", relay.catalog_uri, "--relay-endpoint", relay.relay_endpoint,
                   "--notification-endpoint", relay.notification_endpoint, "--timeout", str(timeout)]
    try:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                cwd=tmp_path)

        began = time.perf_counter()
        # with one worker, the first request's log line means the other three wait in its queue
        assert relay.wait_for_log("relay request", 120), relay.logs()[-2000:]
        os.kill(relay.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=timeout * 4 + 60)
        elapsed = time.perf_counter() - began
    finally:
        relay.stop()
    print(f"\n{face}: relay SIGKILLed for good, timeout {timeout} s: exit {proc.returncode} after {elapsed:.1f} s; "
          f"{(out + err).strip()[:200]}")
    assert "CancelledError" not in out + err
    assert "Traceback" not in err
    if face == "blocking":
        assert proc.returncode == 3, out + err
        assert out.strip().startswith("RAISED dexorder_feeds.vocabulary.errors"), out
        assert out.strip().endswith("True"), out
    else:
        assert proc.returncode == 2, out + err
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), err
        assert "relay" in lines[0]


def test_requests_sent_while_the_relay_is_gone_end_in_connection_errors_not_cancelled(tmp_path):
    """The cause of the CancelledError: with the relay gone, a request's send blocks (IMMEDIATE,
    no peer); another request that got no reply resets the DEALER, which cancels the blocked
    send. Each request must still end in RelayUnavailableError at its own timeout."""
    from dexorder_feeds.client.history_client import HistoryClient

    relay = start_relay_process(tmp_path / "relay", workers=1)
    try:
        async def main() -> list[object]:
            async with HistoryClient(relay.relay_endpoint, relay.notification_endpoint, reply_timeout=1.0) as client:
                relay.kill()

                async def one(delay: float) -> object:
                    await asyncio.sleep(delay)
                    try:
                        return await client.request_historical_ohlc("SIM:GONE/USDT", 3600, SEED_START,
                                                                    SEED_START + 23 * 3600 * 10**6, timeout=4)
                    except BaseException as exc:  # noqa: BLE001 - what escapes is what is checked
                        return exc

                return await asyncio.gather(*(one(0.3 * k) for k in range(4)))

        outcomes = asyncio.run(main())
    finally:
        relay.stop()
    for outcome in outcomes:
        assert isinstance(outcome, errors.RelayUnavailableError), repr(outcome)
        assert "relay" in str(outcome)
