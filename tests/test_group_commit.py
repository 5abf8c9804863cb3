"""Group commit: gap fills that finish while the committer is busy share one candle append and
one coverage append, against a real SQLite catalog.

The committer is held busy by a job waiting on an event while fills queue up, so which fills
share a batch is decided by the test, not by timing; batching shows in the number of snapshots.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from dexorder_feeds.ingest.historian import Historian
from dexorder_feeds.storage.catalog import open_catalog
from dexorder_feeds.storage import warehouse as warehouse_module
from dexorder_feeds.storage.maintenance import MaintenancePolicy
from dexorder_feeds.storage.warehouse import Fill, FillOutcome, Warehouse, candle_arrow_schema, coverage_row
from dexorder_feeds.vocabulary.errors import DataError, WarehouseError
from dexorder_feeds.wire import HistoryRequest, Notification

from conftest import SEED_START

H = 3_600_000_000
DAY = 24 * H
TICKERS = [f"SIM:G{i}/USDT" for i in range(6)]
PERIODS = (3600, 14400)


def parquet_on_disk(catalog_uri: str, table: str = "ohlc") -> set[str]:
    root = Path(catalog_uri.removeprefix("sqlite:///")).parent
    return {str(p) for p in root.rglob("*.parquet") if f"/{table}/" in str(p)}


def referenced(warehouse: Warehouse, table: str = "ohlc") -> set[str]:
    current = warehouse.load_table(table)
    return {task.file.file_path.removeprefix("file://") for task in current.scan().plan_files()}


def snapshots(warehouse: Warehouse, table: str) -> int:
    return len(warehouse.load_table(table).metadata.snapshots)


def stored(warehouse: Warehouse, ticker: str, period: int) -> list[int]:
    table, _ = warehouse.read_candles(ticker, period, (0, 2**62))
    return table["timestamp"].to_pylist()


def request(ticker: str, period: int, start: int, stop: int, rid: str) -> HistoryRequest:
    return HistoryRequest(request_id=rid, client_id="t", ticker=ticker, period_seconds=period,
                          start_time=start, end_time=stop - 1)


@pytest.fixture
def quiet(catalog_uri) -> Iterator[Warehouse]:
    """A warehouse without automatic maintenance: every commit stays a snapshot to count."""
    warehouse = Warehouse(open_catalog(catalog_uri), maintenance=MaintenancePolicy(auto=False))
    warehouse.ensure_tables()
    yield warehouse
    warehouse.close()


class Held:
    """Keeps the committer busy (a job waiting on an event) until the block ends."""

    def __init__(self, warehouse: Warehouse) -> None:
        self.release = threading.Event()
        started = threading.Event()

        def hold() -> None:
            started.set()
            self.release.wait(60)

        self.job = warehouse.committer.submit(hold)
        assert started.wait(10)

    def __enter__(self) -> Held:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.job.result(10)


def candles(ticker: str, period: int, stamps: list[int]) -> pa.Table:
    n = len(stamps)
    values = {"ticker": [ticker] * n, "period_seconds": [period] * n, "timestamp": stamps,
              **{c: [100] * n for c in ("open", "high", "low", "close")}, "volume": [1] * n}
    schema = candle_arrow_schema()
    return pa.table({f.name: pa.array(values.get(f.name, [None] * n), type=f.type) for f in schema}, schema=schema)


def plain_fill(ticker: str, period: int, interval: tuple[int, int], rid: str) -> Fill:
    step = period * 1_000_000
    table = candles(ticker, period, list(range(interval[0], interval[1], step)))

    def rows(outcome: FillOutcome) -> list[dict]:
        return [coverage_row(ticker, period, interval, outcome.stored, rid)]

    return Fill(ticker, period, interval, table, rows)


def test_many_concurrent_fills_commit_in_one_candle_and_one_coverage_snapshot(quiet, monkeypatch):
    historian = Historian(quiet)
    # The markets first (stored once, with the first candles of each ticker).
    for ticker in TICKERS:
        assert historian.handle(request(ticker, 3600, SEED_START, SEED_START + H, f"m-{ticker}")).status \
            == Notification.OK
    candles_before, coverage_before = snapshots(quiet, "ohlc"), snapshots(quiet, "coverage")
    # Every ticker and period, three days each, plus an overlapping repeat and a range
    # half stored already: the duplicate check runs within the batch too.
    asked = [(t, p, SEED_START + DAY, SEED_START + 4 * DAY) for t in TICKERS for p in PERIODS]
    asked += [(TICKERS[0], 3600, SEED_START + 2 * DAY, SEED_START + 5 * DAY),
              (TICKERS[1], 14400, SEED_START, SEED_START + 2 * DAY)]
    checks: list[tuple] = []
    check = quiet._stored_timestamps
    monkeypatch.setattr(quiet, "_stored_timestamps", lambda *args: checks.append(args[1:3]) or check(*args))
    with Held(quiet):
        pending = [historian.begin(request(t, p, lo, hi, f"r{i}")) for i, (t, p, lo, hi) in enumerate(asked)]
        assert not any(f.done() for f in pending)  # all waiting for the one batch
    notes = [f.result(60) for f in pending]
    # The duplicate check read the stored candles once per ticker and period, not once per fill.
    assert sorted(checks) == sorted({(t, p) for t, p, _, _ in asked})
    assert [n.status for n in notes] == [Notification.OK] * len(asked)
    assert [n.row_count for n in notes] == [(hi - lo) // (p * 1_000_000) for _, p, lo, hi in asked]
    assert snapshots(quiet, "ohlc") == candles_before + 1
    assert snapshots(quiet, "coverage") == coverage_before + 1
    for ticker in TICKERS:
        for period in PERIODS:
            ranges = [(lo, hi) for t, p, lo, hi in asked if (t, p) == (ticker, period)]
            if period == 3600:
                ranges.append((SEED_START, SEED_START + H))
            expected = sorted({ts for lo, hi in ranges for ts in range(lo, hi, period * 1_000_000)})
            assert stored(quiet, ticker, period) == expected, (ticker, period)
    assert quiet.read_coverage(TICKERS[0], 3600) == [(SEED_START, SEED_START + H), (SEED_START + DAY, SEED_START + 5 * DAY)]
    assert quiet.read_coverage(TICKERS[1], 14400) == [(SEED_START, SEED_START + 4 * DAY)]


def test_threads_filling_at_once_never_lose_or_double_a_candle(warehouse):
    """No holding: 24 threads of two historians' worth of requests race as they come."""
    historian = Historian(warehouse)
    barrier = threading.Barrier(24)
    notes: list[Notification] = []

    def work(i: int) -> None:
        ticker, period = TICKERS[i % 4], PERIODS[i % 2]
        start = SEED_START + (i % 3) * DAY
        barrier.wait()
        notes.append(historian.handle(request(ticker, period, start, start + 2 * DAY, f"w{i}")))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [n.status for n in notes] == [Notification.OK] * 24
    for i in range(4):
        period = PERIODS[i % 2]
        step = period * 1_000_000
        starts = {SEED_START + (j % 3) * DAY for j in range(24) if j % 4 == i}
        expected = sorted({ts for s in starts for ts in range(s, s + 2 * DAY, step)})
        assert stored(warehouse, TICKERS[i], period) == expected
        assert warehouse.read_coverage(TICKERS[i], period) == [(min(starts), max(starts) + 2 * DAY)]


