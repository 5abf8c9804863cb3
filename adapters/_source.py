"""What the adapters share: fetching a range with its market's decimals, the missing-candle
policy, and the exact conversion of stored integers to floats.

The raw fetch returns stored candles only. An adapter lets its user choose what a missing
candle (a whole period without a stored candle, between the first stored candle and the end of
the range) becomes, through ``missing``:

- ``"drop"``: nothing, the period is absent;
- ``"nan"``: a candle whose values are all missing (NaN, or ``Decimal('NaN')``);
- ``"ffill"``: a flat candle at the previous close with zero volume (open interest carried).

Periods before the first stored candle are never filled (there is nothing to carry, and the
market may not have existed); the period that has not closed yet is never filled either.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..config import resolve_settings
from ..vocabulary.errors import DataError, FillRatioError, InvalidRequestError
from ..vocabulary.periods import period_end as periods_period_end, period_end_array, period_starts
from ..vocabulary.quality import QualityReport, quality_report
from ..vocabulary.requests import FetchRequest, closed_period_stop
from ..vocabulary.markets import PRICE_COLUMNS, VALUE_COLUMNS, MarketInfo, exact_floats
from ..client.ohlc_client import OHLCClient
from ..vocabulary.times import now_micros

__all__ = [
    "CLIENT_SETTINGS",
    "MISSING_POLICIES",
    "Fetched",
    "check_fill_ratio",
    "check_max_fill_ratio",
    "check_missing",
    "client_settings",
    "fetch_candles",
    "market_info",
    "apply_missing",
    "exact_floats",
    "period_end",
    "sync_client",
]

#: Keyword arguments every adapter accepts to pick the client (as for ``OHLCClient``).
CLIENT_SETTINGS = ("iceberg_catalog_uri", "relay_endpoint", "notification_endpoint", "namespace", "request_timeout")
MISSING_POLICIES = ("drop", "nan", "ffill")

_OPTIONAL_VOLUMES = ("buy_vol", "sell_vol")

# Decimals never change once stored, so one lookup per client and ticker is enough.
_markets: weakref.WeakKeyDictionary[OHLCClient, dict[str, MarketInfo]] = weakref.WeakKeyDictionary()


def period_end(start_us: Any, period_seconds: int) -> Any:
    """The exclusive end (µs) of the period that opens at ``start_us`` (an int or a numpy array).

    Every face that speaks of a candle's close time asks this one function; calendar months end
    on the 1st of the next month (:mod:`dexorder_feeds.vocabulary.periods`).
    """
    if isinstance(start_us, np.ndarray):
        return period_end_array(period_seconds, start_us.astype(np.int64, copy=False))
    return periods_period_end(period_seconds, int(start_us))


def check_missing(missing: str) -> str:
    if missing not in MISSING_POLICIES:
        raise InvalidRequestError(f"missing={missing!r} is not one of {', '.join(map(repr, MISSING_POLICIES))}")
    return missing


def check_max_fill_ratio(value: float | None) -> float | None:
    """``max_fill_ratio`` validated: None (no limit) or a number from 0 to 1."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise InvalidRequestError(f"max_fill_ratio={value!r} must be a number from 0 to 1 (the share of candles "
                                  "the missing-data policy may make up), or None for no limit")
    return float(value)


def check_fill_ratio(report: QualityReport, max_fill_ratio: float | None) -> None:
    """Raise :class:`FillRatioError` if more of ``report``'s candles were filled than allowed."""
    if max_fill_ratio is None or report.fill_ratio <= max_fill_ratio:
        return
    delivered = report.present + report.filled
    raise FillRatioError(
        f"{report.ticker} {report.period_seconds}s: {report.filled} of {delivered} candles "
        f"({report.fill_ratio:.2%}) were made up by missing={report.fill_policy!r}, above "
        f"max_fill_ratio={max_fill_ratio:g}; missing: {report.missing_candles} candles "
        f"({', '.join(f'{n} {reason}' for reason, n in report.missing_by_reason().items() if n)}). "
        "Pick a range the source covers, use missing='drop', or raise max_fill_ratio",
        ratio=report.fill_ratio, report=report,
    )


def client_settings(values: Mapping[str, Any]) -> dict[str, Any]:
    """The client settings among ``values`` that are set (None means: from env/config)."""
    unknown = set(values) - set(CLIENT_SETTINGS)
    if unknown:
        raise TypeError(f"unknown client setting(s): {', '.join(sorted(unknown))}")
    return {key: value for key, value in values.items() if value is not None}


async def sync_client(client: OHLCClient | None, settings: Mapping[str, Any]) -> OHLCClient:
    """The client to use on the sync face's loop: the given one, or the shared one per settings."""
    if client is not None:
        if settings:
            raise TypeError("pass either client=... or client settings, not both")
        return client
    from ..client import sync

    resolved = resolve_settings(**settings)
    # One shared client per settings, started on the sync loop (the same registry the blocking
    # ``dexorder_feeds.fetch_ohlc`` uses).
    return await sync.shared_client(resolved)


async def market_info(client: OHLCClient, ticker: str) -> MarketInfo | None:
    """``ticker``'s decimals through the ``dexorder_price_scale`` hook (cached per client)."""
    known = _markets.setdefault(client, {})
    market = known.get(ticker)
    if market is None:
        market = await client.price_scale(ticker)
        if market is not None:
            known[ticker] = market
    return market


