"""A team on one warehouse, on each catalog: several historians (``dexorder-feeds serve``
processes, as two machines run them) and several reader processes, each with its own settings
and cache."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from catalog_servers import Catalog, serve_on, without_dexorder

from dexorder_feeds import HistoryClient

from conftest import SEED_START

REPO = Path(__file__).resolve().parents[1]
H = 3_600_000_000
DAY = 24 * H
TICKERS = ("SIM:BTC/USDT", "SIM:ETH/USDT", "SIM:SOL/USDT")


# -- several historians -------------------------------------------------------------------------
def test_two_serve_processes_on_one_warehouse(catalog_server, tmp_path):
    """Overlapping requests for the same tickers, sent at once to two `serve` processes on one
    warehouse: every request succeeds, every candle is stored exactly once, none is missing."""
    with concurrent.futures.ThreadPoolExecutor(2) as pool:  # two machines start their own
        relays = list(pool.map(lambda i: serve_on(catalog_server, tmp_path / f"serve-{i}", workers=2), range(2)))
    try:
        async def main() -> list[dict]:
            clients = [HistoryClient(r.relay_endpoint, r.notification_endpoint) for r in relays]
            for client in clients:
                await client.connect()
            jobs = []
            for ticker in TICKERS:
                for day in range(3):
                    start = SEED_START + day * DAY
                    # the same day to both relays, plus a range straddling two days to one of them
                    jobs += [client.request_historical_ohlc(ticker, 3600, start, start + DAY - 1, timeout=120)
                             for client in clients]
                    jobs.append(clients[day % 2].request_historical_ohlc(ticker, 3600, start + DAY // 2,
                                                                         start + DAY + DAY // 2 - 1, timeout=120))
            try:
                return await asyncio.gather(*jobs)
            finally:
                for client in clients:
                    await client.close()

        results = asyncio.run(main())
        logs = "".join(r.logs() for r in relays)
    finally:
        for relay in relays:
            relay.stop()
    assert [r["status"] for r in results] == ["OK"] * len(results), [r for r in results if r["status"] != "OK"]
    warehouse = catalog_server.open_warehouse(cache=False)
    expected = list(range(SEED_START, SEED_START + 3 * DAY + DAY // 2, H))
    for ticker in TICKERS:
        stored = sorted(warehouse.read_candles(ticker, 3600, (0, 2**62))[0]["timestamp"].to_pylist())
        assert stored == expected, f"{ticker}: duplicate or lost candles"
    assert "Traceback" not in logs
    for secret in catalog_server.secrets:
        assert secret not in logs


# -- several readers ----------------------------------------------------------------------------
class TeamClient:
    """A `tests/team_client.py` process: one teammate's machine with its own settings and cache."""

    def __init__(self, catalog: Catalog, home: Path) -> None:
        home.mkdir(parents=True)
        config = catalog.write_config(home / "config.toml")
        env = {**without_dexorder(os.environ), "DEXORDER_CONFIG": str(config),
               "DEXORDER_CACHE_DIR": str(home / "cache"), "PYICEBERG_HOME": str(home), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("team_client.py"))],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=env, cwd=home)
        hello = self._read()
        assert hello.get("ready") and hello["embedded"], hello

    def _read(self) -> dict:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"team client exited: {self.proc.stderr.read() if self.proc.stderr else ''}")
        return json.loads(line)

    def ask(self, op: str, ticker: str, start: int, end: int, period: int = 3600) -> dict:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": op, "ticker": ticker, "period": period, "start": start,
                                          "end": end}) + "\n")
        self.proc.stdin.flush()
        reply = self._read()
        assert "error" not in reply, reply["error"]
        return reply

    def stop(self) -> str:
        if self.proc.poll() is None and self.proc.stdin is not None:
            try:
                self.proc.stdin.write(json.dumps({"op": "stop"}) + "\n")
                self.proc.stdin.flush()
            except BrokenPipeError:
                pass
        try:
            _, err = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return err


