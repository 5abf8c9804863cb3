"""Who may talk: CURVE on the relay's request and notification sockets, keys from
``dexorder-feeds keys``, and catalog credentials that never leak into logs or error messages.

One relay for the module runs with ``--curve-secret-key`` and ``--curve-authorized-keys`` that
admits ``alice`` only. ``mallory`` has a key pair the relay does not know; ``plain`` has none.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import logging
import os
import signal
import stat
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
from relay_process import RelayProcess, free_tcp_port, relay_process

from dexorder_feeds.vocabulary import errors
from dexorder_feeds.auth import ClientCurve, client_curve, load_keypair, load_public_key
from dexorder_feeds.config import resolve_settings
from dexorder_feeds.client.history_client import HistoryClient
from dexorder_feeds.client.ohlc_client import OHLCClient
from dexorder_feeds.relay.server import RelayServer
from dexorder_feeds.wire import HistoryRequest, encode_frame, notification_topic

SEED_TICKER = "SIM:BTC/USDT"
SEED_START = 1735689600000000
SEED_END = 1736294399000000
EMPTY_START, EMPTY_END = SEED_START + 1, SEED_START + 2


def _keys_cli(directory: Path, name: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dexorder_feeds.cli", "keys", str(directory), "--name", name],
                          capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("keys")
    for name in ("relay", "alice", "mallory"):
        done = _keys_cli(base / "private", name)
        assert done.returncode == 0, done.stderr
    admitted = base / "admitted"
    admitted.mkdir()
    (admitted / "alice.key").write_bytes((base / "private" / "alice.key").read_bytes())
    return {"dir": base / "private", "admitted": admitted}


@pytest.fixture(scope="module")
def relay(tmp_path_factory, keys) -> Iterator[RelayProcess]:
    with relay_process(tmp_path_factory.mktemp("curve-relay"), extra_args=[
        "--curve-secret-key", str(keys["dir"] / "relay.key_secret"),
        "--curve-authorized-keys", str(keys["admitted"]),
    ]) as process:
        yield process


def _curve(keys: dict[str, Path], name: str) -> ClientCurve:
    return ClientCurve(load_keypair(keys["dir"] / f"{name}.key_secret"), load_public_key(keys["dir"] / "relay.key"))


def _client(relay: RelayProcess, curve: ClientCurve | None, **options) -> HistoryClient:
    return HistoryClient(relay.relay_endpoint, relay.notification_endpoint, curve=curve, **options)


# -- keys -----------------------------------------------------------------------------------------
def test_keys_command_writes_a_key_pair_and_refuses_to_overwrite(tmp_path):
    done = _keys_cli(tmp_path / "k", "bob")
    assert done.returncode == 0, done.stderr
    public, secret = tmp_path / "k" / "bob.key", tmp_path / "k" / "bob.key_secret"
    assert str(public) in done.stdout and str(secret) in done.stdout
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    pair = load_keypair(secret)
    assert load_public_key(public) == pair.public and len(pair.secret) == 40
    assert "secret=***" in repr(pair) and pair.secret.decode() not in repr(pair)
    again = _keys_cli(tmp_path / "k", "bob")
    assert again.returncode == 2 and "already exists" in again.stderr
    assert load_keypair(secret) == pair  # untouched


def test_key_settings_are_checked_with_clear_errors(tmp_path, keys):
    with pytest.raises(errors.InvalidRequestError, match="needs both curve_secret_key"):
        client_curve(resolve_settings(curve_secret_key=str(keys["dir"] / "alice.key_secret")))
    with pytest.raises(errors.InvalidRequestError, match="holds no secret key"):
        load_keypair(keys["dir"] / "alice.key")
    with pytest.raises(errors.InvalidRequestError, match="does not exist; create keys with `dexorder-feeds keys"):
        load_keypair(tmp_path / "nope.key_secret")
    (tmp_path / "junk.key").write_text("not a key")
    with pytest.raises(errors.InvalidRequestError, match="key"):
        load_public_key(tmp_path / "junk.key")
    settings = resolve_settings(environ={"DEXORDER_CURVE_SECRET_KEY": str(keys["dir"] / "alice.key_secret"),
                                         "DEXORDER_CURVE_SERVER_KEY": str(keys["dir"] / "relay.key")})
    assert client_curve(settings) == _curve(keys, "alice")
    assert load_keypair(keys["dir"] / "alice.key_secret").secret.decode() not in repr(settings)


# -- an admitted client -----------------------------------------------------------------------------
def test_an_admitted_client_is_served(relay, keys):
    async def main() -> dict:
        async with _client(relay, _curve(keys, "alice")) as client:
            return await client.request_historical_ohlc(SEED_TICKER, 3600, SEED_START, SEED_END)

    result = asyncio.run(main())
    assert result["status"] == "OK" and result["row_count"] == 168
    assert "auth=curve" in relay.logs()


def test_ohlc_client_takes_the_keys_from_settings(relay, keys, monkeypatch):
    monkeypatch.setenv("DEXORDER_CURVE_SECRET_KEY", str(keys["dir"] / "alice.key_secret"))
    monkeypatch.setenv("DEXORDER_CURVE_SERVER_KEY", str(keys["dir"] / "relay.key"))

    async def main():
        async with OHLCClient(iceberg_catalog_uri=relay.catalog_uri, relay_endpoint=relay.relay_endpoint,
                              notification_endpoint=relay.notification_endpoint) as client:
            return await client.fetch_ohlc("SIM:AUTH/USDT", 3600, SEED_START, SEED_END)

    assert len(asyncio.run(main())) == 168


def test_cli_fetch_with_curve_options(relay, keys, tmp_path):
    command = [sys.executable, "-m", "dexorder_feeds.cli", "fetch", "SIM:CLI/USDT", "--period", "1h",
               "--start", "2025-01-01", "--end", "2025-01-01T09:00:00", "--no-progress",
               "--relay-endpoint", relay.relay_endpoint, "--notification-endpoint", relay.notification_endpoint,
               "--iceberg-catalog-uri", relay.catalog_uri, "--timeout", "20",
               "--curve-secret-key", str(keys["dir"] / "alice.key_secret"),
               "--curve-server-key", str(keys["dir"] / "relay.key")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEXORDER_")}
    env.update(DEXORDER_CACHE_DIR=str(tmp_path), DEXORDER_CONFIG=str(tmp_path / "c.toml"))
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    assert "10 candles of SIM:CLI/USDT" in done.stdout


# -- clients that may not talk ----------------------------------------------------------------------
@pytest.mark.parametrize("who", ["mallory", "plain"])
def test_a_client_without_an_admitted_key_cannot_connect(relay, keys, who):
    curve = _curve(keys, "mallory") if who == "mallory" else None

    async def main() -> None:
        async with _client(relay, curve, connect_timeout=5):
            pass

    began = time.perf_counter()
    with pytest.raises(ConnectionError) as caught:
        asyncio.run(main())
    elapsed = time.perf_counter() - began
    assert isinstance(caught.value, errors.RelayUnavailableError)
    if who == "mallory":
        assert "refused this client's key" in str(caught.value)
        assert "admit this client's public key" in str(caught.value)
    else:
        assert "handshake failed" in str(caught.value) and "may require CURVE" in str(caught.value)
    assert elapsed < 5, elapsed  # the monitor saw the refusal: no need to wait out the timeout


def _raw_sockets(ctx: zmq.Context, relay: RelayProcess, curve: ClientCurve | None, topic: bytes):
    from dexorder_feeds.auth import configure_client_socket

    dealer, sub = ctx.socket(zmq.DEALER), ctx.socket(zmq.SUB)
    for sock in (dealer, sub):
        sock.setsockopt(zmq.LINGER, 0)
        configure_client_socket(sock, curve)
    sub.setsockopt(zmq.SUBSCRIBE, topic)
    sub.setsockopt(zmq.SUBSCRIBE, b"")  # and everything else
    dealer.connect(relay.relay_endpoint)
    sub.connect(relay.notification_endpoint)
    return dealer, sub


@pytest.mark.parametrize("who", ["mallory", "plain"])
def test_without_an_admitted_key_no_request_gets_in_and_no_notification_gets_out(relay, keys, who):
    """Raw sockets, so nothing but CURVE stands in the way: the intruder's request never reaches
    the relay, and while alice is served, the intruder subscribed to her topic hears nothing."""
    curve = _curve(keys, "mallory") if who == "mallory" else None
    alice_id = f"alice-{uuid.uuid4().hex[:8]}"
    ctx = zmq.Context()
    dealer, sub = _raw_sockets(ctx, relay, curve, notification_topic(alice_id))
    try:
        intruder = HistoryRequest(request_id=f"intruder-{uuid.uuid4().hex}", client_id=alice_id, ticker=SEED_TICKER,
                                  period_seconds=3600, start_time=SEED_START, end_time=SEED_END)
        try:
            dealer.send_multipart([b"", encode_frame(intruder)], flags=zmq.NOBLOCK)
        except zmq.Again:
            pass  # not even queued: no connection was ever admitted

        async def alice() -> dict:
            async with _client(relay, _curve(keys, "alice"), client_id=alice_id) as client:
                return await client.request_historical_ohlc(SEED_TICKER, 3600, SEED_START, SEED_END)

        result = asyncio.run(alice())
        assert result["status"] == "OK"
        assert relay.wait_for_log(f"relay request {result['request_id']} ", 5)
        assert not dealer.poll(500), "the intruder got a reply"
        assert not sub.poll(200), "the intruder heard a notification"
    finally:
        dealer.close(0)
        sub.close(0)
        ctx.term()
    assert intruder.request_id not in relay.logs()


# -- catalog credentials ----------------------------------------------------------------------------
SECRETS = {"credential": "dexorder-client:S3cr3t-Cred-4711", "token": "tok-SECRET-0815",
           "s3.secret-access-key": "AKIA-SECRET-KEY-4242"}
SECRET_VALUES = ["S3cr3t-Cred-4711", "tok-SECRET-0815", "AKIA-SECRET-KEY-4242"]


class _EchoCatalog(http.server.BaseHTTPRequestHandler):
    """A hostile REST catalog echoing what it got (headers and body) in its errors. It refuses
    everything, or (``opens = True``) lets the catalog open and fails every later call."""

    seen: list[str] = []
    opens = False

    def _refuse(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode(errors="replace") if length else ""
        echoed = f"{self.command} {self.path} {dict(self.headers)} {body}"
        type(self).seen.append(echoed)
        if self.opens and self.command == "GET" and self.path.split("?")[0] in ("/v1/config", "/v1/namespaces"):
            payload = '{"defaults": {}, "overrides": {}}' if "config" in self.path else '{"namespaces": []}'
            code = 200
        else:
            payload = ('{"error": {"message": "refused: ' + echoed.replace('"', "'")
                       + '", "type": "NotAuthorizedException", "code": 401}, '
                       + '"error_description": "' + echoed.replace('"', "'") + '"}')
            code = 500 if self.opens else 401
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload.encode())

    do_GET = do_POST = do_HEAD = _refuse

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def echo_catalog(opens: bool = False) -> Iterator[str]:
    handler = type("EchoCatalog", (_EchoCatalog,), {"opens": opens})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _assert_clean(text: str, where: str) -> None:
    for secret in SECRET_VALUES:
        assert secret not in text, f"{secret!r} leaked into {where}:\n{text}"


def test_catalog_credentials_reach_the_catalog_but_never_logs_or_errors(caplog, tmp_path):
    _EchoCatalog.seen.clear()
    with echo_catalog() as uri:
        async def main() -> None:
            async with OHLCClient(iceberg_catalog_uri=uri, catalog_properties=SECRETS) as client:
                await client.fetch_ohlc(SEED_TICKER, 3600, SEED_START, SEED_END)

        with caplog.at_level(logging.DEBUG):  # every logger, pyiceberg's and urllib3's included
            with pytest.raises(errors.DexOrderError) as caught:
                asyncio.run(main())
        exc = caught.value
        assert isinstance(exc, errors.WarehouseError), repr(exc)
        assert any("S3cr3t-Cred-4711" in seen or "tok-SECRET-0815" in seen for seen in _EchoCatalog.seen), \
            "the credentials were not passed through to the catalog"
        _assert_clean(str(exc), "the error message")
        _assert_clean(repr(exc), "the error's repr")
        _assert_clean("".join(traceback.format_exception(exc)), "the traceback (with its chained causes)")
        _assert_clean(caplog.text, "the logs")
        _assert_clean(repr(resolve_settings(iceberg_catalog_uri=uri, catalog_properties=SECRETS)), "Settings repr")

        env = {k: v for k, v in os.environ.items() if not k.startswith("DEXORDER_")}
        env.update(DEXORDER_CACHE_DIR=str(tmp_path), DEXORDER_CONFIG=str(tmp_path / "c.toml"),
                   DEXORDER_CATALOG__TOKEN=SECRETS["token"])
        props = ["--catalog-property", f"credential={SECRETS['credential']}",
                 "--catalog-property", f"s3.secret-access-key={SECRETS['s3.secret-access-key']}"]
        fetch = subprocess.run([sys.executable, "-m", "dexorder_feeds.cli", "--log-level", "DEBUG", "fetch", SEED_TICKER,
                                "--start", "2025-01-01", "--end", "2025-01-02", "--iceberg-catalog-uri", uri, *props],
                               capture_output=True, text=True, timeout=60, env=env)
        assert fetch.returncode != 0
        _assert_clean(fetch.stdout + fetch.stderr, "`dexorder-feeds fetch` output")
        # what `dexorder-feeds serve` does with these settings (in-process: same path, no second interpreter)
        settings = resolve_settings(iceberg_catalog_uri=uri, catalog_properties=SECRETS,
                                    relay_endpoint=f"tcp://127.0.0.1:{free_tcp_port()}",
                                    notification_endpoint=f"tcp://127.0.0.1:{free_tcp_port()}")
        with caplog.at_level(logging.DEBUG), pytest.raises(errors.WarehouseError) as serve_error:
            RelayServer.from_settings(settings)
        _assert_clean("".join(traceback.format_exception(serve_error.value)), "the relay's startup error")
        _assert_clean(caplog.text, "the logs")


def test_catalog_credentials_never_leak_from_errors_after_the_catalog_opened(caplog):
    _EchoCatalog.seen.clear()
    with echo_catalog(opens=True) as uri:
        async def main() -> None:
            async with OHLCClient(iceberg_catalog_uri=uri, catalog_properties={"token": SECRETS["token"]}) as client:
                await client.fetch_ohlc(SEED_TICKER, 3600, SEED_START, SEED_END)

        with caplog.at_level(logging.DEBUG):
            with pytest.raises(errors.DexOrderError) as caught:
                asyncio.run(main())
    assert any(SECRETS["token"] in seen for seen in _EchoCatalog.seen)  # passed through
    _assert_clean(str(caught.value), "the error message")
    _assert_clean("".join(traceback.format_exception(caught.value)), "the traceback")
    _assert_clean(caplog.text, "the logs")


def test_sighup_reloads_the_admitted_keys(relay, keys):
    """Revoke alice and admit mallory, without a restart (last in the module: it changes the
    relay's key directory, and puts it back)."""
    admitted = keys["admitted"]

    async def connect(name: str) -> None:
        async with _client(relay, _curve(keys, name), connect_timeout=3):
            pass

    asyncio.run(connect("alice"))
    loaded = relay.logs().count("client keys admitted")
    (admitted / "mallory.key").write_bytes((keys["dir"] / "mallory.key").read_bytes())
    (admitted / "alice.key").unlink()
    try:
        relay.proc.send_signal(signal.SIGHUP)
        assert relay.wait_for_log("client keys admitted", 5, count=loaded + 1)
        asyncio.run(connect("mallory"))
        with pytest.raises(errors.RelayUnavailableError, match="refused this client's key"):
            asyncio.run(connect("alice"))
    finally:
        (admitted / "alice.key").write_bytes((keys["dir"] / "alice.key").read_bytes())
        (admitted / "mallory.key").unlink()
        relay.proc.send_signal(signal.SIGHUP)
        assert relay.wait_for_log("client keys admitted", 5, count=loaded + 2)
    asyncio.run(connect("alice"))
