"""The ``sim`` ingest source: deterministic, internally consistent candles for any period."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dexorder_feeds.vocabulary.markets import MarketInfo, scale_to_integers
from dexorder_feeds.ingest.sources.sim import PRICE_DECIMALS, VOLUME_DECIMALS, SimulatedSource
from dexorder_feeds.vocabulary.tickers import parse_ticker

WEEK_START = 1735689600000000  # 2025-01-01 00:00 UTC
BTC = parse_ticker("SIM:BTC/USDT")


def fetch(period: int, count: int, ticker: str = "SIM:BTC/USDT", start: int = WEEK_START) -> pd.DataFrame:
    period_us = period * 1_000_000
    start = start // period_us * period_us
    return SimulatedSource().fetch_candles(parse_ticker(ticker), period, start, start + count * period_us).frame


def test_same_request_gives_the_same_candles() -> None:
    first = SimulatedSource().fetch_candles(BTC, 3600, WEEK_START, WEEK_START + 168 * 3_600_000_000)
    second = SimulatedSource().fetch_candles(BTC, 3600, WEEK_START, WEEK_START + 168 * 3_600_000_000)
    pd.testing.assert_frame_equal(first.frame, second.frame)
    assert first.market == second.market
    assert len(first.frame) == 168


@pytest.mark.parametrize("period", [60, 3600, 86400])
def test_a_sub_range_is_the_slice_of_a_larger_range(period: int) -> None:
    period_us = period * 1_000_000
    whole = fetch(period, 200)
    part = SimulatedSource().fetch_candles(BTC, period, WEEK_START + 37 * period_us, WEEK_START + 91 * period_us).frame
    pd.testing.assert_frame_equal(part.reset_index(drop=True), whole.iloc[37:91].reset_index(drop=True))


@pytest.mark.parametrize("period", [60, 300, 3600, 86400])
def test_candle_invariants_hold_for_any_period(period: int) -> None:
    frame = fetch(period, 1000)
    period_us = period * 1_000_000
    assert len(frame) == 1000
    ts = frame["timestamp"].to_numpy()
    assert (ts % period_us == 0).all() and (np.diff(ts) == period_us).all()
    o, h, lo, c = (frame[name].to_numpy() for name in ("open", "high", "low", "close"))
    assert (h >= np.maximum(o, c)).all()
    assert (lo <= np.minimum(o, c)).all()
    assert (lo > 0).all()
    assert (frame["volume"] >= 0).all()
    assert (frame["buy_vol"] >= 0).all() and (frame["sell_vol"] >= 0).all()
    assert (frame["buy_vol"] + frame["sell_vol"] == frame["volume"]).all()


def test_values_are_scaled_integers_with_the_markets_decimals() -> None:
    got = SimulatedSource().fetch_candles(BTC, 3600, WEEK_START, WEEK_START + 24 * 3_600_000_000)
    assert got.scaled is True
    assert (got.market.price_decimals, got.market.volume_decimals) == (PRICE_DECIMALS, VOLUME_DECIMALS)
    assert got.market.ticker == "SIM:BTC/USDT"
    for name in ("open", "high", "low", "close", "volume", "buy_vol", "sell_vol"):
        assert got.frame[name].dtype == np.int64, name
    # Integer candles pass through the natural-unit path unchanged with zero decimals.
    unit = scale_to_integers(got.frame, MarketInfo(got.market.ticker, 0, 0))
    assert (unit["close"].to_numpy() == got.frame["close"].to_numpy()).all()


def test_longer_periods_agree_with_shorter_ones_on_price_levels() -> None:
    hourly = fetch(3600, 48)
    daily = fetch(86400, 2)
    # The day's open and the open of its first hour come from the same continuous price path.
    assert daily["open"].iloc[0] == hourly["open"].iloc[0]
    assert daily["open"].iloc[1] == hourly["open"].iloc[24]


def test_different_tickers_give_different_prices() -> None:
    btc = fetch(3600, 50, "SIM:BTC/USDT")
    eth = fetch(3600, 50, "SIM:ETH/USDT")
    other_exchange = fetch(3600, 50, "SIMX:BTC/USDT")
    assert not np.array_equal(btc["close"].to_numpy(), eth["close"].to_numpy())
    assert not np.array_equal(btc["close"].to_numpy(), other_exchange["close"].to_numpy())
    assert (btc["timestamp"].to_numpy() == eth["timestamp"].to_numpy()).all()


def test_empty_range_gives_no_candles() -> None:
    got = SimulatedSource().fetch_candles(BTC, 3600, WEEK_START, WEEK_START)
    assert len(got.frame) == 0


def test_no_candles_before_the_listing() -> None:
    listing = 1420070400_000000  # 2015-01-01 00:00 UTC
    day_us = 86400 * 1_000_000
    got = SimulatedSource().fetch_candles(BTC, 86400, listing - 3 * day_us, listing + 2 * day_us)
    assert list(got.frame["timestamp"]) == [listing, listing + day_us]


def test_periods_must_be_whole_minutes() -> None:
    from dexorder_feeds.vocabulary.errors import InvalidPeriodError

    with pytest.raises(InvalidPeriodError, match="whole number of minutes"):
        SimulatedSource().fetch_candles(BTC, 90, WEEK_START, WEEK_START + 900_000_000)


def test_candles_open_where_the_previous_closed_across_days() -> None:
    minutes = SimulatedSource().fetch_candles(BTC, 60, WEEK_START - 3_600_000_000, WEEK_START + 3_600_000_000).frame
    assert len(minutes) == 120
    assert (minutes["open"].to_numpy()[1:] == minutes["close"].to_numpy()[:-1]).all()


def _daily_log_returns(ticker: str = "SIM:BTC/USDT") -> np.ndarray:
    listing, day = 1420070400_000000, 86_400_000_000
    close = SimulatedSource().fetch_candles(parse_ticker(ticker), 86400, listing, listing + 3000 * day).frame["close"]
    return np.diff(np.log(close.to_numpy(dtype=float)))


def test_sim_has_fat_tails_clustered_volatility_and_drifts_of_both_signs() -> None:
    r = _daily_log_returns()
    assert len(r) == 2999
    kurtosis = float(((r - r.mean()) ** 4).mean() / r.var() ** 2)
    assert kurtosis > 5  # a normal distribution has 3
    size = np.abs(r)
    assert np.corrcoef(size[:-1], size[1:])[0, 1] > 0.1  # big moves follow big moves
    assert abs(np.corrcoef(r[:-1], r[1:])[0, 1]) < 0.1  # but their sign is not predictable
    quarters = r[: len(r) // 90 * 90].reshape(-1, 90).sum(axis=1)
    assert (quarters > 0.1).sum() >= 3 and (quarters < -0.1).sum() >= 3  # trends up and down
    signs = np.sign(quarters)
    assert (signs[1:] != signs[:-1]).sum() >= 5  # that change direction, not one long wave


def test_a_20_bar_sma_rule_neither_prints_money_nor_loses_it_all() -> None:
    hour = 3_600_000_000
    outcomes = []
    for ticker in ("SIM:BTC/USDT", "SIM:ETH/USDT", "SIM:SOL/USDT"):
        close = SimulatedSource().fetch_candles(parse_ticker(ticker), 3600, WEEK_START, WEEK_START + 59 * 24 * hour) \
            .frame["close"].to_numpy(dtype=float)
        sma = np.convolve(close, np.ones(20) / 20, "valid")
        held = (close[19:] > sma)[:-1]  # long for the next hour while the close is above its SMA
        growth = np.cumprod(1 + held * np.diff(close[19:]) / close[19:-1])
        drawdown = float((1 - growth / np.maximum.accumulate(growth)).max())
        outcomes.append((growth[-1] - 1, drawdown))
    for total, drawdown in outcomes:
        assert -0.6 < total < 0.4, outcomes  # the old sine-wave market made +52.9 % in two months
        assert drawdown > 0.03, outcomes  # with 0.53 % drawdown
