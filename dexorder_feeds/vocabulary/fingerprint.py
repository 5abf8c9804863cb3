"""The content hash of a set of candles: equal candles give equal hashes, on any machine.

Defined in docs/reproducibility.md ("The content hash"); changing the encoding is a breaking change.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any

import numpy as np

__all__ = ["CONTENT_HASH_VERSION", "HASHED_COLUMNS", "content_hash"]

CONTENT_HASH_VERSION = "dexorder-candles-v1"
HASHED_COLUMNS = ("timestamp", "open", "high", "low", "close", "volume", "buy_vol", "sell_vol", "open_interest")


def _column(frame: Any, name: str, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """(present flags as uint8, little-endian int64 values with 0 where absent) of one column."""
    if name not in frame.columns:
        return np.zeros(rows, dtype=np.uint8), np.zeros(rows, dtype="<i8")
    column = frame[name]
    present = column.notna().to_numpy(dtype=bool)
    values = column.to_numpy(dtype="int64", na_value=0)
    return present.astype(np.uint8), values.astype("<i8", copy=False)


def content_hash(frame: Any, ticker: str, period_seconds: int, price_decimals: int, volume_decimals: int) -> str:
    """``"sha256:<hex>"`` over the candles of ``frame`` (the seed's integer columns), sorted by time.

    The encoding: the version string, ticker, period and decimals, the row count, then for each
    of :data:`HASHED_COLUMNS` its name, one byte per row (1 present, 0 null) and the values as
    little-endian int64 (0 where null).
    """
    rows = len(frame)
    if rows and "timestamp" in frame.columns:
        stamps = frame["timestamp"].to_numpy(dtype="int64")
        if not bool(np.all(stamps[1:] > stamps[:-1])):
            frame = frame.sort_values("timestamp", kind="stable")
    digest = hashlib.sha256()
    digest.update(CONTENT_HASH_VERSION.encode() + b"\0" + str(ticker).encode() + b"\0")
    digest.update(struct.pack("<qiiq", int(period_seconds), int(price_decimals), int(volume_decimals), rows))
    for name in HASHED_COLUMNS:
        present, values = _column(frame, name, rows)
        digest.update(name.encode() + b"\0")
        digest.update(present.tobytes())
        digest.update(values.tobytes())
    return "sha256:" + digest.hexdigest()
