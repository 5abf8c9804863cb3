"""vbt.DexOrderData: real vectorbt on real SIM candles from a real Iceberg warehouse.

Kept to one module with a single portfolio run: importing vectorbt and its numba JIT are slow.
"""

from __future__ import annotations

import threading
import time
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

import dexorder_feeds
import vectorbt as vbt
from dexorder_feeds import hookimpl
from dexorder_feeds.vocabulary.errors import InvalidRequestError
from dexorder_feeds.plugins import get_plugin_manager
from dexorder_feeds.client.sync import close_sync_clients

SYMBOLS = ["SIM:BTC/USDT", "SIM:ETH/USDT"]
START = "2025-01-01"
END = "2025-01-20T23:59:59"
H = 3_600_000_000


@pytest.fixture(scope="module")
def uri(tmp_path_factory):
    path = tmp_path_factory.mktemp("vbt-warehouse") / "catalog.db"
    yield f"sqlite:///{path}"
    close_sync_clients()


def as_float(value, decimals: int) -> float:
    return float(Decimal(int(value)).scaleb(-decimals))


def expected_frame(uri, symbol, start=START, end=END, period=3600) -> pd.DataFrame:
    ints = dexorder_feeds.fetch_ohlc(symbol, period, start, end, iceberg_catalog_uri=uri)
    index = pd.DatetimeIndex([pd.Timestamp(int(ts), unit="us", tz="UTC") for ts in ints["timestamp"]], name="Open time")
    columns = {name: [as_float(v, 2) for v in ints[col]] for col, name in
               (("open", "Open"), ("high", "High"), ("low", "Low"), ("close", "Close"))}
    columns.update({name: [as_float(v, 6) for v in ints[col]] for col, name in
                    (("volume", "Volume"), ("buy_vol", "Buy Volume"), ("sell_vol", "Sell Volume"))})
    return pd.DataFrame(columns, index=index)