def test_two_reader_processes_see_each_others_gap_fills(catalog_server, tmp_path):
    """Two long-lived client processes (embedded historians, own config and cache dirs): what
    one filled, the other reads without a request, and without a stale table."""
    ticker = TICKERS[0]
    week = (SEED_START, SEED_START + 7 * DAY - 1)
    wider = (SEED_START - 2 * DAY, SEED_START + 9 * DAY - 1)
    empty = (1388534400000000, 1388534400000000 + 9 * 86400_000000)  # before SIM markets list
    alice, bob = TeamClient(catalog_server, tmp_path / "alice"), TeamClient(catalog_server, tmp_path / "bob")

    def fresh(client: TeamClient, *args, **kwargs) -> dict:
        """A fetch of what the other process committed. REST has no cheap freshness check: tables
        loaded less than the staleness bound ago may predate the other's commit, so the fetch may
        ask again (docs/performance.md, "Catalogs"); that stores nothing new, and its own gap
        fill refreshes its tables, so the next fetch asks nothing and reads the same candles."""
        got = client.ask("fetch", *args, **kwargs)
        if catalog_server.kind == "rest" and got["requests"]:
            again = client.ask("fetch", *args, **kwargs)
            assert (again["rows"], again["digest"]) == (got["rows"], got["digest"])
            return again
        return got

    try:
        a1 = alice.ask("fetch", ticker, *week)
        assert a1["rows"] == 168 and a1["requests"] == [[week[0], week[1] - H + 1]]
        b1 = bob.ask("fetch", ticker, *week)  # bob's process reads what alice's committed
        assert b1["requests"] == [] and (b1["rows"], b1["digest"]) == (168, a1["digest"])
        b2 = bob.ask("fetch", ticker, *wider)  # bob fills only the two outer ranges
        assert sorted(b2["requests"]) == [[wider[0], week[0] - H], [week[1] + 1, wider[1] - H + 1]]
        assert b2["rows"] == 11 * 24 and b2["unique"]
        a2 = fresh(alice, ticker, *wider)  # alice's tables were loaded before bob's commit
        assert a2["requests"] == [] and (a2["rows"], a2["digest"]) == (b2["rows"], b2["digest"])
        assert alice.ask("missing", ticker, *wider)["missing"] == []
        a3 = alice.ask("fetch", ticker, *empty, period=86400)  # checked and empty
        assert a3["rows"] == 0 and len(a3["requests"]) == 1
        b3 = fresh(bob, ticker, *empty, period=86400)
        assert b3["rows"] == 0 and b3["requests"] == [], "a range checked empty must not be asked again"
        assert bob.ask("missing", ticker, *empty, period=86400)["missing"] == []
    finally:
        errors = alice.stop() + bob.stop()
    for secret in catalog_server.secrets:
        assert secret not in errors
    assert "Traceback" not in errors, errors


