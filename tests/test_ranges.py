"""Whole-period interval arithmetic."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dexorder_feeds.vocabulary.ranges import (
    candle_interval,
    intervals_from_timestamps,
    merge_intervals,
    subtract_intervals,
    to_inclusive,
)

H = 3_600_000_000


def test_seed_range_is_168_candles():
    start, stop = candle_interval(1735689600000000, 1736294399000000, H)
    assert (stop - start) // H == 168
    assert to_inclusive([(start, stop)], H) == [(1735689600000000, 1736290800000000)]


def test_unaligned_bounds_round_inwards():
    assert candle_interval(H + 1, 3 * H - 1, H) == (2 * H, 3 * H)
    assert candle_interval(H + 1, 2 * H - 1, H) is None


def test_merge_and_subtract():
    assert merge_intervals([(5, 7), (0, 2), (2, 3), (6, 9)]) == [(0, 3), (5, 9)]
    assert subtract_intervals((0, 10), [(2, 3), (5, 7)]) == [(0, 2), (3, 5), (7, 10)]
    assert subtract_intervals((0, 10), [(-5, 20)]) == []
    assert subtract_intervals((0, 10), []) == [(0, 10)]


def test_runs_of_timestamps():
    assert intervals_from_timestamps([0, H, 2 * H, 5 * H, 6 * H, H], H) == [(0, 3 * H), (5 * H, 7 * H)]
    assert intervals_from_timestamps([], H) == []


@given(st.lists(st.integers(0, 50), max_size=30), st.lists(st.tuples(st.integers(0, 50), st.integers(0, 50)), max_size=8))
def test_subtract_matches_set_difference(present, removed):
    base = (0, 50)
    removed = [(min(a, b), max(a, b)) for a, b in removed]
    result = subtract_intervals(base, removed)
    expected = {i for i in range(*base)} - {i for a, b in removed for i in range(a, b)}
    got = {i for a, b in result for i in range(a, b)}
    assert got == expected
    assert result == merge_intervals(result)  # disjoint, sorted, not touching
