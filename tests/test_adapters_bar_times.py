"""Bar times a backtest can trust: bt.feeds.DexOrderData with its defaults never shows a candle
before its period has closed, dates daily bars on their own day, stays in step with
backtrader's own CSV feeds, and resamples/replays into the warehouse's own coarser candles."""

from __future__ import annotations

import csv
from datetime import datetime, timedelta
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

import backtrader as bt
import dexorder_feeds
from dexorder_feeds.adapters._source import period_end
from dexorder_feeds.adapters.backtrader import DexOrderData, bar_times
from dexorder_feeds.client.sync import close_sync_clients

TICKER = "SIM:BTC/USDT"
EPOCH = datetime(1970, 1, 1)
HOUR, DAY, WEEK = 3600, 86400, 604800


@pytest.fixture(scope="module")
def uri(tmp_path_factory):
    path = tmp_path_factory.mktemp("bar-times") / "catalog.db"
    yield f"sqlite:///{path}"
    close_sync_clients()


def stored(uri, period, start, end):
    return dexorder_feeds.fetch_ohlc(TICKER, period, start, end, iceberg_catalog_uri=uri)


def as_float(value: int, decimals: int) -> float:
    return float(Decimal(int(value)).scaleb(-decimals))


def at(ts_us: int) -> datetime:
    return EPOCH + timedelta(microseconds=int(ts_us))


def dex(uri, period, start, end, **kwargs):
    return DexOrderData(ticker=TICKER, period_seconds=period, fromdate=start, todate=end, iceberg_catalog_uri=uri,
                        name=f"dex-{period}", **kwargs)


class Timeline(bt.Strategy):
    """At every step: each data's length, bar datetime (backtrader's number), close, open, high,
    low and volume."""

    def __init__(self):
        self.steps = []

    def prenext(self):  # before every data has a bar
        self.next()

    def next(self):
        self.steps.append(tuple((len(d), d.datetime[0], d.close[0], d.open[0], d.high[0], d.low[0], d.volume[0])
                                if len(d) else (0,) for d in self.datas))


def timeline(*datas, **cerebro_kwargs):
    cerebro = bt.Cerebro(stdstats=False, **cerebro_kwargs)
    for data in datas:
        cerebro.adddata(data)
    cerebro.addstrategy(Timeline)
    return cerebro.run()[0].steps


# -- the period end and the stamps -------------------------------------------------------------
def test_period_end_and_bar_times():
    jan1 = 1_735_689_600_000_000
    assert period_end(jan1, HOUR) == jan1 + 3_600_000_000
    stamps = bar_times([jan1, jan1 + 22 * 3_600_000_000, jan1 + 23 * 3_600_000_000], HOUR)
    assert [at(s) for s in stamps] == [datetime(2025, 1, 1, 1), datetime(2025, 1, 1, 23),
                                       datetime(2025, 1, 1, 23, 59, 59, 999990)]
    assert at(bar_times([jan1], DAY)[0]) == datetime(2025, 1, 1, 23, 59, 59, 999990)  # its own date
    assert list(bar_times([jan1], DAY, "open")) == [jan1]


@settings(max_examples=200, deadline=None)
@given(period=st.sampled_from([1, 60, 90, 300, 3600, 7 * 3600, 14400, 86400, 3 * 86400, 604800]),
       first=st.integers(0, 20_000), count=st.integers(1, 400))
def test_bar_times_rise_strictly_and_never_precede_the_close(period, first, count):
    starts = (np.arange(first, first + count, dtype=np.int64)) * period * 1_000_000
    stamps = bar_times(starts, period)
    ends = np.asarray(period_end(starts, period))
    assert (np.diff(stamps) > 0).all()  # every bar its own moment, in order
    assert ((ends - stamps) >= 0).all() and ((ends - stamps) <= 10).all()  # at the close, or 10 µs before midnight
    assert [at(s).date() for s in stamps] == [at(e - 1).date() for e in ends]  # dated the day it closes


