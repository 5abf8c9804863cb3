"""Coarser candles from finer ones, exactly, on integers.

A coarse candle is built from the fine candles of its period: ``open`` of the first, ``high``
the maximum, ``low`` the minimum, ``close`` of the last, ``volume``/``buy_vol``/``sell_vol``
summed, ``open_interest`` of the last. Only **complete** periods give a candle: when any fine
candle of a coarse period is absent, that coarse period has no candle (a gap, as it would be at
the source), never a candle built from part of the period. A sum over a column with a missing
value (``buy_vol`` not known for one hour) is missing; ``open_interest`` is the last candle's,
missing if the last candle has none.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .periods import divides, period_end_array, period_floor_array, period_label

__all__ = ["aggregate_candles", "coarsest_divisor"]

_FIRST = ("open",)
_LAST = ("close", "open_interest")
_MAX = ("high",)
_MIN = ("low",)
_SUM = ("volume", "buy_vol", "sell_vol")


def coarsest_divisor(coarse: int, offered: list[int] | tuple[int, ...] | set[int]) -> int | None:
    """The coarsest offered period that divides ``coarse`` exactly (fewest candles to read).

    None when none does. ``coarse`` itself is not considered.
    """
    candidates = [p for p in offered if p != coarse and p < coarse and divides(p, coarse)]
    return max(candidates) if candidates else None


def aggregate_candles(frame: pd.DataFrame, fine: int, coarse: int) -> pd.DataFrame:
    """``frame``'s ``fine`` candles (integer values, ``timestamp`` µs) as ``coarse`` candles.

    Returns the value columns present in ``frame`` (nullable ``Int64`` where a value may be
    missing, else ``int64``), one row per complete coarse period, sorted by timestamp. Other
    columns (``ticker``, ``period_seconds``) are not carried; callers add them.
    """
    if not divides(fine, coarse):
        raise ValueError(f"{period_label(fine)} candles do not divide {period_label(coarse)} periods exactly")
    ts = frame["timestamp"].to_numpy(dtype=np.int64)
    order = np.argsort(ts, kind="stable")
    if ts.size and np.any(np.diff(ts[order]) == 0):
        raise ValueError("two fine candles share a timestamp; de-duplicate before aggregating")
    ts = ts[order]
    columns = [c for c in (*_FIRST, *_MAX, *_MIN, *_LAST, *_SUM) if c in frame.columns]
    out: dict[str, object] = {}
    if ts.size == 0:
        out["timestamp"] = np.empty(0, dtype=np.int64)
        for name in columns:
            out[name] = pd.array([], dtype="Int64")
        return pd.DataFrame(out)
    group_ts = period_floor_array(coarse, ts)
    starts = np.flatnonzero(np.concatenate(([True], group_ts[1:] != group_ts[:-1])))
    counts = np.diff(np.concatenate((starts, [ts.size])))
    heads = group_ts[starts]
    expected = (period_end_array(coarse, heads) - heads) // (fine * 1_000_000)
    complete = counts == expected
    lasts = starts + counts - 1
    out["timestamp"] = heads[complete]
    for name in columns:
        series = frame[name]
        missing = series.isna().to_numpy()[order]
        values = series.to_numpy(dtype=np.int64, na_value=0)[order] if missing.any() else \
            series.to_numpy(dtype=np.int64)[order]
        if name in _FIRST:
            result, absent = values[starts], missing[starts]
        elif name in _LAST:
            result, absent = values[lasts], missing[lasts]
        elif name in _MAX:
            result = np.maximum.reduceat(np.where(missing, np.iinfo(np.int64).min, values), starts)
            absent = np.logical_and.reduceat(missing, starts)
        elif name in _MIN:
            result = np.minimum.reduceat(np.where(missing, np.iinfo(np.int64).max, values), starts)
            absent = np.logical_and.reduceat(missing, starts)
        else:
            result = np.add.reduceat(values, starts)
            absent = np.logical_or.reduceat(missing, starts)
        result, absent = result[complete], absent[complete]
        if absent.any():
            out[name] = pd.arrays.IntegerArray(np.where(absent, 0, result).astype(np.int64), absent)
        else:
            out[name] = result.astype(np.int64)
    return pd.DataFrame(out)
