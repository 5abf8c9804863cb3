"""The data-quality report: on every fetch_ohlc result, on each adapter, and max_fill_ratio."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import matplotlib

matplotlib.use("Agg")
import pyarrow as pa  # noqa: E402
import pytest  # noqa: E402

import backtrader as bt  # noqa: E402
import dexorder_feeds  # noqa: E402
import vectorbt as vbt  # noqa: E402
from dexorder_feeds.client.sync import close_sync_clients  # noqa: E402
from dexorder_feeds.storage.catalog import open_catalog  # noqa: E402
from dexorder_feeds.storage.warehouse import Warehouse, candle_arrow_schema  # noqa: E402
from dexorder_feeds.vocabulary.errors import FillRatioError, InvalidRequestError  # noqa: E402
from dexorder_feeds.vocabulary.markets import MarketInfo  # noqa: E402
from dexorder_feeds.vocabulary.quality import (  # noqa: E402
    EMPTY_AT_SOURCE,
    NOT_YET_FILLED,
    OPEN_PERIOD,
    MissingRange,
    QualityReport,
    quality_report,
)

H = 3_600_000_000
T0 = 1_735_689_600_000_000  # 2025-01-01 00:00 UTC
GAP_TICKER = "SIM:GAPPY/USDT"
HOURS = 48
ABSENT = {5, 6, 30, 46, 47}
START, END = datetime(2025, 1, 1), datetime(2025, 1, 2, 23)


@pytest.fixture(scope="module")
def uri(tmp_path_factory):
    """A market ingested over 48 hours whose source had no candle in five of them."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('quality') / 'catalog.db'}"
    warehouse = Warehouse(open_catalog(uri))
    warehouse.ensure_tables()
    warehouse.write_market(MarketInfo(GAP_TICKER, 3, 4), "test")
    rows = [{"ticker": GAP_TICKER, "period_seconds": 3600, "timestamp": T0 + h * H, "open": 100_000 + h,
             "high": 100_500 + h, "low": 99_500 + h, "close": 100_003 + h, "volume": 50_000 + h}
            for h in range(HOURS) if h not in ABSENT]
    interval = (T0, T0 + HOURS * H)
    warehouse.append_new_candles(GAP_TICKER, 3600, interval, pa.Table.from_pylist(rows, schema=candle_arrow_schema()))
    warehouse.record_coverage(GAP_TICKER, 3600, interval, len(rows), "test-gaps")
    warehouse.close()
    yield uri
    close_sync_clients()


def test_report_classifies_every_missing_candle():
    now = T0 + 10 * H + 123  # the period of 10:00 is open
    report = quality_report("X:A/B", 3600, (T0, T0 + 20 * H), [T0 + h * H for h in (0, 1, 4, 5, 8)],
                            covered=[(T0, T0 + 4 * H)], now=now)
    assert report.expected == 11  # 00:00 to 10:00: the periods that have opened by now
    assert report.present == 5
    assert report.missing == (
        MissingRange(T0 + 2 * H, T0 + 3 * H, 2, EMPTY_AT_SOURCE),
        MissingRange(T0 + 6 * H, T0 + 7 * H, 2, NOT_YET_FILLED),
        MissingRange(T0 + 9 * H, T0 + 9 * H, 1, NOT_YET_FILLED),
        MissingRange(T0 + 10 * H, T0 + 10 * H, 1, OPEN_PERIOD),
    )
    assert report.missing_candles == 6 == report.expected - report.present
    assert report.missing_by_reason() == {EMPTY_AT_SOURCE: 2, NOT_YET_FILLED: 3, OPEN_PERIOD: 1}
    assert report.fill_ratio == 0.0
    filled = report.with_fill(3, "ffill")
    assert filled.fill_ratio == 3 / 8 and filled.fill_policy == "ffill"
    text = str(filled)
    assert "5 of 11 candles stored, 6 missing, 3 filled by missing='ffill' (fill ratio 37.50%)" in text
    assert "2025-01-01T02:00:00Z .. 2025-01-01T03:00:00Z (2 candles): empty at source" in text
    assert quality_report("X:A/B", 3600, None, [], []) == QualityReport("X:A/B", 3600, 0, 0)


