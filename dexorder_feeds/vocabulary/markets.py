"""Market metadata and the exact integer <-> value conversions.

A market's prices are stored as ``int`` with ``price_decimals`` decimals and its volumes with
``volume_decimals``: the value is ``Decimal(int) / 10**decimals`` (never a float detour before
the division). Once stored, a market's decimals never change what stored integers mean.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import numpy as np
import pandas as pd

from .errors import DataError, PrecisionError

__all__ = ["MarketInfo", "PRICE_COLUMNS", "VOLUME_COLUMNS", "VALUE_COLUMNS", "scale_to_integers"]

PRICE_COLUMNS = ("open", "high", "low", "close")
VOLUME_COLUMNS = ("volume", "buy_vol", "sell_vol", "open_interest")
VALUE_COLUMNS = PRICE_COLUMNS + VOLUME_COLUMNS

_MAX_DECIMALS = 18
_INT64_MAX = 2**63 - 1
# Floats are exact integers below 2**53; beyond that a scaled value cannot be checked exactly.
_FLOAT_EXACT_LIMIT = float(2**53)


@dataclass(frozen=True)
class MarketInfo:
    """How a market's stored integers map to prices and volumes."""

    ticker: str
    price_decimals: int
    volume_decimals: int

    def __post_init__(self) -> None:
        for name in ("price_decimals", "volume_decimals"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 0 <= value <= _MAX_DECIMALS:
                raise DataError(f"{self.ticker}: {name}={value!r} must be an integer from 0 to {_MAX_DECIMALS}")

    def decimals_for(self, column: str) -> int:
        """The decimals that apply to a candle column."""
        return self.price_decimals if column in PRICE_COLUMNS else self.volume_decimals

    def to_decimal(self, column: str, value: int) -> Decimal:
        """The exact value of a stored integer."""
        return Decimal(value).scaleb(-self.decimals_for(column))


def _scale_column(values: pd.Series, decimals: int, *, ticker: str, column: str) -> np.ndarray:
    """Scale one column of natural-unit values to integers, refusing any loss of precision."""
    factor = 10**decimals
    limit = _INT64_MAX // factor
    if pd.api.types.is_integer_dtype(values.dtype) and not values.isna().any():
        raw = values.to_numpy(dtype=np.int64)
        if raw.size and int(np.abs(raw).max()) > limit:
            raise DataError(
                f"{ticker} {column}: value {int(raw[np.argmax(np.abs(raw))])} does not fit a 64-bit integer "
                f"with {decimals} decimals"
            )
        return raw * np.int64(factor)
    if pd.api.types.is_float_dtype(values.dtype):
        raw = values.to_numpy(dtype=np.float64)
        scaled = raw * factor
        rounded = np.rint(scaled)
        if np.any(np.abs(rounded) >= _FLOAT_EXACT_LIMIT):
            raise PrecisionError(
                f"{ticker} {column}: values too large to scale exactly from floats with {decimals} decimals; "
                "give them as decimal strings"
            )
        # A float whose shortest decimal form has at most `decimals` places scales to within a
        # few ulps of an integer; anything further off would be silently rounded.
        tolerance = 4 * np.spacing(np.abs(rounded))
        bad = np.abs(scaled - rounded) > tolerance
        if bad.any():
            example = raw[np.argmax(bad)]
            raise PrecisionError(
                f"{ticker} {column}: value {example!r} has more than the market's {decimals} decimals; "
                "storing it would lose precision (give the market more decimals before its first write)"
            )
        return rounded.astype(np.int64)
    out = np.empty(len(values), dtype=np.int64)
    for i, item in enumerate(values.tolist()):
        dec = Decimal(str(item)).scaleb(decimals)
        if dec != dec.to_integral_value():
            raise PrecisionError(
                f"{ticker} {column}: value {item!r} has more than the market's {decimals} decimals; "
                "storing it would lose precision"
            )
        if abs(dec) > limit * factor:
            raise DataError(f"{ticker} {column}: value {item!r} does not fit a 64-bit integer with {decimals} decimals")
        out[i] = int(dec)
    return out


def scale_to_integers(frame: pd.DataFrame, market: MarketInfo) -> pd.DataFrame:
    """Natural-unit candle values (int, float, Decimal or str) to stored integers, exactly.

    Missing optional columns (buy_vol, sell_vol, open_interest) stay missing (null).
    """
    out = pd.DataFrame({"timestamp": frame["timestamp"].to_numpy(dtype=np.int64)})
    for column in VALUE_COLUMNS:
        if column not in frame.columns:
            continue
        values = frame[column]
        if values.isna().any():
            if column in PRICE_COLUMNS or column == "volume":
                raise DataError(f"{market.ticker}: column {column} has missing values")
            mask = values.isna()
            scaled = pd.array([None] * len(values), dtype="Int64")
            if (~mask).any():
                scaled[~mask.to_numpy()] = _scale_column(
                    values[~mask], market.decimals_for(column), ticker=market.ticker, column=column
                )
            out[column] = scaled
        else:
            out[column] = _scale_column(values, market.decimals_for(column), ticker=market.ticker, column=column)
    return out
