"""One integration suite on three real catalogs: SQLite (one machine), PostgreSQL with its data
files on S3, and the REST catalog of SeaweedFS over its S3 (the seed's deployment).

The servers start once per session (``tests/conftest.py``, ``tests/catalog_servers.py``); each
test gets a namespace of its own. Then: the seed's examples through ``serve``, gap fill,
checked-empty ranges, two historians racing on one range, where catalog properties come from,
secrets that never show, and misconfigurations that fail fast with what to check.
"""

from __future__ import annotations

import asyncio
import ast
import os
import socket
import subprocess
import sys
import concurrent.futures
import threading
import time
from pathlib import Path

import pytest
from catalog_servers import Catalog, catalog_for, serving, without_dexorder

from dexorder_feeds import OHLCClient
from dexorder_feeds.storage.catalog import catalog_properties, open_catalog, redact
from dexorder_feeds.config import resolve_settings
from dexorder_feeds.vocabulary.errors import WarehouseError
from dexorder_feeds.ingest.historian import Historian
from dexorder_feeds.wire import HistoryRequest, Notification

from conftest import SEED_END, SEED_START, SEED_TICKER
from observer import recording

REPO = Path(__file__).resolve().parents[1]
FILES = REPO / "examples" / "data" / "candles"
H = 3_600_000_000


def run_script(args: list[str], tmp_path: Path, env: dict[str, str],
               timeout: float = 120) -> subprocess.CompletedProcess:
    full_env = {**without_dexorder(os.environ), "DEXORDER_CACHE_DIR": str(tmp_path / "cache"),
                "DEXORDER_CONFIG": str(tmp_path / "no-config.toml"), "PYICEBERG_HOME": str(tmp_path / "no-pyiceberg"),
                **env}
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=tmp_path, env=full_env)


def client_env(catalog: Catalog, tmp_path: Path) -> dict[str, str]:
    """How the example's machine gets the catalog: SQLite and PostgreSQL through DEXORDER_*
    variables, the REST catalog through pyiceberg's own .pyiceberg.yaml (as a pyiceberg user
    already has it), with only the URI in the environment."""
    if catalog.kind != "rest":
        return catalog.env()
    home = tmp_path / "pyiceberg-home"
    home.mkdir(exist_ok=True)
    lines = ["catalog:", "  dexorder:", f"    uri: {catalog.uri}"]
    lines += [f"    {key}: \"{value}\"" for key, value in catalog.properties.items()]
    (home / ".pyiceberg.yaml").write_text("\n".join(lines) + "\n")
    return {"PYICEBERG_HOME": str(home), "DEXORDER_ICEBERG_CATALOG_URI": catalog.uri,
            "DEXORDER_NAMESPACE": catalog.namespace}


def assert_no_secrets(text: str, catalog: Catalog) -> None:
    for secret in catalog.secrets:
        assert secret not in text, f"a {catalog.kind} secret appeared in the output"


# -- the seed's examples ------------------------------------------------------------------------
def test_seed_examples_through_serve(catalog_server, tmp_path):
    """The seed's Quick Start prints 168 candles through `serve` on each catalog; the
    HistoryClient example gets its OK notification; the relay logs no secret."""
    with serving(catalog_server, tmp_path / "serve", sources=[f"BINANCE=files:{FILES}"]) as relay:
        endpoints = {"DEXORDER_RELAY_ENDPOINT": relay.relay_endpoint,
                     "DEXORDER_NOTIFICATION_ENDPOINT": relay.notification_endpoint}
        env = {**client_env(catalog_server, tmp_path), **endpoints}
        quick = run_script([sys.executable, str(REPO / "examples" / "seed_quickstart.py")], tmp_path, env)
        assert quick.returncode == 0, quick.stderr
        assert quick.stdout.startswith("Fetched 168 candles"), quick.stdout
        assert "BINANCE:BTC/USDT" in quick.stdout
        history = run_script([sys.executable, str(REPO / "examples" / "seed_history_client.py")], tmp_path,
                             {**endpoints, "DEXORDER_EXAMPLE_TICKER": "SIM:BTC/USDT"})
        assert history.returncode == 0, history.stderr
        result = ast.literal_eval(history.stdout.strip().splitlines()[-1])
        assert result["status"] == "OK" and result["row_count"] == 168, result
        assert result["iceberg_namespace"] == catalog_server.namespace and result["iceberg_table"] == "ohlc"
        logs = relay.logs()
    for text in (logs, quick.stdout, quick.stderr, history.stdout, history.stderr):
        assert_no_secrets(text, catalog_server)
    warehouse = catalog_server.open_warehouse(cache=False)
    for ticker in ("BINANCE:BTC/USDT", SEED_TICKER):
        stored = warehouse.read_candles(ticker, 3600, (0, 2**62))[0]["timestamp"].to_pylist()
        assert len(stored) == len(set(stored)) == 168


