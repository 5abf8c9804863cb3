"""Relative times as people type them (a fixed 'now' injected), and dates whose day/month order is ambiguous."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from dexorder_feeds.cli.commands import resolve_range
from dexorder_feeds.vocabulary.errors import InvalidRequestError, InvalidTimeRangeError
from dexorder_feeds.vocabulary.requests import FetchRequest
from dexorder_feeds.vocabulary.times import relative_micros, to_micros

NOW = to_micros("2025-03-31T12:34:56.789Z")  # a month end, to see calendar months clamp
DAY = 86_400_000_000


@pytest.mark.parametrize(
    "text, expected",
    [
        ("now", "2025-03-31T12:34:56.789Z"),
        ("NOW UTC", "2025-03-31T12:34:56.789Z"),  # vectorbt's default end
        ("  now  ", "2025-03-31T12:34:56.789Z"),
        ("today", "2025-03-31T00:00:00Z"),
        ("yesterday", "2025-03-30T00:00:00Z"),
        ("yesterday UTC", "2025-03-30T00:00:00Z"),
        ("7 days ago", "2025-03-24T12:34:56.789Z"),
        ("1 day ago", "2025-03-30T12:34:56.789Z"),
        ("1 week ago", "2025-03-24T12:34:56.789Z"),
        ("2 weeks ago", "2025-03-17T12:34:56.789Z"),
        ("an hour ago", "2025-03-31T11:34:56.789Z"),
        ("a minute ago", "2025-03-31T12:33:56.789Z"),
        ("90 minutes ago", "2025-03-31T11:04:56.789Z"),
        ("30 seconds ago", "2025-03-31T12:34:26.789Z"),
        ("12 h ago", "2025-03-31T00:34:56.789Z"),
        ("1 month ago", "2025-02-28T12:34:56.789Z"),  # March 31 -> February has no 31st: its last day
        ("13 months ago", "2024-02-29T12:34:56.789Z"),  # a leap year's February
        ("3 Months Ago", "2024-12-31T12:34:56.789Z"),
        ("1 year ago", "2024-03-31T12:34:56.789Z"),
        ("30 days ago UTC", "2025-03-01T12:34:56.789Z"),
    ],
)
def test_relative_times_count_from_the_given_now(text, expected):
    assert to_micros(text, now=NOW) == to_micros(expected)


def test_relative_text_is_recognised_only_when_written_as_such():
    assert relative_micros("2025-01-01", NOW) is None  # not relative: left to the ISO reader
    assert relative_micros("7 days ago", NOW) == NOW - 7 * DAY
    # a plain time ignores now; an integer or datetime is never relative
    assert to_micros("2025-01-01", now=NOW) == to_micros("2025-01-01")


@pytest.mark.parametrize("text", ["5 parsecs ago", "1.5 days ago", "ago", "seven days ago", "-3 days ago",
                                  "3 ms ago"])
def test_half_relative_text_is_refused_with_the_forms_that_work(text):
    with pytest.raises(InvalidTimeRangeError, match="relative times read: now, today, yesterday") as info:
        to_micros(text, name="start_time", now=NOW)
    assert "'7 days ago'" in str(info.value) and "start_time" in str(info.value)


def test_existing_refusals_still_hold():
    for text in ("yesterday-ish", "tomorrowish", "nowhere"):
        with pytest.raises(InvalidTimeRangeError):
            to_micros(text, now=NOW)


@pytest.mark.parametrize(
    "text, readings",
    [
        ("01/02/2025", ("2025-02-01", "2025-01-02")),
        ("1/2/2025", ("2025-02-01", "2025-01-02")),
        ("01-02-2025", ("2025-02-01", "2025-01-02")),
        ("01.02.2025", ("2025-02-01", "2025-01-02")),
        ("1/2/25", ("2025-02-01", "2025-01-02")),
        ("03/04/2025 10:00", ("2025-04-03", "2025-03-04")),
        ("03/04/2025T10:00", ("2025-04-03", "2025-03-04")),
    ],
)
def test_ambiguous_dates_are_refused_asking_for_iso_8601(text, readings):
    with pytest.raises(InvalidTimeRangeError, match=r"ISO 8601 \(YYYY-MM-DD\)") as info:
        to_micros(text, name="start_time")
    message = str(info.value)
    assert "ambiguous" in message and all(reading in message for reading in readings), message
    assert isinstance(info.value, ValueError)


def test_a_local_order_date_with_one_reading_is_refused_too_and_the_iso_form_given():
    # Accepting 13/02 but refusing 12/02 would work on some days and not others.
    with pytest.raises(InvalidTimeRangeError, match="'2025-02-13'"):
        to_micros("13/02/2025")
    with pytest.raises(InvalidTimeRangeError, match="'2025-12-31'"):
        to_micros("12/31/2025")


@pytest.mark.parametrize("text", ["2025/01/02", "2025-01-02", "2025-01-02T00:00:00Z", "Jan 2 2025", "2 January 2025",
                                  "20250102"])
def test_unambiguous_forms_still_read(text):
    expected = to_micros("2025-01-02") if text != "20250102" else None
    if expected is None:  # a bare digit string is integer µs (the seed's contract): a unit error, as before
        with pytest.raises(InvalidTimeRangeError, match="looks like seconds"):
            to_micros(text)
    else:
        assert to_micros(text) == expected


def test_requests_read_relative_times():
    request = FetchRequest.create("SIM:BTC/USDT", "1h", "2 days ago", "now")
    # "now" is read after "2 days ago", each from the clock: two days apart, give or take that gap
    assert 2 * DAY <= request.end_time - request.start_time < 2 * DAY + 60_000_000


def test_cli_range_from_start_end_and_days():
    assert resolve_range(None, None, 30, now=NOW) == (NOW - 30 * DAY, NOW)
    assert resolve_range(None, "2025-01-31", 0.5, now=NOW) == (to_micros("2025-01-30T12:00"), to_micros("2025-01-31"))
    assert resolve_range("7 days ago", "yesterday", None, now=NOW) == (NOW - 7 * DAY, to_micros("2025-03-30"))
    assert resolve_range("2025-01-01", None, None, now=NOW) == (to_micros("2025-01-01"), NOW)
    with pytest.raises(InvalidRequestError, match="either --start or --days"):
        resolve_range("2025-01-01", None, 3, now=NOW)
    with pytest.raises(InvalidRequestError, match="--days 0 must be more than 0"):
        resolve_range(None, None, 0, now=NOW)
    with pytest.raises(InvalidRequestError, match="give --start"):
        resolve_range(None, "2025-01-01", None, now=NOW)
    with pytest.raises(InvalidTimeRangeError, match="--end='31/01/2025'"):
        resolve_range("2025-01-01", "31/01/2025", None, now=NOW)


def test_cli_refuses_an_ambiguous_date_with_exit_2(tmp_path):
    result = subprocess.run([sys.executable, "-m", "dexorder_feeds.cli", "fetch", "SIM:BTC/USDT", "--start",
                             "01/02/2025", "--end", "2025-03-01"], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "DEXORDER_CACHE_DIR": str(tmp_path)})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: --start='01/02/2025' is ambiguous") and "ISO 8601" in result.stderr
