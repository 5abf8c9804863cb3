"""The warehouse layout and its failure modes, on a real SQLite-backed Iceberg catalog."""

from __future__ import annotations

import pytest

from dexorder_feeds.storage.catalog import catalog_properties, open_catalog, redact, scrub
from dexorder_feeds.vocabulary.errors import InvalidRequestError, WarehouseError
from dexorder_feeds.ingest.historian import Historian
from dexorder_feeds.storage.warehouse import CANDLE_COLUMNS, Warehouse
from dexorder_feeds.wire import HistoryRequest, Notification

from conftest import SEED_END, SEED_START, SEED_TICKER

H = 3_600_000_000


def test_tables_partitioning_and_sort_order(warehouse):
    ohlc = warehouse.load_table("ohlc")
    assert [f.name for f in ohlc.schema().fields] == list(CANDLE_COLUMNS)
    assert [f.name for f in ohlc.spec().fields] == ["ticker", "period_seconds"]
    assert [ohlc.schema().find_column_name(f.source_id) for f in ohlc.sort_order().fields] == ["timestamp"]
    assert ohlc.properties["commit.retry.num-retries"] == "0"
    assert {f.name for f in warehouse.load_table("coverage").schema().fields} >= {"start_time", "end_time", "row_count"}
    assert {f.name for f in warehouse.load_table("markets").schema().fields} >= {"price_decimals", "volume_decimals"}


def test_ensure_tables_is_idempotent_across_warehouse_objects(warehouse):
    again = Warehouse(warehouse.catalog)
    again.ensure_tables()
    again.ensure_tables()
    assert len(warehouse.catalog.list_tables("trading")) == 3


def test_warehouses_on_one_catalog_look_the_tables_up_once_per_process(catalog_uri, monkeypatch):
    """Many clients in one process (one catalog object): the first warehouse creates or checks
    the tables, the others do not look them up again; a catalog opened apart (another machine,
    ``cache=False``) still checks them itself."""
    first = Warehouse(open_catalog(catalog_uri))
    first.ensure_tables()
    looks: list[object] = []
    from pyiceberg.catalog.sql import SqlCatalog

    monkeypatch.setattr(SqlCatalog, "load_table", _counting(SqlCatalog.load_table, looks))
    second = Warehouse(open_catalog(catalog_uri))
    assert second.catalog is first.catalog
    second.ensure_tables()
    assert looks == []
    apart = Warehouse(open_catalog(catalog_uri, cache=False))
    apart.ensure_tables()
    assert len(looks) == 3  # ohlc, markets, coverage
    for wh in (first, second, apart):
        wh.close()


def _counting(method, calls: list[object]):
    def counted(*args, **kwargs):
        calls.append(args)
        return method(*args, **kwargs)
    return counted


