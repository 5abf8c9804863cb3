"""The adapters read a pinned snapshot (``as_of``) and name what they read (``content_hash``)."""

from __future__ import annotations

from datetime import datetime

import backtrader as bt
import pandas as pd
import vectorbt as vbt

import dexorder_feeds
from dexorder_feeds import IcebergClient, OHLCClient

TICKER = "SIM:BTC/USDT"


class Closes(bt.Strategy):
    def __init__(self) -> None:
        self.seen: list[tuple[datetime, float]] = []

    def next(self) -> None:
        self.seen.append((self.data.datetime.datetime(0), self.data.close[0]))


def run(uri: str, **kwargs) -> tuple[list, object]:
    cerebro = bt.Cerebro(stdstats=False)
    data = bt.feeds.DexOrderData(ticker=TICKER, period_seconds="1h", fromdate=datetime(2025, 1, 1),
                                 todate=datetime(2025, 1, 10, 23), iceberg_catalog_uri=uri, **kwargs)
    cerebro.adddata(data)
    cerebro.addstrategy(Closes)
    return cerebro.run()[0].seen, data


def test_backtrader_and_vectorbt_read_a_pin_identically(catalog_uri):
    first, data = run(catalog_uri)
    pinned_hash = data.content_hash
    assert pinned_hash and pinned_hash.startswith("sha256:") and data.snapshot_id
    IcebergClient(catalog_uri).pin("jan")
    # Later fills move the warehouse on; the pin does not.
    dexorder_feeds.fetch_ohlc(TICKER, "1h", "2025-01-11", "2025-01-20", iceberg_catalog_uri=catalog_uri)
    again, pinned = run(catalog_uri, as_of="jan")
    twice, _ = run(catalog_uri, as_of="jan")
    assert again == first == twice and len(first) == 240
    assert pinned.content_hash == pinned_hash and pinned.snapshot_id == data.snapshot_id

    frame = vbt.DexOrderData.download(TICKER, start="2025-01-01", end="2025-01-10T23:00", timeframe="1h",
                                      as_of="jan", iceberg_catalog_uri=catalog_uri)
    assert frame.data[TICKER].attrs["content_hash"] == pinned_hash
    assert len(frame.get("Close")) == 240 and not pd.isna(frame.get("Close")).any()


def test_the_iterator_reads_a_pin_page_by_page(catalog_uri):
    first = dexorder_feeds.candles(TICKER, "1h", "2025-01-01", "2025-01-05T23:00", page_size=24,
                                   iceberg_catalog_uri=catalog_uri)
    before = list(first)
    IcebergClient(catalog_uri).pin("p1")
    dexorder_feeds.fetch_ohlc(TICKER, "1h", "2025-01-06", "2025-01-08", iceberg_catalog_uri=catalog_uri)
    pinned = dexorder_feeds.candles(TICKER, "1h", "2025-01-01", "2025-01-05T23:00", page_size=24, as_of="p1",
                                    iceberg_catalog_uri=catalog_uri)
    assert list(pinned) == before and len(before) == 120
    assert pinned.content_hashes == first.content_hashes and len(first.content_hashes) == 5
    assert len(set(pinned.snapshot_ids)) == 1 and pinned.snapshot_ids[0] == first.snapshot_ids[-1]
