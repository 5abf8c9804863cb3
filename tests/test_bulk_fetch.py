"""Bulk downloads: ``fetch_many`` (async and sync) and ``dexorder-feeds fetch`` with several tickers and periods,
on real SIM candles in a real SQLite-backed Iceberg warehouse."""

from __future__ import annotations

import asyncio
import io
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

import dexorder_feeds
from dexorder_feeds import OHLCClient, hookimpl
from dexorder_feeds.cli.commands import BulkProgress, output_paths
from dexorder_feeds.client.sync import close_sync_clients
from dexorder_feeds.plugins import get_plugin_manager
from dexorder_feeds.vocabulary.errors import (FetchManyError, InvalidPeriodError, InvalidRequestError,
                                              InvalidTickerError, UnknownSourceError)

TICKERS = ["SIM:BTC/USDT", "SIM:ETH/USDT"]
START, END = "2025-01-01", "2025-01-10"  # 217 hourly candles, 10 daily


@pytest.fixture
def uri(tmp_path):
    yield f"sqlite:///{tmp_path / 'catalog.db'}"
    close_sync_clients()


def cli(*args: str, cache: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dexorder_feeds.cli", *args], capture_output=True, text=True,
                          timeout=180, env={**os.environ, "DEXORDER_CACHE_DIR": str(cache)})


def summary(stdout: str) -> dict[tuple[str, str], list[str]]:
    """The summary table: (ticker, period) -> the rest of the line's fields."""
    rows = {}
    for line in stdout.splitlines():
        fields = line.split()
        if len(fields) >= 5 and ":" in fields[0] and "/" in fields[0]:
            rows[(fields[0], fields[1])] = fields[2:]
    return rows


class InFlight:
    """A real plugin: holds each cache read a little and counts how many fetches read at once."""

    def __init__(self, delay: float) -> None:
        self.delay, self.now, self.most, self.lock = delay, 0, 0, threading.Lock()

    @hookimpl(wrapper=True)
    def dexorder_read_cache(self, context, request):
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        time.sleep(self.delay)
        try:
            return (yield)
        finally:
            with self.lock:
                self.now -= 1


# -- fetch_many ---------------------------------------------------------------------------------------
def test_fetch_many_gives_what_each_single_fetch_gives(uri):
    results = dexorder_feeds.fetch_many(TICKERS, ["1h", 86400, "1h"], START, END, iceberg_catalog_uri=uri)
    assert list(results) == [("SIM:BTC/USDT", 3600), ("SIM:BTC/USDT", 86400),
                             ("SIM:ETH/USDT", 3600), ("SIM:ETH/USDT", 86400)]  # duplicates dropped, order kept
    for (ticker, period), frame in results.items():
        single = dexorder_feeds.fetch_ohlc(ticker, period, START, END, iceberg_catalog_uri=uri)
        pd.testing.assert_frame_equal(frame, single, check_exact=True)
        assert len(frame) == (217 if period == 3600 else 10)
        assert frame.attrs["content_hash"] == single.attrs["content_hash"]
        assert frame.attrs["quality"] == single.attrs["quality"] and frame.attrs["quality"].missing_candles == 0
        assert frame["ticker"].eq(ticker).all()
    decimals = dexorder_feeds.fetch_many(TICKERS, "1d", START, END, iceberg_catalog_uri=uri, prices="decimal")
    for (ticker, period), frame in decimals.items():
        pd.testing.assert_frame_equal(frame, dexorder_feeds.fetch_ohlc(ticker, period, START, END, prices="decimal",
                                                                       iceberg_catalog_uri=uri))


def test_a_bad_ticker_among_good_ones_keeps_the_good_frames(uri):
    tickers = ["SIM:BTC/USDT", "NOPE:BTC/USDT", "SIM:ETH/USDT"]
    with pytest.raises(FetchManyError) as info:
        dexorder_feeds.fetch_many(tickers, "1d", START, END, iceberg_catalog_uri=uri)
    error = info.value
    assert list(error.errors) == [("NOPE:BTC/USDT", 86400)]
    assert isinstance(error.errors[("NOPE:BTC/USDT", 86400)], UnknownSourceError)
    assert list(error.results) == [("SIM:BTC/USDT", 86400), ("SIM:ETH/USDT", 86400)]
    assert "1 of 3 series failed" in str(error) and "NOPE:BTC/USDT 1d: UnknownSourceError" in str(error)
    for key, frame in error.results.items():
        pd.testing.assert_frame_equal(frame, dexorder_feeds.fetch_ohlc(*key, START, END, iceberg_catalog_uri=uri))
    # the same with return_exceptions: nothing raised, the failure in its place
    results = dexorder_feeds.fetch_many(tickers, "1d", START, END, iceberg_catalog_uri=uri, return_exceptions=True)
    assert [type(value).__name__ for value in results.values()] == ["DataFrame", "UnknownSourceError", "DataFrame"]