# -- the one-command try-out --------------------------------------------------------------------
def test_team_up_serves_the_seed_quickstart_on_seaweedfs(tmp_path):
    """`dexorder-feeds team-up` starts SeaweedFS and serve; a teammate with nothing but its
    team.toml runs the seed's Quick Start (168 candles); Ctrl-C stops both."""
    from catalog_servers import WEED_MISSING, free_tcp_port

    from dexorder_feeds.cli.team import WEED_PORT_OPTIONS, find_weed

    if find_weed() is None:
        pytest.fail(WEED_MISSING)  # the test extra installs it: missing means a broken install

    ports = {name: free_tcp_port() for name in (*WEED_PORT_OPTIONS, "relay", "notification")}
    command = [sys.executable, "-m", "dexorder_feeds.cli", "team-up", "--dir", str(tmp_path / "team"),
               "--catalog-port", str(ports["s3.port.iceberg"]), "--s3-port", str(ports["s3.port"]),
               "--relay-port", str(ports["relay"]), "--notification-port", str(ports["notification"]),
               "--source", f"BINANCE=files:{REPO / 'examples' / 'data' / 'candles'}",
               *(f"--weed-port={name}={ports[name]}" for name in WEED_PORT_OPTIONS
                 if name not in ("s3.port", "s3.port.iceberg"))]
    env = {**without_dexorder(os.environ), "DEXORDER_CACHE_DIR": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1"}
    env.pop("AWS_ACCESS_KEY_ID", None)
    env.pop("AWS_SECRET_ACCESS_KEY", None)
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, start_new_session=True)
    try:
        lines = [proc.stdout.readline() for _ in range(4)]
        assert lines[0].startswith("SeaweedFS up"), "".join(lines) + proc.stderr.read()
        config = tmp_path / "team" / "team.toml"
        assert config.stat().st_mode & 0o077 == 0, "the teammates' config holds keys: owner only"
        teammate = tmp_path / "teammate"
        teammate.mkdir()
        deadline = time.monotonic() + 60
        quick = None
        while time.monotonic() < deadline:  # the relay binds just after the lines are printed
            quick = subprocess.run([sys.executable, str(REPO / "examples" / "seed_quickstart.py")],
                                   capture_output=True, text=True, timeout=120, cwd=teammate,
                                   env={**without_dexorder(os.environ), "DEXORDER_CONFIG": str(config),
                                        "DEXORDER_CACHE_DIR": str(teammate / "cache")})
            if quick.returncode == 0:
                break
            time.sleep(0.5)
        assert quick is not None and quick.returncode == 0, quick.stderr if quick else "no run"
        assert quick.stdout.startswith("Fetched 168 candles")
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C on the terminal
        try:
            proc.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    stderr = proc.stderr.read()
    assert proc.returncode == 0, stderr
    secret = json.loads((tmp_path / "team" / "credentials.json").read_text())["secret_key"]
    assert secret not in stderr
    # Ctrl-C says what it does while it stops
    assert "stopping SeaweedFS" in stderr and "team-up stopped" in stderr, stderr
    # SeaweedFS stopped with it: nothing answers on its ports any more.
    for name in ("s3.port", "s3.port.iceberg", "master.port"):
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", ports[name])) != 0, f"SeaweedFS still listens on {name}"


def test_team_up_refuses_a_taken_port_at_once_naming_its_option(tmp_path):
    """Nothing is started when a port is taken: one line naming the port and the option to change."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {**without_dexorder(os.environ), "DEXORDER_CACHE_DIR": str(tmp_path / "cache")}
        done = subprocess.run([sys.executable, "-m", "dexorder_feeds.cli", "team-up", "--dir", str(tmp_path / "team"),
                               "--notification-port", str(port)], capture_output=True, text=True, env=env,
                              timeout=120)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: team-up cannot start"), done.stderr
    assert f"port {port} (--notification-port) is in use" in lines[0]
    assert not (tmp_path / "team" / "seaweedfs").exists()  # SeaweedFS never started


def test_a_seaweedfs_that_exits_at_once_is_reported_as_exiting_not_as_a_timeout(tmp_path):
    from dexorder_feeds.cli.team import LocalObjectStore
    from dexorder_feeds.vocabulary.errors import DexOrderError

    failing = tmp_path / "weed"
    failing.write_text("#!/bin/sh\necho 'bind: address already in use' >&2\nexit 3\n")
    failing.chmod(0o755)
    store = LocalObjectStore(tmp_path / "data", access_key="k", secret_key="s", weed=str(failing),
                             ports={"s3.port": 1, "s3.port.iceberg": 2})
    with pytest.raises(DexOrderError) as caught:
        store.start(timeout=60)
    message = str(caught.value)
    assert "exited" in message and "exit code 3" in message and "within 60 s" not in message
    assert "s3.port=1" in message and "address already in use" in message