@dataclass(frozen=True)
class Fetched:
    """One fetched range: the (policy-filled) integer frame and the decimals that read it."""

    request: FetchRequest
    frame: pd.DataFrame
    market: MarketInfo | None
    snapshot_id: int | None
    quality: QualityReport
    content_hash: str | None = None
    """The hash of the stored candles read (before the missing-data policy filled any)."""

    @property
    def period_us(self) -> int:
        return self.request.period_us


def closed_stop(request: FetchRequest, now: int | None = None) -> int | None:
    """The exclusive end of the closed candles of ``request`` (None if it holds no candle)."""
    if request.interval is None:
        return None
    return min(request.interval[1], closed_period_stop(request.period_seconds, now))


async def fetch_candles(
    client: OHLCClient,
    ticker: object,
    period: object,
    start: object,
    end: object,
    *,
    missing: str = "drop",
    request_timeout: float | None = None,
    grid_start: int | None = None,
    previous: Mapping[str, Any] | None = None,
    max_fill_ratio: float | None = None,
    as_of: str | int | None = None,
) -> Fetched:
    """Fetch ``[start, end]`` through ``client``, apply the ``missing`` policy, attach decimals
    and the quality report (raising :class:`FillRatioError` above ``max_fill_ratio``)."""
    request = FetchRequest.create(ticker, period, start, end, as_of)
    frame = await client.fetch_ohlc(request.ticker, request.period_seconds, request.start_time, request.end_time,
                                    request_timeout=request_timeout, as_of=request.as_of)
    snapshot_id = frame.attrs.get("snapshot_id")
    digest = frame.attrs.get("content_hash")
    quality = frame.attrs.get("quality")
    if not isinstance(quality, QualityReport):  # a fetcher plugin that does not report: nothing known covered
        quality = quality_report(request.ticker, request.period_seconds, request.interval,
                                 frame["timestamp"].to_numpy(), [])
    stored_rows = len(frame)
    stop = closed_stop(request)
    if missing != "drop" and stop is not None:
        frame = apply_missing(frame, request.period_us, missing, grid_stop=stop, grid_start=grid_start,
                              previous=previous)
    quality = quality.with_fill(len(frame) - stored_rows, missing)
    frame.attrs["quality"] = quality
    check_fill_ratio(quality, max_fill_ratio)
    market = await market_info(client, request.ticker) if len(frame) else None
    if len(frame) and market is None:
        raise DataError(f"{request.ticker}: candles are stored but the market's decimals are unknown")
    return Fetched(request, frame, market, snapshot_id, quality, digest)


def apply_missing(
    frame: pd.DataFrame,
    period_us: int,
    policy: str,
    *,
    grid_stop: int,
    grid_start: int | None = None,
    previous: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Fill the missing periods of ``frame`` from ``grid_start`` (default: its first candle) up
    to ``grid_stop`` (exclusive) by ``policy``; ``previous`` is the candle before ``grid_start``
    (its ``close``, ``open_interest``, ``buy_vol``, ``sell_vol``) for ``ffill`` across pages.

    Integer columns stay integers (nullable ``Int64`` where a value is missing), never floats.
    """
    check_missing(policy)
    if policy == "drop":
        return frame
    timestamps = frame["timestamp"].to_numpy(dtype=np.int64)
    if grid_start is None:
        if not len(frame):
            return frame
        grid_start = int(timestamps[0])
    if grid_stop <= grid_start:
        return frame
    grid = period_starts(period_us // 1_000_000, grid_start, grid_stop)
    if len(grid) == len(timestamps) and (len(grid) == 0 or (grid[0] == timestamps[0] and grid[-1] == timestamps[-1])):
        return frame  # nothing missing
    if policy == "ffill" and previous is None and len(timestamps):
        grid = grid[grid >= timestamps[0]]  # nothing to carry before the first stored candle
    absent = ~np.isin(grid, timestamps)
    if not absent.any():
        return frame
    ticker = frame["ticker"].iloc[0] if len(frame) else frame.attrs.get("ticker")
    period_seconds = period_us // 1_000_000
    indexed = frame.set_index("timestamp")
    out = pd.DataFrame(index=pd.Index(grid, name="timestamp"))
    out["ticker"] = pd.Series(ticker, index=out.index, dtype=frame["ticker"].dtype)
    out["period_seconds"] = np.int64(period_seconds)
    for column in VALUE_COLUMNS:
        out[column] = indexed[column].astype("Int64").reindex(out.index)
    if policy == "ffill":
        close = out["close"]
        if previous is not None and pd.isna(close.iloc[0]):
            close.iloc[0] = previous["close"]
        close = close.ffill()
        filled = out["open"].isna() & close.notna()
        for column in PRICE_COLUMNS:
            out[column] = out[column].where(~filled, close)
        out["volume"] = out["volume"].where(~filled, 0)
        for column in _OPTIONAL_VOLUMES:
            if frame[column].notna().any() or (previous is not None and previous.get(column) is not None):
                out[column] = out[column].where(~filled, 0)
        interest = out["open_interest"]
        if previous is not None and pd.isna(interest.iloc[0]) and previous.get("open_interest") is not None:
            interest.iloc[0] = previous["open_interest"]
        out["open_interest"] = out["open_interest"].where(~filled, interest.ffill())
        out = out[out["open"].notna()]
    result = out.reset_index()[list(frame.columns)]
    result.attrs.update(frame.attrs)
    return result
