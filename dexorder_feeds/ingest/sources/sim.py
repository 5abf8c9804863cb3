"""``SIM:`` – a deterministic synthetic market, offline, for demos and tests.

Every SIM market is **one 1-minute price path**; a candle of any period is aggregated from its
minutes exactly as the historian aggregates real candles (:mod:`dexorder_feeds.vocabulary.aggregate`):
open of the first minute, high the maximum, low the minimum, close of the last, volumes
summed. So SIM's 1d high is the max of its 24 hourly highs, and its volumes agree, for every
pair of periods. Periods must be whole minutes (``1m`` … ``1w``, ``1M``).

The path (log-price) has, per UTC day:

- a **drift** that wanders and changes sign (smoothed noise, a half-life of ~45 days), so there
  are trends up and down but no cycle to learn;
- a **volatility** that clusters (smoothed noise in log-volatility, half-life ~15 days), on a
  per-ticker base of 1.8 % to 3.5 % a day;
- a **fat-tailed** daily move (Student t, 4 degrees of freedom);

and inside the day, 1440 minute moves (Student t, 3 degrees of freedom) whose size clusters
by half hours and peaks in the US afternoon, bridged so the day closes exactly where the next
day opens. Volume follows volatility and the size of each move; taker buys follow its sign.

Random access by time: each day's minutes come from a generator seeded by (ticker, day), and the
day's opening level is the sum of the per-day moves since the listing (cheap: one number per
day, a pure function of (ticker, day) as well). Any range of any period is generated directly,
and the same request always gives the same candles, whatever range it was asked in. Day blocks
and daily candles are cached.

Invariants: ``high >= max(open, close)``, ``low <= min(open, close)``, ``low > 0``,
``volume >= 0``, ``buy_vol + sell_vol == volume``, each candle opens where the previous one
closed (open interest is null: a spot market has none). Values are integers with 2 price and 6
volume decimals. Every SIM market lists on 2015-01-01: before that it has no candles.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

import numpy as np
import pandas as pd

from ...vocabulary.aggregate import aggregate_candles
from ...vocabulary.errors import InvalidPeriodError
from ...vocabulary.markets import MarketInfo
from ...vocabulary.periods import DAY, divides, period_end, period_label, period_starts
from ...vocabulary.tickers import Ticker
from . import IngestSource, SourceCandles

__all__ = ["SimulatedSource", "LISTING_TIME", "PRICE_DECIMALS", "VOLUME_DECIMALS"]

LISTING_TIME = 1420070400_000000  # 2015-01-01 00:00 UTC
PRICE_DECIMALS = 2
VOLUME_DECIMALS = 6
MINUTES_PER_DAY = 1440
_DAY_US = DAY * 1_000_000
_MINUTE_US = 60_000_000
_COLUMNS = ("open", "high", "low", "close", "volume", "buy_vol")
_DAY_BLOCK_CACHE = 256  # day blocks of minutes (~70 kB each)
_DAILY_CHUNK = 4096  # days of per-day state computed at a time
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _seed(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a well-spread 64-bit hash of each element."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def _uniform(seed: int, keys: np.ndarray, stream: int) -> np.ndarray:
    """Uniform (0, 1) numbers, a pure function of (seed, key, stream)."""
    with np.errstate(over="ignore"):
        x = _mix(keys.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(seed)
                 + np.uint64(stream) * np.uint64(0xD1B54A32D192ED03))
    return ((x >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)


def _normal(seed: int, keys: np.ndarray, stream: int) -> np.ndarray:
    """Standard normal numbers (Box–Muller), a pure function of (seed, key, stream)."""
    u1, u2 = _uniform(seed, keys, stream), _uniform(seed, keys, stream + 1)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def _smoothed(noise: np.ndarray, half_life: float) -> np.ndarray:
    """Exponentially weighted sum of past noise, scaled to unit variance (causal: day d uses days <= d)."""
    length = int(half_life * 6)
    weights = 0.5 ** (np.arange(length) / half_life)
    weights /= np.sqrt(np.sum(weights**2))
    return np.convolve(noise, weights)[: noise.size]


class _Market:
    """The per-day state of one SIM market: opening log-price, volatility and drift of each day."""

    def __init__(self, ticker: str) -> None:
        self.ticker = ticker
        self.seed = _seed(ticker)
        u = _uniform(self.seed, np.arange(3), 99)
        self.base_log_price = float(np.log(10 + u[0] * 50_000))
        self.base_vol = 0.018 + 0.017 * float(u[1])  # daily
        self.base_volume = 10.0 + 40.0 * float(u[2])  # per minute, in base units
        self.days = 0
        self.open_log: np.ndarray = np.empty(0)
        self.vol: np.ndarray = np.empty(0)

    def ensure(self, days: int) -> None:
        """Compute the state of days ``0 .. days`` (since the listing) if not done yet."""
        if days < self.days:
            return
        n = (days // _DAILY_CHUNK + 1) * _DAILY_CHUNK
        keys = np.arange(n)
        vol = self.base_vol * np.exp(0.45 * _smoothed(_normal(self.seed, keys, 10), 15.0) - 0.45**2 / 2)
        drift = 0.0015 * _smoothed(_normal(self.seed, keys, 20), 45.0)
        z = _normal(self.seed, keys, 30)
        chi2 = -2.0 * (np.log(_uniform(self.seed, keys, 40)) + np.log(_uniform(self.seed, keys, 41)))
        shock = z / np.sqrt(chi2 / 4.0) / np.sqrt(2.0)  # Student t (4 dof), unit variance
        moves = drift + vol * shock - vol**2 / 2
        self.open_log = self.base_log_price + np.concatenate(([0.0], np.cumsum(moves)))
        self.vol = vol
        self.days = n


def _day_block(market: _Market, day: int) -> np.ndarray:
    """The 1440 minute candles of day ``day`` (since the listing) as int64 rows of ``_COLUMNS``."""
    market.ensure(day + 1)
    rng = np.random.default_rng([market.seed & 0xFFFFFFFF, market.seed >> 32, day])
    n = MINUTES_PER_DAY
    # Volatility by half hour: clustered inside the day, higher in the US afternoon.
    half_hours = np.arange(48)
    season = 1.0 + 0.35 * np.cos(2 * np.pi * (half_hours / 48 - 15.0 / 24))
    cluster = np.exp(0.5 * _smoothed(rng.standard_normal(48), 4.0) - 0.125)
    scale = np.repeat(season * cluster, 30)
    raw = scale * rng.standard_t(3, n) / np.sqrt(3.0)
    sigma_minute = market.vol[day] / np.sqrt(np.sum(scale**2))
    steps = raw * sigma_minute
    path = np.concatenate(([0.0], np.cumsum(steps)))
    start, end = market.open_log[day], market.open_log[day + 1]
    path = start + path - np.linspace(0.0, 1.0, n + 1) * (path[-1] - (end - start))
    path[0], path[-1] = start, end  # exactly where the neighbouring days meet
    price_scale = 10**PRICE_DECIMALS
    levels = np.rint(np.exp(path) * price_scale)
    levels = np.maximum(levels, 1)
    o, c = levels[:-1], levels[1:]
    wick = sigma_minute * scale
    high = np.maximum(o, c) * np.exp(np.abs(rng.standard_normal(n)) * wick * 0.6)
    low = np.minimum(o, c) * np.exp(-np.abs(rng.standard_normal(n)) * wick * 0.6)
    h = np.maximum(np.ceil(high), np.maximum(o, c))
    lo = np.maximum(np.minimum(np.floor(low), np.minimum(o, c)), 1)
    size = np.abs(raw) / scale
    activity = market.vol[day] / market.base_vol
    volume = market.base_volume * scale * activity * (0.4 + 0.6 * size) * rng.lognormal(0.0, 0.5, n)
    volume_units = np.rint(volume * 10**VOLUME_DECIMALS)
    buy_share = np.clip(0.5 + 0.25 * np.tanh(raw / scale) + 0.1 * rng.standard_normal(n), 0.0, 1.0)
    buy = np.rint(volume_units * buy_share)
    return np.stack([o, h, lo, c, volume_units, buy]).astype(np.int64)


class SimulatedSource(IngestSource):
    """The synthetic market. Any ``SIM:BASE/QUOTE`` ticker exists, from its listing on 2015-01-01."""

    name = "sim"
    settle = 0.0  # synthetic and deterministic: a closed period never changes
    local = True  # pure CPU in this process: no network to wait on

    def __init__(self) -> None:
        self._markets: dict[str, _Market] = {}
        self._blocks: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
        self._daily: dict[tuple[str, int], np.ndarray] = {}
        self._lock = threading.Lock()

    def _market(self, ticker: str) -> _Market:
        with self._lock:
            market = self._markets.get(ticker)
            if market is None:
                market = self._markets[ticker] = _Market(ticker)
            return market

    def _block(self, market: _Market, day: int) -> np.ndarray:
        key = (market.ticker, day)
        with self._lock:
            block = self._blocks.get(key)
            if block is not None:
                self._blocks.move_to_end(key)
                return block
            block = _day_block(market, day)
            self._blocks[key] = block
            while len(self._blocks) > _DAY_BLOCK_CACHE:
                self._blocks.popitem(last=False)
            return block

    def _daily_row(self, market: _Market, day: int) -> np.ndarray:
        key = (market.ticker, day)
        row = self._daily.get(key)
        if row is None:
            block = self._block(market, day)
            row = np.array([block[0, 0], block[1].max(), block[2].min(), block[3, -1],
                            block[4].sum(), block[5].sum()], dtype=np.int64)
            self._daily[key] = row
        return row

    def minutes(self, ticker: Ticker | str, start: int, stop: int) -> pd.DataFrame:
        """The 1-minute candles of ``[start, stop)`` (both on minute boundaries)."""
        return self._candles(self._market(str(ticker)), 60, start, stop)

    def _candles(self, market: _Market, period: int, first: int, stop: int) -> pd.DataFrame:
        """Candles of ``period`` opening in ``[first, stop)``: ``first`` is a period start."""
        starts = period_starts(period, first, stop)
        if starts.size == 0:
            return _frame(np.empty(0, dtype=np.int64), np.empty((6, 0), dtype=np.int64))
        span_stop = period_end(period, int(starts[-1]))
        first_day = (int(starts[0]) - LISTING_TIME) // _DAY_US
        last_day = (span_stop - 1 - LISTING_TIME) // _DAY_US
        if divides(DAY, period):  # whole days: aggregate cached daily candles
            days = np.arange(first_day, last_day + 1)
            values = np.stack([self._daily_row(market, int(d)) for d in days], axis=1)
            ts = LISTING_TIME + days * _DAY_US
            fine, fine_period = _frame(ts, values), DAY
        else:
            blocks = [self._block(market, d) for d in range(first_day, last_day + 1)]
            values = np.concatenate(blocks, axis=1)
            ts = LISTING_TIME + first_day * _DAY_US + np.arange(values.shape[1], dtype=np.int64) * _MINUTE_US
            keep = (ts >= starts[0]) & (ts < span_stop)
            fine, fine_period = _frame(ts[keep], values[:, keep]), 60
        if period == fine_period:
            out = fine
        else:
            out = aggregate_candles(fine, fine_period, period)
        out["sell_vol"] = out["volume"] - out["buy_vol"]
        return out.reset_index(drop=True)

    def fetch_candles(self, ticker: Ticker, period_seconds: int, start: int, stop: int) -> SourceCandles:
        if not divides(60, period_seconds):
            raise InvalidPeriodError(
                f"SIM is a 1-minute path: it has no {period_label(period_seconds)} ({period_seconds}s) candles; "
                "ask for a whole number of minutes (60, 300, 3600, …), 1w or 1M"
            )
        market = self._market(str(ticker))
        frame = self._candles(market, period_seconds, max(start, LISTING_TIME), stop)
        return SourceCandles(MarketInfo(str(ticker), PRICE_DECIMALS, VOLUME_DECIMALS), frame, scaled=True)


def _frame(ts: np.ndarray, values: np.ndarray) -> pd.DataFrame:
    frame = pd.DataFrame({"timestamp": np.asarray(ts, dtype=np.int64)})
    for i, name in enumerate(_COLUMNS):
        frame[name] = values[i]
    return frame
