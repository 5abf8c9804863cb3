"""Load: 100 clients x 20 fetches of overlapping ranges through one served relay.

Not in the default run (about a minute and a half on 2 cores); run it with::

    pytest -m load -s          # -s shows the figures
    python benchmarks/bench_load.py [--clients N --fetches N --processes N]   # the figures alone

The figures (fetches/s, history requests/s, latency p50/p99) are reported, never asserted: the
assertions are about correctness under load and a generous memory bound.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from bench_load import report, run_load  # noqa: E402

pytestmark = pytest.mark.load

RSS_GROWTH_LIMIT_KB = 512 * 1024  # generous: the relay's caches are bounded, its heap is not measured exactly


def test_hundred_clients_twenty_fetches_each(tmp_path):
    figures = run_load(clients=100, fetches=20, processes=4, base_dir=tmp_path)
    print("\n" + report(figures))
    assert figures["failures"] == []
    assert figures["fetches"] == 100 * 20
    assert figures["wrong_frames"] == 0  # every fetch returned exactly its window's candles
    assert figures["lost_notifications"] == 0
    assert figures["notifications_received"] == figures["requests_sent"] > 0
    assert figures["relay_dropped_notifications"] == 0
    assert figures["duplicate_rows"] == 0
    assert figures["relay_rss_end_kb"] - figures["relay_rss_start_kb"] < RSS_GROWTH_LIMIT_KB