# -- gap fill and checked-empty ranges ----------------------------------------------------------
def test_gap_fill_requests_exactly_the_missing_ranges(catalog_server):
    a, b, k = SEED_START, SEED_START + 47 * H, 5 * H

    async def main():
        async with OHLCClient(catalog_server.uri, namespace=catalog_server.namespace,
                              catalog_properties=catalog_server.properties) as client:
            first = await client.fetch_ohlc(SEED_TICKER, 3600, a, b)
            with recording() as rec:
                wider = await client.fetch_ohlc(SEED_TICKER, 3600, a - k, b + k)
                again = await client.fetch_ohlc(SEED_TICKER, 3600, a - k, b + k)
            stored = client.iceberg.warehouse.read_candles(SEED_TICKER, 3600, (0, 2**62))[0]
            return first, wider, again, rec, stored["timestamp"].to_pylist()

    first, wider, again, rec, stored = asyncio.run(main())
    assert len(first) == 48
    assert sorted(r[2:] for r in rec.requests) == [(a - k, a - H), (b + H, b + k)]
    assert wider["timestamp"].tolist() == list(range(a - k, b + k + 1, H))
    assert again.equals(wider) and len(rec.requests) == 2, "the repeat must come from the warehouse"
    assert len(stored) == len(set(stored)) == 58
    assert isinstance(wider.attrs["snapshot_id"], int)


def test_an_empty_range_is_checked_once_then_remembered(catalog_server):
    before_listing = 1388534400000000  # 2014-01-01: SIM markets list on 2015-01-01
    end = before_listing + 9 * 86400_000000

    async def main():
        async with OHLCClient(catalog_server.uri, namespace=catalog_server.namespace,
                              catalog_properties=catalog_server.properties) as client:
            with recording() as rec:
                first = await client.fetch_ohlc(SEED_TICKER, 86400, before_listing, end)
                second = await client.fetch_ohlc(SEED_TICKER, 86400, before_listing, end)
            return first, second, rec, client.iceberg.find_missing_ranges(SEED_TICKER, 86400, before_listing, end)

    first, second, rec, missing = asyncio.run(main())
    assert len(first) == len(second) == 0
    assert len(rec.requests) == 1 and [n["status"] for n in rec.notifications] == ["NOT_FOUND"]
    assert missing == []
    # Another machine (its own catalog object) knows the range was checked, too.
    other = catalog_server.open_warehouse(cache=False)
    assert other.read_coverage(SEED_TICKER, 86400) == [(before_listing, end + 86400_000000)]


# -- two historians racing on one range ---------------------------------------------------------
def request(**fields) -> HistoryRequest:
    base = dict(request_id="r", client_id="c", ticker=SEED_TICKER, period_seconds=3600,
                start_time=SEED_START, end_time=SEED_END)
    base.update(fields)
    return HistoryRequest(**base)


