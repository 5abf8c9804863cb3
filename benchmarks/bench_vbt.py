"""B7: ``vbt.DexOrderData.download`` of several symbols with gaps, concurrently vs one at a time.

Each symbol's range is stored except for three gaps, so every download fills three gaps through
the embedded historian before it reads. One ``download`` of all symbols (the adapter fetches
them concurrently) is timed against a download per symbol, one after the other, of another set
of symbols with the same gaps (so both start from the same warehouse state). Run for 10 symbols
(the goal) and again for 20, each in a fresh warehouse.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import DAY, START_2025, Result, Size  # noqa: E402


def _gaps(start: int, days: int) -> list[tuple[int, int]]:
    """Three gaps of a tenth of the range each."""
    span = days * DAY
    return [(start + span * k // 10, start + span * (k + 1) // 10) for k in (2, 5, 8)]


def _seed(uri: str, symbols: list[str], start: int, stop: int, gaps: list[tuple[int, int]]) -> None:
    """Store the range of every symbol except the gaps (through the historian, untimed)."""
    from dexorder_feeds.storage.catalog import open_catalog
    from dexorder_feeds.ingest.historian import Historian
    from dexorder_feeds.storage.warehouse import Warehouse
    from dexorder_feeds.wire import HistoryRequest

    warehouse = Warehouse(open_catalog(uri))
    historian = Historian(warehouse)
    pieces, cursor = [], start
    for lo, hi in gaps:
        pieces.append((cursor, lo))
        cursor = hi
    pieces.append((cursor, stop))
    for symbol in symbols:
        for lo, hi in pieces:
            note = historian.handle(HistoryRequest(request_id=f"seed-{symbol}-{lo}", client_id="bench", ticker=symbol,
                                                   period_seconds=3600, start_time=lo, end_time=hi - 1))
            if note.error_message:
                raise RuntimeError(note.error_message)
    warehouse.close()


def _speedup(size: Size, base_dir: Path, symbols: int) -> tuple[float, float]:
    """(concurrent seconds, one-at-a-time seconds) for ``symbols`` symbols, in a fresh warehouse."""
    import vectorbt as vbt

    import dexorder_feeds  # noqa: F401  (adds vbt.DexOrderData)

    base_dir.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{base_dir / 'catalog.db'}"
    start, stop = START_2025 - size.b7_days * DAY, START_2025
    gaps = _gaps(start, size.b7_days)
    together = [f"SIM:C{i}/USDT" for i in range(symbols)]
    one_by_one = [f"SIM:S{i}/USDT" for i in range(symbols)]
    _seed(uri, together + one_by_one, start, stop, gaps)
    options: dict[str, Any] = dict(start=start, end=stop - 1, timeframe="1h", iceberg_catalog_uri=uri,
                                   show_progress=False)  # time the fetches, not the bars (on by default)
    vbt.DexOrderData.download(["SIM:WARM/USDT"], **options)  # start the client and the historian

    began = time.perf_counter()
    concurrent = vbt.DexOrderData.download(together, **options)
    concurrent_s = time.perf_counter() - began
    began = time.perf_counter()
    singles = [vbt.DexOrderData.download(symbol, **options) for symbol in one_by_one]
    sequential_s = time.perf_counter() - began

    rows = size.b7_days * 24
    close = concurrent.get("Close")
    assert close.shape == (rows, symbols) and not close.isna().any().any(), close.shape
    assert all(len(single.get("Close")) == rows for single in singles)
    return concurrent_s, sequential_s


def bench_b7(size: Size, base_dir: Path) -> Result:
    concurrent_s, sequential_s = _speedup(size, base_dir / "first", size.b7_symbols)
    more = 2 * size.b7_symbols
    more_concurrent_s, more_sequential_s = _speedup(size, base_dir / "more", more)
    rows = size.b7_days * 24
    result = Result(
        "B7", "vbt.DexOrderData.download with gaps",
        f"ours concurrent {concurrent_s:.2f} s | anchor one at a time {sequential_s:.2f} s | "
        f"speed-up {sequential_s / concurrent_s:.2f}x",
        figures={"concurrent_s": concurrent_s, "sequential_s": sequential_s,
                 "speedup": sequential_s / concurrent_s, f"concurrent_{more}_s": more_concurrent_s,
                 f"sequential_{more}_s": more_sequential_s, f"speedup_{more}": more_sequential_s / more_concurrent_s},
    )
    result.details.append(f"{size.b7_symbols} symbols x {rows:,} hourly candles, 3 gaps each "
                          f"({3 * rows // 10:,} candles per symbol) filled by the embedded historian")
    result.details.append(f"{more} symbols: concurrent {more_concurrent_s:.2f} s | one at a time "
                          f"{more_sequential_s:.2f} s | speed-up {more_sequential_s / more_concurrent_s:.2f}x")
    result.goals[f"speed-up >= 8x for {size.b7_symbols} symbols"] = sequential_s / concurrent_s >= 8
    return result
