"""fetch_ohlc(prices=...): the seed's integers by default, exact Decimals or nearest floats on request."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

import dexorder_feeds
from dexorder_feeds import OHLCClient
from dexorder_feeds.client.sync import close_sync_clients
from dexorder_feeds.vocabulary.errors import InvalidRequestError

TICKER = "SIM:BTC/USDT"


@pytest.fixture(scope="module")
def uri(tmp_path_factory):
    yield f"sqlite:///{tmp_path_factory.mktemp('prices') / 'catalog.db'}"
    close_sync_clients()


def test_integers_stay_the_default(uri):
    frame = dexorder_feeds.fetch_ohlc(TICKER, "1h", "2025-01-01", "2025-01-01T23:00", iceberg_catalog_uri=uri)
    assert list(frame.columns)[:4] == ["ticker", "period_seconds", "timestamp", "open"]
    assert frame["close"].dtype == np.int64 and "time" not in frame.columns


def test_decimal_and_float_prices_are_exact(uri):
    ints = dexorder_feeds.fetch_ohlc(TICKER, "1h", "2025-01-01", "2025-01-01T23:00", iceberg_catalog_uri=uri)
    decimals = dexorder_feeds.fetch_ohlc(TICKER, "1h", "2025-01-01", "2025-01-01T23:00", iceberg_catalog_uri=uri,
                                         prices="decimal")
    floats = dexorder_feeds.fetch_ohlc(TICKER, "1h", "2025-01-01", "2025-01-01T23:00", iceberg_catalog_uri=uri,
                                       prices="float")
    assert len(ints) == len(decimals) == len(floats) == 24
    for frame in (decimals, floats):
        assert list(frame.columns)[:5] == ["ticker", "period_seconds", "timestamp", "time", "open"]
        assert frame["time"].tolist() == list(pd.date_range("2025-01-01", periods=24, freq="h", tz="UTC"))
        assert frame["timestamp"].tolist() == ints["timestamp"].tolist()
        assert frame.attrs["quality"] == ints.attrs["quality"]
    for column, places in (("open", 2), ("high", 2), ("low", 2), ("close", 2), ("volume", 6), ("buy_vol", 6)):
        exact = [Decimal(int(v)) / 10**places for v in ints[column]]
        assert decimals[column].tolist() == exact
        assert all(value.as_tuple().exponent == -places for value in decimals[column])  # the market's precision
        assert floats[column].tolist() == [float(v) for v in exact]  # the nearest float to each
    assert decimals["open_interest"].tolist() == [None] * 24  # SIM gives none
    assert floats["open_interest"].isna().all()


def test_async_client_and_bad_kind(uri):
    async def fetch():
        async with OHLCClient(iceberg_catalog_uri=uri) as client:
            frame = await client.fetch_ohlc(TICKER, 86400, "2025-01-01", "2025-01-03", prices="decimal")
            with pytest.raises(InvalidRequestError, match="'integer'.*'decimal'.*'float'"):
                await client.fetch_ohlc(TICKER, 86400, "2025-01-01", "2025-01-03", prices="real")
            empty = await client.fetch_ohlc(TICKER, 86400, "2014-06-01", "2014-06-03", prices="float")
            return frame, empty

    frame, empty = asyncio.run(fetch())
    assert len(frame) == 3 and isinstance(frame["close"].iloc[0], Decimal)
    assert len(empty) == 0 and "time" in empty.columns
    with pytest.raises(ValueError, match="prices="):
        dexorder_feeds.fetch_ohlc(TICKER, "1h", "2025-01-01", "2025-01-02", prices=2, iceberg_catalog_uri=uri)
