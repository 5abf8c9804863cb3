"""Plugins: built-ins registered like any plugin, entry points, the env filter, replacing a step.

The example plugin package in ``examples/plugin`` is really installed (``pip install --target``)
and exercised in a subprocess, so its entry points are found by importlib.metadata as a user's
would be.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dexorder_feeds import hookspecs
from dexorder_feeds.plugins import DEFAULT_PLUGINS, get_plugin_manager

from conftest import SEED_START

REPO = Path(__file__).resolve().parents[1]
H = 3_600_000_000


def test_every_hookspec_is_documented():
    pm = get_plugin_manager()
    for name in dir(hookspecs):
        if name.startswith("dexorder_"):
            spec = getattr(hookspecs, name)
            assert spec.__doc__ and len(spec.__doc__.split()) > 8, f"{name} needs a docstring"
            assert hasattr(pm.hook, name)
    firstresult = [n for n in dir(hookspecs) if n.startswith("dexorder_") and
                   getattr(hookspecs, n).dexorder_feeds_spec["firstresult"]]
    for name in firstresult:
        assert "first non-None" in getattr(hookspecs, name).__doc__, name


def test_builtins_are_registered_as_plugins():
    pm = get_plugin_manager()
    names = {pm.get_name(p) for p in pm.get_plugins()}
    assert set(DEFAULT_PLUGINS) <= names


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(REPO / "examples" / "plugin")],
        check=True, capture_output=True, timeout=300,
    )
    return target


def run_with_plugin(site: Path, code: str, tmp_path: Path, **env: str) -> dict:
    environment = {**os.environ, "PYTHONPATH": str(site), "DEXORDER_CACHE_DIR": str(tmp_path / "cache"), **env}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                            timeout=120, env=environment)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


OBSERVE = f"""
    import json
    import dexorder_feeds
    from dexorder_example_plugin import metrics
    df = dexorder_feeds.fetch_ohlc("SIM:BTC/USDT", 3600, {SEED_START}, {SEED_START + 23 * H})
    df = dexorder_feeds.fetch_ohlc("SIM:BTC/USDT", 3600, {SEED_START}, {SEED_START + 23 * H})
    print(json.dumps({{"rows": len(df), "counts": dict(metrics.COUNTS)}}))
"""


def test_an_observer_plugin_from_an_entry_point_sees_every_event(installed_plugin, tmp_path):
    out = run_with_plugin(installed_plugin, OBSERVE, tmp_path)
    counts = out["counts"]
    assert out["rows"] == 24
    assert counts["cache_miss"] == 1 and counts["cache_hit"] == 1
    assert counts["request_sent"] == 1 and counts["notification_received"] == 1
    assert counts["status_OK"] == 1 and counts["progress"] == 1
    assert counts["cached_rows"] == 24  # the second fetch found all 24 in the cache


def test_the_env_variable_limits_which_plugins_load(installed_plugin, tmp_path):
    code = """
        import json
        from dexorder_feeds.plugins import get_plugin_manager
        pm = get_plugin_manager()
        print(json.dumps(sorted(pm.get_name(p) for p in pm.get_plugins() if not pm.get_name(p).startswith("dexorder_feeds."))))
    """
    assert run_with_plugin(installed_plugin, code, tmp_path) == ["csv_fill", "metrics"]
    assert run_with_plugin(installed_plugin, code, tmp_path, DEXORDER_FEEDS_PLUGINS="metrics") == ["metrics"]
    assert run_with_plugin(installed_plugin, code, tmp_path, DEXORDER_FEEDS_PLUGINS="") == []


def test_a_plugin_from_an_entry_point_replaces_gap_fill(installed_plugin, tmp_path):
    csv_dir = tmp_path / "csv"
    symbol_dir = csv_dir / "MYCSV" / "ABC-USD"
    symbol_dir.mkdir(parents=True)
    lines = ["timestamp,open,high,low,close,volume"]
    for i in range(10):
        lines.append(f"{SEED_START + i * H},{100 + i}.5,{101 + i}.25,{99 + i}.75,{100 + i}.125,{i}.5")
    (symbol_dir / "1h.csv").write_text("\n".join(lines) + "\n")
    code = f"""
        import json
        import dexorder_feeds
        from dexorder_example_plugin import csv_fill, metrics
        df = dexorder_feeds.fetch_ohlc("MYCSV:ABC/USD", 3600, {SEED_START}, {SEED_START + 9 * H})
        scale = dexorder_feeds.client.sync.price_scale("MYCSV:ABC/USD")
        print(json.dumps({{"rows": len(df), "close": df["close"].tolist(), "decimals": scale.price_decimals,
                          "filled": len(csv_fill.FILLED), "sent": metrics.COUNTS["request_sent"]}}))
    """
    out = run_with_plugin(installed_plugin, code, tmp_path, DEXORDER_EXAMPLE_CSV_DIR=str(csv_dir))
    assert out["rows"] == 10 and out["filled"] == 1
    assert out["sent"] == 0, "the built-in gap fill must not have run"
    assert out["decimals"] == 3
    assert out["close"] == [(100 + i) * 1000 + 125 for i in range(10)]
