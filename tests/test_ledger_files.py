"""The files source re-checks what changed files back, with no user action: a file added after
a fetch, rows appended, a coarser period built from an appended finer file; a changed stored
candle is refused with a clear error until forgotten. Through the public fetch API (embedded)
on real SQLite Iceberg catalogs."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from dexorder_feeds import OHLCClient
from dexorder_feeds.vocabulary.errors import InvalidTickerError, StoredCandleChangedError
from dexorder_feeds.vocabulary.quality import EMPTY_AT_SOURCE

H = 3_600_000_000
T0 = 1735689600000000  # 2025-01-01 00:00 UTC
HEADER = "timestamp,open,high,low,close,volume\n"


def row(hour: int, close: str = "10.50") -> str:
    return f"{(T0 + hour * H) // 1_000_000},10.00,11.00,9.00,{close},1.5\n"


def write(path: Path, text: str) -> None:
    """Write a whole new file (a new inode, as editors and exporters do)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def fetch_twice(catalog_uri: str, data: Path, between, *, period=3600, start=T0, end=T0 + 12 * H - 1):
    """Fetch, run ``between()``, fetch again, each with its own client (as two runs would)."""

    async def one():
        async with OHLCClient(iceberg_catalog_uri=catalog_uri, sources={"BINANCE": f"files:{data}"}) as client:
            return await client.fetch_ohlc("BINANCE:BTC/USDT", period, start, end)

    first = asyncio.run(one())
    between()
    return first, asyncio.run(one())


def test_a_file_added_after_a_fetch_is_served_by_the_next(tmp_path, catalog_uri):
    data = tmp_path / "candles"
    (data / "BINANCE").mkdir(parents=True)
    first, second = fetch_twice(catalog_uri, data, lambda: write(
        data / "BINANCE" / "BTC-USDT" / "1h.csv", HEADER + "".join(row(h) for h in range(12))))
    assert len(first) == 0 and first.attrs["quality"].missing_by_reason()[EMPTY_AT_SOURCE] == 12
    assert second["timestamp"].tolist() == [T0 + h * H for h in range(12)]
    assert second["close"].tolist() == [1050] * 12


def test_rows_appended_after_a_fetch_are_served_by_the_next(tmp_path, catalog_uri):
    data = tmp_path / "candles"
    path = data / "BINANCE" / "BTC-USDT" / "1h.csv"
    write(path, HEADER + "".join(row(h) for h in range(6)))

    def append() -> None:
        with path.open("a") as handle:
            handle.write("".join(row(h) for h in range(6, 12)))

    first, second = fetch_twice(catalog_uri, data, append)
    assert len(first) == 6
    assert second["timestamp"].tolist() == [T0 + h * H for h in range(12)]


def test_a_coarser_period_built_from_an_appended_file_is_rebuilt(tmp_path, catalog_uri):
    data = tmp_path / "candles"
    path = data / "BINANCE" / "BTC-USDT" / "1h.csv"
    write(path, HEADER + "".join(row(h) for h in range(4)))
    first, second = fetch_twice(catalog_uri, data, lambda: write(path, HEADER + "".join(row(h) for h in range(12))),
                                period=4 * 3600)
    assert first["timestamp"].tolist() == [T0]
    assert second["timestamp"].tolist() == [T0, T0 + 4 * H, T0 + 8 * H]