class Observer:
    """A real plugin: slows cache reads down a little and records when each ran and for what."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.lock = threading.Lock()
        self.reads: list[tuple[str, int, float, float]] = []

    @hookimpl(wrapper=True)
    def dexorder_read_cache(self, context, request):
        began = time.monotonic()
        time.sleep(self.delay)
        try:
            return (yield)
        finally:
            with self.lock:
                self.reads.append((request.ticker, request.start_time, began, time.monotonic()))


@pytest.fixture
def observer():
    def attach(delay=0.0):
        plugin = Observer(delay)
        get_plugin_manager().register(plugin)
        attached.append(plugin)
        return plugin

    attached: list[Observer] = []
    yield attach
    for plugin in attached:
        get_plugin_manager().unregister(plugin)


def test_download_two_symbols_gives_the_warehouse_candles_exactly(uri):
    data = vbt.DexOrderData.download(SYMBOLS, start=START, end=END, timeframe="1h", iceberg_catalog_uri=uri)
    assert isinstance(data, vbt.Data) and data.symbols == SYMBOLS
    for symbol in SYMBOLS:
        frame = data.data[symbol]
        assert list(frame.columns) == ["Open", "High", "Low", "Close", "Volume", "Buy Volume", "Sell Volume"]
        assert all(dtype == np.float64 for dtype in frame.dtypes)
        assert str(frame.index.tz) == "UTC" and len(frame) == 20 * 24
        pd.testing.assert_frame_equal(frame, expected_frame(uri, symbol), check_freq=False, check_exact=True,
                                      check_index_type=False)
    assert data.wrapper.freq == pd.Timedelta(hours=1)
    close = data.get("Close")
    assert list(close.columns) == SYMBOLS
    # period_seconds= is the same request as timeframe=
    same = vbt.DexOrderData.download(SYMBOLS[0], start=START, end=END, period_seconds=3600, iceberg_catalog_uri=uri)
    pd.testing.assert_frame_equal(same.get(), data.data[SYMBOLS[0]])
    single = vbt.DexOrderData.download_symbol(SYMBOLS[1], start=START, end=END, iceberg_catalog_uri=uri)
    pd.testing.assert_frame_equal(single, data.data[SYMBOLS[1]], check_freq=False)


def test_symbols_are_fetched_concurrently(uri, observer):
    vbt.DexOrderData.download(SYMBOLS, start=START, end=END, iceberg_catalog_uri=uri)  # warm the cache
    slow = observer(delay=0.4)
    vbt.DexOrderData.download(SYMBOLS, start=START, end=END, iceberg_catalog_uri=uri)
    spans = {ticker: (began, ended) for ticker, _, began, ended in slow.reads}
    assert set(spans) == set(SYMBOLS)
    (a_start, a_end), (b_start, b_end) = spans.values()
    # One after another, the two 0.4 s reads could not overlap.
    assert a_start < b_end and b_start < a_end


def test_update_fetches_only_newer_candles_and_replaces_the_last(uri, observer):
    data = vbt.DexOrderData.download(SYMBOLS, start=START, end="2025-01-10T05:00", iceberg_catalog_uri=uri)
    last = data.wrapper.index[-1]
    assert last == pd.Timestamp("2025-01-10T05:00", tz="UTC")
    # Pretend the last candle was still open when downloaded: a stale close.
    stale = {s: frame.copy() for s, frame in data.data.items()}
    for frame in stale.values():
        frame.iloc[-1, frame.columns.get_loc("Close")] = -1.0
    data = data.replace(data=stale)

    recorder = observer()
    updated = data.update(end="2025-01-12T23:59:59")
    starts = {ticker: start for ticker, start, _, _ in recorder.reads}
    assert starts == {s: last.value // 1000 for s in SYMBOLS}  # fetched from the last candle on, nothing older
    assert len(updated.wrapper.index) == len(data.wrapper.index) + 18 + 24 + 24  # rest of the 10th, 11th, 12th
    for symbol in SYMBOLS:
        fresh = expected_frame(uri, symbol, end="2025-01-12T23:59:59")
        pd.testing.assert_frame_equal(updated.data[symbol], fresh, check_freq=False, check_index_type=False)
        assert updated.data[symbol].loc[last, "Close"] > 0  # the stale last candle was replaced


def test_update_of_a_symbol_with_no_candles_yet_fetches_from_the_start(uri):
    before_listing = vbt.DexOrderData.download(SYMBOLS[0], start="2014-12-31", end="2014-12-31T12:00",
                                               iceberg_catalog_uri=uri)
    assert len(before_listing.get()) == 0
    updated = before_listing.update(end="2015-01-01T05:00")
    assert updated.get().index[-1] == pd.Timestamp("2015-01-01T05:00", tz="UTC")
    assert updated.get()["Close"].notna().sum() == 6  # the market lists on 2015-01-01


def test_from_signals_runs_on_the_result(uri):
    data = vbt.DexOrderData.download(SYMBOLS, start=START, end=END, iceberg_catalog_uri=uri)
    close = data.get("Close")
    fast, slow = close.rolling(10).mean(), close.rolling(30).mean()
    entries = (fast > slow) & (fast.shift(1) <= slow.shift(1))
    exits = (fast < slow) & (fast.shift(1) >= slow.shift(1))
    portfolio = vbt.Portfolio.from_signals(close, entries, exits, init_cash=10_000, fees=0.001)
    trades = portfolio.trades.count()
    assert list(trades.index) == SYMBOLS and (trades > 0).all()
    assert np.isfinite(portfolio.total_return()).all()


def test_show_progress_and_errors(uri, capsys):
    vbt.DexOrderData.download(SYMBOLS, start=START, end="2025-01-01T03:00", show_progress=True,
                              iceberg_catalog_uri=uri)
    err = capsys.readouterr().err
    assert all(f"{symbol}: 100%" in err for symbol in SYMBOLS), err
    with pytest.raises(InvalidRequestError, match="start"):
        vbt.DexOrderData.download(SYMBOLS, end=END, iceberg_catalog_uri=uri)
    with pytest.raises(InvalidRequestError, match="missing"):
        vbt.DexOrderData.download(SYMBOLS, start=START, missing="zero", iceberg_catalog_uri=uri)
    with pytest.raises(TypeError, match="unknown client setting"):
        vbt.DexOrderData.download(SYMBOLS, start=START, catalog_uri=uri)


# -- vectorbt's conventions: pull, tz=, show_progress on by default ---------------------------------
def test_pull_is_download_under_vectorbt_pros_name(uri):
    pulled = vbt.DexOrderData.pull(SYMBOLS, start=START, end="2025-01-03", timeframe="4h", iceberg_catalog_uri=uri,
                                   show_progress=False)
    downloaded = vbt.DexOrderData.download(SYMBOLS, start=START, end="2025-01-03", timeframe="4h",
                                           iceberg_catalog_uri=uri, show_progress=False)
    assert type(pulled) is vbt.DexOrderData and pulled.symbols == downloaded.symbols == SYMBOLS
    for symbol in SYMBOLS:
        pd.testing.assert_frame_equal(pulled.data[symbol], downloaded.data[symbol], check_exact=True)
        assert pulled.data[symbol].attrs["content_hash"] == downloaded.data[symbol].attrs["content_hash"]
    assert len(pulled.get("Close")) == 13  # 2025-01-01 00:00 .. 2025-01-03 00:00 every 4 h


def test_tz_converts_the_index_to_the_same_instants_and_update_keeps_it(uri):
    # Across the US switch to daylight saving time (2025-03-09 07:00 UTC).
    span = dict(start="2025-03-08", end="2025-03-10", iceberg_catalog_uri=uri, show_progress=False)
    utc = vbt.DexOrderData.download(SYMBOLS, **span)
    local = vbt.DexOrderData.download(SYMBOLS, tz="America/New_York", **span)
    assert str(utc.wrapper.index.tz) == "UTC", "UTC stays the default"
    assert str(local.wrapper.index.tz) == "America/New_York"
    offsets = {ts.utcoffset() for ts in local.wrapper.index}
    assert offsets == {pd.Timedelta(hours=-5), pd.Timedelta(hours=-4)}, "daylight saving followed, not one offset"
    for symbol in SYMBOLS:
        frame = local.data[symbol]
        assert str(frame.index.tz) == "America/New_York"
        pd.testing.assert_frame_equal(frame.tz_convert("UTC"), utc.data[symbol], check_exact=True, check_freq=False)
    assert local.get("Close").index[0] == pd.Timestamp("2025-03-07 19:00", tz="America/New_York")
    updated = local.update(end="2025-03-11")
    assert str(updated.wrapper.index.tz) == "America/New_York"
    reference = utc.update(end="2025-03-11")
    for symbol in SYMBOLS:
        assert str(updated.data[symbol].index.tz) == "America/New_York"
        pd.testing.assert_frame_equal(updated.data[symbol].tz_convert("UTC"), reference.data[symbol],
                                      check_exact=True, check_freq=False)
    offset = vbt.DexOrderData.download_symbol(SYMBOLS[0], tz=3, **span)
    assert offset.index[0].utcoffset() == pd.Timedelta(hours=3) and offset.index[0] == utc.wrapper.index[0]
    with pytest.raises(InvalidRequestError, match="not a time zone"):
        vbt.DexOrderData.download(SYMBOLS, tz="Mars/Olympus_Mons", **span)
    with pytest.raises(InvalidRequestError, match="not both"):
        vbt.DexOrderData.download(SYMBOLS, tz="UTC", tz_convert="UTC", **span)


def test_show_progress_is_on_by_default_with_a_bar_per_symbol(uri, capsys):
    data = vbt.DexOrderData.download(SYMBOLS, start="2025-02-01", end="2025-02-02", iceberg_catalog_uri=uri)
    err = capsys.readouterr().err
    for symbol in SYMBOLS:
        assert f"{symbol}: 100%" in err and "25 candles" in err, err
    data.update(end="2025-02-03")  # vectorbt's update shows no bar unless asked
    assert "100%" not in capsys.readouterr().err
    vbt.DexOrderData.pull(SYMBOLS, start="2025-02-01", end="2025-02-02", iceberg_catalog_uri=uri,
                          show_progress=False)
    assert "100%" not in capsys.readouterr().err
    vbt.DexOrderData.pull(SYMBOLS[0], start="2025-02-01", end="2025-02-02", iceberg_catalog_uri=uri,
                          tqdm_kwargs={"desc": "custom label"})
    assert "custom label: 100%" in capsys.readouterr().err


def test_relative_times_reach_the_download(uri):
    data = vbt.DexOrderData.download(SYMBOLS[0], start="3 days ago", end="now UTC", timeframe="1d",
                                     iceberg_catalog_uri=uri, show_progress=False)
    frame = data.get()
    now = pd.Timestamp.now(tz="UTC")
    assert 2 <= len(frame) <= 4 and frame.index[-1] <= now and frame.index[0] >= now - pd.Timedelta(days=3, hours=1)
