"""Market metadata and the exact integer <-> value conversions.

A market's prices are stored as ``int`` with ``price_decimals`` decimals and its volumes with
``volume_decimals``: the value is ``Decimal(int) / 10**decimals`` (never a float detour before
the division). Once stored, a market's decimals never change what stored integers mean.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Context, Decimal
from typing import Any

import numpy as np
import pandas as pd

from .errors import DataError, InvalidRequestError, PrecisionError

__all__ = [
    "MarketInfo",
    "PRICE_COLUMNS",
    "PRICE_KINDS",
    "VOLUME_COLUMNS",
    "VALUE_COLUMNS",
    "check_price_kind",
    "exact_decimals",
    "exact_floats",
    "real_prices",
    "scale_to_integers",
]

#: What ``fetch_ohlc(prices=...)`` gives: the stored integers, exact Decimals or nearest floats.
PRICE_KINDS = ("integer", "decimal", "float")

PRICE_COLUMNS = ("open", "high", "low", "close")
VOLUME_COLUMNS = ("volume", "buy_vol", "sell_vol", "open_interest")
VALUE_COLUMNS = PRICE_COLUMNS + VOLUME_COLUMNS

_MAX_DECIMALS = 18
_INT64_MAX = 2**63 - 1
# Floats are exact integers below 2**53; beyond that a scaled value cannot be checked exactly.
_FLOAT_EXACT_LIMIT = float(2**53)
_FLOAT_EXACT = 2**53
# A stored int64 has at most 19 digits: 40 keeps every scaled value exact, whatever the caller's context.
_DECIMAL_CONTEXT = Context(prec=40)


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


def exact_floats(values: pd.Series | np.ndarray, decimals: int) -> np.ndarray:
    """``int / 10**decimals`` as float64, each the nearest float to the exact value; NaN where null.

    Why this is exact to the nearest float: an integer of magnitude up to 2**53 converts to
    float64 without rounding, and ``10.0**decimals`` is exact for ``decimals <= 22`` (5**22 <
    2**53), so the one IEEE division is correctly rounded: the nearest float to the true quotient,
    the same as ``float(Decimal(i) / 10**decimals)``. Larger integers take Python's correctly
    rounded ``int / int`` division instead (no float detour before the division).
    """
    if isinstance(values, pd.Series):
        mask = values.isna().to_numpy()
        ints = values.to_numpy(dtype=np.int64, na_value=0) if mask.any() else values.to_numpy(dtype=np.int64)
    else:
        ints = np.asarray(values, dtype=np.int64)
        mask = None
    out = ints.astype(np.float64)
    if decimals:
        out /= 10.0**decimals
    big = (ints > _FLOAT_EXACT) | (ints < -_FLOAT_EXACT)
    if big.any():
        scale = 10**decimals
        out[big] = [value / scale for value in ints[big].tolist()]
    if mask is not None and mask.any():
        out[mask] = np.nan
    return out


def exact_decimals(values: pd.Series, decimals: int) -> list[Decimal | None]:
    """``Decimal(int) / 10**decimals`` of each stored integer, at the market's exponent
    (``Decimal('100.00')`` for 2 decimals); None where null."""
    mask = values.isna().to_numpy()
    ints = values.to_numpy(dtype=np.int64, na_value=0).tolist() if mask.any() else values.tolist()
    out: list[Decimal | None] = [Decimal(int(v)).scaleb(-decimals, _DECIMAL_CONTEXT) for v in ints]
    for i in np.flatnonzero(mask).tolist():
        out[i] = None
    return out


def check_price_kind(kind: object) -> str:
    """``kind`` if it is one of :data:`PRICE_KINDS`, else a clear error."""
    if kind not in PRICE_KINDS:
        raise InvalidRequestError(f"prices={kind!r} must be 'integer' (the stored integers, default), 'decimal' "
                                  "(exact Decimal values) or 'float' (the nearest floats)")
    return str(kind)


def real_prices(frame: pd.DataFrame, market: MarketInfo | None, kind: str) -> pd.DataFrame:
    """The seed's integer candle frame with real values: ``kind`` ``"decimal"`` (exact
    ``Decimal`` objects, None where null) or ``"float"`` (the nearest float64, NaN where null),
    and a ``time`` column (the period start, ``datetime64[us, UTC]``) after ``timestamp``.

    ``"integer"`` returns ``frame`` itself. ``market`` may be None only for an empty frame.
    """
    check_price_kind(kind)
    if kind == "integer":
        return frame
    if len(frame) and market is None:
        raise DataError("candles are stored but the market's decimals are unknown; cannot give real prices")
    out = pd.DataFrame(index=frame.index)
    for column in frame.columns:
        out[column] = frame[column]
        if column == "timestamp":
            out["time"] = pd.to_datetime(frame["timestamp"].to_numpy(dtype=np.int64), unit="us", utc=True)
    for column in VALUE_COLUMNS:
        if column not in frame.columns:
            continue
        decimals = market.decimals_for(column) if market is not None else 0
        values: Any
        if kind == "float":
            values = exact_floats(frame[column], decimals)
        else:
            values = pd.Series(exact_decimals(frame[column], decimals), index=frame.index, dtype=object)
        out[column] = values
    out.attrs.update(frame.attrs)
    return out
