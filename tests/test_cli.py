"""The dexorder-feeds command: fetch (print, csv, parquet), coverage, clear errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from decimal import Decimal

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]


def cli(*args: str, cache: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dexorder_feeds.cli", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "DEXORDER_CACHE_DIR": str(cache)})


def test_the_readme_main_job_prints_168_candles(tmp_path):
    result = cli("fetch", "SIM:BTC/USDT", "--period", "1h", "--start", "2025-01-01", "--end", "2025-01-07T23:59:59",
                 cache=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("168 candles of SIM:BTC/USDT (3600 s)")
    assert "2025-01-01 00:00:00+00:00" in result.stdout and "2025-01-07 23:00:00+00:00" in result.stdout


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_fetch_writes_real_prices_and_utc_times(tmp_path, suffix):
    out = tmp_path / f"out{suffix}"
    result = cli("fetch", "SIM:ETH/USDT", "--period", "4h", "--start", "2025-01-01", "--end", "2025-01-02",
                 "-o", str(out), cache=tmp_path)
    assert result.returncode == 0, result.stderr
    raw = tmp_path / f"raw{suffix}"
    result = cli("fetch", "SIM:ETH/USDT", "--period", "4h", "--start", "2025-01-01", "--end", "2025-01-02",
                 "-o", str(raw), "--raw", cache=tmp_path)
    assert result.returncode == 0, result.stderr
    if suffix == ".csv":
        frame = pd.read_csv(out, dtype=str, keep_default_na=False)
        ints = pd.read_csv(raw)
        assert frame["time"].iloc[0] == "2025-01-01T00:00:00Z" and frame["time"].iloc[-1] == "2025-01-02T00:00:00Z"
        to_decimal = Decimal
    else:
        frame = pd.read_parquet(out)
        ints = pd.read_parquet(raw)
        assert str(frame["time"].dtype) == "datetime64[us, UTC]"
        assert frame["time"].iloc[0] == pd.Timestamp("2025-01-01", tz="UTC")
        to_decimal = Decimal  # parquet's decimal128 reads back as Decimal objects
    assert len(frame) == len(ints) == 7 and frame["ticker"].eq("SIM:ETH/USDT").all()
    assert ints["timestamp"].diff().dropna().eq(4 * 3600 * 10**6).all()  # --raw: the stored integers and µs
    assert "timestamp" not in frame.columns
    for column, decimals in (("open", 2), ("close", 2), ("volume", 6)):
        # Exactly the stored integer over 10**decimals, written at the market's precision.
        assert [to_decimal(v) for v in frame[column]] == [Decimal(int(v)).scaleb(-decimals) for v in ints[column]]
    if suffix == ".csv":
        assert all(len(v.split(".")[1]) == 2 for v in frame["close"])  # "3333.10", never "3333.1" or 3.3331E+3


def test_coverage_lists_what_the_warehouse_holds(tmp_path):
    cli("fetch", "SIM:BTC/USDT", "--start", "2025-01-01", "--end", "2025-01-01T09:00", cache=tmp_path)
    cli("fetch", "SIM:BTC/USDT", "--period", "1d", "--start", "2014-06-01", "--end", "2014-06-03", cache=tmp_path)
    result = cli("coverage", cache=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = [line.split() for line in result.stdout.splitlines()[1:]]
    # ticker, period, from (date time), to (date time), state, candles, source, checked at (date time)
    assert ["SIM:BTC/USDT", "3600", "2025-01-01", "00:00:00", "2025-01-01", "10:00:00", "stored", "10", "sim,"] \
        == lines[0][:9], result.stdout
    assert lines[1][:9] == ["SIM:BTC/USDT", "86400", "2014-06-01", "00:00:00", "2014-06-04", "00:00:00",
                            "checked-empty", "0", "sim,"], "the empty range is listed with its source"


def test_coverage_shows_unknown_gaps_and_forget_makes_a_range_unknown(tmp_path):
    cli("fetch", "SIM:BTC/USDT", "--start", "2025-01-01", "--end", "2025-01-01T09:00", cache=tmp_path)
    cli("fetch", "SIM:BTC/USDT", "--start", "2025-01-02", "--end", "2025-01-02T01:00", cache=tmp_path)
    states = [line.split()[6] for line in cli("coverage", "SIM:BTC/USDT", cache=tmp_path).stdout.splitlines()[1:]]
    assert states == ["stored", "unknown", "stored"]
    result = cli("forget", "SIM:BTC/USDT", "--period", "1h", "--start", "2025-01-01T05:00", "--end",
                 "2025-01-01T06:00", "--candles", cache=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "forgot 1 coverage row and 2 candles of SIM:BTC/USDT" in result.stdout
    lines = [line.split() for line in cli("coverage", "SIM:BTC/USDT", cache=tmp_path).stdout.splitlines()[1:]]
    assert [(line[3], line[5], line[6], line[7]) for line in lines[:3]] == [
        ("00:00:00", "05:00:00", "stored", "5"), ("05:00:00", "07:00:00", "unknown", "0"),
        ("07:00:00", "10:00:00", "stored", "3")]
    again = cli("fetch", "SIM:BTC/USDT", "--start", "2025-01-01", "--end", "2025-01-01T09:00", cache=tmp_path)
    assert again.stdout.startswith("10 candles"), again.stdout
    nothing = cli("forget", "SIM:ETH/USDT", cache=tmp_path)
    assert nothing.returncode == 0 and "nothing to forget" in nothing.stdout
    bad = cli("forget", "SIM:BTC/USDT", "--start", "2025-01-03", "--end", "2025-01-02", cache=tmp_path)
    assert bad.returncode == 2 and "after" in bad.stderr


@pytest.mark.parametrize(
    "args, text",
    [
        (("fetch", "btcusdt", "--start", "2025-01-01", "--end", "2025-01-02"), "malformed"),
        (("fetch", "SIM:BTC/USDT", "--period", "0", "--start", "2025-01-01", "--end", "2025-01-02"), "positive"),
        (("fetch", "SIM:BTC/USDT", "--start", "1735689600", "--end", "2025-01-02"), "looks like seconds"),
        (("fetch", "SIM:BTC/USDT", "--start", "2025-01-03", "--end", "2025-01-02"), "after"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(tmp_path, args, text):
    result = cli(*args, cache=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and text in result.stderr
    assert "Traceback" not in result.stderr


def test_the_progress_bar_follows_gap_fill_events():
    import io

    from dexorder_feeds.cli.commands import ProgressBar
    from dexorder_feeds.vocabulary.requests import FetchRequest

    out = io.StringIO()
    bar = ProgressBar(enabled=True, file=out, delay=0)
    request = FetchRequest.create("SIM:BTC/USDT", 3600, "2025-01-01", "2025-01-02")
    bar.dexorder_cache_checked(request=request, cached_rows=0, missing_ranges=[(1, 2), (3, 4)])
    bar.dexorder_progress(request=request, completed=1, total=2)
    bar.dexorder_progress(request=request, completed=2, total=2)
    assert (bar.bar.n, bar.bar.total) == (2, 2)
    bar.close()
    assert "filling SIM:BTC/USDT" in out.getvalue() and "2/2" in out.getvalue()
    silent = ProgressBar(enabled=False)
    silent.dexorder_cache_checked(request=request, cached_rows=0, missing_ranges=[(1, 2)])
    assert silent.bar is None


def test_a_closed_pipe_ends_quietly(tmp_path):
    script = ("import subprocess, sys; p = subprocess.Popen([sys.executable, '-m', 'dexorder_feeds.cli', 'fetch', "
              "'SIM:BTC/USDT', '--start', '2025-01-01', '--end', '2025-01-07'], stdout=subprocess.PIPE, "
              "stderr=subprocess.PIPE); p.stdout.readline(); p.stdout.close(); err = p.stderr.read(); "
              "print(p.wait(), 'Traceback' in err.decode())")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "DEXORDER_CACHE_DIR": str(tmp_path)}).stdout.split()
    assert out == ["0", "False"]


def test_fetch_prints_what_is_missing_and_why(tmp_path):
    result = cli("fetch", "SIM:BTC/USDT", "--period", "1d", "--start", "2014-06-01", "--end", "2014-06-03",
                 cache=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "0 of 3 candles stored, 3 missing" in result.stdout
    assert "missing 2014-06-01T00:00:00Z .. 2014-06-03T00:00:00Z (3 candles): empty at source" in result.stdout
