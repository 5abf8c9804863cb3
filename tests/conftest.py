"""Shared fixtures: a real SQLite-backed Iceberg catalog in a temp dir, and its warehouse."""

from __future__ import annotations

import pytest

from dexorder_feeds.storage.catalog import open_catalog
from dexorder_feeds.storage.warehouse import Warehouse

SEED_TICKER = "SIM:BTC/USDT"
SEED_START = 1735689600000000  # 2025-01-01 00:00 UTC
SEED_END = 1736294399000000  # 2025-01-07 23:59:59 UTC -> 168 hourly candles


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """No test reads or writes the user's real cache dir or config file."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("DEXORDER_CACHE_DIR", str(home / "cache"))
    monkeypatch.setenv("DEXORDER_CONFIG", str(home / "config.toml"))
    for var in ("DEXORDER_ICEBERG_CATALOG_URI", "DEXORDER_RELAY_ENDPOINT", "DEXORDER_NOTIFICATION_ENDPOINT",
                "DEXORDER_NAMESPACE", "DEXORDER_SOURCES", "DEXORDER_FEEDS_PLUGINS", "DEXORDER_SETTLE_SECONDS"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(autouse=True)
def _no_relay_remembered():
    """Each test starts with no relay's word about where it stored which range (that record is
    per process, see dexorder_feeds.client.relay_warehouses)."""
    from dexorder_feeds.client import relay_warehouses

    relay_warehouses.forget()
    yield
    relay_warehouses.forget()


@pytest.fixture
def catalog_uri(tmp_path) -> str:
    """A fresh SQLite catalog URI in a temp dir (warehouse files beside it)."""
    return f"sqlite:///{tmp_path / 'catalog' / 'catalog.db'}"


@pytest.fixture
def warehouse(catalog_uri):
    wh = Warehouse(open_catalog(catalog_uri))
    wh.ensure_tables()
    yield wh
    wh.close()


@pytest.fixture(scope="session")
def relay_server(tmp_path_factory):
    """A real `dexorder-feeds serve` on free loopback ports with its own SQLite catalog.

    Attributes: relay_endpoint, notification_endpoint, catalog_uri, pid, proc;
    logs() / wait_for_log(text, timeout) for its INFO log; terminate() / kill().
    """
    from relay_process import relay_process

    with relay_process(tmp_path_factory.mktemp("relay")) as relay:
        yield relay


# -- shared catalogs: SQLite, PostgreSQL and REST + S3, started once per session ----------------
CATALOG_KINDS = ("sqlite", "postgres", "rest")


@pytest.fixture(scope="session")
def seaweedfs_server(tmp_path_factory):
    """A real ``weed mini`` (S3 + Iceberg REST catalog) on loopback; fails if not installed."""
    from catalog_servers import WEED_MISSING, find_weed, running_seaweedfs

    if find_weed() is None:
        pytest.fail(WEED_MISSING)  # the test extra installs it: missing means a broken install
    with running_seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server in a temp dir on loopback; fails if not installed."""
    from catalog_servers import POSTGRES_MISSING, find_postgres_bin, running_postgres

    if find_postgres_bin() is None:
        pytest.fail(POSTGRES_MISSING)  # installed on every machine of ours and in CI
    with running_postgres() as server:
        yield server


@pytest.fixture(params=CATALOG_KINDS)
def catalog_server(request, tmp_path):
    """A :class:`catalog_servers.Catalog` of each kind with a namespace of its own: SQLite in a
    temp dir, PostgreSQL with its data files on SeaweedFS S3, SeaweedFS's REST catalog."""
    from catalog_servers import catalog_for

    kind = request.param
    if kind == "sqlite":
        return catalog_for("sqlite", sqlite_dir=tmp_path / "catalog")
    weed = request.getfixturevalue("seaweedfs_server")
    pg = request.getfixturevalue("postgres_server") if kind == "postgres" else None
    return catalog_for(kind, weed=weed, pg=pg)
