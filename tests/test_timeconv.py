"""Time and period parsing: every accepted type, and the unit errors that name the likely unit."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from dexorder_feeds.vocabulary.errors import InvalidPeriodError, InvalidTimeRangeError
from dexorder_feeds.vocabulary.times import parse_period, to_micros

SEED_START = 1735689600000000


@pytest.mark.parametrize(
    "value",
    [
        SEED_START,
        np.int64(SEED_START),
        str(SEED_START),
        datetime(2025, 1, 1, tzinfo=timezone.utc),
        datetime(2025, 1, 1),  # naive = UTC
        datetime(2025, 1, 1, 1, tzinfo=timezone(timedelta(hours=1))),
        pd.Timestamp("2025-01-01", tz="UTC"),
        pd.Timestamp("2025-01-01"),
        "2025-01-01",
        "2025-01-01T00:00:00Z",
        "2025-01-01T01:00:00+01:00",
        np.datetime64("2025-01-01T00:00:00"),
    ],
)
def test_accepted_time_types_give_the_same_micros(value):
    assert to_micros(value) == SEED_START


@pytest.mark.parametrize(
    "value, unit, fix",
    [
        (1735689600, "seconds", "1735689600000000"),
        (1735689600000, "milliseconds", "1735689600000000"),
        (1735689600000000000, "nanoseconds", "1735689600000000"),
    ],
)
def test_wrong_units_are_named(value, unit, fix):
    with pytest.raises(InvalidTimeRangeError, match=unit) as info:
        to_micros(value, name="start_time")
    assert fix in str(info.value) and "start_time" in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("value", [-5, 1.5e15, "yesterday-ish", None, object(), True])
def test_non_times_are_rejected(value):
    with pytest.raises(InvalidTimeRangeError):
        to_micros(value)


@pytest.mark.parametrize(
    "value, seconds",
    [(60, 60), ("60", 60), ("1m", 60), ("5m", 300), ("15m", 900), ("1h", 3600), ("4h", 14400),
     ("1d", 86400), ("1w", 604800), (np.int64(3600), 3600), ("2H", 7200)],
)
def test_periods(value, seconds):
    assert parse_period(value) == seconds


@pytest.mark.parametrize("value", [0, -60, 3600.5, "1y", "", "h", True, None])
def test_bad_periods(value):
    with pytest.raises(InvalidPeriodError):
        parse_period(value)


def test_now_and_today_are_utc_whatever_the_local_zone(monkeypatch):
    import time

    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        from dexorder_feeds.vocabulary.times import now_micros

        assert abs(to_micros("now") - now_micros()) < 60 * 10**6
        assert to_micros("today") == now_micros() // 86_400_000_000 * 86_400_000_000
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_1M_is_a_calendar_month_not_minutes_and_30d_is_refused():
    assert parse_period("1M") == 2_592_000  # the documented code for a calendar month
    assert parse_period("1m") == 60
    with pytest.raises(InvalidPeriodError, match="1M"):
        parse_period("30d")


@pytest.mark.parametrize("value", [datetime(1970, 1, 1), "1972-06-01", pd.Timestamp("1960-01-01", tz="UTC")])
def test_times_before_1973_are_a_clear_range_error(value):
    with pytest.raises(InvalidTimeRangeError, match="earliest"):
        to_micros(value, name="start_time")
