"""Exact conversion of natural-unit values to stored integers, refusing every loss."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from dexorder_feeds.vocabulary.errors import DataError, PrecisionError
from dexorder_feeds.vocabulary.markets import MarketInfo, scale_to_integers

MARKET = MarketInfo("X:A/B", 2, 8)


def frame(**columns) -> pd.DataFrame:
    n = len(next(iter(columns.values())))
    base = {"timestamp": np.arange(n, dtype=np.int64)}
    for name in ("open", "high", "low", "close"):
        base[name] = columns.get(name, columns.get("price", [1] * n))
    base["volume"] = columns.get("volume", [1] * n)
    return pd.DataFrame(base)


@pytest.mark.parametrize("prices", [[0.29, 1.1, 36087.13, 0.0, -2.5], ["0.29", "1.1", "36087.13", "0", "-2.5"],
                                    [Decimal("0.29"), Decimal("1.10"), Decimal("36087.13"), Decimal(0), Decimal("-2.5")]])
def test_floats_strings_and_decimals_scale_exactly(prices):
    out = scale_to_integers(frame(price=prices), MARKET)
    assert out["close"].tolist() == [29, 110, 3608713, 0, -250]


@pytest.mark.parametrize("value", [10.000000000001, 3.0000000001, 0.001, "0.001", Decimal("1.005")])
def test_values_finer_than_the_decimals_are_refused(value):
    with pytest.raises(PrecisionError):
        scale_to_integers(frame(price=[value]), MARKET)


@pytest.mark.parametrize("volume", [[200_000_000_000], ["200000000000"], [2e11]])
def test_values_that_overflow_int64_are_refused(volume):
    with pytest.raises(DataError):
        scale_to_integers(frame(volume=volume), MarketInfo("X:A/B", 2, 8))


def test_integer_values_are_scaled_by_the_decimals():
    out = scale_to_integers(frame(price=[1, 2], volume=[3, 4]), MARKET)
    assert out["open"].tolist() == [100, 200] and out["volume"].tolist() == [300_000_000, 400_000_000]


def test_to_decimal_is_exact():
    assert MARKET.to_decimal("close", 3608713) == Decimal("36087.13")
    assert MARKET.to_decimal("volume", 1) == Decimal("1E-8")
