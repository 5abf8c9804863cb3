"""Run ``dexorder-feeds serve`` as a real subprocess on free loopback ports, for tests.

::

    with relay_process(tmp_path, sources=["EMPTY=files:/some/dir"]) as relay:
        client = HistoryClient(relay.relay_endpoint, relay.notification_endpoint)
        ...
        relay.logs()               # everything the relay logged so far (it runs at INFO)
        relay.terminate()          # SIGTERM, returns the exit code

The process logs at INFO to stderr, which a thread collects; the relay is ready when it logs
``relay ready`` (see :mod:`dexorder_feeds.relay.server`). Ports are picked by binding
``127.0.0.1:0`` and releasing the port; if the relay then finds one taken, it is started again
on new ports.

For fault tests: ``relay.restart()`` kills the process (SIGKILL, if still alive) and starts a
new one on the same endpoints, catalog and options; ``relay.rss_kb()`` reads its resident memory;
``start_relay_process(..., relay_endpoint=…, notification_endpoint=…)`` binds given endpoints;
``env=`` adds environment variables and ``preexec_fn=`` runs in the child before exec (e.g. to
set a resource limit).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["RelayProcess", "free_tcp_port", "start_relay_process", "relay_process", "READY_TEXT"]

READY_TEXT = "relay ready"


def free_tcp_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RelayProcess:
    """A running ``dexorder-feeds serve`` subprocess and what it logged."""

    def __init__(self, proc: subprocess.Popen[str], relay_endpoint: str, notification_endpoint: str,
                 catalog_uri: str, base_dir: Path, options: Mapping[str, Any] | None = None) -> None:
        self.proc = proc
        self.options = dict(options or {})  # what start_relay_process got, for restart()
        self.relay_endpoint = relay_endpoint
        self.notification_endpoint = notification_endpoint
        self.catalog_uri = catalog_uri
        self.base_dir = base_dir
        self._lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read_stderr, name=f"relay-{proc.pid}-stderr", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._changed:
                self._lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def logs(self) -> str:
        """Everything the process wrote to stderr so far."""
        with self._changed:
            return "".join(self._lines)

    def wait_for_log(self, text: str, timeout: float = 10.0, *, count: int = 1) -> bool:
        """Wait until ``text`` occurs ``count`` times in the log (False on timeout or exit)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while sum(line.count(text) for line in self._lines) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    return False
                self._changed.wait(min(remaining, 0.1))
            return True

    def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait for the exit code (SIGKILL if it does not exit within ``timeout``)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> int:
        """SIGKILL and reap."""
        if self.proc.poll() is None:
            self.proc.kill()
        return self.proc.wait()

    def restart(self, ready_timeout: float = 60.0) -> RelayProcess:
        """SIGKILL this process (if alive) and start a new one on the same endpoints and catalog."""
        self.kill()
        self.stop()
        options = dict(self.options, catalog_uri=self.catalog_uri, relay_endpoint=self.relay_endpoint,
                       notification_endpoint=self.notification_endpoint, ready_timeout=ready_timeout)
        return start_relay_process(self.base_dir, **options)

    def rss_kb(self) -> int:
        """The process's resident set size in kB (``VmRSS`` from ``/proc``; 0 where unknown)."""
        try:
            with open(f"/proc/{self.pid}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return 0

    def stop(self) -> int:
        """Stop however needed (for fixture teardown); returns the exit code."""
        try:
            return self.terminate()
        except subprocess.TimeoutExpired:
            return self.proc.wait()
        finally:
            self._reader.join(5)
            if self.proc.stderr is not None:
                self.proc.stderr.close()


def _environment(base_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEXORDER_")}
    env["DEXORDER_CACHE_DIR"] = str(base_dir / "cache")
    env["DEXORDER_CONFIG"] = str(base_dir / "config.toml")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start_relay_process(
    base_dir: Path,
    *,
    catalog_uri: str | None = None,
    sources: Sequence[str] = (),
    workers: int | None = None,
    extra_args: Sequence[str] = (),
    ready_timeout: float = 60.0,
    attempts: int = 3,
    relay_endpoint: str | None = None,
    notification_endpoint: str | None = None,
    env: Mapping[str, str] | None = None,
    preexec_fn: Callable[[], None] | None = None,
) -> RelayProcess:
    """Start ``dexorder-feeds serve`` on free loopback ports and wait until it is ready.

    ``catalog_uri`` defaults to a SQLite catalog in ``base_dir``; ``sources`` are
    ``EXCHANGE=SPEC`` strings. Raises ``RuntimeError`` with the process log if it fails to start.
    Given endpoints are used as they are (retried for a moment while the port is still taken).
    """
    base_dir = Path(base_dir)
    base_dir.mkdir(parents=True, exist_ok=True)
    catalog_uri = catalog_uri or f"sqlite:///{base_dir / 'catalog.db'}"
    options = dict(sources=list(sources), workers=workers, extra_args=list(extra_args), attempts=attempts,
                   env=dict(env or {}), preexec_fn=preexec_fn)
    fixed = relay_endpoint is not None and notification_endpoint is not None
    last_log = ""
    for _ in range(attempts):
        if not fixed:
            relay_port = free_tcp_port()
            notify_port = free_tcp_port()
            while notify_port == relay_port:
                notify_port = free_tcp_port()
            relay_endpoint = f"tcp://127.0.0.1:{relay_port}"
            notification_endpoint = f"tcp://127.0.0.1:{notify_port}"
        assert relay_endpoint is not None and notification_endpoint is not None
        command = [
            sys.executable, "-m", "dexorder_feeds.cli", "--log-level", "INFO", "serve",
            "--relay-endpoint", relay_endpoint, "--notification-endpoint", notification_endpoint,
            "--iceberg-catalog-uri", catalog_uri,
        ]
        for spec in sources:
            command += ["--source", spec]
        if workers is not None:
            command += ["--workers", str(workers)]
        command += list(extra_args)
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, env={**_environment(base_dir), **(env or {})},
                                cwd=base_dir, preexec_fn=preexec_fn)
        relay = RelayProcess(proc, relay_endpoint, notification_endpoint, catalog_uri, base_dir, options)
        if relay.wait_for_log(READY_TEXT, ready_timeout):
            return relay
        relay.stop()
        last_log = relay.logs()
        if "Address already in use" not in last_log:
            break
        if fixed:
            time.sleep(0.5)
    raise RuntimeError(f"dexorder-feeds serve did not become ready:\n{last_log}")


@contextlib.contextmanager
def relay_process(base_dir: Path, **options: object) -> Iterator[RelayProcess]:
    """:func:`start_relay_process` as a context manager that stops the process at exit."""
    relay = start_relay_process(base_dir, **options)  # type: ignore[arg-type]
    try:
        yield relay
    finally:
        relay.stop()


def entry_point_plugin(site: Path, module: str, code: str) -> dict[str, str]:
    """Write ``code`` as the plugin module ``module`` in ``site``, with the dist-info naming it
    as a ``dexorder_feeds`` entry point; return the environment that puts it on a relay
    process's ``PYTHONPATH`` (pass it as ``env=`` to :func:`start_relay_process`)."""
    site.mkdir(parents=True, exist_ok=True)
    (site / f"{module}.py").write_text(textwrap.dedent(code))
    info = site / f"{module}-1.0.dist-info"
    info.mkdir()
    name = module.replace("_", "-")
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[dexorder_feeds]\n{name} = {module}\n")
    return {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