def test_two_historians_racing_never_duplicate(catalog_server):
    """Two historians with catalog objects of their own (two machines) ingest the same days at
    the same moment, plus overlapping half days: every commit conflict is re-read, none lost."""
    first = Historian(catalog_server.open_warehouse(cache=False))
    second = Historian(catalog_server.open_warehouse(cache=False))
    barrier = threading.Barrier(2)
    notes: list[Notification] = []

    def work(historian: Historian, rid: str, shift: int) -> None:
        for day in range(7):
            barrier.wait()
            start = SEED_START + day * 24 * H + shift
            notes.append(historian.handle(request(request_id=f"{rid}{day}", start_time=start,
                                                  end_time=min(start + 24 * H - 1, SEED_END))))

    threads = [threading.Thread(target=work, args=args)
               for args in ((first, "a", 0), (second, "b", 0))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    overlap = [threading.Thread(target=work, args=args) for args in ((first, "c", 12 * H), (second, "d", 6 * H))]
    for t in overlap:
        t.start()
    for t in overlap:
        t.join()
    for historian in (first, second):
        historian.warehouse.close()
    stored = catalog_server.open_warehouse(cache=False).read_candles(SEED_TICKER, 3600, (0, 2**62))[0]
    ts = stored["timestamp"].to_pylist()
    assert len(ts) == len(set(ts)) == 168
    assert [n.status for n in notes] == [Notification.OK] * 28, [n.error_message for n in notes if n.error_message]


def test_reads_see_another_writers_commits_at_once_or_within_the_bound_and_after_a_gap_fill(catalog_server):
    """SQL catalogs check the table's metadata location on every read: another writer's commit
    is read at once. REST has no cheap check: a table loaded less than ``freshness_seconds`` ago
    is used again, until invalidate() (what the fetcher calls after every gap fill)."""
    reader_side = catalog_server.open_warehouse(cache=False)
    writer_side = Historian(catalog_server.open_warehouse(cache=False))
    day = 24 * H

    def stored() -> int:
        return reader_side.read_range(SEED_TICKER, 3600, (SEED_START, SEED_START + 7 * day))[0].num_rows

    assert writer_side.handle(request(request_id="w1", end_time=SEED_START + day - 1)).status == Notification.OK
    assert stored() == 24
    reader_side.reader.freshness_seconds = 3600.0  # no reload by age during this test
    assert writer_side.handle(request(request_id="w2", start_time=SEED_START + day,
                                      end_time=SEED_START + 2 * day - 1)).status == Notification.OK
    assert stored() == (24 if catalog_server.kind == "rest" else 48)  # REST: stale within the bound
    # A pin made elsewhere names a snapshot the stale tables do not know: read as of it all the same.
    from dexorder_feeds.client.iceberg_client import IcebergClient

    IcebergClient(warehouse=writer_side.warehouse).pin("after-w2")
    pinned = IcebergClient(warehouse=reader_side).query_ohlc(SEED_TICKER, 3600, SEED_START, SEED_START + 7 * day - 1,
                                                             as_of="after-w2")
    assert len(pinned) == 48
    reader_side.reader.invalidate()
    assert stored() == 48
    reader_side.reader.freshness_seconds = 0.0  # no bound: every read checks
    assert writer_side.handle(request(request_id="w3", start_time=SEED_START + 2 * day,
                                      end_time=SEED_START + 3 * day - 1)).status == Notification.OK
    assert stored() == 72
    for warehouse in (reader_side, writer_side.warehouse):
        warehouse.close()


def test_no_thread_reads_older_tables_than_another_thread_of_the_process_already_read(catalog_server):
    """REST, within the staleness bound: a thread whose tables' bound ran out reloads and sees
    another writer's commit; another thread of the process, whose own load was later (its bound
    not out yet), then reads the same new tables, not its older ones (a fetch's reads and the
    next call run on different threads: the next call must not read less than the fetch did)."""
    reader_side = catalog_server.open_warehouse(cache=False)
    writer_side = Historian(catalog_server.open_warehouse(cache=False))
    day = 24 * H
    reader_side.reader.freshness_seconds = 2.0

    def stored() -> int:
        return reader_side.read_range(SEED_TICKER, 3600, (SEED_START, SEED_START + 7 * day))[0].num_rows

    assert writer_side.handle(request(request_id="w1", end_time=SEED_START + day - 1)).status == Notification.OK
    with concurrent.futures.ThreadPoolExecutor(1) as early, concurrent.futures.ThreadPoolExecutor(1) as late:
        began = time.monotonic()
        assert early.submit(stored).result() == 24
        time.sleep(1.0)
        assert late.submit(stored).result() == 24  # a thread's first read, a second after the other's
        assert writer_side.handle(request(request_id="w2", start_time=SEED_START + day,
                                          end_time=SEED_START + 2 * day - 1)).status == Notification.OK
        time.sleep(max(0.0, began + 2.1 - time.monotonic()))  # the early load is out of the bound
        assert early.submit(stored).result() == 48
        assert late.submit(stored).result() == 48
    for warehouse in (reader_side, writer_side.warehouse):
        warehouse.close()


def test_a_commit_on_a_stale_table_is_retried_on_a_fresh_one(catalog_server, caplog):
    """A historian whose tables are stale (REST within the bound) commits once it has re-read."""
    first = Historian(catalog_server.open_warehouse(cache=False))
    second = Historian(catalog_server.open_warehouse(cache=False))
    second.warehouse.reader.freshness_seconds = 3600.0
    day = 24 * H
    assert second.handle(request(request_id="s0", end_time=SEED_START + day - 1)).status == Notification.OK
    # Its committer thread loads its tables now, after its own last commit:
    warehouse = second.warehouse
    loaded = warehouse.committer.submit(lambda: (warehouse.read_market(SEED_TICKER),
                                                 warehouse.read_range(SEED_TICKER, 3600, (0, 2**62)))).result()
    assert loaded[0] is not None and loaded[1][0].num_rows == 24
    caplog.set_level("INFO", logger="dexorder_feeds.storage.warehouse")
    assert first.handle(request(request_id="f1", start_time=SEED_START + day,
                                end_time=SEED_START + 2 * day - 1)).status == Notification.OK
    note = second.handle(request(request_id="s1", start_time=SEED_START + day // 2, end_time=SEED_START + 3 * day - 1))
    assert note.status == Notification.OK, note.error_message
    ts = catalog_server.open_warehouse(cache=False).read_candles(SEED_TICKER, 3600, (0, 2**62))[0]["timestamp"]
    assert len(ts) == len(set(ts.to_pylist())) == 72
    # Only on REST was the second historian's table stale: its append conflicted, and the retry re-read.
    assert ("commit conflict" in caplog.text) == (catalog_server.kind == "rest"), caplog.text
    for historian in (first, second):
        historian.warehouse.close()


def test_a_commit_reads_no_metadata_file_while_its_table_is_current_and_is_refused_on_a_stale_one(catalog_server,
                                                                                                monkeypatch):
    """A commit checks its requirements against the table it was made from when the catalog
    still names that table's metadata file (no load and parse of it again); a table another
    commit moved on is still refused, and nothing of the refused commit is visible."""
    import pyarrow as pa
    from pyiceberg.exceptions import CommitFailedException
    from pyiceberg.serializers import FromInputFile

    from dexorder_feeds.storage._pyiceberg_shortcuts import append_staging_once

    warehouse = catalog_server.open_warehouse(cache=False)
    warehouse.ensure_tables()
    stale, current = warehouse.load_table("markets"), warehouse.load_table("markets")
    parsed: list[object] = []
    parse = FromInputFile.table_metadata
    monkeypatch.setattr(FromInputFile, "table_metadata",
                        staticmethod(lambda *args, **kwargs: parsed.append(args) or parse(*args, **kwargs)))

    def market(ticker: str) -> pa.Table:
        return pa.Table.from_pylist([{"ticker": ticker, "price_decimals": 2, "volume_decimals": 4, "source": "t",
                                      "updated_at": 1}], schema=current.schema().as_arrow())

    append_staging_once(current, market("SIM:A/USDT"))
    assert parsed == []
    with pytest.raises(CommitFailedException):
        append_staging_once(stale, market("SIM:B/USDT"))
    monkeypatch.undo()
    rows = catalog_server.open_warehouse(cache=False).load_table("markets").scan().to_arrow()
    assert rows["ticker"].to_pylist() == ["SIM:A/USDT"]
    warehouse.close()


# -- where catalog properties come from ---------------------------------------------------------
def test_properties_from_pyiceberg_environment_variables(seaweedfs_server, tmp_path, monkeypatch):
    """A pyiceberg user's PYICEBERG_CATALOG__DEXORDER__… variables configure the REST catalog;
    the seed's constructor needs nothing else."""
    catalog = catalog_for("rest", weed=seaweedfs_server)
    monkeypatch.setenv("PYICEBERG_HOME", str(tmp_path))
    monkeypatch.setenv("PYICEBERG_CATALOG__DEXORDER__URI", catalog.uri)
    for key, value in catalog.properties.items():
        monkeypatch.setenv("PYICEBERG_CATALOG__DEXORDER__" + key.upper().replace("-", "_").replace(".", "__"), value)
    settings = resolve_settings(namespace=catalog.namespace)
    assert settings.iceberg_catalog_uri == catalog.uri
    assert settings.catalog_properties["credential"] == catalog.properties["credential"]
    assert catalog.properties["credential"] not in repr(settings)

    async def main():
        async with OHLCClient(iceberg_catalog_uri=catalog.uri, namespace=catalog.namespace) as client:
            return await client.fetch_ohlc(SEED_TICKER, 3600, SEED_START, SEED_START + 23 * H)

    assert len(asyncio.run(main())) == 24


def test_property_precedence(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    (home / ".pyiceberg.yaml").write_text(
        "catalog:\n  dexorder:\n    uri: http://cat:8181\n    credential: yaml-id:yaml-secret\n"
        "    warehouse: s3://from-yaml/\n    s3.endpoint: http://yaml:9000\n"
        "  other:\n    uri: http://elsewhere:8181\n    warehouse: s3://other/\n")
    monkeypatch.setenv("PYICEBERG_HOME", str(home))
    monkeypatch.setenv("DEXORDER_CATALOG__WAREHOUSE", "s3://from-env/")
    settings = resolve_settings()
    assert settings.iceberg_catalog_uri == "http://cat:8181"  # pyiceberg's config gives the URI
    props = catalog_properties(settings.iceberg_catalog_uri, settings.catalog_properties)
    assert props["warehouse"] == "s3://from-env/"  # DEXORDER_ beats pyiceberg's config
    assert props["credential"] == "yaml-id:yaml-secret" and props["s3.endpoint"] == "http://yaml:9000"
    assert props["s3.region"] == "us-east-1", "an S3-compatible endpoint must not make pyarrow ask AWS"
    assert props["timeout"] == "10"
    args = catalog_properties("http://cat:8181", {"warehouse": "s3://arg/", "timeout": 3})
    assert args["warehouse"] == "s3://arg/" and args["timeout"] == "3" and args["s3.request-timeout"] == "3"
    # pyiceberg's configuration of another URI does not leak into this catalog
    assert "credential" not in catalog_properties("http://another:8181", {})
    monkeypatch.setenv("DEXORDER_CATALOG_NAME", "other")
    assert resolve_settings().iceberg_catalog_uri == "http://elsewhere:8181"
    pg = catalog_properties("postgresql+psycopg://me:pw-secret@db/x", {"warehouse": "s3://w/"})
    assert "connect_timeout=5" in pg["uri"] and "statement_timeout" in pg["uri"]
    assert "pw-secret" not in repr(redact(pg))


# -- secrets --------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["postgres", "rest"])
def test_credentials_appear_in_no_log_repr_or_error(kind, seaweedfs_server, postgres_server, tmp_path):
    catalog = catalog_for(kind, weed=seaweedfs_server, pg=postgres_server)
    # A fetch at DEBUG level (pyiceberg, urllib3, the historian, everything) through the CLI.
    good = run_script([sys.executable, "-m", "dexorder_feeds.cli", "--log-level", "DEBUG", "fetch", SEED_TICKER,
                       "--start", "2025-01-01", "--end", "2025-01-01T23:59:59", "--no-progress"],
                      tmp_path, catalog.env())
    assert good.returncode == 0, good.stderr
    assert "24 candles" in good.stdout and "DEBUG" in good.stderr
    # Wrong credentials: the error names what to check, not the secret.
    wrong = dict(catalog.properties)
    if kind == "rest":
        wrong["credential"] = f"{seaweedfs_server.access_key}:{seaweedfs_server.secret_key}x"
        bad = Catalog(kind, catalog.uri, wrong, catalog.namespace, catalog.secrets)
    else:
        bad = Catalog(kind, postgres_server.uri(password=postgres_server.password + "x"), wrong,
                      catalog.namespace, catalog.secrets)
    refused = run_script([sys.executable, "-m", "dexorder_feeds.cli", "--log-level", "DEBUG", "fetch", SEED_TICKER,
                          "--start", "2025-01-01", "--end", "2025-01-01T23:59:59", "--no-progress"],
                         tmp_path, bad.env())
    assert refused.returncode == 2
    assert "credential" in refused.stderr or "password" in refused.stderr
    settings = resolve_settings(iceberg_catalog_uri=catalog.uri, catalog_properties=catalog.properties)
    client = OHLCClient(settings=settings)
    for text in (good.stdout, good.stderr, refused.stdout, refused.stderr, repr(settings), repr(client)):
        assert_no_secrets(text, catalog)


# -- misconfigurations fail fast, naming what to check -------------------------------------------
@pytest.mark.parametrize("case", ["rest-wrong-credential", "rest-missing-bucket", "rest-unreachable",
                                  "rest-wrong-s3-secret", "postgres-wrong-password", "postgres-missing-bucket",
                                  "postgres-unreachable", "postgres-wrong-s3-secret"])
def test_misconfiguration_is_one_clear_error(case, seaweedfs_server, postgres_server):
    kind, _, what = case.partition("-")
    catalog = catalog_for(kind, weed=seaweedfs_server, pg=postgres_server)
    uri, props = catalog.uri, dict(catalog.properties)
    secrets = set(catalog.secrets)
    if what == "wrong-credential":
        props["credential"] = f"{seaweedfs_server.access_key}:not-the-secret-1234"
        secrets.add("not-the-secret-1234")
        expected = "credential"
    elif what == "wrong-password":
        uri = postgres_server.uri(password="not-the-password-1234")
        secrets.add("not-the-password-1234")
        expected = "password"
    elif what == "missing-bucket":
        props["warehouse"] = "s3://no-such-bucket/"
        expected = "warehouse"
    elif what == "unreachable":
        uri = ("http://127.0.0.1:9" if kind == "rest"
               else postgres_server.uri().replace(f":{postgres_server.port}/", ":9/"))
        expected = "reach"
    else:
        props["s3.secret-access-key"] = "not-the-s3-secret-1234"
        secrets.add("not-the-s3-secret-1234")
        expected = "s3.secret-access-key"
    started = time.monotonic()
    with pytest.raises(WarehouseError) as info:
        open_catalog(uri, props, cache=False)
    assert time.monotonic() - started < 10
    message = str(info.value)
    assert expected in message, message
    for secret in secrets:
        assert secret not in message
    assert isinstance(info.value, OSError)  # WarehouseError: what `except OSError` already catches


class SilentServer:
    """A TCP server on loopback that accepts connections and never answers: a hung catalog."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.conns:
            conn.close()


@pytest.mark.parametrize("scheme", ["http", "postgresql+psycopg"])
def test_a_catalog_that_never_answers_is_an_error_within_the_timeout(scheme):
    silent = SilentServer()
    try:
        uri = f"{scheme}://u:hush-hush-secret@127.0.0.1:{silent.port}/db"
        props = {"timeout": "2", "warehouse": "s3://w/", "credential": "id:another-secret-1"}
        started = time.monotonic()
        with pytest.raises(WarehouseError) as info:
            open_catalog(uri if scheme != "http" else f"http://127.0.0.1:{silent.port}", props, cache=False)
        elapsed = time.monotonic() - started
    finally:
        silent.close()
    assert elapsed < 2 * 2 + 2, f"took {elapsed:.1f} s"
    message = str(info.value)
    assert "did not answer within 2 s" in message and "timeout" in message, message
    assert "hush-hush-secret" not in message and "another-secret-1" not in message


@pytest.mark.parametrize("kind", ["postgres", "rest"])  # a local SQLite warehouse has no keys to get wrong
def test_a_failing_write_leaves_no_half_written_commit(kind, seaweedfs_server, postgres_server):
    """The catalog works but the object store refuses the keys mid-request: the request fails
    with an error saying so, and the tables hold exactly what they held before."""
    catalog_server = catalog_for(kind, weed=seaweedfs_server, pg=postgres_server)
    good = catalog_server.open_warehouse(cache=False)
    Historian(good).handle(request(end_time=SEED_START + 23 * H))
    def snapshots() -> dict[str, list[int]]:
        return {name: [s.snapshot_id for s in good.load_table(name).snapshots()]
                for name in ("ohlc", "coverage", "markets")}

    before = snapshots()
    # A catalog object built without dexorder-feeds' checks, with a wrong S3 secret.
    from pyiceberg.catalog.rest import RestCatalog
    from pyiceberg.catalog.sql import SqlCatalog

    props = catalog_properties(catalog_server.uri,
                               {**catalog_server.properties, "s3.secret-access-key": "wrong-s3-key-42"})
    raw = (RestCatalog if catalog_server.kind == "rest" else SqlCatalog)("dexorder", **props)
    from dexorder_feeds.storage.warehouse import Warehouse

    broken = Warehouse(raw, catalog_server.namespace)
    note = Historian(broken).handle(request(request_id="w", start_time=SEED_START + 24 * H))
    broken.close()
    assert note.status == Notification.ERROR, note
    assert "wrong-s3-key-42" not in note.error_message
    assert snapshots() == before
    assert len(good.read_candles(SEED_TICKER, 3600, (0, 2**62))[0]) == 24
