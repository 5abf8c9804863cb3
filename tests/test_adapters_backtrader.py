"""bt.feeds.DexOrderData: real backtrader runs on real SIM candles from a real Iceberg warehouse."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import matplotlib

matplotlib.use("Agg")  # before backtrader's plot module tries TkAgg
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

import backtrader as bt  # noqa: E402
import dexorder_feeds  # noqa: E402
from dexorder_feeds.adapters.backtrader import DexOrderData, date_numbers, period_for, timeframe_for  # noqa: E402
from dexorder_feeds.vocabulary.errors import InvalidPeriodError, InvalidRequestError  # noqa: E402
from dexorder_feeds.client.sync import close_sync_clients  # noqa: E402

TICKER = "SIM:BTC/USDT"
OTHER = "SIM:ETH/USDT"
START = datetime(2025, 1, 1)
END = datetime(2025, 2, 14, 23, 59, 59)  # 45 days of hourly candles: 1080 bars


@pytest.fixture(scope="module")
def uri(tmp_path_factory):
    """One warehouse for the module: SIM candles are ingested once, then read from the cache."""
    path = tmp_path_factory.mktemp("bt-warehouse") / "catalog.db"
    yield f"sqlite:///{path}"
    close_sync_clients()


def stored(uri, ticker=TICKER, period=3600, start=START, end=END):
    return dexorder_feeds.fetch_ohlc(ticker, period, start, end, iceberg_catalog_uri=uri)


def as_float(value: int, decimals: int) -> float:
    return float(Decimal(int(value)).scaleb(-decimals))  # float(Decimal) is correctly rounded


EPOCH = datetime(1970, 1, 1)


def close_time(ts: int, period: int) -> datetime:
    """When a candle's bar is due (the feed's default): at its period end, or at backtrader's
    session end (23:59:59.999990) of the day it closes when it closes at midnight UTC."""
    end = EPOCH + timedelta(microseconds=int(ts), seconds=period)
    if end.time() == datetime.min.time():
        end -= timedelta(microseconds=10)
    return end


def as_bt(moment: datetime) -> datetime:
    """``moment`` as backtrader gives it back (its date numbers round to ~10 µs)."""
    return bt.num2date(bt.date2num(moment))


def pandas_frame(ints: pd.DataFrame, period: int = 3600) -> pd.DataFrame:
    """The reference: the same stored candles as floats, the way a user would build them, each
    stamped when its period has closed."""
    columns = {c: [as_float(v, 2) for v in ints[c].tolist()] for c in ("open", "high", "low", "close")}
    columns["volume"] = [as_float(v, 6) for v in ints["volume"].tolist()]
    index = pd.DatetimeIndex([close_time(ts, period) for ts in ints["timestamp"].tolist()])
    return pd.DataFrame(columns, index=index)


class SmaCross(bt.Strategy):
    params = dict(fast=10, slow=30)

    def __init__(self):
        self.crossover = bt.ind.CrossOver(bt.ind.SMA(period=self.p.fast), bt.ind.SMA(period=self.p.slow))
        self.trades = []

    def next(self):
        if not self.position and self.crossover > 0:
            self.buy(size=1)
        elif self.position and self.crossover < 0:
            self.close()

    def notify_order(self, order):
        if order.status == order.Completed:
            self.trades.append((bt.num2date(order.executed.dt), order.executed.size, order.executed.price))


class Recorder(bt.Strategy):
    """Every bar each data delivers."""

    def __init__(self):
        self.bars = {data._name: [] for data in self.datas}

    def next(self):
        for data in self.datas:
            self.bars[data._name].append((data.datetime.datetime(0), data.open[0], data.high[0], data.low[0],
                                          data.close[0], data.volume[0], len(data)))


def run(data, strategy=SmaCross, **cerebro_kwargs):
    cerebro = bt.Cerebro(stdstats=False, **cerebro_kwargs)
    cerebro.adddata(data)
    cerebro.addstrategy(strategy)
    cerebro.broker.setcash(100_000.0)
    result = cerebro.run()[0]
    return result, cerebro.broker.getvalue()


@pytest.mark.parametrize("runonce", [True, False])
@pytest.mark.parametrize("preload", [True, False])
def test_same_trades_and_value_as_pandasdata(uri, runonce, preload):
    reference, reference_value = run(bt.feeds.PandasData(dataname=pandas_frame(stored(uri))),
                                     runonce=runonce, preload=preload)
    ours, value = run(DexOrderData(ticker=TICKER, period_seconds=3600, fromdate=START, todate=END,
                                   iceberg_catalog_uri=uri), runonce=runonce, preload=preload)
    assert len(reference.trades) > 10  # the strategy really trades on these candles
    assert ours.trades == reference.trades
    assert value == reference_value


def test_bars_are_the_stored_candles_exactly(uri):
    ints = stored(uri)
    strategy, _ = run(DexOrderData(ticker=TICKER, period_seconds="1h", fromdate=START, todate=END,
                                   iceberg_catalog_uri=uri), Recorder)
    bars = strategy.bars[TICKER]
    assert len(bars) == len(ints) == 45 * 24
    opened, _ = run(DexOrderData(ticker=TICKER, period_seconds="1h", fromdate=START, todate=END, bar_time="open",
                                 iceberg_catalog_uri=uri), Recorder)
    for bar, at_open, row in zip(bars, opened.bars[TICKER], ints.itertuples()):
        assert bar[0] == as_bt(close_time(row.timestamp, 3600))  # the default: due at its close
        assert at_open[0] == EPOCH + timedelta(microseconds=row.timestamp)  # opt-in: its open
        assert at_open[1:6] == bar[1:6]
        assert bar[1:5] == (as_float(row.open, 2), as_float(row.high, 2), as_float(row.low, 2), as_float(row.close, 2))
        assert bar[5] == as_float(row.volume, 6)


def test_date_numbers_equal_bt_date2num():
    rng = np.random.default_rng(7)
    stamps = np.concatenate([
        rng.integers(1_420_070_400_000_000, 1_900_000_000_000_000, 20_000),  # any microsecond
        np.arange(1_735_689_600_000_000, 1_735_689_600_000_000 + 5000 * 60_000_000, 60_000_000),  # minutes
        np.arange(1_735_689_600_000_000, 1_735_689_600_000_000 + 300 * 86_400_000_000, 86_400_000_000),  # days
    ])
    expected = [bt.date2num(datetime(1970, 1, 1) + timedelta(microseconds=int(ts))) for ts in stamps]
    assert date_numbers(stamps) == expected
    # ... where the shortcut formula would not be:
    assert (stamps / 86_400e6 + 719_163.0 != np.array(expected)).any()


def test_timeframe_and_compression_give_the_period(uri):
    assert timeframe_for(3600) == (bt.TimeFrame.Minutes, 60)
    assert timeframe_for(86400) == (bt.TimeFrame.Days, 1)
    assert timeframe_for(604800 * 2) == (bt.TimeFrame.Weeks, 2)
    assert timeframe_for(90) == (bt.TimeFrame.Seconds, 90)
    assert period_for(bt.TimeFrame.Minutes, 15) == 900
    assert timeframe_for(2592000) == (bt.TimeFrame.Months, 1)  # the calendar month
    assert period_for(bt.TimeFrame.Months, 1) == 2592000
    with pytest.raises(InvalidPeriodError, match="Months x 1"):
        period_for(bt.TimeFrame.Months, 3)

    by_tf = DexOrderData(ticker=TICKER, timeframe=bt.TimeFrame.Minutes, compression=60, fromdate=START,
                         todate=START + timedelta(days=2), iceberg_catalog_uri=uri)
    by_period = DexOrderData(dataname=TICKER, period_seconds=3600, fromdate=START, todate=START + timedelta(days=2),
                             iceberg_catalog_uri=uri)
    assert by_tf.period_seconds == by_period.period_seconds == 3600
    assert (by_period.p.timeframe, by_period.p.compression) == (bt.TimeFrame.Minutes, 60)
    a, _ = run(by_tf, Recorder)
    b, _ = run(by_period, Recorder)
    assert a.bars[TICKER] == b.bars[TICKER] and len(a.bars[TICKER]) == 49  # both ends inclusive
    daily = DexOrderData(ticker=TICKER, fromdate=START, todate=START + timedelta(days=9), iceberg_catalog_uri=uri)
    assert daily.period_seconds == 86400  # backtrader's default timeframe: Days x 1
    c, _ = run(daily, Recorder)
    assert len(c.bars[TICKER]) == 10  # the candles opening Jan 1 to Jan 10, each dated its own day
    assert [bar[0].date() for bar in c.bars[TICKER]] == [(START + timedelta(days=i)).date() for i in range(10)]


def test_fromdate_todate_and_name(uri):
    data = DexOrderData(ticker=TICKER, period_seconds=3600, fromdate=datetime(2025, 1, 3, 5),
                        todate=datetime(2025, 1, 3, 9), iceberg_catalog_uri=uri)
    assert data._name == TICKER
    strategy, _ = run(data, Recorder)
    # The candles opening 05:00 to 09:00, each stamped at its close.
    assert [bar[0].hour for bar in strategy.bars[TICKER]] == [6, 7, 8, 9, 10]
    # Aware datetimes are converted to UTC; a date-only todate means the whole day.
    plus_one = timezone(timedelta(hours=1))
    aware = DexOrderData(ticker=TICKER, period_seconds=3600, fromdate=datetime(2025, 1, 3, 6, tzinfo=plus_one),
                         todate=datetime(2025, 1, 3).date(), iceberg_catalog_uri=uri)
    strategy, _ = run(aware, Recorder)
    stamps = [bar[0] for bar in strategy.bars[TICKER]]
    assert [stamp.hour for stamp in stamps] == list(range(6, 24)) + [23]  # candles of 05:00 to 23:00
    assert stamps[-1] == as_bt(datetime(2025, 1, 3, 23, 59, 59, 999990))  # the day's last: at its session end


def test_bad_arguments_say_what_to_do():
    with pytest.raises(InvalidRequestError, match="fromdate"):
        DexOrderData(ticker=TICKER, period_seconds=3600)
    with pytest.raises(InvalidRequestError, match="missing"):
        DexOrderData(ticker=TICKER, period_seconds=3600, fromdate=START, missing="zero")
    with pytest.raises(InvalidRequestError, match="bar_time"):
        DexOrderData(ticker=TICKER, period_seconds=3600, fromdate=START, bar_time="middle")
    with pytest.raises(InvalidRequestError, match="sessionend"):
        DexOrderData(ticker=TICKER, period_seconds=3600, fromdate=START, sessionend=datetime(2025, 1, 1, 17).time())
    with pytest.raises(ValueError, match="upper case"):
        DexOrderData(ticker="sim:btc/usdt", period_seconds=3600, fromdate=START)


def test_resample_hours_to_days(uri):
    hourly = stored(uri)
    daily = stored(uri, period=86400)
    for runonce in (True, False):
        cerebro = bt.Cerebro(stdstats=False, runonce=runonce)
        data = DexOrderData(ticker=TICKER, period_seconds=3600, fromdate=START, todate=END, iceberg_catalog_uri=uri)
        cerebro.resampledata(data, timeframe=bt.TimeFrame.Days, compression=1)
        cerebro.addstrategy(Recorder)
        bars = cerebro.run()[0].bars[TICKER]
        assert len(bars) == len(daily) == 45
        days = hourly.groupby(hourly["timestamp"] // 86_400_000_000)
        for bar, (_, day), (_, candle) in zip(bars, days, daily.iterrows()):
            assert bar[0].date() == datetime(1970, 1, 1).date() + timedelta(microseconds=int(candle["timestamp"]))
            # SIM candles of different periods share opens and closes (highs, lows, volumes differ).
            assert bar[1] == as_float(candle["open"], 2) == as_float(day["open"].iloc[0], 2)
            assert bar[4] == as_float(candle["close"], 2) == as_float(day["close"].iloc[-1], 2)
            assert bar[2] == as_float(day["high"].max(), 2) and bar[3] == as_float(day["low"].min(), 2)
            assert bar[5] == pytest.approx(as_float(day["volume"].sum(), 6), rel=1e-12)


def test_resample_and_replay_intraday_by_default(uri):
    four_hourly = stored(uri, period=14400, end=datetime(2025, 1, 10, 23, 59))
    for method in ("resampledata", "replaydata"):
        cerebro = bt.Cerebro(stdstats=False)
        data = DexOrderData(ticker=TICKER, period_seconds=3600, fromdate=START, todate=datetime(2025, 1, 10, 23),
                            iceberg_catalog_uri=uri)
        getattr(cerebro, method)(data, timeframe=bt.TimeFrame.Minutes, compression=240)
        cerebro.addstrategy(Recorder)
        bars = cerebro.run()[0].bars[TICKER]
        if method == "replaydata":
            assert len(bars) == 240  # every hourly update of the forming 4h bar is delivered
            bars = [bar for bar, after in zip(bars, bars[1:] + [(None,) * 7]) if after[6] != bar[6]]
        assert len(bars) == len(four_hourly) == 60
        for bar, candle in zip(bars, four_hourly.itertuples()):
            assert bar[0] == as_bt(close_time(candle.timestamp, 14400))
            assert bar[1] == as_float(candle.open, 2)
            assert bar[4] == as_float(candle.close, 2)


def test_several_datas(uri):
    cerebro = bt.Cerebro(stdstats=False)
    for ticker in (TICKER, OTHER):
        cerebro.adddata(DexOrderData(ticker=ticker, period_seconds=3600, fromdate=START,
                                     todate=START + timedelta(days=5, hours=23), iceberg_catalog_uri=uri))
    cerebro.addstrategy(Recorder)
    bars = cerebro.run()[0].bars
    assert set(bars) == {TICKER, OTHER}
    assert len(bars[TICKER]) == len(bars[OTHER]) == 144
    assert [b[0] for b in bars[TICKER]] == [b[0] for b in bars[OTHER]]
    assert bars[TICKER][0][4] != bars[OTHER][0][4]  # really two markets


def test_plot_to_png(uri, tmp_path, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    cerebro = bt.Cerebro()
    cerebro.adddata(DexOrderData(ticker=TICKER, period_seconds=3600, fromdate=START, todate=START + timedelta(days=10),
                                 iceberg_catalog_uri=uri))
    cerebro.addstrategy(SmaCross)
    cerebro.run()
    figures = cerebro.plot(iplot=False)
    path = tmp_path / "plot.png"
    figures[0][0].savefig(path)
    plt.close("all")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_client_object_is_used(uri):
    from dexorder_feeds import OHLCClient

    client = OHLCClient(iceberg_catalog_uri=uri)
    data = DexOrderData(ticker=TICKER, period_seconds=3600, fromdate=START, todate=START + timedelta(hours=9),
                        client=client)
    strategy, _ = run(data, Recorder)
    assert len(strategy.bars[TICKER]) == 10 and data.snapshot_id is not None
    with pytest.raises(TypeError, match="either"):
        DexOrderData(ticker=TICKER, period_seconds=3600, fromdate=START, client=client, iceberg_catalog_uri=uri)


def test_generic_load_path_matches_bulk_preload(uri):
    """A filter forces backtrader's bar-by-bar load(); bars must be the bulk path's."""
    bulk, _ = run(DexOrderData(ticker=TICKER, period_seconds=3600, fromdate=START, todate=START + timedelta(days=3),
                               iceberg_catalog_uri=uri), Recorder)
    seen = []

    def passthrough(data):
        seen.append(data.datetime[0])
        return False  # keep the bar

    slow_data = DexOrderData(ticker=TICKER, period_seconds=3600, fromdate=START, todate=START + timedelta(days=3),
                             iceberg_catalog_uri=uri)
    slow_data.addfilter(passthrough)
    slow, _ = run(slow_data, Recorder)
    assert len(seen) == 73
    assert slow.bars[TICKER] == bulk.bars[TICKER]
    assert not any(math.isnan(v) for bar in bulk.bars[TICKER] for v in bar[1:6])


def test_exactbars_memory_saving_mode_gives_the_same_trades(uri):
    """exactbars=1 turns preload/runonce off and keeps lines in fixed-size buffers."""
    reference, reference_value = run(DexOrderData(ticker=TICKER, period_seconds=3600, fromdate=START, todate=END,
                                                  iceberg_catalog_uri=uri))
    saving, value = run(DexOrderData(ticker=TICKER, period_seconds=3600, fromdate=START, todate=END,
                                     iceberg_catalog_uri=uri), exactbars=1)
    assert saving.trades == reference.trades and value == reference_value