class Interleaved(Warehouse):
    """A warehouse whose first batch, right after its duplicate check read the table, lets a
    second historian (another warehouse object on the same catalog: another committer, like
    another process) commit candles of an overlapping range."""

    def __init__(self, *args, other: Historian, overlapping: HistoryRequest, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.other, self.overlapping = other, overlapping
        self.reads = 0
        self.interleaved: Notification | None = None

    def _stored_timestamps(self, table, ticker, period_seconds, interval):
        got = super()._stored_timestamps(table, ticker, period_seconds, interval)
        self.reads += 1
        if self.interleaved is None:
            self.interleaved = self.other.handle(self.overlapping)
        return got


@pytest.mark.parametrize("staged", [False, True], ids=["written-by-committer", "staged"])
def test_a_second_historian_committing_between_check_and_append_makes_the_batch_reread(catalog_uri, staged,
                                                                                       monkeypatch):
    """Also with the fills' files written before the commit (staged): the refused append named
    them in no metadata; the retry appends b's as written, writes a's new half itself and
    deletes a's staged file."""
    if staged:
        monkeypatch.setattr(warehouse_module, "STAGED_FILL_ROWS", 10)
    other_warehouse = Warehouse(open_catalog(catalog_uri), maintenance=MaintenancePolicy(auto=False))
    other = Historian(other_warehouse)
    a, b = TICKERS[0], TICKERS[1]
    for ticker in (a, b):  # markets stored, so the batch below is the first thing committed
        assert other.handle(request(ticker, 3600, SEED_START, SEED_START + H, f"m-{ticker}")).status == Notification.OK
    overlapping = request(a, 3600, SEED_START + 2 * DAY, SEED_START + 4 * DAY, "other")
    mine = Interleaved(open_catalog(catalog_uri), maintenance=MaintenancePolicy(auto=False),
                       other=other, overlapping=overlapping)
    try:
        historian = Historian(mine)
        with Held(mine):
            pending = [historian.begin(request(a, 3600, SEED_START + DAY, SEED_START + 3 * DAY, "x")),
                       historian.begin(request(b, 3600, SEED_START + DAY, SEED_START + 3 * DAY, "y"))]
        notes = [f.result(60) for f in pending]
    finally:
        mine.close()
        other_warehouse.close()
    assert mine.interleaved is not None and mine.interleaved.status == Notification.OK
    assert mine.reads > 2  # the batch's append failed on the other's commit and was read again
    assert [n.status for n in notes] == [Notification.OK, Notification.OK]
    assert [n.row_count for n in notes] == [48, 48]
    check = Warehouse(open_catalog(catalog_uri))
    try:
        assert stored(check, a, 3600) == [SEED_START] + list(range(SEED_START + DAY, SEED_START + 4 * DAY, H))
        assert stored(check, b, 3600) == [SEED_START] + list(range(SEED_START + DAY, SEED_START + 3 * DAY, H))
        assert check.read_coverage(a, 3600) == [(SEED_START, SEED_START + H), (SEED_START + DAY, SEED_START + 4 * DAY)]
        for table in ("ohlc", "coverage"):  # no file left that no snapshot names
            assert parquet_on_disk(catalog_uri, table) == referenced(check, table), table
    finally:
        check.close()


def test_an_invalid_fill_fails_alone_and_the_rest_of_its_batch_commits(quiet):
    good = [plain_fill(t, 3600, (SEED_START, SEED_START + DAY), f"g{i}") for i, t in enumerate(TICKERS[:3])]
    outside = plain_fill(TICKERS[3], 3600, (SEED_START, SEED_START + DAY), "outside")
    outside.interval = (SEED_START, SEED_START + 12 * H)  # holds candles past its interval
    wrong = plain_fill(TICKERS[4], 3600, (SEED_START, SEED_START + DAY), "wrong")
    wrong.candles = wrong.candles.drop_columns(["open"])
    candles_before = snapshots(quiet, "ohlc")
    with Held(quiet):
        futures = [quiet.submit_fill(f) for f in (good[0], outside, good[1], wrong, good[2])]
    with pytest.raises(DataError, match="outside its interval"):
        futures[1].result(60)
    with pytest.raises(DataError, match="do not fit the candle table"):
        futures[3].result(60)
    assert [futures[i].result(60) for i in (0, 2, 4)] == [(24, 24)] * 3
    assert snapshots(quiet, "ohlc") == candles_before + 1
    for ticker in TICKERS[:3]:
        assert stored(quiet, ticker, 3600) == list(range(SEED_START, SEED_START + DAY, H))
        assert quiet.read_coverage(ticker, 3600) == [(SEED_START, SEED_START + DAY)]
    for ticker in TICKERS[3:5]:
        assert stored(quiet, ticker, 3600) == [] and quiet.read_coverage(ticker, 3600) == []


def test_a_failure_mid_batch_fails_only_its_fill_and_loses_or_doubles_no_candle(quiet):
    """The coverage of one fill cannot be built after the batch's candles are committed: the
    coverage batch fails, is committed fill by fill, and only that fill reports the failure.
    Its candles are stored without coverage (as after a crash between the two commits), so
    asking again stores nothing twice and records its range."""
    fills = [plain_fill(t, 3600, (SEED_START, SEED_START + DAY), f"g{i}") for i, t in enumerate(TICKERS[:4])]
    broken = fills[2]
    healthy_rows = broken.coverage_rows

    def failing(outcome: FillOutcome) -> list[dict]:
        raise RuntimeError("coverage of this fill cannot be built")

    broken.coverage_rows = failing
    coverage_before = snapshots(quiet, "coverage")
    with Held(quiet):
        futures = [quiet.submit_fill(f) for f in fills]
    with pytest.raises(WarehouseError, match="recording coverage of SIM:G2/USDT failed.*cannot be built"):
        futures[2].result(60)
    assert [futures[i].result(60) for i in (0, 1, 3)] == [(24, 24)] * 3
    assert snapshots(quiet, "coverage") == coverage_before + 3  # one by one after the failure
    for ticker in TICKERS[:4]:
        assert stored(quiet, ticker, 3600) == list(range(SEED_START, SEED_START + DAY, H))
    assert quiet.read_coverage(TICKERS[2], 3600) == []
    broken.coverage_rows = healthy_rows
    assert quiet.submit_fill(broken).result(60) == (0, 24)
    assert stored(quiet, TICKERS[2], 3600) == list(range(SEED_START, SEED_START + DAY, H))
    assert quiet.read_coverage(TICKERS[2], 3600) == [(SEED_START, SEED_START + DAY)]


def test_a_repeat_of_a_recorded_range_adds_no_coverage_row_even_within_a_batch(quiet):
    first = plain_fill(TICKERS[0], 3600, (SEED_START, SEED_START + DAY), "a")
    assert quiet.submit_fill(first).result(60) == (24, 24)
    coverage_before = snapshots(quiet, "coverage")
    historian_rows = []

    def rows_unless_recorded(fill: Fill) -> Fill:
        def rows(outcome: FillOutcome) -> list[dict]:
            from dexorder_feeds.vocabulary.ranges import subtract_intervals

            if not outcome.added and not subtract_intervals(fill.interval, outcome.covered):
                return []
            made = [coverage_row(fill.ticker, 3600, fill.interval, outcome.stored, "r")]
            historian_rows.append(made)
            return made

        fill.coverage_rows = rows
        return fill

    again = [rows_unless_recorded(plain_fill(TICKERS[0], 3600, (SEED_START, SEED_START + DAY), f"b{i}"))
             for i in range(3)]
    with Held(quiet):
        futures = [quiet.submit_fill(f) for f in again]
    assert [f.result(60) for f in futures] == [(0, 24)] * 3
    assert historian_rows == [] and snapshots(quiet, "coverage") == coverage_before


def test_markets_queued_while_the_committer_works_are_stored_in_one_commit(quiet):
    """New markets of several fills (each fill waits for its market's decimals) share one
    commit; the first queued of a ticker wins, and a market stored before stays as it was."""
    from dexorder_feeds.vocabulary.markets import MarketInfo

    assert quiet.write_market(MarketInfo("SIM:OLD/USDT", 1, 1), "sim") == MarketInfo("SIM:OLD/USDT", 1, 1)
    wanted = [MarketInfo("SIM:A/USDT", 2, 4), MarketInfo("SIM:B/USDT", 3, 5), MarketInfo("SIM:A/USDT", 6, 6),
              MarketInfo("SIM:OLD/USDT", 7, 7)]
    with Held(quiet):
        futures = [quiet.committer.submit_market(market, "sim") for market in wanted]
    got = [future.result(30) for future in futures]
    assert got == [MarketInfo("SIM:A/USDT", 2, 4), MarketInfo("SIM:B/USDT", 3, 5), MarketInfo("SIM:A/USDT", 2, 4),
                   MarketInfo("SIM:OLD/USDT", 1, 1)]
    assert snapshots(quiet, "markets") == 2  # the one before, and one for both new markets
    assert quiet.read_market("SIM:A/USDT") == MarketInfo("SIM:A/USDT", 2, 4)
    assert quiet.read_market("SIM:B/USDT") == MarketInfo("SIM:B/USDT", 3, 5)