def test_a_changed_stored_candle_is_refused_until_forgotten(tmp_path, catalog_uri):
    data = tmp_path / "candles"
    path = data / "BINANCE" / "BTC-USDT" / "1h.csv"
    write(path, HEADER + "".join(row(h) for h in range(6)))
    sources = {"BINANCE": f"files:{data}"}

    async def main():
        async with OHLCClient(iceberg_catalog_uri=catalog_uri, sources=sources) as client:
            before = await client.fetch_ohlc("BINANCE:BTC/USDT", 3600, T0, T0 + 6 * H - 1)
            write(path, HEADER + "".join(row(h, "10.60" if h == 2 else "10.50") for h in range(6)))
            with pytest.raises(StoredCandleChangedError) as refused:
                await client.fetch_ohlc("BINANCE:BTC/USDT", 3600, T0, T0 + 6 * H - 1)
            with pytest.raises(StoredCandleChangedError):  # every time, until the user decides
                await client.fetch_ohlc("BINANCE:BTC/USDT", 3600, T0, T0 + 6 * H - 1)
            kept = client.iceberg.query_ohlc("BINANCE:BTC/USDT", 3600, T0, T0 + 6 * H - 1)
            result = await client.forget("BINANCE:BTC/USDT", "1h", "2025-01-01T02:00", "2025-01-01T02:00",
                                         candles=True)
            after = await client.fetch_ohlc("BINANCE:BTC/USDT", 3600, T0, T0 + 6 * H - 1)
            return before, refused.value, kept, result, after

    before, error, kept, result, after = asyncio.run(main())
    message = str(error)
    assert "2025-01-01T02:00:00Z" in message and "close 10.50 stored, 10.60 now" in message
    assert "dexorder-feeds forget BINANCE:BTC/USDT --period 1h" in message and "--candles" in message
    assert isinstance(error, ValueError)
    assert kept["close"].tolist() == before["close"].tolist() == [1050] * 6  # nothing stored was lost
    assert result.candles == 1
    assert after["close"].tolist() == [1050, 1050, 1060, 1050, 1050, 1050]


def test_an_unchanged_directory_costs_no_recheck(tmp_path, catalog_uri):
    data = tmp_path / "candles"
    write(data / "BINANCE" / "BTC-USDT" / "1h.csv", HEADER + "".join(row(h) for h in range(6)))
    sources = {"BINANCE": f"files:{data}"}

    async def main():
        async with OHLCClient(iceberg_catalog_uri=catalog_uri, sources=sources) as client:
            await client.fetch_ohlc("BINANCE:BTC/USDT", 3600, T0, T0 + 6 * H - 1)
            snapshot = client.iceberg.query_ohlc("BINANCE:BTC/USDT", 3600, T0, T0 + 6 * H - 1).attrs["snapshot_id"]
            again = await client.fetch_ohlc("BINANCE:BTC/USDT", 3600, T0, T0 + 6 * H - 1)
            return snapshot, again, client._history.revalidate("BINANCE:BTC/USDT")

    snapshot, again, rechecked = asyncio.run(main())
    assert again.attrs["snapshot_id"] == snapshot and rechecked == 0


@pytest.mark.parametrize("ticker", ["BINANCE:BTC-USDT/X", "BINANCE:BTC/USDT-X"])
def test_a_ticker_whose_directory_would_be_another_tickers_is_refused(tmp_path, catalog_uri, ticker):
    data = tmp_path / "candles"
    write(data / "BINANCE" / "BTC-USDT-X" / "1h.csv", HEADER + row(0))

    async def fetch(name: str):
        async with OHLCClient(iceberg_catalog_uri=catalog_uri, sources={"BINANCE": f"files:{data}"}) as client:
            return await client.fetch_ohlc(name, 3600, T0, T0 + H - 1)

    assert len(asyncio.run(fetch("BINANCE:BTC/USDT:X"))) == 1  # the one ticker the directory names
    with pytest.raises(InvalidTickerError, match="holds a '-'"):
        asyncio.run(fetch(ticker))


def test_a_missing_candle_directory_is_no_change_stored_candles_are_served(tmp_path, catalog_uri):
    data = tmp_path / "candles"
    write(data / "BINANCE" / "BTC-USDT" / "1h.csv", HEADER + "".join(row(h) for h in range(6)))
    first, second = fetch_twice(catalog_uri, data, lambda: data.rename(tmp_path / "unmounted"),
                                end=T0 + 6 * H - 1)
    assert len(first) == len(second) == 6
