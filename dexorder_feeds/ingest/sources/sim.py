"""``SIM:`` – a deterministic synthetic market, offline, for demos and tests.

Each candle is a pure function of (ticker, period, timestamp): the same request always gives
the same candles, whatever range it was asked in. Prices follow a geometric random walk whose
level at any time is computed in closed form from a per-ticker seed (no state carried between
candles), so any range of any period is generated directly. Invariants: ``high >=
max(open, close)``, ``low <= min(open, close)``, ``volume >= 0``, ``buy_vol + sell_vol ==
volume`` (open interest is null: a spot market has none). Values are generated as integers
with 2 price and 6 volume decimals. Every SIM market lists on 2015-01-01: before that it has no
candles (an empty range, which the historian remembers as such).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from ...vocabulary.markets import MarketInfo
from ...vocabulary.tickers import Ticker
from . import IngestSource, SourceCandles

__all__ = ["SimulatedSource"]

LISTING_TIME = 1420070400_000000  # 2015-01-01 00:00 UTC
PRICE_DECIMALS = 2
VOLUME_DECIMALS = 6
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _seed(text: str) -> np.uint64:
    return np.uint64(int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little"))


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a well-spread 64-bit hash of each element."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def _uniform(seed: np.uint64, keys: np.ndarray, stream: int) -> np.ndarray:
    """Uniform [0, 1) numbers, a pure function of (seed, key, stream)."""
    with np.errstate(over="ignore"):
        x = _mix(keys.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + seed + np.uint64(stream) * np.uint64(0xD1B54A32D192ED03))
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)


class SimulatedSource(IngestSource):
    """The synthetic market. Any ``SIM:BASE/QUOTE`` ticker exists, from its listing on 2015-01-01."""

    name = "sim"

    def fetch_candles(self, ticker: Ticker, period_seconds: int, start: int, stop: int) -> SourceCandles:
        period_us = period_seconds * 1_000_000
        first = max(start, -(-LISTING_TIME // period_us) * period_us)
        timestamps = np.arange(first, stop, period_us, dtype=np.int64)
        seed = _seed(str(ticker))
        base_price = 10 + _uniform(seed, np.array([0]), 99)[0] * 50_000
        # The log-price is a sum of smooth sinusoids (closed form at any time) plus a per-minute
        # jitter: continuous across periods, so candles of different periods agree on levels.
        def log_price(t_us: np.ndarray) -> np.ndarray:
            days = t_us / 86_400e6
            phases = _uniform(seed, np.arange(4), 7) * 2 * np.pi
            trend = (0.30 * np.sin(days / 211 + phases[0]) + 0.12 * np.sin(days / 37 + phases[1])
                     + 0.04 * np.sin(days / 5.3 + phases[2]) + 0.015 * np.sin(days * 1.7 + phases[3]))
            minute = (t_us // 60_000_000).astype(np.uint64)
            return np.log(base_price) + trend + 0.002 * (_uniform(seed, minute, 1) - 0.5)

        open_ = np.exp(log_price(timestamps))
        close = np.exp(log_price(timestamps + period_us))
        u_high, u_low = _uniform(seed, timestamps // 1000, 2), _uniform(seed, timestamps // 1000, 3)
        swing = 0.0015 * np.sqrt(period_seconds / 60.0)
        high = np.maximum(open_, close) * (1 + swing * u_high)
        low = np.minimum(open_, close) * (1 - swing * u_low)
        scale = 10**PRICE_DECIMALS
        o, c = np.rint(open_ * scale), np.rint(close * scale)
        h = np.maximum(np.ceil(high * scale), np.maximum(o, c))
        lo = np.minimum(np.floor(low * scale), np.minimum(o, c))
        volume = np.rint(_uniform(seed, timestamps // 1000, 4) * 50 * period_seconds / 60.0 * 10**VOLUME_DECIMALS).astype(np.int64)
        buy = np.rint(volume * _uniform(seed, timestamps // 1000, 5)).astype(np.int64)
        frame = pd.DataFrame({
            "timestamp": timestamps, "open": o.astype(np.int64), "high": h.astype(np.int64),
            "low": lo.astype(np.int64), "close": c.astype(np.int64), "volume": volume,
            "buy_vol": buy, "sell_vol": volume - buy,
        })
        return SourceCandles(MarketInfo(str(ticker), PRICE_DECIMALS, VOLUME_DECIMALS), frame, scaled=True)
