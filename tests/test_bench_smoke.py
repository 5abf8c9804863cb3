"""The benchmark runner on tiny sizes, so it cannot rot. No timing assertions: only that every
benchmark prints its figure beside its anchor, with a ratio."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

RUNNER = Path(__file__).resolve().parent.parent / "benchmarks" / "run.py"
NUMBER = r"[\d.,]+ (?:ms|s)"


def test_every_benchmark_prints_ours_beside_its_anchor_with_a_ratio(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEXORDER_")}
    out_json = tmp_path / "figures.json"
    done = subprocess.run([sys.executable, str(RUNNER), "--tiny", "--workdir", str(tmp_path / "work"),
                           "--json", str(out_json)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    patterns = {
        "B1": rf"^B1 warm small fetch: ours {NUMBER} \| anchor\(a\) pyarrow {NUMBER} \| ratio [\d.]+ \| "
              rf"anchor\(b\) naive {NUMBER} \| speed-up [\d.]+x$",
        "B2": rf"^B2 warm bulk fetch: ours {NUMBER} \| anchor pyarrow into the same DataFrame {NUMBER} \| ratio [\d.]+$",
        "B3": rf"^B3 .*: ours after \d+ fills {NUMBER} \| anchor: ours on the freshly compacted table {NUMBER} \| "
              rf"ratio [\d.]+",
        "B4": rf"^B4 .*: cold fill of [\d,]+ 1m candles [\d.]+ s = source [\d.]+ s \+ ours -?[\d.]+ s \| .*p50 {NUMBER} "
              rf"p99 {NUMBER} \| anchor raw REQ/REP p50 {NUMBER} p99 {NUMBER} \| overhead p50 -?{NUMBER}$",
        "B5": rf"^B5 .*: ours DexOrderData \(\+ its read\) [\d.]+ s \([\d,]+ bars/s\) \| anchor PandasData [\d.]+ s "
              rf"\([\d,]+ bars/s\) \| ratio [\d.]+$",
        "B6": rf"^B6 .*: ours candles\(\) \(\+ its reads\) [\d.]+ s \([\d,]+ candles/s\) \| anchor the same Decimals "
              rf"alone [\d.]+ s \([\d,]+ candles/s\) \| ratio [\d.]+$",
        "B7": rf"^B7 .*: ours concurrent [\d.]+ s \| anchor one at a time [\d.]+ s \| speed-up [\d.]+x$",
        "B8": rf"^B8 import time: import dexorder_feeds {NUMBER} \| anchor import pyiceberg {NUMBER} \(ratio \d+\)",
        "B9": rf"^B9 catalogs: .*: sqlite B1 {NUMBER}, cold {NUMBER} \| postgres B1 {NUMBER} \([\d.]+x\), "
              rf"cold {NUMBER} \([\d.]+x\) \| rest B1 {NUMBER} \([\d.]+x\), cold {NUMBER} \([\d.]+x\)$",
        "LOAD": rf"^LOAD 10 clients x 3 fetches through one relay: ours p50 {NUMBER}, p99 {NUMBER}, max {NUMBER} \| "
                rf"anchor the goal p99 2000 ms, max 5000 ms \| ratio p99/goal [\d.]+$",
    }
    for key, pattern in patterns.items():
        assert re.search(pattern, out, re.MULTILINE), f"{key} line missing or malformed:\n{out}"
    assert "peak memory: ours" in out
    assert re.search(r"^    storage: [\d.]+ MB of data files = [\d.]+ bytes per 1-minute candle", out, re.MULTILINE)
    # ArcticDB runs in a venv of its own that a --tiny run never builds: either its figures, or why not.
    for what in ("168 hourly candles", r"all [\d,]+ candles", "a week of 1-minute candles", "168 1-minute candles"):
        assert re.search(rf"^    anchor\(c\) ArcticDB.*{what}.*: (ours {NUMBER} \| ArcticDB {NUMBER} \| ratio [\d.]+|"
                         rf"anchor unavailable: .+)", out, re.MULTILINE), f"ArcticDB line for {what} missing:\n{out}"
    figures = json.loads(out_json.read_text())
    assert set(figures) == set(patterns)
    for key, entry in figures.items():
        assert any(word in name for name in entry["figures"] for word in ("ratio", "speedup", "overhead")), key
    assert "summary" in out