def test_malformed_arguments_raise_before_anything_is_fetched(uri):
    with pytest.raises(InvalidTickerError):
        dexorder_feeds.fetch_many(["SIM:BTC/USDT", "btcusdt"], "1h", START, END, iceberg_catalog_uri=uri)
    with pytest.raises(InvalidPeriodError):
        dexorder_feeds.fetch_many(TICKERS, ["1h", "1y"], START, END, iceberg_catalog_uri=uri)
    with pytest.raises(ValueError, match="concurrency"):
        dexorder_feeds.fetch_many(TICKERS, "1h", START, END, iceberg_catalog_uri=uri, concurrency=0)
    with pytest.raises(InvalidRequestError, match="ambiguous"):
        dexorder_feeds.fetch_many(TICKERS, "1h", "01/02/2025", END, iceberg_catalog_uri=uri)
    # nothing reached the warehouse
    assert dexorder_feeds.IcebergClient(uri).coverage().empty


def test_async_fetch_many_is_bounded_and_reports_each_series(uri):
    tickers = [f"SIM:C{i}/USDT" for i in range(6)]
    done: list[tuple[tuple[str, int], int, float]] = []

    async def main(concurrency: int) -> dict:
        async with OHLCClient(iceberg_catalog_uri=uri) as client:
            return await client.fetch_many(tickers, "1d", START, END, concurrency=concurrency,
                                           on_done=lambda key, frame, took: done.append((key, len(frame), took)))

    asyncio.run(main(6))  # fill the warehouse first: the reads below are what is counted
    done.clear()
    plugins = []
    try:
        for concurrency in (2, 6):
            plugins.append(InFlight(0.2))
            get_plugin_manager().register(plugins[-1])
            results = asyncio.run(main(concurrency))
            get_plugin_manager().unregister(plugins[-1])
            assert list(results) == [(ticker, 86400) for ticker in tickers]
    finally:
        for plugin in plugins:
            if get_plugin_manager().is_registered(plugin):
                get_plugin_manager().unregister(plugin)
    bounded, free = plugins
    assert bounded.most == 2, "never more than `concurrency` series at once"
    assert free.most > 2, "more allowed, more run at once"
    assert sorted(key for key, _, _ in done) == sorted([(t, 86400) for t in tickers] * 2)
    assert all(rows == 10 and took > 0 for _, rows, took in done)


class Ranges:
    """A real plugin recording the exact range (µs) of every cache read."""

    def __init__(self) -> None:
        self.seen: set[tuple[str, int, int]] = set()

    @hookimpl(wrapper=True)
    def dexorder_read_cache(self, context, request):
        self.seen.add((request.ticker, request.start_time, request.end_time))
        return (yield)


def test_relative_times_are_read_once_for_every_series(uri):
    recorder = Ranges()
    get_plugin_manager().register(recorder)
    try:
        results = dexorder_feeds.fetch_many([f"SIM:R{i}/USDT" for i in range(4)], "1h", "2 days ago", "now",
                                            iceberg_catalog_uri=uri)
    finally:
        get_plugin_manager().unregister(recorder)
    assert len(results) == 4 and {ticker for ticker, _, _ in recorder.seen} == {f"SIM:R{i}/USDT" for i in range(4)}
    ranges = {(start, end) for _, start, end in recorder.seen}
    assert len(ranges) == 1, "every series asked for the very same µs range"
    (start, end), = ranges
    assert end - start == 2 * 86_400_000_000


def test_the_bulk_progress_bar_counts_series_with_an_eta(uri):
    out = io.StringIO()
    keys = [(ticker, period) for ticker in TICKERS for period in (3600, 86400)]
    bar = BulkProgress(True, keys, file=out, delay=0)
    get_plugin_manager().register(bar)
    try:
        dexorder_feeds.fetch_many(TICKERS, ["1h", "1d"], START, END, iceberg_catalog_uri=uri, on_done=bar.done)
    finally:
        get_plugin_manager().unregister(bar)
        bar.close()
    text = out.getvalue()
    assert "fetching 4/4 series: 100%" in text and "fetching 0/4 series" in text
    assert re.search(r"\[\d\d:\d\d<\d\d:\d\d[,\]]", text), text  # elapsed<remaining: the ETA
    assert bar.bar.n == 4 and bar.finished == 4


def test_output_names_one_file_per_series():
    keys = [("SIM:BTC/USDT", 3600), ("SIM:BTC/USDT", 2_592_000), ("SIM:ETH/USDT", 3600)]
    paths = output_paths("out/{ticker}_{period}.csv", keys)
    assert [str(p) for p in paths.values()] == ["out/SIM_BTC_USDT_1h.csv", "out/SIM_BTC_USDT_1mo.csv",
                                                "out/SIM_ETH_USDT_1h.csv"]
    with pytest.raises(InvalidRequestError, match=r"names one file, but 3 series.*\{ticker\} and \{period\}"):
        output_paths("out.csv", keys)
    with pytest.raises(InvalidRequestError, match=r"same file; add \{period\}"):
        output_paths("{ticker}.parquet", keys)
    with pytest.raises(InvalidRequestError, match=r"only \{ticker\} and \{period\}"):
        output_paths("{symbol}.csv", keys)
    with pytest.raises(InvalidRequestError, match=".csv or .parquet"):
        output_paths("{ticker}_{period}.txt", keys)
    assert output_paths("one.csv", keys[:1]) == {keys[0]: Path("one.csv")}