def test_pages_combine_into_the_report_of_the_whole_range():
    whole = quality_report("X:A/B", 60, (0, 600_000_000), [0, 60_000_000, 480_000_000], [(0, 300_000_000)])
    cut = 240_000_000
    first = quality_report("X:A/B", 60, (0, cut), [0, 60_000_000], [(0, 300_000_000)])
    second = quality_report("X:A/B", 60, (cut, 600_000_000), [480_000_000], [(0, 300_000_000)])
    assert first.combine(second) == whole


def test_every_fetch_ohlc_result_carries_its_report(uri):
    frame = dexorder_feeds.fetch_ohlc(GAP_TICKER, 3600, START, END, iceberg_catalog_uri=uri)
    report = frame.attrs["quality"]
    assert isinstance(report, QualityReport)
    assert (report.expected, report.present, report.filled) == (48, 43, 0)
    assert [(m.first, m.candles, m.reason) for m in report.missing] == [
        (T0 + 5 * H, 2, EMPTY_AT_SOURCE), (T0 + 30 * H, 1, EMPTY_AT_SOURCE), (T0 + 46 * H, 2, EMPTY_AT_SOURCE)]


def test_the_open_period_is_reported(uri):
    now = int(datetime.now(timezone.utc).timestamp() * 1_000_000)
    frame = dexorder_feeds.fetch_ohlc("SIM:BTC/USDT", 3600, now // H * H - 3 * H, now, iceberg_catalog_uri=uri)
    report = frame.attrs["quality"]
    assert report.expected == 4 and report.present == 3 == len(frame)
    assert [m.reason for m in report.missing] == [OPEN_PERIOD]


class Nothing(bt.Strategy):
    pass


def run_bt(uri, **kwargs):
    data = bt.feeds.DexOrderData(ticker=GAP_TICKER, period_seconds=3600, fromdate=START, todate=END,
                                 iceberg_catalog_uri=uri, **kwargs)
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(data)
    cerebro.addstrategy(Nothing)
    cerebro.run()
    return data


@pytest.mark.parametrize("missing, filled", [("drop", 0), ("nan", 5), ("ffill", 5)])
def test_each_adapter_reports_what_its_policy_filled(uri, missing, filled):
    data = run_bt(uri, missing=missing)
    assert (data.quality.present, data.quality.filled, data.quality.fill_policy) == (43, filled, missing)
    assert data.quality.fill_ratio == filled / (43 + filled)

    vbt_data = vbt.DexOrderData.download(GAP_TICKER, start=START, end=END, timeframe="1h", missing=missing,
                                         iceberg_catalog_uri=uri)
    assert vbt_data.quality[GAP_TICKER] == data.quality

    iterator = dexorder_feeds.candles(GAP_TICKER, "1h", START, END, missing=missing, page_size=10,
                                      iceberg_catalog_uri=uri)
    assert iterator.quality is None  # nothing read yet
    assert len(list(iterator)) == 43 + filled
    assert iterator.quality == data.quality  # five pages combined: the whole range's report

    async def collect():
        stream = dexorder_feeds.acandles(GAP_TICKER, "1h", START, END, missing=missing, page_size=7,
                                         iceberg_catalog_uri=uri)
        return [c async for c in stream], stream.quality

    candles, quality = asyncio.run(collect())
    assert len(candles) == 43 + filled and quality == data.quality


def test_max_fill_ratio_refuses_a_series_mostly_made_up(uri):
    with pytest.raises(FillRatioError, match=r"5 of 48 candles \(10\.42%\).*max_fill_ratio=0\.1") as caught:
        run_bt(uri, missing="ffill", max_fill_ratio=0.1)
    assert isinstance(caught.value, ValueError) and caught.value.ratio == 5 / 48
    assert "5 empty at source" in str(caught.value)
    assert run_bt(uri, missing="ffill", max_fill_ratio=0.11).quality.filled == 5  # under the limit
    assert run_bt(uri, missing="drop", max_fill_ratio=0.0).quality.filled == 0  # drop makes nothing up

    with pytest.raises(FillRatioError, match="10.42%"):
        vbt.DexOrderData.download(GAP_TICKER, start=START, end=END, timeframe="1h", missing="nan",
                                  max_fill_ratio=0.05, iceberg_catalog_uri=uri)
    with pytest.raises(FillRatioError, match="max_fill_ratio=0.05"):
        list(dexorder_feeds.candles(GAP_TICKER, "1h", START, END, missing="ffill", max_fill_ratio=0.05,
                                    iceberg_catalog_uri=uri))
    for bad in (-0.1, 1.5, "10%", True):
        with pytest.raises(InvalidRequestError, match="max_fill_ratio"):
            bt.feeds.DexOrderData(ticker=GAP_TICKER, period_seconds=3600, fromdate=START, max_fill_ratio=bad)


def test_a_result_with_its_report_still_writes_to_parquet(uri, tmp_path):
    import pandas as pd

    frame = dexorder_feeds.fetch_ohlc(GAP_TICKER, 3600, START, END, iceberg_catalog_uri=uri)
    frame.to_parquet(tmp_path / "out.parquet")  # pandas stores attrs as JSON: the report must serialize
    back = pd.read_parquet(tmp_path / "out.parquet")
    assert back["close"].tolist() == frame["close"].tolist()
    assert back.attrs["quality"][:4] == [GAP_TICKER, 3600, 48, 43]


from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=300, deadline=None)
@given(present=st.sets(st.integers(0, 59)), covered=st.lists(st.tuples(st.integers(0, 60), st.integers(0, 60)), max_size=6),
       open_at=st.integers(0, 70))
