"""Whole-period interval arithmetic."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from dexorder_feeds.vocabulary.periods import MONTH, period_end, period_starts
from dexorder_feeds.vocabulary.ranges import (
    candle_interval,
    intersect_intervals,
    intervals_from_timestamps,
    merge_intervals,
    split_interval,
    subtract_from_all,
    subtract_intervals,
    timestamps_inside,
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
    assert intervals_from_timestamps([7 * H], H) == [(7 * H, 8 * H)]


def _runs_one_by_one(stamps: list[int], period: int) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for t in sorted(set(stamps)):
        stop = period_end(period, t)
        if runs and runs[-1][1] == t:
            runs[-1] = (runs[-1][0], stop)
        else:
            runs.append((t, stop))
    return runs


@given(st.lists(st.integers(0, 40), max_size=40), st.sampled_from([60, 3600, MONTH]), st.booleans())
def test_runs_of_timestamps_match_one_by_one(slots, period, keep_order):
    """The one-diff fast path (sorted unique input) and the sorting path give the runs a loop gives."""
    stamps = [int(period_starts(period, 0, 10**15)[s]) if period == MONTH else s * period * 1_000_000 for s in slots]
    if keep_order:
        stamps = sorted(set(stamps))
    expected = _runs_one_by_one(stamps, period)
    assert intervals_from_timestamps(stamps, period * 1_000_000) == expected
    assert intervals_from_timestamps(np.array(stamps, dtype=np.int64), period * 1_000_000) == expected


@given(st.lists(st.integers(0, 50), max_size=30), st.lists(st.tuples(st.integers(0, 50), st.integers(0, 50)), max_size=8))
def test_subtract_matches_set_difference(present, removed):
    base = (0, 50)
    removed = [(min(a, b), max(a, b)) for a, b in removed]
    result = subtract_intervals(base, removed)
    expected = {i for i in range(*base)} - {i for a, b in removed for i in range(a, b)}
    got = {i for a, b in result for i in range(a, b)}
    assert got == expected
    assert result == merge_intervals(result)  # disjoint, sorted, not touching


sweep_intervals = st.lists(st.tuples(st.integers(0, 60), st.integers(1, 12)).map(lambda t: (t[0], t[0] + t[1])),
                     max_size=8)


def points(ivs: list[tuple[int, int]]) -> set[int]:
    return {p for a, b in ivs for p in range(a, b)}


@given(sweep_intervals, sweep_intervals)
def test_intersect_subtract_and_inside_agree_with_point_sets(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> None:
    clipped, left = intersect_intervals(a, b), subtract_from_all(a, b)
    assert points(clipped) == points(a) & points(b)
    assert points(left) == points(a) - points(b)
    assert all(x < y for x, y in clipped + left)
    merged = merge_intervals(a)
    ts = np.arange(0, 80, dtype=np.int64)
    assert set(ts[timestamps_inside(ts, merged)].tolist()) == points(a)


def test_split_interval_cuts_whole_periods_of_at_most_the_limit():
    day = 24 * H
    assert split_interval((0, 10 * H), 3600, 4) == [(0, 4 * H), (4 * H, 8 * H), (8 * H, 10 * H)]
    assert split_interval((0, 2 * day), 86400, 5) == [(0, 2 * day)]
    assert split_interval((5, 5), 3600, 4) == []
