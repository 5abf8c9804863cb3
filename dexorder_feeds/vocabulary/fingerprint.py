"""The content hash of a set of candles: equal candles give equal hashes, on any machine.

Defined in docs/reproducibility.md ("The content hash"); changing the encoding is a breaking change.
"""

from __future__ import annotations

import hashlib
import struct
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

__all__ = ["CONTENT_HASH_VERSION", "HASHED_COLUMNS", "content_hash", "table_content_hash"]

CONTENT_HASH_VERSION = "dexorder-candles-v1"
HASHED_COLUMNS = ("timestamp", "open", "high", "low", "close", "volume", "buy_vol", "sell_vol", "open_interest")
_PARALLEL_ROWS = 100_000  # above this, columns are hashed on two threads (hashlib releases the GIL)


def _column_digest(frame: Any, name: str, rows: int) -> bytes:
    """SHA-256 of one column: one byte per row (1 present, 0 null), then int64 LE values (0 if null)."""
    if name in frame.columns:
        column = frame[name]
        present = column.notna().to_numpy(dtype=bool)
        values = column.to_numpy(dtype="int64", na_value=0).astype("<i8", copy=False)
    else:
        present = np.zeros(rows, dtype=bool)
        values = np.zeros(rows, dtype="<i8")
    digest = hashlib.sha256(name.encode() + b"\0")
    digest.update(present.view(np.uint8).tobytes() if present.dtype == bool else present.astype(np.uint8).tobytes())
    digest.update(np.ascontiguousarray(values).data)
    return digest.digest()


def _arrow_column_digest(table: Any, name: str, rows: int, names: frozenset[str]) -> bytes:
    """:func:`_column_digest` of a column of a ``pyarrow.Table`` (no pandas: a few µs per column)."""
    digest = hashlib.sha256(name.encode() + b"\0")
    if name not in names:
        digest.update(bytes(rows))
        digest.update(bytes(8 * rows))
        return digest.digest()
    column = table.column(name)
    if column.null_count == 0:
        digest.update(b"\x01" * rows)
        for chunk in column.chunks:  # the int64 data buffers as they are (little-endian on every platform we run)
            if len(chunk):
                digest.update(memoryview(chunk.buffers()[1])[chunk.offset * 8:(chunk.offset + len(chunk)) * 8])
    else:
        import pyarrow.compute as pc

        digest.update(column.is_valid().to_numpy(zero_copy_only=False).view(np.uint8).tobytes())
        digest.update(np.ascontiguousarray(pc.fill_null(column, 0).to_numpy(), dtype="<i8").data)
    return digest.digest()


def table_content_hash(table: Any, ticker: str, period_seconds: int, price_decimals: int,
                       volume_decimals: int) -> str | None:
    """:func:`content_hash` of a ``pyarrow.Table`` of candles whose timestamps strictly increase
    (None otherwise: hash the frame). The same value, without pandas' per-column overhead."""
    rows = table.num_rows
    if rows > 1:
        stamps = table.column("timestamp").to_numpy()
        if not bool(np.all(stamps[1:] > stamps[:-1])):
            return None
    names = frozenset(table.column_names)
    if rows >= _PARALLEL_ROWS:
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="dexorder-hash") as pool:
            digests = list(pool.map(lambda name: _arrow_column_digest(table, name, rows, names), HASHED_COLUMNS))
    else:
        digests = [_arrow_column_digest(table, name, rows, names) for name in HASHED_COLUMNS]
    return _combine(digests, ticker, period_seconds, price_decimals, volume_decimals, rows)


def _combine(digests: list[bytes], ticker: str, period_seconds: int, price_decimals: int, volume_decimals: int,
             rows: int) -> str:
    total = hashlib.sha256(CONTENT_HASH_VERSION.encode() + b"\0" + str(ticker).encode() + b"\0")
    total.update(struct.pack("<qiiq", int(period_seconds), int(price_decimals), int(volume_decimals), rows))
    for digest in digests:
        total.update(digest)
    return "sha256:" + total.hexdigest()


def content_hash(frame: Any, ticker: str, period_seconds: int, price_decimals: int, volume_decimals: int) -> str:
    """``"sha256:<hex>"`` naming the candles of ``frame`` (the seed's integer columns).

    SHA-256 over: the version string, ticker, period, decimals and row count, then the digest of
    each of :data:`HASHED_COLUMNS` in order (see :func:`_column_digest`), rows sorted by time.
    """
    rows = len(frame)
    if rows > 1 and "timestamp" in frame.columns:
        stamps = frame["timestamp"].to_numpy(dtype="int64")
        if not bool(np.all(stamps[1:] > stamps[:-1])):
            frame = frame.sort_values("timestamp", kind="stable")
    if rows >= _PARALLEL_ROWS:
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="dexorder-hash") as pool:
            digests = list(pool.map(lambda name: _column_digest(frame, name, rows), HASHED_COLUMNS))
    else:
        digests = [_column_digest(frame, name, rows) for name in HASHED_COLUMNS]
    return _combine(digests, ticker, period_seconds, price_decimals, volume_decimals, rows)
