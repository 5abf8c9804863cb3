"""The three adapters agree: same candles, same values (bt/vbt floats are the nearest floats to the
iterator's exact Decimals), same answer to every missing-candle policy."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pytest  # noqa: E402

import backtrader as bt  # noqa: E402
import dexorder_feeds  # noqa: E402
import vectorbt as vbt  # noqa: E402
from dexorder_feeds.adapters._source import exact_floats  # noqa: E402
from dexorder_feeds.storage.catalog import open_catalog  # noqa: E402
from dexorder_feeds.vocabulary.markets import MarketInfo  # noqa: E402
from dexorder_feeds.client.sync import close_sync_clients  # noqa: E402
from dexorder_feeds.storage.warehouse import Warehouse, candle_arrow_schema  # noqa: E402

H = 3_600_000_000
T0 = 1_735_689_600_000_000  # 2025-01-01 00:00 UTC
FIELDS = ("open", "high", "low", "close", "volume")
GAP_TICKER = "SIM:GAPPY/USDT"
GAP_HOURS = 48
ABSENT = {5, 6, 30, 46, 47}  # a two-period gap, one at a page start (page_size=10), a trailing one


@pytest.fixture(scope="module")
def uri(tmp_path_factory):
    path = tmp_path_factory.mktemp("conformance-warehouse") / "catalog.db"
    uri = f"sqlite:///{path}"
    _store_gapped_market(uri)
    yield uri
    close_sync_clients()


def _store_gapped_market(uri: str) -> None:
    """A market whose range is recorded as ingested but has holes: the market had no trades."""
    warehouse = Warehouse(open_catalog(uri))
    warehouse.ensure_tables()
    warehouse.write_market(MarketInfo(GAP_TICKER, 3, 4), "test")
    hours = [h for h in range(GAP_HOURS) if h not in ABSENT]
    rows = [{"ticker": GAP_TICKER, "period_seconds": 3600, "timestamp": T0 + h * H,
             "open": 100_000 + 7 * h, "high": 100_500 + 7 * h, "low": 99_500 + 7 * h, "close": 100_003 + 7 * h,
             "volume": 50_000 + h, "buy_vol": 20_000 + h, "sell_vol": 30_000, "open_interest": 1_000 + h}
            for h in hours]
    interval = (T0, T0 + GAP_HOURS * H)
    warehouse.append_new_candles(GAP_TICKER, 3600, interval, pa.Table.from_pylist(rows, schema=candle_arrow_schema()))
    warehouse.record_coverage(GAP_TICKER, 3600, interval, len(rows), "test-gaps")
    warehouse.close()


class Recorder(bt.Strategy):
    def __init__(self):
        self.bars = []

    def next(self):
        d = self.data
        self.bars.append((d.datetime.datetime(0), d.open[0], d.high[0], d.low[0], d.close[0], d.volume[0],
                          d.openinterest[0]))


def via_iterator(uri, ticker, start, end, missing="drop", page_size=10):
    return list(dexorder_feeds.candles(ticker, 3600, start, end, missing=missing, page_size=page_size,
                                       iceberg_catalog_uri=uri))


def via_backtrader(uri, ticker, start, end, missing="drop"):
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(bt.feeds.DexOrderData(ticker=ticker, period_seconds=3600, fromdate=start, todate=end,
                                          missing=missing, iceberg_catalog_uri=uri))
    cerebro.addstrategy(Recorder)
    return cerebro.run()[0].bars


def via_vectorbt(uri, ticker, start, end, missing="drop"):
    return vbt.DexOrderData.download(ticker, start=start, end=end, timeframe="1h", missing=missing,
                                     iceberg_catalog_uri=uri).get()


def same_float(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def assert_adapters_agree(iterated, bars, frame):
    """Each bt bar and vbt row is the iterator's candle, value for value."""
    assert len(iterated) == len(bars) == len(frame) > 0
    for candle, bar, (index, row) in zip(iterated, bars, frame.iterrows()):
        # backtrader: due at the close (a close at midnight: at the session end of that day);
        # vectorbt: indexed by the open, as its exchange data.
        close = candle.close_time.replace(tzinfo=None)
        if close.time() == datetime.min.time():
            close -= timedelta(microseconds=10)
        assert bar[0] == bt.num2date(bt.date2num(close)) and index.to_pydatetime() == candle.time
        assert candle.close_time == candle.open_time + timedelta(seconds=candle.period_seconds)
        for position, field in enumerate(FIELDS, start=1):
            exact = getattr(candle, field)
            value = float(exact)  # the nearest float to the exact Decimal
            assert same_float(bar[position], value), (field, candle.time)
            assert same_float(row[field.capitalize()], value), (field, candle.time)
        for field, column in (("buy_vol", "Buy Volume"), ("sell_vol", "Sell Volume")):
            value = getattr(candle, field)
            assert same_float(row[column], float(value) if value is not None else math.nan)


