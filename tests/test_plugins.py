"""Plugins: built-ins registered like any plugin, entry points, the env filter, replacing a step.

The example plugin package in ``examples/plugin`` is really installed (``pip install --target``)
and exercised in a subprocess, so its entry points are found by importlib.metadata as a user's
would be.
"""

from __future__ import annotations

import ast
import inspect
import json
import os
import subprocess
import sys
import textwrap
import typing
from pathlib import Path

import pandas as pd
import pytest

from dexorder_feeds import hookspecs
import dexorder_feeds
from dexorder_feeds import fetch_ohlc
from dexorder_feeds.plugin import (
    FetchContext,
    FetchRequest,
    IngestSource,
    Interval,
    MarketInfo,
    SourceCandles,
    Ticker,
    fill_from_source,
    hookimpl,
)
from dexorder_feeds.plugins import DEFAULT_PLUGINS, get_plugin_manager

from conftest import SEED_START
from observer import recording

REPO = Path(__file__).resolve().parents[1]
H = 3_600_000_000


def _specs() -> dict[str, object]:
    return {name: getattr(hookspecs, name) for name in dir(hookspecs) if name.startswith("dexorder_")}


def test_every_hookspec_is_documented_and_typed():
    pm = get_plugin_manager()
    for name, spec in _specs().items():
        doc = " ".join((spec.__doc__ or "").split())
        assert len(doc.split()) > 15, f"{name} needs a docstring: when it is called, what it gets and returns"
        assert "called" in doc.lower(), f"{name}: say when it is called"
        assert hasattr(pm.hook, name)
        annotations = inspect.get_annotations(spec)
        params = inspect.signature(spec).parameters
        assert set(params) | {"return"} == set(annotations), f"{name}: annotate every argument and the return"
        loose = [arg for arg, text in annotations.items() if text == "Any" or text == "object"]
        assert not loose, f"{name}: give {loose} a real type"
        hints = typing.get_type_hints(spec, globalns=_type_namespace())  # every name resolves
        assert set(hints) == set(annotations)
        if spec.dexorder_feeds_spec["firstresult"]:
            assert "Stops at the first non-None result." in doc, name
            assert "| None" in annotations["return"], f"{name} may return None to pass the turn"


def _type_namespace() -> dict[str, object]:
    import collections.abc
    import types

    import pandas as pd

    from dexorder_feeds.client.fetcher import FetchContext
    from dexorder_feeds.ingest.sources import SourceFactory
    from dexorder_feeds.vocabulary.markets import MarketInfo
    from dexorder_feeds.vocabulary.ranges import Interval
    from dexorder_feeds.vocabulary.requests import CacheRead, FetchRequest

    return {**vars(hookspecs), "pd": pd, "FetchContext": FetchContext, "SourceFactory": SourceFactory,
            "MarketInfo": MarketInfo, "Interval": Interval, "CacheRead": CacheRead, "FetchRequest": FetchRequest,
            "Awaitable": collections.abc.Awaitable, "Callable": collections.abc.Callable,
            "ModuleType": types.ModuleType}


def test_pipeline_steps_observer_events_and_registrations_are_kept_apart():
    groups = [hookspecs.PIPELINE_STEPS, hookspecs.OBSERVER_EVENTS, hookspecs.REGISTRATIONS]
    listed = [name for group in groups for name in group]
    assert sorted(listed) == sorted(_specs()), "every hookspec is in exactly one group"
    for name in hookspecs.PIPELINE_STEPS:
        assert _specs()[name].dexorder_feeds_spec["firstresult"], name
    for name in (*hookspecs.OBSERVER_EVENTS, *hookspecs.REGISTRATIONS):
        spec = _specs()[name]
        assert not spec.dexorder_feeds_spec["firstresult"], name
        assert inspect.get_annotations(spec)["return"] == "None", name


PUBLIC_PLUGIN_SURFACE = {
    "hookimpl", "IngestSource", "SourceCandles", "MarketInfo", "Ticker", "parse_ticker", "FetchRequest",
    "CacheRead", "Interval", "FetchContext", "HistoryTransport", "fill_from_source",
}


def test_the_public_plugin_surface_is_exactly_its_all():
    from dexorder_feeds import plugin
    from dexorder_feeds.client.fetcher import FetchContext
    from dexorder_feeds.ingest.sources import IngestSource
    from dexorder_feeds.vocabulary.requests import FetchRequest

    assert set(plugin.__all__) == PUBLIC_PLUGIN_SURFACE
    assert len(plugin.__all__) == len(set(plugin.__all__))
    for name in plugin.__all__:
        assert getattr(plugin, name) is not None, name
    # the very objects the package uses, not copies
    assert plugin.hookimpl is hookspecs.hookimpl and plugin.FetchContext is FetchContext
    assert plugin.IngestSource is IngestSource and plugin.FetchRequest is FetchRequest


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


def _write_csv(csv_dir: Path, hours: int) -> None:
    symbol_dir = csv_dir / "ABC-USD"
    symbol_dir.mkdir(parents=True)
    lines = ["timestamp,open,high,low,close,volume"]
    for i in range(hours):
        lines.append(f"{SEED_START + i * H},{100 + i}.5,{101 + i}.25,{99 + i}.75,{100 + i}.125,{i}.5")
    (symbol_dir / "1h.csv").write_text("\n".join(lines) + "\n")


