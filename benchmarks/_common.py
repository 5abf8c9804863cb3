"""Shared pieces of the benchmarks: timing, results, the generated warehouse."""

from __future__ import annotations

import gc
import os
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

H = 3_600_000_000
M = 60_000_000
DAY = 24 * H
WEEK = 7 * DAY
START_2015 = 1_420_070_400_000_000  # 2015-01-01, when every SIM market lists
START_2023 = 1_672_531_200_000_000
START_2025 = 1_735_689_600_000_000
HOURLY_TICKERS = ["BTC", "ETH", "SOL", "ADA", "XRP", "DOT", "LTC", "BNB", "AVAX", "LINK"]
MINUTE_TICKER = "SIM:BTC/USDT"


@dataclass
class Size:
    """How big a run is: the full run, or ``--tiny`` for the smoke test."""

    tiny: bool
    hourly_tickers: int
    hourly_start: int
    minute_days: int
    b1_weeks: int
    b1_rounds: int
    b2_rounds: int
    b3_fills: int
    b4_days: int
    b4_requests: int
    b7_symbols: int
    b7_days: int
    b8_runs: int

    @classmethod
    def create(cls, tiny: bool) -> Size:
        if tiny:
            return cls(True, 3, START_2025 - 365 * DAY, 10, 3, 2, 1, 12, 2, 20, 3, 10, 1)
        return cls(False, 10, START_2015, 730, 16, 12, 5, 1000, 365, 300, 10, 90, 5)


@dataclass
class Result:
    """One benchmark's figures: ours beside anchors, the ratio and whether the goal is met."""

    key: str
    title: str
    line: str
    details: list[str] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)
    goals: dict[str, bool] = field(default_factory=dict)

    def print(self) -> None:
        print(f"{self.key} {self.title}: {self.line}", flush=True)
        for detail in self.details:
            print(f"    {detail}", flush=True)
        for goal, met in self.goals.items():
            print(f"    goal {goal}: {'met' if met else 'NOT met'}", flush=True)


def ms(seconds: float) -> str:
    value = seconds * 1000
    return f"{value:.2f} ms" if value < 100 else f"{value:.0f} ms"


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    began = time.perf_counter()
    value = fn()
    return time.perf_counter() - began, value


def interleaved(variants: dict[str, Callable[[], Any]], rounds: int) -> dict[str, list[float]]:
    """Time every variant once per round, rotating the order, so a busy moment of a shared
    machine hurts them alike. Returns the samples of each variant (seconds)."""
    samples: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for round_ in range(rounds):
        gc.collect()
        order = names[round_ % len(names):] + names[:round_ % len(names)]
        for name in order:
            samples[name].append(timed(variants[name])[0])
    return samples


def local_path(uri: str) -> str:
    """A ``file://`` data file URI as the local path pyarrow opens (no percent-decoding: the
    warehouse stores partition directories with their escapes, as pyiceberg wrote them)."""
    parts = urlsplit(uri)
    return parts.path if parts.scheme == "file" else uri


def partition_paths(warehouse: Any, ticker: str, period: int) -> list[str]:
    """Local paths of the data files of one partition in the current snapshot (via pyiceberg)."""
    from pyiceberg.expressions import And, EqualTo

    table = warehouse.load_table("ohlc")
    scan = table.scan(row_filter=And(EqualTo("ticker", ticker), EqualTo("period_seconds", period)))
    return [local_path(task.file.file_path) for task in scan.plan_files()]


def naive_scan_frame(catalog: Any, namespace: str, ticker: str, period: int, start: int, stop: int) -> Any:
    """The naive way: load the table, ``scan(row_filter=...)``, ``to_pandas()``."""
    from pyiceberg.expressions import And, EqualTo, GreaterThanOrEqual, LessThan

    table = catalog.load_table((namespace, "ohlc"))
    row_filter = And(EqualTo("ticker", ticker), EqualTo("period_seconds", period),
                     GreaterThanOrEqual("timestamp", start), LessThan("timestamp", stop))
    return table.scan(row_filter=row_filter).to_pandas()


def pyarrow_frame(paths: Iterable[str], start: int, stop: int, *, same_dtypes: bool = False) -> Any:
    """The limit: pyarrow reads the same files with the same filter. With ``same_dtypes``,
    also turns the frame into the one a fetch returns (nullable columns as ``Int64``)."""
    import pyarrow.parquet as pq

    table = pq.read_table(list(paths), filters=[("timestamp", ">=", start), ("timestamp", "<", stop)],
                          partitioning=None)
    frame = table.to_pandas()
    if same_dtypes:
        for column in ("buy_vol", "sell_vol", "open_interest"):
            if frame[column].dtype.kind == "f":
                frame[column] = frame[column].astype("Int64")
    return frame


def isolate_environment(workdir: Path) -> None:
    """Keep the run away from the user's config, cache and plugins."""
    os.environ["DEXORDER_CACHE_DIR"] = str(workdir / "cache")
    os.environ["DEXORDER_CONFIG"] = str(workdir / "config.toml")
    for name in ("DEXORDER_ICEBERG_CATALOG_URI", "DEXORDER_RELAY_ENDPOINT", "DEXORDER_NOTIFICATION_ENDPOINT",
                 "DEXORDER_NAMESPACE", "DEXORDER_SOURCES"):
        os.environ.pop(name, None)


def build_warehouse(uri: str, size: Size) -> dict[str, Any]:
    """The warehouse the read benchmarks share: hourly candles of several SIM tickers and a
    long run of 1-minute candles, written by the historian the way gap fills write them (the
    minute run in the fetcher's 100,000-candle requests). Returns what was written."""
    from dexorder_feeds.storage.catalog import open_catalog
    from dexorder_feeds.ingest.historian import Historian
    from dexorder_feeds.storage.warehouse import Warehouse
    from dexorder_feeds.wire import HistoryRequest

    warehouse = Warehouse(open_catalog(uri))
    historian = Historian(warehouse)
    rows = 0
    began = time.perf_counter()

    def ingest(ticker: str, period: int, start: int, stop: int) -> None:
        nonlocal rows
        note = historian.handle(HistoryRequest(request_id=f"gen-{ticker}-{period}-{start}", client_id="bench",
                                               ticker=ticker, period_seconds=period, start_time=start,
                                               end_time=stop - 1))
        if note.error_message:
            raise RuntimeError(f"generating {ticker}: {note.error_message}")
        rows += note.row_count

    hourly = [f"SIM:{base}/USDT" for base in HOURLY_TICKERS[: size.hourly_tickers]]
    for ticker in hourly:
        ingest(ticker, 3600, size.hourly_start, START_2025)
    minute_start = START_2025 - size.minute_days * DAY
    step = 100_000 * M
    for piece in range(minute_start, START_2025, step):
        ingest(MINUTE_TICKER, 60, piece, min(piece + step, START_2025))
    warehouse.close()
    return {"rows": rows, "seconds": time.perf_counter() - began, "hourly": hourly,
            "minute_range": (minute_start, START_2025)}