# -- look-ahead -------------------------------------------------------------------------------
class Watcher(bt.Strategy):
    """Records, at each hourly bar, which daily candle is visible (by its open date)."""

    def __init__(self):
        self.hourly, self.daily = self.datas
        self.seen = []  # (hourly bar's candle close, visible daily candle's close, its close price)
        self.daily_dates = []
        self._hours = 0

    def prenext(self):  # before the first daily bar
        self.next()

    def next(self):
        if len(self.daily) and (not self.daily_dates or self.daily_dates[-1][0] != len(self.daily)):
            self.daily_dates.append((len(self.daily), self.daily.datetime.datetime(0)))
        if len(self.hourly) == self._hours:
            return  # only the daily moved
        self._hours = len(self.hourly)
        hour_close = self.hourly.datetime.datetime(0)
        day = self.daily.datetime.datetime(0).date() if len(self.daily) else None
        self.seen.append((hour_close, day, self.daily.close[0] if len(self.daily) else None))


def _watch(uri, runonce=True, **kwargs):
    cerebro = bt.Cerebro(stdstats=False, runonce=runonce)
    cerebro.adddata(dex(uri, HOUR, datetime(2025, 1, 1), datetime(2025, 1, 9, 23), **kwargs))
    cerebro.adddata(dex(uri, DAY, datetime(2025, 1, 1), datetime(2025, 1, 9), **kwargs))
    cerebro.addstrategy(Watcher)
    return cerebro.run()[0]


@pytest.mark.parametrize("runonce", [True, False])
def test_mixed_timeframes_see_no_candle_before_its_close(uri, runonce):
    daily = stored(uri, DAY, datetime(2025, 1, 1), datetime(2025, 1, 9))
    closes = {at(ts).date(): as_float(c, 2) for ts, c in zip(daily["timestamp"], daily["close"])}
    watcher = _watch(uri, runonce)
    assert len(watcher.seen) == 9 * 24
    leaks = 0
    for hour_close, day, close in watcher.seen:
        # The hourly bar of candle [h, h+1) is due at h+1 (23:59:59.99999 for the day's last).
        now = hour_close + timedelta(microseconds=20)
        if day is not None:
            assert close == closes[day]
            leaks += datetime.combine(day + timedelta(days=1), datetime.min.time()) > now
    assert leaks == 0
    # The daily close of Jan 1 first appears with the day's last hourly bar, not at 00:00.
    first_seen = next(i for i, (_, day, _) in enumerate(watcher.seen) if day is not None)
    assert first_seen == 23 and watcher.seen[first_seen][1] == datetime(2025, 1, 1).date()
    # Daily bars are dated their own day.
    assert [stamp.date() for _, stamp in watcher.daily_dates] == [datetime(2025, 1, d).date() for d in range(1, 10)]
    assert all(stamp.time() >= datetime(2025, 1, 1, 23, 59, 59).time() for _, stamp in watcher.daily_dates)


def test_open_time_stamps_do_leak_which_is_why_they_are_opt_in(uri):
    daily = stored(uri, DAY, datetime(2025, 1, 1), datetime(2025, 1, 1))
    watcher = _watch(uri, bar_time="open")
    # The 00:00 hourly bar of Jan 1 already sees Jan 1's daily close: the leak the default prevents.
    hour, day, close = watcher.seen[0]
    assert hour == datetime(2025, 1, 1) and day == datetime(2025, 1, 1).date()
    assert close == as_float(daily["close"].iloc[0], 2)


# -- in step with backtrader's own feeds ------------------------------------------------------
def _write_daily_like(path, frame, period):
    """backtrader's own CSV format (BacktraderCSVData): a date-only row is a bar of that date,
    stamped at the session end; the date written is the last day the candle covers."""
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["Date", "Open", "High", "Low", "Close", "Volume", "OpenInterest"])
        for row in frame.itertuples():
            last_day = at(period_end(row.timestamp, period) - 1).date()
            out.writerow([last_day.isoformat(), *(repr(as_float(getattr(row, c), 2)) for c in ("open", "high", "low", "close")),
                          repr(as_float(row.volume, 6)), 0])


def _write_intraday(path, frame, period, midnight_at_session_end):
    """A GenericCSVData file of intraday bars stamped at their close (backtrader's convention)."""
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["datetime", "open", "high", "low", "close", "volume"])
        for row in frame.itertuples():
            end = at(period_end(row.timestamp, period))
            if midnight_at_session_end and end.time() == datetime.min.time():
                end -= timedelta(microseconds=10)
            out.writerow([end.strftime("%Y-%m-%d %H:%M:%S.%f"),
                          *(repr(as_float(getattr(row, c), 2)) for c in ("open", "high", "low", "close")),
                          repr(as_float(row.volume, 6))])