def test_the_example_plugin_fills_from_csv_files_and_observes_it(installed_plugin, tmp_path):
    csv_dir = tmp_path / "csv"
    _write_csv(csv_dir, 10)
    code = f"""
        import json
        import dexorder_feeds
        from dexorder_example_plugin import csv_fill, metrics
        df = dexorder_feeds.fetch_ohlc("MYCSV:ABC/USD", 3600, {SEED_START}, {SEED_START + 9 * H})
        again = dexorder_feeds.fetch_ohlc("MYCSV:ABC/USD", 3600, {SEED_START}, {SEED_START + 9 * H})
        later = dexorder_feeds.fetch_ohlc("MYCSV:ABC/USD", 3600, {SEED_START + 20 * H}, {SEED_START + 29 * H})
        scale = dexorder_feeds.client.sync.price_scale("MYCSV:ABC/USD")
        print(json.dumps({{"rows": [len(df), len(again), len(later)], "close": df["close"].tolist(),
                          "volume": df["volume"].tolist(), "decimals": [scale.price_decimals, scale.volume_decimals],
                          "filled": len(csv_fill.FILLED), "counts": dict(metrics.COUNTS)}}))
    """
    out = run_with_plugin(installed_plugin, code, tmp_path, DEXORDER_EXAMPLE_CSV_DIR=str(csv_dir))
    assert out["rows"] == [10, 10, 0]
    assert out["filled"] == 2, "one fill for the first fetch, one for the range past the file's end; none for the repeat"
    assert out["decimals"] == [3, 1]
    assert out["close"] == [(100 + i) * 1000 + 125 for i in range(10)]
    assert out["volume"] == [i * 10 + 5 for i in range(10)]
    counts = out["counts"]
    assert counts.get("request_sent", 0) == 0, "the built-in gap fill must not have run"
    assert counts["cache_miss"] == 2 and counts["cache_hit"] == 1
    assert counts["progress"] == 2 and counts["cached_rows"] == 10


def test_example_plugin_imports_only_the_public_surface():
    allowed = {"dexorder_feeds.plugin", "dexorder_feeds"}
    stdlib = set(sys.stdlib_module_names)
    files = sorted((REPO / "examples" / "plugin").rglob("*.py"))
    assert len(files) >= 3
    bad = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # within the example package itself
                    continue
                names = [node.module or ""]
                if node.module == "dexorder_feeds":  # top-level names only, or the plugin module
                    names += [f"dexorder_feeds.{alias.name}" for alias in node.names
                              if alias.name not in dexorder_feeds.__all__]
            else:
                continue
            for name in names:
                top = name.partition(".")[0]
                if name in allowed or top in stdlib or top in ("pandas", "dexorder_example_plugin"):
                    continue
                bad.append(f"{path.relative_to(REPO)}:{node.lineno} imports {name}")
    assert not bad, "examples/plugin may import only dexorder_feeds.plugin (and the stdlib, pandas): " + "; ".join(bad)


class _ListSource(IngestSource):
    """Candles from a list, counting the calls."""

    name = "listed"

    def __init__(self, hours: int) -> None:
        self.hours = hours
        self.calls: list[tuple[int, int]] = []

    def fetch_candles(self, ticker: Ticker, period_seconds: int, start: int, stop: int) -> SourceCandles:
        self.calls.append((start, stop))
        ts = [SEED_START + i * H for i in range(self.hours) if start <= SEED_START + i * H < stop]
        frame = pd.DataFrame({"timestamp": ts, "open": [1.25] * len(ts), "high": [1.5] * len(ts),
                              "low": [1.0] * len(ts), "close": [1.25] * len(ts), "volume": [2] * len(ts)})
        return SourceCandles(MarketInfo(str(ticker), 2, 0), frame)


class _ListFill:
    def __init__(self, source: IngestSource) -> None:
        self.source = source

    @hookimpl(tryfirst=True)
    def dexorder_fill_gaps(self, context: FetchContext, request: FetchRequest, ranges: list[Interval]):
        if not request.ticker.startswith("LIST:"):
            return None
        return fill_from_source(context, request, ranges, self.source)


def test_fill_from_source_stores_candles_and_coverage_for_a_registered_plugin(tmp_path):
    source = _ListSource(hours=6)
    plugin = _ListFill(source)
    pm = get_plugin_manager()
    pm.register(plugin, name="list-fill-test")
    uri = f"sqlite:///{tmp_path / 'catalog.db'}"
    try:
        with recording() as recorder:
            first = fetch_ohlc("LIST:ABC/USD", 3600, SEED_START, SEED_START + 9 * H, iceberg_catalog_uri=uri)
            again = fetch_ohlc("LIST:ABC/USD", 3600, SEED_START, SEED_START + 9 * H, iceberg_catalog_uri=uri)
    finally:
        pm.unregister(plugin)
    assert first["close"].tolist() == [125] * 6 and first["timestamp"].tolist() == [SEED_START + i * H for i in range(6)]
    assert len(again) == 6
    assert source.calls == [(SEED_START, SEED_START + 10 * H)], "the empty tail is recorded as ingested too"
    assert recorder.requests == [] and recorder.progress == [(1, 1)]
    assert [rows for _, rows, _ in recorder.cache_checks] == [0, 6]