def test_every_missing_candle_gets_exactly_one_reason(present, covered, open_at):
    covered_us = [(min(a, b) * 60_000_000, max(a, b) * 60_000_000) for a, b in covered]
    now = open_at * 60_000_000 + 1  # the minute open_at is the open one
    report = quality_report("X:A/B", 60, (0, 60 * 60_000_000), [m * 60_000_000 for m in present], covered_us, now=now)
    opened = min(60, open_at + 1)
    assert report.expected == opened and report.present == len({m for m in present if m < opened})
    reasons = {}
    for item in report.missing:
        assert item.candles == (item.last - item.first) // 60_000_000 + 1
        for m in range(item.first // 60_000_000, item.last // 60_000_000 + 1):
            assert m not in reasons
            reasons[m] = item.reason
    for m in range(opened):
        if m in present:
            assert m not in reasons
        elif m == open_at:
            assert reasons[m] == OPEN_PERIOD
        elif any(a <= m * 60_000_000 < b for a, b in covered_us):
            assert reasons[m] == EMPTY_AT_SOURCE
        else:
            assert reasons[m] == NOT_YET_FILLED


def test_a_report_is_copied_for_free():
    import copy

    report = quality_report("X:A/B", 60, (0, 10**6 * 60_000_000), list(range(0, 10**6 * 60_000_000, 120_000_000)), [],
                            now=10**17)
    assert len(report.missing) == 500_000
    assert copy.deepcopy({"quality": report})["quality"] is report


def test_a_read_as_of_a_pin_reports_as_that_snapshot(uri):
    from dexorder_feeds import IcebergClient, OHLCClient

    async def scenario():
        async with OHLCClient(iceberg_catalog_uri=uri) as client:
            frame = await client.fetch_ohlc(GAP_TICKER, "1h", START, END)
            IcebergClient(uri).pin("quality-pin")
            again = await client.fetch_ohlc(GAP_TICKER, "1h", START, END, as_of="quality-pin")
            return frame.attrs["quality"], again.attrs["quality"]

    now, pinned = asyncio.run(scenario())
    assert pinned == now and pinned.missing_by_reason()[EMPTY_AT_SOURCE] == 5


def test_served_ranges_are_cut_to_the_fetch_merged_and_named_on_empty_ranges():
    from dexorder_feeds.vocabulary.quality import ServedRange

    served = [((T0 - 5 * H, T0 + 2 * H), "a"), ((T0 + 2 * H, T0 + 4 * H), "a"), ((T0 + 3 * H, T0 + 6 * H), "b")]
    report = quality_report("X:A/B", 3600, (T0, T0 + 6 * H), [T0], [(T0 - 5 * H, T0 + 6 * H)], now=T0 + 100 * H,
                            served=served)
    assert report.served == (ServedRange(T0, T0 + 3 * H, 4, "a"), ServedRange(T0 + 4 * H, T0 + 5 * H, 2, "b"))
    assert [(m.first, m.last, m.source) for m in report.missing] == [(T0 + H, T0 + 3 * H, "a"), (T0 + 4 * H, T0 + 5 * H, "b")]
    both = report.combine(report)  # consecutive pages of one source do not merge across a gap
    assert len(both.served) == 4
