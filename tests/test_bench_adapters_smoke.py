"""The adapter benchmark runs (tiny) so it cannot rot; no timing assertions."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_adapters.py"


def test_bench_adapters_tiny_prints_figures_and_ratios(tmp_path):
    env = dict(os.environ, DEXORDER_CACHE_DIR=str(tmp_path / "cache"))
    result = subprocess.run([sys.executable, str(BENCH), "--tiny"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert re.search(r"import dexorder_feeds: \d+ ms", out)
    assert re.search(r"PandasData +\d+\.\d+ s +[\d,]+ bars/s", out)
    assert re.search(r"DexOrderData \(\+ its read\) +\d+\.\d+ s +[\d,]+ bars/s", out)
    assert re.search(r"ratio: DexOrderData is \d+\.\d+x faster", out)
    assert re.search(r"candles\(\) \(\+ its reads\) +\d+\.\d+ s +[\d,]+ candles/s", out)
    assert re.search(r"ratio: the iterator runs at \d+\.\d+x the rate of the Decimals alone", out)
