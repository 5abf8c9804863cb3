"""The seed README's two examples, run verbatim (endpoints aside) as scripts.

- ``examples/seed_history_client.py`` against a real ``dexorder-feeds serve`` process, from
  ``SIM:`` and from ``BINANCE:`` mapped to the bundled files directory;
- ``examples/seed_quickstart.py`` (``OHLCClient.fetch_ohlc``) through that served relay and on
  the embedded default.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
from relay_process import relay_process

REPO = Path(__file__).resolve().parents[1]
FILES = REPO / "examples" / "data" / "candles"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    with relay_process(tmp_path_factory.mktemp("seed-relay"), sources=[f"BINANCE=files:{FILES}"]) as relay:
        yield relay


def run_example(name: str, tmp_path: Path, **env: str) -> str:
    result = subprocess.run([sys.executable, str(REPO / "examples" / name)], capture_output=True, text=True,
                            timeout=120, cwd=tmp_path,
                            env={**os.environ, "DEXORDER_CACHE_DIR": str(tmp_path / "cache"), **env})
    assert result.returncode == 0, result.stderr
    return result.stdout


def relay_env(relay) -> dict[str, str]:
    return {"DEXORDER_RELAY_ENDPOINT": relay.relay_endpoint,
            "DEXORDER_NOTIFICATION_ENDPOINT": relay.notification_endpoint,
            "DEXORDER_ICEBERG_CATALOG_URI": relay.catalog_uri}


@pytest.mark.parametrize("ticker", ["SIM:BTC/USDT", "BINANCE:BTC/USDT"])
def test_history_client_example_through_serve(served, tmp_path, ticker):
    out = run_example("seed_history_client.py", tmp_path, DEXORDER_EXAMPLE_TICKER=ticker, **relay_env(served))
    result = ast.literal_eval(out.strip().splitlines()[-1])
    assert result["status"] == "OK" and result["row_count"] == 168, result
    assert result["iceberg_namespace"] == "trading" and result["iceberg_table"] == "ohlc"


def test_quickstart_through_serve(served, tmp_path):
    out = run_example("seed_quickstart.py", tmp_path, **relay_env(served))
    assert out.startswith("Fetched 168 candles")
    assert "BINANCE:BTC/USDT" in out


def test_quickstart_on_the_embedded_default(tmp_path):
    out = run_example("seed_quickstart.py", tmp_path, DEXORDER_SOURCES=f"BINANCE=files:{FILES}")
    assert out.startswith("Fetched 168 candles")
    assert (tmp_path / "cache" / "catalog.db").exists(), "the embedded default uses the cache dir"
