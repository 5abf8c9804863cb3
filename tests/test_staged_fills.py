"""Large gap fills are written as data files by the thread that made them, before they reach
the committer, which then only appends those files: against a real SQLite catalog.

``STAGED_FILL_ROWS`` is lowered so that fills of a day of hourly candles are staged; the
committer is held busy (as in test_group_commit.py) so that what is on disk before the
commit can be looked at.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dexorder_feeds.ingest.historian import Historian
from dexorder_feeds.storage import warehouse as warehouse_module
from dexorder_feeds.storage.catalog import open_catalog
from dexorder_feeds.storage.maintenance import MaintenancePolicy
from dexorder_feeds.storage.warehouse import Warehouse
from dexorder_feeds.wire import Notification

from conftest import SEED_START
from test_group_commit import DAY, H, TICKERS, Held, Interleaved, plain_fill, quiet, request, snapshots, stored  # noqa: F401


@pytest.fixture
def staging(monkeypatch) -> None:
    monkeypatch.setattr(warehouse_module, "STAGED_FILL_ROWS", 10)


def parquet_on_disk(catalog_uri: str, table: str = "ohlc") -> set[str]:
    root = Path(catalog_uri.removeprefix("sqlite:///")).parent
    return {str(p) for p in root.rglob("*.parquet") if f"/{table}/" in str(p)}


def referenced(warehouse: Warehouse, table: str = "ohlc") -> set[str]:
    current = warehouse.load_table(table)
    return {task.file.file_path.removeprefix("file://") for task in current.scan().plan_files()}


def test_a_large_fill_is_written_before_the_commit_and_appended_as_written(staging, quiet, catalog_uri):
    fill = plain_fill(TICKERS[0], 3600, (SEED_START, SEED_START + DAY), "big")
    small = plain_fill(TICKERS[1], 3600, (SEED_START, SEED_START + 6 * H), "small")  # under the threshold
    before = parquet_on_disk(catalog_uri)
    candles_before = snapshots(quiet, "ohlc")
    with Held(quiet):
        futures = [quiet.submit_fill(fill), quiet.submit_fill(small)]
        written = parquet_on_disk(catalog_uri) - before
        assert len(written) == 1  # the large fill's file, written on this thread; the small one waits
        assert not any(f.done() for f in futures)
    assert [f.result(60) for f in futures] == [(24, 24), (6, 6)]
    assert snapshots(quiet, "ohlc") == candles_before + 1  # both in one commit
    assert written <= referenced(quiet)  # the very file written before the commit
    assert stored(quiet, TICKERS[0], 3600) == list(range(SEED_START, SEED_START + DAY, H))
    assert stored(quiet, TICKERS[1], 3600) == list(range(SEED_START, SEED_START + 6 * H, H))
    assert quiet.read_coverage(TICKERS[0], 3600) == [(SEED_START, SEED_START + DAY)]


def test_a_staged_fill_whose_candles_were_stored_meanwhile_keeps_only_the_new_ones(staging, quiet, catalog_uri):
    """Another fill stores half of the range while the large one waits for the committer: the
    duplicate check drops that half, the committer writes the rest itself, and the staged file,
    named by no metadata, is deleted."""
    half = plain_fill(TICKERS[1], 3600, (SEED_START, SEED_START + DAY), "half")
    whole = plain_fill(TICKERS[1], 3600, (SEED_START, SEED_START + 2 * DAY), "whole")
    with Held(quiet):
        first = quiet.submit_fill(half)
        second = quiet.submit_fill(whole)  # staged with all 48 candles; 24 of them come first
    assert first.result(60) == (24, 24)
    assert second.result(60) == (24, 48)
    assert stored(quiet, TICKERS[1], 3600) == list(range(SEED_START, SEED_START + 2 * DAY, H))
    assert parquet_on_disk(catalog_uri) == referenced(quiet)  # no file left that no snapshot names


def test_a_commit_refused_on_a_conflict_is_redone_without_doubling_the_staged_candles(staging, catalog_uri):
    other_warehouse = Warehouse(open_catalog(catalog_uri), maintenance=MaintenancePolicy(auto=False))
    other = Historian(other_warehouse)
    a, b = TICKERS[0], TICKERS[1]
    for ticker in (a, b):
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
        assert mine.reads > 2  # the first append was refused and the batch read again
        assert [n.status for n in notes] == [Notification.OK, Notification.OK]
        assert [n.row_count for n in notes] == [48, 48]
        assert stored(mine, a, 3600) == [SEED_START] + list(range(SEED_START + DAY, SEED_START + 4 * DAY, H))
        assert stored(mine, b, 3600) == [SEED_START] + list(range(SEED_START + DAY, SEED_START + 3 * DAY, H))
        # b's staged file went in as written; a's (half of it stored by the other) did not and is gone.
        assert parquet_on_disk(catalog_uri) == referenced(mine)
    finally:
        mine.close()
        other_warehouse.close()