# -- the CLI --------------------------------------------------------------------------------------------
def test_cli_fetches_several_tickers_and_periods_with_a_summary(tmp_path):
    result = cli("fetch", "SIM:BTC/USDT,SIM:ETH/USDT", "SIM:SOL/USDT", "--period", "1h", "--period", "1d,1h",
                 "--start", START, "--end", END, cache=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("6 series (3 tickers × 2 periods), 2025-01-01 00:00:00 .. 2025-01-10 00:00:00 UTC")
    rows = summary(result.stdout)
    assert list(rows) == [(t, p) for t in ("SIM:BTC/USDT", "SIM:ETH/USDT", "SIM:SOL/USDT") for p in ("1h", "1d")]
    for (ticker, period), (candles, missing, seconds) in rows.items():
        assert int(candles) == (217 if period == "1h" else 10) and int(missing) == 0 and float(seconds) >= 0
    assert "Traceback" not in result.stderr and "candles of" not in result.stdout  # no per-candle print in bulk


def test_cli_days_counts_back_from_now(tmp_path):
    result = cli("fetch", "SIM:BTC/USDT", "SIM:ETH/USDT", "--period", "1d", "--days", "10", cache=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = summary(result.stdout)
    assert list(rows) == [("SIM:BTC/USDT", "1d"), ("SIM:ETH/USDT", "1d")]
    for candles, missing, _ in rows.values():
        # the ten days up to now: 10 daily periods start in them, today's still open (missing, never filled)
        assert int(candles) + int(missing) == 10 and int(candles) >= 9


def test_cli_bulk_writes_one_file_per_series_equal_to_single_exports(tmp_path):
    template = str(tmp_path / "data" / "{ticker}-{period}.csv")
    result = cli("fetch", "SIM:BTC/USDT", "SIM:ETH/USDT", "--period", "4h,1d", "--start", START, "--end", END,
                 "-o", template, cache=tmp_path)
    assert result.returncode == 0, result.stderr
    files = sorted(p.name for p in (tmp_path / "data").iterdir())
    assert files == ["SIM_BTC_USDT-1d.csv", "SIM_BTC_USDT-4h.csv", "SIM_ETH_USDT-1d.csv", "SIM_ETH_USDT-4h.csv"]
    assert all(f"-> {tmp_path / 'data' / name}" in result.stdout for name in files)
    single = tmp_path / "single.csv"
    assert cli("fetch", "SIM:ETH/USDT", "--period", "4h", "--start", START, "--end", END, "-o", str(single),
               cache=tmp_path).returncode == 0
    assert (tmp_path / "data" / "SIM_ETH_USDT-4h.csv").read_text() == single.read_text()
    refused = cli("fetch", "SIM:BTC/USDT", "SIM:ETH/USDT", "--start", START, "--end", END, "-o",
                  str(tmp_path / "all.csv"), cache=tmp_path)
    assert refused.returncode == 2 and refused.stderr.startswith("error: --output")
    assert "{ticker} and {period}" in refused.stderr and not (tmp_path / "all.csv").exists()


def test_cli_bulk_reports_a_failing_ticker_and_keeps_the_others(tmp_path):
    result = cli("fetch", "SIM:BTC/USDT", "NOPE:BTC/USDT", "SIM:ETH/USDT", "--period", "1d", "--start", START,
                 "--end", END, cache=tmp_path)
    assert result.returncode == 2
    rows = summary(result.stdout)
    assert rows[("SIM:BTC/USDT", "1d")][0] == "10" and rows[("SIM:ETH/USDT", "1d")][0] == "10"
    assert rows[("NOPE:BTC/USDT", "1d")][:2] == ["-", "-"] and "UnknownSourceError" in result.stdout
    assert "error: NOPE:BTC/USDT 1d:" in result.stderr and "1 of 3 series failed" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_single_series_keeps_its_form_and_takes_relative_times(tmp_path):
    result = cli("fetch", "SIM:BTC/USDT", "--period", "1d", "--start", "yesterday", "--end", "yesterday UTC",
                 cache=tmp_path)
    assert result.returncode == 0, result.stderr
    # today's candle is still open: yesterday's is the one closed daily candle in that range
    assert re.match(r"1 candles of SIM:BTC/USDT \(86400 s\), Iceberg snapshot \d+", result.stdout), result.stdout
    yesterday = (pd.Timestamp.now(tz="UTC").normalize() - pd.Timedelta(days=1)).strftime("%Y-%m-%d 00:00:00+00:00")
    assert yesterday in result.stdout
    missing = cli("fetch", "SIM:BTC/USDT", "--end", "2025-01-02", cache=tmp_path)
    assert missing.returncode == 2 and "give --start" in missing.stderr
    empty = cli("fetch", ",", "--days", "1", cache=tmp_path)
    assert empty.returncode == 2 and empty.stderr.startswith("error: give at least one ticker")
