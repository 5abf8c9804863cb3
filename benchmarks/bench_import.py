"""B8: ``import dexorder_feeds`` beside ``import pyiceberg``, each in fresh interpreters.

``import pyiceberg`` alone loads almost nothing (its modules load on use), so the figure that
matters beside ours is what reading an Iceberg table needs: ``pyiceberg.catalog.sql`` and
``pyiceberg.table`` (which bring pyarrow and SQLAlchemy). ``dexorder_feeds`` loads those lazily,
on the first fetch.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import Result, Size, median, ms  # noqa: E402

_TIMER = "import time; began = time.perf_counter(); {statement}; print(time.perf_counter() - began)"


def import_seconds(statement: str, runs: int) -> float:
    """Median wall time of ``statement`` in ``runs`` fresh interpreters."""
    samples = []
    for _ in range(runs):
        done = subprocess.run([sys.executable, "-c", _TIMER.format(statement=statement)],
                              capture_output=True, text=True, check=True)
        samples.append(float(done.stdout.strip().splitlines()[-1]))
    return median(samples)


def bench_b8(size: Size) -> Result:
    runs = max(3, size.b8_runs) if not size.tiny else 2
    figures = {
        "dexorder_feeds": import_seconds("import dexorder_feeds", runs),
        "pyiceberg": import_seconds("import pyiceberg", runs),
        "pyiceberg_read": import_seconds("import pyiceberg.catalog.sql, pyiceberg.table", runs),
        "dexorder_feeds_read": import_seconds(
            "import dexorder_feeds, dexorder_feeds.client.ohlc_client, dexorder_feeds.storage.warehouse", runs),
    }
    ours, anchor, read = figures["dexorder_feeds"], figures["pyiceberg"], figures["pyiceberg_read"]
    result = Result(
        "B8", "import time",
        f"import dexorder_feeds {ms(ours)} | anchor import pyiceberg {ms(anchor)} (ratio {ours / anchor:.0f}) | "
        f"pyiceberg.catalog.sql + pyiceberg.table {ms(read)} | ratio to that {ours / read:.2f}",
        figures={f"{k}_ms": v * 1e3 for k, v in figures.items()} | {"ratio_to_pyiceberg_read": ours / read},
    )
    result.details.append(f"medians of {runs} fresh interpreters; with the client and warehouse modules "
                          f"(what a first fetch imports): {ms(figures['dexorder_feeds_read'])}")
    return result
