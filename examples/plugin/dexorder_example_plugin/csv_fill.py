"""A gap fill from your own CSV files, for tickers of the exchange ``MYCSV``.

The files live in ``$DEXORDER_EXAMPLE_CSV_DIR`` as ``BASE-QUOTE/<period>.csv`` (``1h.csv``,
``3600.csv`` …) with the columns ``timestamp`` (µs, period start), ``open, high, low, close,
volume``. :class:`CsvSource` reads them; the ``dexorder_fill_gaps`` hook below hands the missing
ranges to :func:`~dexorder_feeds.plugin.fill_from_source`, which stores them in the client's own
warehouse with the historian's checks, no relay involved. For any other ticker the hook returns
None, so the built-in gap fill runs.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import pandas as pd

from dexorder_feeds.plugin import (
    FetchContext,
    FetchRequest,
    IngestSource,
    Interval,
    MarketInfo,
    SourceCandles,
    Ticker,
    fill_from_source,
    hookimpl,
)

EXCHANGE = "MYCSV"
PERIOD_NAMES = {60: "1m", 300: "5m", 900: "15m", 3600: "1h", 14400: "4h", 86400: "1d"}
PRICES = ("open", "high", "low", "close")

FILLED: list[tuple[str, int, int]] = []


def _decimals(column: pd.Series) -> int:
    """The most digits after the decimal point among a column's texts."""
    fractions = column.str.partition(".")[2].str.rstrip("0")
    return int(fractions.str.len().fillna(0).max() or 0)


class CsvSource(IngestSource):
    """Candles from ``<directory>/<BASE>-<QUOTE>/<period>.csv``; decimals as written in the file."""

    name = "mycsv"

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def _path(self, ticker: Ticker, period_seconds: int) -> Path:
        folder = self.directory / f"{ticker.base}-{ticker.quote}"
        for name in (PERIOD_NAMES.get(period_seconds), str(period_seconds)):
            if name and (folder / f"{name}.csv").is_file():
                return folder / f"{name}.csv"
        return folder / f"{PERIOD_NAMES.get(period_seconds, period_seconds)}.csv"

    def fetch_candles(self, ticker: Ticker, period_seconds: int, start: int, stop: int) -> SourceCandles:
        path = self._path(ticker, period_seconds)
        if path.is_file():
            frame = pd.read_csv(path, dtype=str).dropna(how="all")
            frame["timestamp"] = frame["timestamp"].astype("int64")
            frame = frame[(frame["timestamp"] >= start) & (frame["timestamp"] < stop)].reset_index(drop=True)
        else:  # no file: an empty answer, stored as "nothing there" for the range
            frame = pd.DataFrame({"timestamp": pd.Series(dtype="int64"),
                                  **{c: pd.Series(dtype=str) for c in (*PRICES, "volume")}})
        price_decimals = max((_decimals(frame[c]) for c in PRICES), default=0) if len(frame) else 0
        volume_decimals = _decimals(frame["volume"]) if len(frame) else 0
        return SourceCandles(MarketInfo(str(ticker), price_decimals, volume_decimals), frame)


@hookimpl(tryfirst=True)
def dexorder_fill_gaps(context: FetchContext, request: FetchRequest,
                       ranges: list[Interval]) -> Awaitable[list[dict[str, Any]]] | None:
    if not request.ticker.startswith(f"{EXCHANGE}:"):
        return None
    FILLED.extend((request.ticker, start, stop) for start, stop in ranges)
    return fill_from_source(context, request, ranges, CsvSource(os.environ["DEXORDER_EXAMPLE_CSV_DIR"]))
