"""B1–B3: the warm read path against pyarrow alone and a naive pyiceberg scan.

B1  warm small fetch: ``OHLCClient.fetch_ohlc`` of one week of hourly candles (168 rows) from
    the generated warehouse, against (a) pyarrow reading the same data files with the same
    filter into a DataFrame (the limit) and (b) a naive ``load_table`` + ``scan(row_filter=...)``
    + ``to_pandas()``. Median over several weeks of several tickers, interleaved rounds.
B2  warm bulk fetch of the 1-minute run (1M+ candles at full size) into the DataFrame, against
    pyarrow reading the same files into the same DataFrame; peak memory of each in a fresh
    process, beside the frame's own size.
B3  1,000 small gap fills (6 hours each, in random order) of one ticker through the embedded
    historian with automatic maintenance, then B1 on weeks holding filled gaps, against the
    same after ``dexorder-feeds compact`` (a freshly compacted table).

``python benchmarks/bench_read.py memory ours|anchor URI TICKER PERIOD START STOP`` is the
child process that measures B2's peak memory.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    DAY,
    H,
    M,
    MINUTE_TICKER,
    START_2025,
    WEEK,
    Result,
    Size,
    interleaved,
    median,
    ms,
    naive_scan_frame,
    partition_paths,
    pyarrow_frame,
    timed,
)

GAPS_TICKER = "SIM:GAPS/USDT"
HOLE_HOURS = 6


class Session:
    """An embedded ``OHLCClient`` on its own event loop, for timing ``fetch_ohlc`` calls."""

    def __init__(self, uri: str) -> None:
        from dexorder_feeds.client.ohlc_client import OHLCClient

        self.loop = asyncio.new_event_loop()
        self.client = OHLCClient(iceberg_catalog_uri=uri)
        self.loop.run_until_complete(self.client.start())

    def fetch(self, ticker: str, period: int, start: int, stop: int) -> Any:
        return self.loop.run_until_complete(self.client.fetch_ohlc(ticker, period, start, stop - 1))

    def timed_fetch(self, ticker: str, period: int, start: int, stop: int) -> tuple[float, Any]:
        async def run() -> tuple[float, Any]:
            began = time.perf_counter()
            frame = await self.client.fetch_ohlc(ticker, period, start, stop - 1)
            return time.perf_counter() - began, frame

        return self.loop.run_until_complete(run())

    @property
    def warehouse(self) -> Any:
        return self.client.iceberg.warehouse

    def close(self) -> None:
        self.loop.run_until_complete(self.client.stop())
        self.loop.close()


def _small_fetch_samples(session: Session, queries: list[tuple[str, int]], rounds: int,
                         naive: bool = True) -> dict[str, list[float]]:
    """Interleaved samples of ours, pyarrow alone and (optionally) the naive scan, per query."""
    warehouse = session.warehouse
    catalog, namespace = warehouse.catalog, warehouse.namespace
    paths = {ticker: partition_paths(warehouse, ticker, 3600) for ticker, _ in queries}
    for ticker, start in queries:  # warm, and check that all three return the same candles
        ours = session.fetch(ticker, 3600, start, start + WEEK)
        limit = pyarrow_frame(paths[ticker], start, start + WEEK)
        assert len(ours) == 168 and ours["timestamp"].tolist() == sorted(limit["timestamp"].tolist()), ticker
        if naive:
            assert len(naive_scan_frame(catalog, namespace, ticker, 3600, start, start + WEEK)) == 168
    variants = {
        "ours": lambda ticker, start: session.timed_fetch(ticker, 3600, start, start + WEEK)[0],
        "pyarrow": lambda ticker, start: timed(lambda: pyarrow_frame(paths[ticker], start, start + WEEK))[0],
    }
    if naive:
        variants["naive"] = lambda ticker, start: timed(
            lambda: naive_scan_frame(catalog, namespace, ticker, 3600, start, start + WEEK))[0]
    samples: dict[str, list[float]] = {name: [] for name in ("ours", "pyarrow", "naive")}
    names = list(variants)
    for round_ in range(rounds):
        # Blocks of one variant over every query (a backtest's loop), block order rotating per
        # round so a busy moment of a shared machine hurts each variant alike.
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:
            gc.collect()
            samples[name] += [variants[name](ticker, start) for ticker, start in queries]
    return samples


def bench_b1(uri: str, size: Size, generated: dict[str, Any], workdir: Path) -> Result:
    rng = random.Random(1)
    tickers = generated["hourly"]
    first_week = (size.hourly_start // H + 24) * H
    queries = [(tickers[i % len(tickers)], first_week + rng.randrange(0, (START_2025 - WEEK - first_week) // H) * H)
               for i in range(size.b1_weeks)]
    session = Session(uri)
    try:
        samples = _small_fetch_samples(session, queries, size.b1_rounds)
        reader = session.warehouse.reader
        cache_bytes, reader.row_group_cache_bytes = reader.row_group_cache_bytes, 0
        try:  # the same without the decoded row-group cache: what decoding costs each time
            uncached = _small_fetch_samples(session, queries, max(2, size.b1_rounds // 3), naive=False)
        finally:
            reader.row_group_cache_bytes = cache_bytes
        arctic = _arctic_samples(session, size, workdir, [(t, 3600, s, s + WEEK) for t, s in queries],
                                 {(t, 3600): (size.hourly_start, START_2025) for t in {t for t, _ in queries}},
                                 size.b1_rounds)
        from dexorder_feeds import fetch_ohlc

        ticker, start = queries[0]
        sync_samples = [timed(lambda: fetch_ohlc(ticker, 3600, start, start + WEEK - 1, iceberg_catalog_uri=uri))[0]
                        for _ in range(max(5, size.b1_rounds * 3))]
    finally:
        session.close()
    ours, limit, naive = median(samples["ours"]), median(samples["pyarrow"]), median(samples["naive"])
    result = Result(
        "B1", "warm small fetch",
        f"ours {ms(ours)} | anchor(a) pyarrow {ms(limit)} | ratio {ours / limit:.2f} | "
        f"anchor(b) naive {ms(naive)} | speed-up {naive / ours:.1f}x",
        figures={"ours_ms": ours * 1e3, "pyarrow_ms": limit * 1e3, "naive_ms": naive * 1e3,
                 "ratio": ours / limit, "speedup": naive / ours},
    )
    result.details.append(
        f"{len(queries)} weeks x 168 hourly candles of {len(tickers)} tickers, {generated['rows']:,} candles in the "
        f"warehouse; medians of {len(samples['ours'])} fetches each, in blocks per variant, rounds interleaved")
    result.details.append(f"sync face dexorder_feeds.fetch_ohlc: {ms(median(sync_samples))} "
                          f"(ours above is await OHLCClient.fetch_ohlc)")
    no_cache, no_cache_limit = median(uncached["ours"]), median(uncached["pyarrow"])
    result.details.append(f"ours with the decoded row-group cache off (decoding every time, like the anchor): "
                          f"{ms(no_cache)} vs pyarrow {ms(no_cache_limit)}, ratio {no_cache / no_cache_limit:.2f}")
    result.figures["ours_no_row_group_cache_ms"] = no_cache * 1e3
    result.figures["ratio_no_row_group_cache"] = no_cache / no_cache_limit
    result.goals["ours <= 1.2x pyarrow"] = ours <= 1.2 * limit
    result.goals[">= 10x faster than naive"] = naive >= 10 * ours
    _report_arctic(result, arctic, "168 hourly candles", "168")
    return result


# -- ArcticDB, the anchor a quant would pick instead (anchor_arcticdb.py) ---------------------
def _arctic(size: Size, workdir: Path) -> tuple[Any, str]:
    from anchor_arcticdb import arcticdb_anchor

    return arcticdb_anchor(workdir, build=not size.tiny)


def _arctic_load(session: Session, anchor: Any, ranges: dict[tuple[str, int], tuple[int, int]]) -> None:
    """Store in ArcticDB the very candles a fetch returns (once per ticker and period)."""
    for (ticker, period), (start, stop) in ranges.items():
        symbol = f"{ticker}@{period}"
        if symbol not in anchor.symbols:
            anchor.write(symbol, session.fetch(ticker, period, start, stop))


def _arctic_samples(session: Session, size: Size, workdir: Path, queries: list[tuple[str, int, int, int]],
                    ranges: dict[tuple[str, int], tuple[int, int]], rounds: int) -> dict[str, Any] | str:
    """Interleaved samples of ours (``fetch_ohlc``) and ArcticDB (``library.read`` with a
    ``date_range``) on the same ``(ticker, period, start, stop)`` queries, or why there are none."""
    anchor, reason = _arctic(size, workdir)
    if anchor is None:
        return reason
    _arctic_load(session, anchor, ranges)
    for ticker, period, start, stop in queries:  # warm both, and check they return the same rows
        ours_rows = len(session.fetch(ticker, period, start, stop))
        theirs_rows = anchor.read(f"{ticker}@{period}", start, stop)[1]
        assert ours_rows == theirs_rows, (ticker, start, stop, ours_rows, theirs_rows)
    variants = {
        "ours": lambda q: session.timed_fetch(q[0], q[1], q[2], q[3])[0],
        "arcticdb": lambda q: anchor.read(f"{q[0]}@{q[1]}", q[2], q[3])[0],
    }
    samples: dict[str, Any] = {"ours": [], "arcticdb": [], "version": anchor.version}
    for round_ in range(rounds):
        for name in (("ours", "arcticdb") if round_ % 2 == 0 else ("arcticdb", "ours")):
            gc.collect()
            samples[name] += [variants[name](q) for q in queries]
    return samples


def _report_arctic(result: Result, samples: dict[str, Any] | str, what: str, key: str, goal: bool = True) -> None:
    """An ``anchor(c) ArcticDB`` detail line, its figures and its goal (ours <= 1.0x)."""
    if isinstance(samples, str):
        result.details.append(f"anchor(c) ArcticDB, {what}: anchor unavailable: {samples}")
        return
    ours, theirs = median(samples["ours"]), median(samples["arcticdb"])
    result.details.append(f"anchor(c) ArcticDB {samples['version']} (LMDB), {what}: ours {ms(ours)} | "
                          f"ArcticDB {ms(theirs)} | ratio {ours / theirs:.2f} "
                          f"(medians of {len(samples['ours'])}, alternating)")
    result.figures[f"arcticdb_{key}_ms"] = theirs * 1e3
    result.figures[f"ours_vs_arcticdb_{key}_ms"] = ours * 1e3
    result.figures[f"ratio_arcticdb_{key}"] = ours / theirs
    if goal:
        result.goals[f"{what}: ours <= 1.0x ArcticDB"] = ours <= theirs


# -- B2 --------------------------------------------------------------------------------------
def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmHWM")


def _release_memory() -> None:
    import ctypes

    gc.collect()
    pa.default_memory_pool().release_unused()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def memory_child(variant: str, uri: str, ticker: str, period: int, start: int, stop: int) -> dict[str, Any]:
    """In a fresh process: warm up, then the peak RSS of one bulk fetch above the RSS before it."""
    from dexorder_feeds.storage.catalog import open_catalog
    from dexorder_feeds.storage.warehouse import Warehouse

    if variant == "ours":
        session = Session(uri)

        def run() -> Any:
            return session.fetch(ticker, period, start, stop)
    else:
        paths = partition_paths(Warehouse(open_catalog(uri)), ticker, period)

        def run() -> Any:
            return pyarrow_frame(paths, start, stop, same_dtypes=True)

    frame = run()
    rows = len(frame)
    del frame
    _release_memory()
    before = _rss()
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # reset the peak RSS to the current RSS
    frame = run()
    peak = _peak_rss() - before
    return {"rows": rows, "peak_bytes": peak, "frame_bytes": int(frame.memory_usage(deep=True).sum())}


def _measure_memory(variant: str, uri: str, ticker: str, period: int, start: int, stop: int) -> dict[str, Any] | None:
    # Arrow on malloc, and malloc returning every large block to the system when it is freed: the
    # peak RSS then follows the bytes alive, not what an allocator kept around after a free.
    env = dict(os.environ, ARROW_DEFAULT_MEMORY_POOL="system", MALLOC_MMAP_THRESHOLD_="65536")
    command = [sys.executable, __file__, "memory", variant, uri, ticker, str(period), str(start), str(stop)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    if done.returncode != 0:
        print(f"    (peak memory of {variant} not measured: {done.stderr.strip().splitlines()[-1:]})", flush=True)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_b2(uri: str, size: Size, generated: dict[str, Any], workdir: Path) -> Result:
    start, stop = generated["minute_range"]
    session = Session(uri)
    try:
        paths = partition_paths(session.warehouse, MINUTE_TICKER, 60)
        ours_frame = session.fetch(MINUTE_TICKER, 60, start, stop)
        limit_frame = pyarrow_frame(paths, start, stop, same_dtypes=True)
        import pandas as pd

        pd.testing.assert_frame_equal(ours_frame, limit_frame.sort_values("timestamp", ignore_index=True))
        rows = len(ours_frame)
        frame_bytes = int(ours_frame.memory_usage(deep=True).sum())
        del ours_frame, limit_frame
        samples = interleaved({
            "ours": lambda: session.fetch(MINUTE_TICKER, 60, start, stop),
            "pyarrow": lambda: pyarrow_frame(paths, start, stop, same_dtypes=True),
        }, size.b2_rounds)
        stored_bytes = sum(os.path.getsize(path) for path in paths)
        ranges = {(MINUTE_TICKER, 60): (start, stop)}
        arctic_bulk = _arctic_samples(session, size, workdir, [(MINUTE_TICKER, 60, start, stop)], ranges,
                                      max(5, size.b2_rounds))
        rng = random.Random(2)
        offsets = [start + rng.randrange(0, (stop - start) // M - 10_080) * M for _ in range(size.b1_weeks)]
        arctic_week = _arctic_samples(session, size, workdir, [(MINUTE_TICKER, 60, o, o + 10_080 * M) for o in offsets],
                                      ranges, size.b1_rounds)
        arctic_168 = _arctic_samples(session, size, workdir, [(MINUTE_TICKER, 60, o, o + 168 * M) for o in offsets],
                                     ranges, size.b1_rounds)
        reader = session.warehouse.reader
        cache_bytes, reader.row_group_cache_bytes = reader.row_group_cache_bytes, 0
        try:  # the same with the decoded row-group cache off: every read decodes, as ArcticDB's does
            arctic_uncached = [
                _arctic_samples(session, size, workdir, [(MINUTE_TICKER, 60, start, stop)], ranges,
                                max(5, size.b2_rounds)),
                _arctic_samples(session, size, workdir, [(MINUTE_TICKER, 60, o, o + 10_080 * M) for o in offsets],
                                ranges, max(2, size.b1_rounds // 3)),
                _arctic_samples(session, size, workdir, [(MINUTE_TICKER, 60, o, o + 168 * M) for o in offsets],
                                ranges, max(2, size.b1_rounds // 3)),
            ]
        finally:
            reader.row_group_cache_bytes = cache_bytes
    finally:
        session.close()
    ours, limit = median(samples["ours"]), median(samples["pyarrow"])
    result = Result(
        "B2", "warm bulk fetch",
        f"ours {ms(ours)} | anchor pyarrow into the same DataFrame {ms(limit)} | ratio {ours / limit:.2f}",
        figures={"ours_ms": ours * 1e3, "pyarrow_ms": limit * 1e3, "ratio": ours / limit, "rows": rows},
    )
    result.details.append(f"{rows:,} one-minute candles in {len(paths)} data files; DataFrame {frame_bytes / 1e6:.0f} MB; "
                          f"median of {len(samples['ours'])} interleaved fetches")
    result.goals["ours <= 1.2x pyarrow"] = ours <= 1.2 * limit
    per_candle = stored_bytes / rows
    result.details.append(f"storage: {stored_bytes / 1e6:.1f} MB of data files = {per_candle:.1f} bytes per "
                          f"1-minute candle (freqtrade's feather files: about 27)")
    result.figures["bytes_per_candle"] = per_candle
    result.goals["storage <= 27 bytes per 1-minute candle"] = per_candle <= 27
    _report_arctic(result, arctic_bulk, f"all {rows:,} candles", "bulk")
    _report_arctic(result, arctic_week, "a week of 1-minute candles (10,080) at varying offsets", "week")
    _report_arctic(result, arctic_168, "168 1-minute candles at varying offsets", "168")
    for samples, what, key in zip(arctic_uncached, ("all candles", "a week", "168 candles"),
                                  ("bulk", "week", "168")):
        _report_arctic(result, samples, f"{what}, our decoded row-group cache off", f"{key}_no_cache", goal=False)
    memory = {v: _measure_memory(v, uri, MINUTE_TICKER, 60, start, stop) for v in ("ours", "anchor")}
    if memory["ours"] is not None:
        ours_peak = memory["ours"]["peak_bytes"] / memory["ours"]["frame_bytes"]
        line = f"peak memory: ours {memory['ours']['peak_bytes'] / 1e6:.0f} MB = {ours_peak:.2f}x the DataFrame"
        if memory["anchor"] is not None:
            anchor_peak = memory["anchor"]["peak_bytes"] / memory["anchor"]["frame_bytes"]
            line += f" | anchor pyarrow {memory['anchor']['peak_bytes'] / 1e6:.0f} MB = {anchor_peak:.2f}x"
            result.figures["anchor_peak_x"] = anchor_peak
        result.details.append(line + " (fresh process, peak RSS above the RSS before the fetch)")
        result.figures["ours_peak_x"] = ours_peak
        result.goals["peak memory <= 2x the DataFrame"] = ours_peak <= 2.0
    return result


# -- B3 --------------------------------------------------------------------------------------
def _holes(size: Size) -> list[tuple[int, int]]:
    first = (size.hourly_start // DAY + 1) * DAY
    span_hours = (START_2025 - WEEK - first) // H
    spacing = span_hours // size.b3_fills
    return [(first + (i * spacing + spacing // 2) * H, first + (i * spacing + spacing // 2 + HOLE_HOURS) * H)
            for i in range(size.b3_fills)]


def _seed_with_holes(warehouse: Any, start: int, stop: int, holes: list[tuple[int, int]]) -> None:
    """Store every candle of [start, stop) but the holes, and record the rest as covered, in
    one commit each (setup, not measured)."""
    from dexorder_feeds.vocabulary.markets import MarketInfo
    from dexorder_feeds.ingest.sources.sim import SimulatedSource
    from dexorder_feeds.vocabulary.tickers import parse_ticker
    from dexorder_feeds.storage.warehouse import candle_arrow_schema

    got = SimulatedSource().fetch_candles(parse_ticker(GAPS_TICKER), 3600, start, stop)
    frame = got.frame
    ts = frame["timestamp"].to_numpy()
    keep = np.ones(len(frame), dtype=bool)
    for lo, hi in holes:
        keep &= ~((ts >= lo) & (ts < hi))
    frame = frame[keep]
    schema = candle_arrow_schema()
    n = len(frame)
    columns = {"ticker": pa.array([GAPS_TICKER] * n, schema.field("ticker").type),
               "period_seconds": pa.array(np.full(n, 3600, dtype=np.int64))}
    for name in schema.names[2:]:
        columns[name] = (pa.array(frame[name].to_numpy(dtype=np.int64)) if name in frame.columns
                         else pa.nulls(n, pa.int64()))
    table = pa.table(columns, schema=schema)
    covered, cursor = [], start
    for lo, hi in holes:
        covered.append((cursor, lo))
        cursor = hi
    covered.append((cursor, stop))

    def write() -> None:
        warehouse.write_market(MarketInfo(GAPS_TICKER, got.market.price_decimals, got.market.volume_decimals), "sim")
        warehouse.append_new_candles(GAPS_TICKER, 3600, (start, stop), table)
        coverage = warehouse.load_table("coverage")
        now = time.time_ns() // 1000
        coverage.append(pa.Table.from_pylist(
            [{"ticker": GAPS_TICKER, "period_seconds": 3600, "start_time": lo, "end_time": hi,
              "row_count": int(((ts >= lo) & (ts < hi)).sum()), "request_id": "bench-seed", "ingested_at": now}
             for lo, hi in covered], schema=coverage.schema().as_arrow()))

    warehouse.committer.submit(write).result()


def bench_b3(uri: str, size: Size) -> Result:
    from dexorder_feeds.storage.maintenance import run_maintenance

    holes = _holes(size)
    start = (size.hourly_start // DAY) * DAY
    session = Session(uri)
    try:
        warehouse = session.warehouse
        _seed_with_holes(warehouse, start, START_2025, holes)
        order = list(range(len(holes)))
        random.Random(3).shuffle(order)
        fill_times = []
        began = time.perf_counter()
        for done, i in enumerate(order, 1):
            lo, hi = holes[i]
            seconds, frame = session.timed_fetch(GAPS_TICKER, 3600, lo, hi)
            assert len(frame) == HOLE_HOURS, (i, len(frame))
            fill_times.append(seconds)
            if not size.tiny and done % (len(order) // 5) == 0:
                print(f"    B3: {done} gap fills in {time.perf_counter() - began:.0f} s", flush=True)
        fills_seconds = time.perf_counter() - began
        warehouse.committer.submit(lambda: None).result()  # let queued automatic maintenance finish
        table = warehouse.load_table("ohlc")
        files_after = len(warehouse.reader.plan(table).partition_files((GAPS_TICKER, 3600)))
        snapshots_after = len(table.snapshots())
        rng = random.Random(5)
        weeks = [(GAPS_TICKER, (holes[i][0] // H - rng.randrange(0, 168 - HOLE_HOURS)) * H)
                 for i in rng.sample(range(len(holes)), min(size.b1_weeks, len(holes)))]
        reader = warehouse.reader
        cache_bytes = reader.row_group_cache_bytes

        def measure(naive: bool) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
            cached = _small_fetch_samples(session, weeks, size.b1_rounds, naive=naive)
            reader.row_group_cache_bytes = 0  # decode every time: what the file layout costs
            try:
                return cached, _small_fetch_samples(session, weeks, max(2, size.b1_rounds // 2), naive=False)
            finally:
                reader.row_group_cache_bytes = cache_bytes

        after, after_decoding = measure(naive=True)
        compacted, expired = run_maintenance(warehouse, keep_snapshots=1, retention_seconds=0, reader_grace_seconds=0)
        fresh, fresh_decoding = measure(naive=False)
        everything = session.fetch(GAPS_TICKER, 3600, start, START_2025)
        assert len(everything) == (START_2025 - start) // H and everything["timestamp"].is_unique
    finally:
        session.close()
    ours, base = median(after["ours"]), median(fresh["ours"])
    result = Result(
        "B3", "warm small fetch after many gap fills",
        f"ours after {len(holes)} fills {ms(ours)} | anchor: ours on the freshly compacted table {ms(base)} | "
        f"ratio {ours / base:.2f} | naive scan after the fills {ms(median(after['naive']))}",
        figures={"ours_after_ms": ours * 1e3, "ours_compacted_ms": base * 1e3, "ratio": ours / base,
                 "naive_after_ms": median(after["naive"]) * 1e3, "fill_p50_ms": median(fill_times) * 1e3},
    )
    result.details.append(
        f"{len(holes)} gap fills of {HOLE_HOURS} h in random order through the embedded historian: {fills_seconds:.0f} s, "
        f"{ms(median(fill_times))} per fill (median, a cold fetch incl. two commits); automatic maintenance left "
        f"{files_after} data files in the partition and {snapshots_after} snapshots")
    result.details.append(f"pyarrow alone on the same weeks after the fills: {ms(median(after['pyarrow']))}; "
                          f"then compact: {len(compacted)} partitions rewritten, "
                          f"{sum(e.snapshots_expired for e in expired)} snapshots expired")
    decoding, fresh_decoding_ms = median(after_decoding["ours"]), median(fresh_decoding["ours"])
    result.details.append(f"with the decoded row-group cache off (every read decodes its files): after the fills "
                          f"{ms(decoding)} | freshly compacted {ms(fresh_decoding_ms)} | ratio {decoding / fresh_decoding_ms:.2f}")
    result.figures["ratio_decoding"] = decoding / fresh_decoding_ms
    result.goals["after fills <= 1.5x freshly compacted (cache on and off)"] = (
        ours <= 1.5 * base and decoding <= 1.5 * fresh_decoding_ms)
    return result


if __name__ == "__main__":
    if len(sys.argv) == 8 and sys.argv[1] == "memory":
        _, _, variant, uri, ticker, period, start, stop = sys.argv
        print(json.dumps(memory_child(variant, uri, ticker, int(period), int(start), int(stop))))
    else:
        sys.exit("usage: run the benchmarks with python benchmarks/run.py (see benchmarks/README.md)")
