"""Run the dexorder-feeds benchmarks: each figure beside its anchor, measured in the same run.

    python benchmarks/run.py                 # the full run (4-7 minutes on 2 cores)
    python benchmarks/run.py --tiny          # a smoke run on tiny data (what the tests run)
    python benchmarks/run.py --only B1,B3    # some of them
    python benchmarks/run.py --json out.json # also write the figures as JSON

See benchmarks/README.md for what each benchmark measures and its goal.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import Result, Size, build_warehouse, isolate_environment  # noqa: E402

ALL = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B9", "LOAD")


def run_adapters(size: Size) -> list[Result]:
    """B5 and B6 live in bench_adapters.py (owned with the adapters); run it and relay its figures."""
    command = [sys.executable, str(HERE / "bench_adapters.py")] + (["--tiny"] if size.tiny else [])
    print("B5/B6: " + " ".join(Path(part).name if part.endswith(".py") else part for part in command[1:]), flush=True)
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    for line in done.stdout.splitlines():
        print(f"    {line}", flush=True)
    if done.returncode != 0:
        raise RuntimeError(f"bench_adapters.py failed:\n{done.stderr[-2000:]}")
    return [_adapter_result("B5", done.stdout, "DexOrderData (+ its read)", "PandasData", "bars/s",
                            r"ratio: DexOrderData is ([\d.]+)x faster", "DexOrderData >= 2x faster than PandasData",
                            lambda ratio, rate: ratio >= 2),
            _adapter_result("B6", done.stdout, "candles() (+ its reads)", "the same Decimals alone", "candles/s",
                            r"ratio: the iterator runs at ([\d.]+)x", ">= 250,000 candles/s",
                            lambda ratio, rate: rate >= 250_000)]


def _adapter_result(key: str, out: str, ours: str, anchor: str, unit: str, ratio_pattern: str, goal: str,
                    met: Any) -> Result:
    """A Result from bench_adapters.py's lines ``<name>  <seconds> s  <rate> <unit>`` and its ratio line."""

    def figure(name: str) -> tuple[float, float]:
        match = re.search(rf"{re.escape(name)} +([\d.]+) s +([\d,]+) {re.escape(unit)}", out)
        if match is None:
            raise RuntimeError(f"bench_adapters.py printed no line for {name!r}")
        return float(match.group(1)), float(match.group(2).replace(",", ""))

    (ours_s, ours_rate), (anchor_s, anchor_rate) = figure(ours), figure(anchor)
    ratio_match = re.search(ratio_pattern, out)
    their_ratio = float(ratio_match.group(1)) if ratio_match else anchor_s / ours_s
    title = "backtrader feed" if key == "B5" else "Decimal candle iterator"
    result = Result(key, f"{title} (bench_adapters.py)",
                    f"ours {ours} {ours_s:.3f} s ({ours_rate:,.0f} {unit}) | anchor {anchor} {anchor_s:.3f} s "
                    f"({anchor_rate:,.0f} {unit}) | ratio {ours_s / anchor_s:.2f}",
                    figures={"ours_s": ours_s, "anchor_s": anchor_s, "ratio": ours_s / anchor_s,
                             "ours_rate": ours_rate, "anchor_rate": anchor_rate})
    if ratio_match:
        result.details.append(next(line.strip() for line in out.splitlines() if ratio_match.group(0) in line))
    result.goals[goal] = bool(met(their_ratio, ours_rate))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny sizes: a smoke run in seconds")
    parser.add_argument("--only", default=",".join(ALL), help="comma-separated benchmarks, e.g. B1,B3")
    parser.add_argument("--workdir", help="keep the generated warehouses here (default: a temporary directory)")
    parser.add_argument("--json", help="write every figure to this JSON file")
    args = parser.parse_args(argv)
    selected = [key.strip().upper() for key in args.only.split(",") if key.strip()]
    unknown = set(selected) - set(ALL)
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(sorted(unknown))}; choose from {', '.join(ALL)}")
    size = Size.create(args.tiny)

    with tempfile.TemporaryDirectory(prefix="dexorder-bench-") as tmp:
        workdir = Path(args.workdir or tmp).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        isolate_environment(workdir)
        began = time.perf_counter()
        print(f"dexorder-feeds benchmarks ({'tiny' if size.tiny else 'full'} run) in {workdir}", flush=True)
        results: list[Result] = []
        uri = f"sqlite:///{workdir / 'read' / 'catalog.db'}"
        generated = None
        if {"B1", "B2", "B3"} & set(selected):
            generated = build_warehouse(uri, size)
            print(f"generated {generated['rows']:,} candles ({len(generated['hourly'])} tickers of 1h, "
                  f"{size.minute_days} days of 1m) in {generated['seconds']:.1f} s", flush=True)
        for key in selected:
            if key in ("B5", "B6"):
                if key == "B5" or "B5" not in selected:
                    new = run_adapters(size)
                    new = [r for r in new if r.key in selected]
                else:
                    continue
            else:
                new = [run_one(key, uri, size, generated, workdir)]
            for result in new:
                result.print()
            results += new
        from anchor_arcticdb import close_anchor

        close_anchor()
        summarize(results, time.perf_counter() - began)
        if args.json:
            Path(args.json).write_text(json.dumps(
                {r.key: {"title": r.title, "line": r.line, "figures": r.figures, "goals": r.goals} for r in results},
                indent=2))
    return 0


def run_one(key: str, uri: str, size: Size, generated: dict | None, workdir: Path) -> Result:
    if key == "B1":
        from bench_read import bench_b1
        return bench_b1(uri, size, generated, workdir)
    if key == "B2":
        from bench_read import bench_b2
        return bench_b2(uri, size, generated, workdir)
    if key == "B3":
        from bench_read import bench_b3
        return bench_b3(uri, size)
    if key == "B4":
        from bench_relay import bench_b4
        return bench_b4(size, workdir / "relay")
    if key == "B7":
        from bench_vbt import bench_b7
        return bench_b7(size, workdir / "vbt")
    if key == "LOAD":
        from bench_load import bench_load
        return bench_load(size.tiny, workdir / "load")
    if key == "B8":
        from bench_import import bench_b8
        return bench_b8(size)
    if key == "B9":
        from bench_catalogs import Size as CatalogSize, bench_b9
        return bench_b9(CatalogSize.create(size.tiny), workdir / "catalogs")
    raise AssertionError(key)


def summarize(results: list[Result], seconds: float) -> None:
    print(f"\nsummary ({seconds:.0f} s)", flush=True)
    for result in results:
        goals = "; ".join(f"{goal}: {'met' if met else 'NOT met'}" for goal, met in result.goals.items())
        print(f"  {result.key} {result.line}" + (f"  [{goals}]" if goals else ""), flush=True)


if __name__ == "__main__":
    sys.exit(main())