class CommitsInBetween(Warehouse):
    """A warehouse that, the first time it loads ``table`` for a write, lets ``other`` (a
    warehouse on a catalog opened apart: another process) commit to it first."""

    def __init__(self, *args, table: str, other, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.table, self.other, self.done = table, other, False

    def _tables(self, *names):
        got = super()._tables(*names)
        if not self.done and names == (self.table,):
            self.done = True
            self.other()
        return got


@pytest.mark.parametrize("table", ["ohlc", "coverage", "markets"])
def test_a_direct_commit_refused_for_a_conflict_leaves_no_data_file(catalog_uri, table):
    """``append_new_candles``, ``record_coverage`` and ``write_market`` each commit once more after
    the conflict, and the files of the refused attempt are gone (only files a snapshot names)."""
    from dexorder_feeds.storage.maintenance import MANUAL
    from dexorder_feeds.vocabulary.markets import MarketInfo

    from test_group_commit import parquet_on_disk, referenced
    from test_pyiceberg_shortcuts import candles

    apart = Warehouse(open_catalog(catalog_uri, cache=False), maintenance=MANUAL)
    apart.ensure_tables()
    ticker = "SIM:BTC/USDT"
    stamps = [SEED_START + i * H for i in range(24)]
    others = {
        "ohlc": lambda: apart.append_new_candles(ticker, 3600, (stamps[0], stamps[12]), candles(ticker, stamps[:12])),
        "coverage": lambda: apart.record_coverage(ticker, 3600, (stamps[0], stamps[12]), 12, "apart"),
        "markets": lambda: apart.write_market(MarketInfo("SIM:ETH/USDT", 2, 4), "sim"),
    }
    mine = CommitsInBetween(open_catalog(catalog_uri), maintenance=MANUAL, table=table, other=others[table])
    mine.ensure_tables()
    if table == "ohlc":
        assert mine.append_new_candles(ticker, 3600, (stamps[0], stamps[-1] + H), candles(ticker, stamps)) == (12, 24)
    elif table == "coverage":
        mine.record_coverage(ticker, 3600, (stamps[12], stamps[-1] + H), 12, "mine")
        assert mine.read_coverage(ticker, 3600) == [(stamps[0], stamps[-1] + H)]
    else:
        assert mine.write_market(MarketInfo(ticker, 1, 3), "sim") == MarketInfo(ticker, 1, 3)
        assert mine.read_market("SIM:ETH/USDT") == MarketInfo("SIM:ETH/USDT", 2, 4)
    assert mine.done
    check = Warehouse(open_catalog(catalog_uri, cache=False), maintenance=MANUAL)
    assert len(check.load_table(table).metadata.snapshots) == 2  # the other's commit, then ours
    assert parquet_on_disk(catalog_uri, table) == referenced(check, table)
    for wh in (apart, mine, check):
        wh.close()


def test_reads_prune_to_one_partition_and_the_range(warehouse):
    historian = Historian(warehouse)
    for ticker in ("SIM:BTC/USDT", "SIM:ETH/USDT"):
        historian.handle(HistoryRequest(request_id=ticker, ticker=ticker, period_seconds=3600,
                                        start_time=SEED_START, end_time=SEED_END))
    table = warehouse.load_table("ohlc")
    from pyiceberg.expressions import And, EqualTo

    tasks = list(table.scan(row_filter=And(EqualTo("ticker", "SIM:ETH/USDT"), EqualTo("period_seconds", 3600))).plan_files())
    assert len(tasks) == 1 and tasks[0].file.partition[0] == "SIM:ETH/USDT"
    data, snapshot = warehouse.read_candles("SIM:ETH/USDT", 3600, (SEED_START + 10 * H, SEED_START + 20 * H))
    assert data["timestamp"].to_pylist() == [SEED_START + i * H for i in range(10, 20)]
    assert set(data["ticker"].to_pylist()) == {"SIM:ETH/USDT"}
    assert snapshot == table.current_snapshot().snapshot_id


def test_append_skips_candles_already_stored(warehouse):
    historian = Historian(warehouse)
    historian.handle(HistoryRequest(request_id="a", ticker=SEED_TICKER, period_seconds=3600,
                                    start_time=SEED_START, end_time=SEED_START + 9 * H))
    table, _ = warehouse.read_candles(SEED_TICKER, 3600, (SEED_START, SEED_START + 10 * H))
    added, total = warehouse.append_new_candles(SEED_TICKER, 3600, (SEED_START, SEED_START + 10 * H), table)
    assert (added, total) == (0, 10)


def test_catalog_uris():
    assert catalog_properties("sqlite:////tmp/x/c.db")["warehouse"] == "file:///tmp/x/warehouse"
    assert catalog_properties("http://cat:8181", {"credential": "a:b"})["type"] == "rest"
    with pytest.raises(InvalidRequestError, match="warehouse"):
        catalog_properties("postgresql+psycopg://u:p@h/db")
    with pytest.raises(InvalidRequestError, match="unsupported scheme"):
        catalog_properties("ftp://x")
    assert redact({"credential": "a:b", "uri": "postgresql://u:pw@h/db"}) == {"credential": "***", "uri": "postgresql://u:***@h/db"}
    assert "supersecret" not in scrub("failed with supersecret", {"s3.secret-access-key": "supersecret"})


def test_a_read_only_warehouse_directory_is_a_clear_error_and_keeps_data(tmp_path):
    uri = f"sqlite:///{tmp_path / 'ro' / 'catalog.db'}"
    warehouse = Warehouse(open_catalog(uri))
    historian = Historian(warehouse)
    ok = historian.handle(HistoryRequest(request_id="a", ticker=SEED_TICKER, period_seconds=3600,
                                         start_time=SEED_START, end_time=SEED_START + 9 * H))
    assert ok.status == Notification.OK
    data_dir = tmp_path / "ro" / "warehouse"
    # Replace the data directory of the ohlc table with a file: writes fail for every user,
    # root included, the way a read-only or vanished mount fails.
    target = data_dir / "trading" / "ohlc" / "data"
    moved = target.with_name("data.moved")
    target.rename(moved)
    target.write_text("not a directory")
    try:
        bad = historian.handle(HistoryRequest(request_id="b", ticker=SEED_TICKER, period_seconds=3600,
                                              start_time=SEED_START + 10 * H, end_time=SEED_START + 19 * H))
    finally:
        target.unlink()
        moved.rename(target)
    assert bad.status == Notification.ERROR
    assert "failed" in bad.error_message and "check" in bad.error_message, bad.error_message
    data, _ = warehouse.read_candles(SEED_TICKER, 3600, (0, 2**62))
    assert data.num_rows == 10, "the failed write must leave the stored candles as they were"
    warehouse.close()


def test_a_sqlite_catalog_keeps_a_write_ahead_log_so_a_reader_never_holds_up_a_commit(tmp_path):
    """In SQLite's default journal mode a commit waits until no connection is reading; the
    catalog is put in write-ahead-log mode, where a reader in the middle of a read transaction
    does not stop the historian's commit."""
    import sqlite3

    path = tmp_path / "catalog.db"
    warehouse = Warehouse(open_catalog(f"sqlite:///{path}", cache=False))
    warehouse.ensure_tables()
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    reader = sqlite3.connect(path, isolation_level=None)
    try:
        reader.execute("BEGIN")
        before = reader.execute("SELECT table_name, metadata_location FROM iceberg_tables").fetchall()
        note = Historian(warehouse).handle(HistoryRequest(
            request_id="r", client_id="c", ticker=SEED_TICKER, period_seconds=3600,
            start_time=SEED_START, end_time=SEED_END))
        assert note.status == Notification.OK, note.error_message
        # the reader still sees its snapshot of the catalog; the commit is there for the next one
        assert reader.execute("SELECT table_name, metadata_location FROM iceberg_tables").fetchall() == before
    finally:
        reader.execute("ROLLBACK")
        reader.close()
        warehouse.close()
    assert Warehouse(open_catalog(f"sqlite:///{path}", cache=False)).read_candles(SEED_TICKER, 3600, (0, 2**62))[0].num_rows == 168


def test_a_catalog_locked_by_another_process_says_so_and_what_to_do(tmp_path):
    """A writer holding the SQLite catalog's write lock (another tool, a stuck process) makes
    the commit fail once SQLite stops waiting; the error names the lock, not credentials, and
    nothing is stored half: the same request succeeds once the lock is gone."""
    import sqlite3

    path = tmp_path / "catalog.db"
    warehouse = Warehouse(open_catalog(f"sqlite:///{path}", cache=False))
    warehouse.ensure_tables()
    request = HistoryRequest(request_id="r", client_id="c", ticker=SEED_TICKER, period_seconds=3600,
                             start_time=SEED_START, end_time=SEED_END)
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        note = Historian(warehouse).handle(request)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert note.status == Notification.ERROR
    assert "lock" in note.error_message and "credentials" not in note.error_message, note.error_message
    assert Historian(warehouse).handle(request).status == Notification.OK
    assert warehouse.read_candles(SEED_TICKER, 3600, (0, 2**62))[0].num_rows == 168
    warehouse.close()


def test_prepared_writes_do_not_check_their_schema_on_the_first_commit(catalog_uri, monkeypatch):
    """``prepare_writes`` (the relay calls it before it serves) does the write-time schema check
    of each table; the first commits then do none, and a warehouse not prepared does it once per
    table on its first write."""
    import pyiceberg.io.pyarrow as pyiceberg_pyarrow

    from dexorder_feeds.storage.maintenance import MANUAL
    from dexorder_feeds.vocabulary.markets import MarketInfo

    from test_pyiceberg_shortcuts import candles

    checks: list[object] = []
    check = pyiceberg_pyarrow._check_pyarrow_schema_compatible
    monkeypatch.setattr(pyiceberg_pyarrow, "_check_pyarrow_schema_compatible",
                        lambda *args, **kwargs: checks.append(args) or check(*args, **kwargs))
    stamps = [SEED_START + i * H for i in range(24)]
    for prepared, root in ((True, "prepared"), (False, "not-prepared")):
        uri = catalog_uri.replace("catalog.db", f"{root}/catalog.db")
        warehouse = Warehouse(open_catalog(uri), maintenance=MANUAL)
        warehouse.ensure_tables()
        if prepared:
            warehouse.prepare_writes()
            assert len(checks) == 3
        checks.clear()
        warehouse.write_market(MarketInfo(SEED_TICKER, 2, 4), "sim")
        warehouse.append_new_candles(SEED_TICKER, 3600, (stamps[0], stamps[-1] + H), candles(SEED_TICKER, stamps))
        warehouse.record_coverage(SEED_TICKER, 3600, (stamps[0], stamps[-1] + H), 24, "r")
        assert len(checks) == (0 if prepared else 3), root
        warehouse.close()


def test_a_server_error_while_another_process_creates_the_namespace_is_asked_again(catalog_uri, monkeypatch):
    """A REST catalog creating the namespace for another process may answer a server error for
    a moment (seen from SeaweedFS with two relays starting at once; not caused on purpose here,
    so the catalog's create fails once as it did): the warehouse asks again and is set up. A
    catalog that keeps failing is still an error."""
    from pyiceberg.catalog.sql import SqlCatalog
    from pyiceberg.exceptions import ServerError

    failures = [ServerError("InternalServerError: failed to check namespace: attribute not found")]
    create = SqlCatalog.create_namespace

    def flaky(self, namespace, properties=None):
        if failures:
            raise failures.pop()
        return create(self, namespace) if properties is None else create(self, namespace, properties)

    monkeypatch.setattr(SqlCatalog, "create_namespace", flaky)
    warehouse = Warehouse(open_catalog(catalog_uri))
    warehouse.ensure_tables()
    assert failures == [] and len(warehouse.catalog.list_tables("trading")) == 3
    warehouse.close()

    def failing(self, namespace, properties=None):
        raise ServerError("InternalServerError: down")

    monkeypatch.setattr(SqlCatalog, "create_namespace", failing)
    other = Warehouse(open_catalog(catalog_uri.replace("catalog.db", "other/catalog.db")))
    with pytest.raises(WarehouseError, match="down"):
        other.ensure_tables()
