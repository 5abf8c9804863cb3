"""Periods: parsing, refusals, and where weeks, months and fixed periods open and close."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pytest

from dexorder_feeds.vocabulary.errors import InvalidPeriodError
from dexorder_feeds.vocabulary.periods import (
    MONTH,
    WEEK,
    closed_period_stop,
    divides,
    is_aligned,
    iter_period_starts,
    parse_period,
    period_ceil,
    period_count,
    period_end,
    period_floor,
    period_label,
    period_starts,
    shift_periods,
)
from dexorder_feeds.vocabulary.ranges import candle_interval, intervals_from_timestamps, to_inclusive
from dexorder_feeds.vocabulary.requests import FetchRequest


def us(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()) * 1_000_000


def iso(micros: int) -> str:
    return datetime.fromtimestamp(micros / 1e6, tz=timezone.utc).strftime("%Y-%m-%d %H:%M %a")


@pytest.mark.parametrize("value, seconds", [
    ("1m", 60), ("5m", 300), ("15m", 900), ("1h", 3600), ("4h", 14400), ("1d", 86400), ("3d", 259200),
    ("1w", WEEK), ("2w", 2 * WEEK), ("1M", MONTH), ("1mo", MONTH), ("1month", MONTH), (" 1M ", MONTH),
    (3600, 3600), ("3600", 3600), (np.int64(900), 900), (604800, WEEK), (2592000, MONTH), ("2592000", MONTH),
    ("60M".lower(), 3600), ("1H", 3600), ("1D", 86400), ("1W", WEEK),
])
def test_parse(value: object, seconds: int) -> None:
    assert parse_period(value) == seconds


@pytest.mark.parametrize("value, hint", [
    ("30d", "1M"), ("720h", "1M"), ("43200m", "1M"), ("3M", "1M"), ("2mo", "1M"), ("1y", "years"),
    ("1x", "unit"), ("", "1m, 5m"), ("h", "1m, 5m"), (0, "positive"), (-60, "positive"), (3600.0, "float"),
    (True, "not a period"), (None, "NoneType"),
])
def test_refusals_say_what_to_use(value: object, hint: str) -> None:
    with pytest.raises(InvalidPeriodError, match=hint) as info:
        parse_period(value)
    assert isinstance(info.value, ValueError)


def test_labels_round_trip() -> None:
    for text in ("1m", "5m", "15m", "1h", "4h", "1d", "1w", "1M", "90s"):
        assert period_label(parse_period(text)) == text


def test_weeks_open_monday_midnight_utc() -> None:
    thursday = us("2025-01-02T13:45:00")
    monday = period_floor(WEEK, thursday)
    assert iso(monday) == "2024-12-30 00:00 Mon"
    assert iso(period_end(WEEK, monday)) == "2025-01-06 00:00 Mon"
    starts = period_starts(WEEK, us("2025-01-01"), us("2025-02-01"))
    assert [iso(int(t)) for t in starts] == [f"2025-01-{d:02d} 00:00 Mon" for d in (6, 13, 20, 27)]
    assert iso(period_floor(2 * WEEK, thursday)).endswith("Mon")
    assert not is_aligned(WEEK, np.array([us("2025-01-02")]))[0]  # an epoch week (Thursday) is not a week start


def test_months_are_calendar_months_utc() -> None:
    assert iso(period_floor(MONTH, us("2024-02-29T23:59:59"))) == "2024-02-01 00:00 Thu"
    starts = period_starts(MONTH, us("2024-01-15"), us("2025-01-01"))
    assert [iso(int(t))[:10] for t in starts] == [f"2024-{m:02d}-01" for m in range(2, 13)]
    lengths = [(period_end(MONTH, int(t)) - int(t)) // 86_400_000_000 for t in starts]
    assert lengths == [29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]  # 2024 is a leap year
    assert list(iter_period_starts(MONTH, us("2024-01-15"), us("2025-01-01"))) == [int(t) for t in starts]
    assert period_count(MONTH, us("2024-01-01"), us("2025-01-01")) == 12
    assert period_ceil(MONTH, us("2024-01-01")) == us("2024-01-01")
    assert period_ceil(MONTH, us("2024-01-01T00:00:01")) == us("2024-02-01")
    assert shift_periods(MONTH, us("2024-01-01"), 14) == us("2025-03-01")
    assert shift_periods(MONTH, us("2024-03-01"), -1) == us("2024-02-01")


def test_fixed_periods_are_epoch_aligned() -> None:
    t = us("2025-01-01T05:17:00")
    assert period_floor(14400, t) == us("2025-01-01T04:00:00")
    assert period_floor(86400, t) == us("2025-01-01")
    assert period_count(3600, us("2025-01-01"), us("2025-01-02")) == 24
    assert list(period_starts(3600, us("2025-01-01T00:30"), us("2025-01-01T03:00"))) == \
        [us("2025-01-01T01:00"), us("2025-01-01T02:00")]


def test_closed_period_stop_is_the_open_period() -> None:
    now = us("2025-03-19T10:30:00")  # a Wednesday
    assert closed_period_stop(3600, now) == us("2025-03-19T10:00")
    assert closed_period_stop(WEEK, now) == us("2025-03-17")  # Monday
    assert closed_period_stop(MONTH, now) == us("2025-03-01")


def test_divides() -> None:
    assert divides(3600, 14400) and divides(3600, 86400) and divides(3600, WEEK) and divides(3600, MONTH)
    assert divides(86400, WEEK) and divides(86400, MONTH) and divides(60, MONTH)
    assert not divides(WEEK, MONTH) and not divides(MONTH, MONTH * 2) and not divides(14400, 3600)
    assert not divides(7 * 3600, 86400)
    assert not divides(302400, WEEK)  # half a week from the epoch does not land on Mondays


def test_ranges_and_requests_speak_calendar_periods() -> None:
    interval = candle_interval(us("2024-01-15"), us("2024-04-10"), MONTH * 1_000_000)
    assert interval == (us("2024-02-01"), us("2024-05-01"))
    assert to_inclusive([interval], MONTH * 1_000_000) == [(us("2024-02-01"), us("2024-04-01"))]
    runs = intervals_from_timestamps([us("2024-01-01"), us("2024-02-01"), us("2024-04-01")], MONTH * 1_000_000)
    assert runs == [(us("2024-01-01"), us("2024-03-01")), (us("2024-04-01"), us("2024-05-01"))]
    weekly = FetchRequest.create("SIM:BTC/USDT", "1w", "2025-01-01", "2025-01-31")
    assert weekly.period_seconds == WEEK
    assert weekly.interval == (us("2025-01-06"), us("2025-02-03"))
    monthly = FetchRequest.create("SIM:BTC/USDT", "1M", "2025-01-01", "2025-03-31")
    assert monthly.interval == (us("2025-01-01"), us("2025-04-01"))