def _csv_intraday(path, compression):
    return bt.feeds.GenericCSVData(dataname=str(path), dtformat="%Y-%m-%d %H:%M:%S.%f", datetime=0, time=-1, open=1,
                                   high=2, low=3, close=4, volume=5, openinterest=-1,
                                   timeframe=bt.TimeFrame.Minutes, compression=compression)


def test_daily_beside_weekly_as_backtraders_own_feeds(uri, tmp_path):
    weekly = stored(uri, WEEK, datetime(2025, 1, 1), datetime(2025, 3, 1))
    first, last = int(weekly["timestamp"].iloc[0]), int(weekly["timestamp"].iloc[-1])
    daily = stored(uri, DAY, at(first), at(period_end(last, WEEK) - 1))
    assert len(weekly) >= 8 and len(daily) == 7 * len(weekly)
    _write_daily_like(tmp_path / "daily.csv", daily, DAY)
    _write_daily_like(tmp_path / "weekly.csv", weekly, WEEK)

    def csv_daily():
        return bt.feeds.BacktraderCSVData(dataname=str(tmp_path / "daily.csv"))

    def csv_weekly():
        return bt.feeds.BacktraderCSVData(dataname=str(tmp_path / "weekly.csv"), timeframe=bt.TimeFrame.Weeks)

    def dex_daily():
        return dex(uri, DAY, at(first), at(period_end(last, WEEK) - 1))

    def dex_weekly():
        return dex(uri, WEEK, at(first), at(last))

    reference = timeline(csv_daily(), csv_weekly())
    assert len(reference) == len(daily)
    # Each weekly bar arrives with the last daily bar of its week (none during the first six days).
    assert [i for i, (a, b) in enumerate(zip(reference, reference[1:])) if a[1][0] != b[1][0]] == \
        [7 * k + 5 for k in range(len(weekly))]
    assert timeline(dex_daily(), csv_weekly()) == reference
    assert timeline(csv_daily(), dex_weekly()) == reference
    assert timeline(dex_daily(), dex_weekly()) == reference
    assert timeline(dex_daily(), dex_weekly(), runonce=False, preload=False) == reference


@pytest.mark.parametrize("midnight_at_session_end", [True, False])
def test_hourly_beside_daily_as_backtraders_own_feeds(uri, tmp_path, midnight_at_session_end):
    start, end = datetime(2025, 1, 1), datetime(2025, 1, 5, 23)
    hourly = stored(uri, HOUR, start, end)
    daily = stored(uri, DAY, start, end)
    _write_intraday(tmp_path / "hourly.csv", hourly, HOUR, midnight_at_session_end)
    _write_daily_like(tmp_path / "daily.csv", daily, DAY)

    def csv_hourly():
        return _csv_intraday(tmp_path / "hourly.csv", 60)

    def csv_daily():
        return bt.feeds.BacktraderCSVData(dataname=str(tmp_path / "daily.csv"))

    reference = timeline(csv_hourly(), csv_daily())
    # Our daily feed in place of backtrader's: the same steps, whatever the hourly file's stamps.
    assert timeline(csv_hourly(), dex(uri, DAY, start, end)) == reference
    if midnight_at_session_end:
        # Our hourly feed stamps the day's last candle at the session end, like this file.
        assert len(reference) == len(hourly)  # the day's last hourly and daily bars arrive together
        assert timeline(dex(uri, HOUR, start, end), csv_daily()) == reference
        assert timeline(dex(uri, HOUR, start, end), dex(uri, DAY, start, end)) == reference
    else:
        assert len(reference) == len(hourly) + len(daily)  # the daily bar arrives between two hourly ones


