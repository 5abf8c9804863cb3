"""Large gap fills are written as data files by the thread that made them, before they reach
the committer, which then only appends those files: against a real SQLite catalog.

``STAGED_FILL_ROWS`` is lowered so that fills of a day of hourly candles are staged; the
committer is held busy (as in test_group_commit.py) so that what is on disk before the
commit can be looked at. A commit refused on a conflict with staged files: test_group_commit.py.
"""

from __future__ import annotations

import pytest

from dexorder_feeds.storage import warehouse as warehouse_module

from conftest import SEED_START
from test_group_commit import (  # noqa: F401  (quiet: the fixture)
    DAY, H, TICKERS, Held, parquet_on_disk, plain_fill, quiet, referenced, snapshots, stored)


@pytest.fixture
def staging(monkeypatch) -> None:
    monkeypatch.setattr(warehouse_module, "STAGED_FILL_ROWS", 10)


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