def test_adapters_agree_on_real_candles(uri):
    start, end = datetime(2025, 1, 1), datetime(2025, 1, 8, 23)
    ints = dexorder_feeds.fetch_ohlc("SIM:BTC/USDT", 3600, start, end, iceberg_catalog_uri=uri)
    iterated = via_iterator(uri, "SIM:BTC/USDT", start, end, page_size=50)
    assert [c.timestamp for c in iterated] == ints["timestamp"].tolist()
    for candle, row in zip(iterated, ints.itertuples()):
        assert candle.close == Decimal(int(row.close)) / 100 and candle.volume == Decimal(int(row.volume)) / 10**6
    assert_adapters_agree(iterated, via_backtrader(uri, "SIM:BTC/USDT", start, end),
                          via_vectorbt(uri, "SIM:BTC/USDT", start, end))


def test_float_conversion_is_the_nearest_float_even_beyond_2_to_53():
    big = [2**53 + 1, 2**62 + 12345, -(2**60) - 7, 123456789012345678, 1, 0, -5]
    for decimals in (0, 2, 6, 8, 18):
        got = exact_floats(np.array(big, dtype=np.int64), decimals).tolist()
        assert got == [float(Decimal(v).scaleb(-decimals)) for v in big]


def expected_gapped(missing: str) -> list[tuple[datetime, dict[str, Decimal | None]]]:
    """What each policy should give for the gapped market, computed from the stored integers."""
    out = []
    previous = None
    for h in range(GAP_HOURS):
        time = datetime(2025, 1, 1, tzinfo=timezone.utc) + timedelta(hours=h)
        if h not in ABSENT:
            close = Decimal(100_003 + 7 * h).scaleb(-3)
            values = {"open": Decimal(100_000 + 7 * h).scaleb(-3), "high": Decimal(100_500 + 7 * h).scaleb(-3),
                      "low": Decimal(99_500 + 7 * h).scaleb(-3), "close": close,
                      "volume": Decimal(50_000 + h).scaleb(-4), "buy_vol": Decimal(20_000 + h).scaleb(-4),
                      "sell_vol": Decimal(30_000).scaleb(-4), "open_interest": Decimal(1_000 + h).scaleb(-4)}
            previous = values
        elif missing == "drop":
            continue
        elif missing == "nan":
            values = {k: Decimal("NaN") for k in ("open", "high", "low", "close", "volume", "buy_vol", "sell_vol",
                                                  "open_interest")}
        else:  # ffill: flat at the previous close, zero volume, open interest carried
            assert previous is not None
            close = previous["close"]
            values = {"open": close, "high": close, "low": close, "close": close, "volume": Decimal(0),
                      "buy_vol": Decimal(0), "sell_vol": Decimal(0), "open_interest": previous["open_interest"]}
        out.append((time, values))
    return out


@pytest.mark.parametrize("missing", ["drop", "nan", "ffill"])
def test_missing_candle_policy_is_the_same_in_every_adapter(uri, missing):
    start, end = datetime(2025, 1, 1), datetime(2025, 1, 2, 23, 59)
    expected = expected_gapped(missing)
    assert len(expected) == (GAP_HOURS - len(ABSENT) if missing == "drop" else GAP_HOURS)

    iterated = via_iterator(uri, GAP_TICKER, start, end, missing=missing, page_size=10)
    assert [c.time for c in iterated] == [time for time, _ in expected]
    for candle, (_, values) in zip(iterated, expected):
        for field, value in values.items():
            got = getattr(candle, field)
            assert (got.is_nan() and value.is_nan()) if value.is_nan() else got == value, (candle.time, field)

    # Pages of two candles: a page with no stored candle at all (hours 46-47), gaps on page edges.
    small_pages = via_iterator(uri, GAP_TICKER, start, end, missing=missing, page_size=2)
    assert [tuple(map(str, c)) for c in small_pages] == [tuple(map(str, c)) for c in iterated]

    bars = via_backtrader(uri, GAP_TICKER, start, end, missing=missing)
    frame = via_vectorbt(uri, GAP_TICKER, start, end, missing=missing)
    assert_adapters_agree(iterated, bars, frame)
    for bar, candle in zip(bars, iterated):
        assert same_float(bar[6], float(candle.open_interest))
    assert list(frame.columns) == ["Open", "High", "Low", "Close", "Volume", "Buy Volume", "Sell Volume",
                                   "Open Interest"]