# -- resample and replay ----------------------------------------------------------------------
def _aggregate(fine: pd.DataFrame, coarse_period: int) -> pd.DataFrame:
    groups = fine.groupby(fine["timestamp"] // (coarse_period * 1_000_000))
    return pd.DataFrame({"open": groups["open"].first(), "high": groups["high"].max(), "low": groups["low"].min(),
                         "close": groups["close"].last(), "volume": groups["volume"].sum()})


@pytest.mark.parametrize("fine_period, coarse_period, timeframe, compression", [
    (60, HOUR, bt.TimeFrame.Minutes, 60),
    (HOUR, 4 * HOUR, bt.TimeFrame.Minutes, 240),
    (HOUR, DAY, bt.TimeFrame.Days, 1),
])
@pytest.mark.parametrize("method", ["resampledata", "replaydata"])
def test_resample_and_replay_give_the_warehouses_coarser_candles(uri, fine_period, coarse_period, timeframe,
                                                                 compression, method):
    start = datetime(2025, 1, 1)
    end = start + timedelta(days=2 if fine_period == 60 else 6) - timedelta(seconds=fine_period)
    fine = stored(uri, fine_period, start, end)
    coarse = stored(uri, coarse_period, start, end)
    expected = _aggregate(fine, coarse_period)
    assert len(expected) == len(coarse)

    cerebro = bt.Cerebro(stdstats=False)
    getattr(cerebro, method)(dex(uri, fine_period, start, end), timeframe=timeframe, compression=compression)
    cerebro.adddata(dex(uri, coarse_period, start, end))  # the warehouse's own coarser candles
    cerebro.addstrategy(Timeline)
    steps = cerebro.run()[0].steps
    if method == "replaydata":
        assert len(steps) == len(fine)  # every fine update of the forming bar is delivered
    # The last step of each resampled length: the finished bar, next to the coarse candle.
    finished = [step for step, after in zip(steps, steps[1:] + [None]) if after is None or after[0][0] != step[0][0]]
    assert len(finished) == len(coarse)
    for step, candle, agg in zip(finished, coarse.itertuples(), expected.itertuples()):
        (_, resampled_dt, resampled_close, r_open, r_high, r_low, r_volume), coarse_bar = step
        assert resampled_dt == coarse_bar[1]  # due at the same moment as the coarse candle
        assert resampled_close == coarse_bar[2] == as_float(candle.close, 2)
        assert r_open == coarse_bar[3] == as_float(candle.open, 2) == as_float(agg.open, 2)
        # High, low and volume are the fine candles' (a source whose periods disagree shows here).
        assert (r_high, r_low) == (as_float(agg.high, 2), as_float(agg.low, 2))
        assert r_volume == pytest.approx(as_float(agg.volume, 6), rel=1e-12)
    # The first bar is a whole coarse period, not one fine candle.
    first_len = sum(1 for step in steps if step[0][0] == 1)
    assert first_len == (coarse_period // fine_period if method == "replaydata" else 1)


# -- vectorbt: index = period open; mixing timeframes as docs/backtesting.md shows ------------
def test_vectorbt_coarse_on_fine_without_look_ahead(uri):
    import vectorbt as vbt

    start, end = "2025-01-01", "2025-01-05T23:00"
    hourly = vbt.DexOrderData.download(TICKER, start=start, end=end, timeframe="1h", iceberg_catalog_uri=uri).get()
    daily = vbt.DexOrderData.download(TICKER, start=start, end=end, timeframe="1d", iceberg_catalog_uri=uri).get()
    assert hourly.index[0] == pd.Timestamp("2025-01-01", tz="UTC")  # indexed by the period open

    # The recipe of docs/backtesting.md: a daily candle is known at the close of the hourly
    # candle that ends with it, so it moves to that hourly row (open + 1d - 1h), then ffill.
    known = daily["Close"].copy()
    known.index = known.index + pd.Timedelta("1d") - pd.Timedelta("1h")
    daily_on_hourly = known.reindex(hourly.index, method="ffill")

    assert daily_on_hourly.iloc[:23].isna().all()  # Jan 1's close is unknown before 24:00
    assert daily_on_hourly.loc["2025-01-01 23:00"] == daily["Close"].iloc[0] == hourly["Close"].loc["2025-01-01 23:00"]
    for open_time, value in daily_on_hourly.dropna().items():
        day = daily.index[daily["Close"] == value][0]
        # the daily candle closed no later than this hourly candle closes
        assert day + pd.Timedelta("1d") <= open_time + pd.Timedelta("1h")
