"""Adapter registration, each case in a fresh interpreter: import order, laziness, missing frameworks.

The interpreters are slow to start (vectorbt alone takes seconds to import), so every case is
launched at once by a module fixture and each test checks its own case's report.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

EXTRA_HINT = "pip install 'dexorder-feeds[{extra}]'"


def _order_case(framework: str, attribute: str, framework_first: bool) -> str:
    imports = [f"import {framework} as fw", "import dexorder_feeds"]
    if not framework_first:
        imports.reverse()
    return "\n".join([
        "import json, operator",
        *imports,
        f"from dexorder_feeds.adapters.{framework} import DexOrderData",
        f"found = operator.attrgetter({attribute!r})(fw)",
        "print(json.dumps({'same': found is DexOrderData, 'module': found.__module__}))",
    ])


def _missing_case(framework: str) -> str:
    # sys.modules[name] = None makes ``import name`` fail exactly as if it were not installed.
    return textwrap.dedent(f"""
        import json, sys
        sys.modules["{framework}"] = None
        import dexorder_feeds
        from dexorder_feeds.vocabulary.errors import MissingDependencyError
        try:
            import dexorder_feeds.adapters.{framework}
        except MissingDependencyError as exc:
            error = {{"message": str(exc), "import_error": isinstance(exc, ImportError)}}
        else:
            error = None
        # The core and the Decimal iterator need no framework.
        count = sum(1 for _ in dexorder_feeds.candles("SIM:BTC/USDT", "1h", "2025-01-01", "2025-01-01T03:00"))
        print(json.dumps({{"error": error, "candles": count}}))
    """)


CASES = {
    "alone": textwrap.dedent("""
        import json, sys, time
        began = time.perf_counter()
        import dexorder_feeds
        elapsed = time.perf_counter() - began
        print(json.dumps({"seconds": elapsed,
                          "loaded": sorted(m for m in ("backtrader", "vectorbt", "matplotlib", "numba")
                                           if m in sys.modules),
                          "adapters": "dexorder_feeds.adapters" in sys.modules}))
    """),
    "bt-first": _order_case("backtrader", "feeds.DexOrderData", True),
    "bt-last": _order_case("backtrader", "feeds.DexOrderData", False),
    "vbt-first": _order_case("vectorbt", "DexOrderData", True),
    "vbt-last": _order_case("vectorbt", "DexOrderData", False),
    "bt-runs-after": textwrap.dedent("""
        import json
        from datetime import datetime
        import dexorder_feeds
        import backtrader as bt
        cerebro = bt.Cerebro(stdstats=False)
        cerebro.adddata(bt.feeds.DexOrderData(ticker="SIM:BTC/USDT", period_seconds=3600,
                                              fromdate=datetime(2025, 1, 1), todate=datetime(2025, 1, 1, 23)))
        cerebro.addstrategy(bt.Strategy)
        strategy = cerebro.run()[0]
        print(json.dumps({"bars": len(strategy.data)}))
    """),
    "bt-missing": _missing_case("backtrader"),
    "vbt-missing": _missing_case("vectorbt"),
    # A `backtrader` that cannot be imported, first on sys.path (see the shadow fixture).
    "bt-broken": textwrap.dedent("""
        import json
        import dexorder_feeds
        try:
            import backtrader
        except ImportError as exc:
            user = str(exc)
        try:
            from dexorder_feeds.adapters.backtrader import DexOrderData
        except ImportError as exc:
            adapter = str(exc)
        print(json.dumps({"user": user, "adapter": adapter}))
    """),
}


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """Run every case in its own interpreter, as many at once as there are cores (the import
    timing case alone first, so it is not slowed by the others); their outputs by case name."""
    root = tmp_path_factory.mktemp("registration")
    shadow = root / "shadow"
    (shadow / "backtrader").mkdir(parents=True)
    (shadow / "backtrader" / "__init__.py").write_text("raise ImportError('simulated: backtrader is not installed')\n")

    def start(name: str) -> subprocess.Popen:
        workdir = root / name
        workdir.mkdir()
        env = dict(os.environ, MPLBACKEND="Agg", DEXORDER_CACHE_DIR=str(workdir / "cache"))
        if name == "bt-broken":
            env["PYTHONPATH"] = str(shadow) + os.pathsep + env.get("PYTHONPATH", "")
        return subprocess.Popen([sys.executable, "-c", CASES[name]], cwd=workdir, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def finish(name: str, process: subprocess.Popen) -> None:
        stdout, stderr = process.communicate(timeout=180)
        out[name] = (process.returncode, stdout, stderr)

    out: dict[str, tuple[int, str, str]] = {}
    finish("alone", start("alone"))
    waiting = sorted((name for name in CASES if name != "alone"), key=lambda name: "vbt" not in name)  # slowest first
    running: list[tuple[str, subprocess.Popen]] = []
    slots = max(2, os.cpu_count() or 2)
    while waiting or running:
        while waiting and len(running) < slots:
            name = waiting.pop(0)
            running.append((name, start(name)))
        name, process = running.pop(0)
        finish(name, process)
    return out


def report(reports, name: str) -> dict:
    returncode, stdout, stderr = reports[name]
    assert returncode == 0, stderr
    return json.loads(stdout.strip().splitlines()[-1])


def test_import_alone_loads_no_framework(reports):
    result = report(reports, "alone")
    print(f"import dexorder_feeds: {result['seconds'] * 1000:.0f} ms")
    assert result["loaded"] == []
    assert result["adapters"]  # the adapter plugin itself is registered at import


@pytest.mark.parametrize("case", ["bt-first", "bt-last", "vbt-first", "vbt-last"])
def test_adapter_appears_whatever_the_import_order(reports, case):
    framework = "backtrader" if case.startswith("bt") else "vectorbt"
    assert report(reports, case) == {"same": True, "module": f"dexorder_feeds.adapters.{framework}"}


def test_backtrader_adapter_works_when_imported_after_dexorder_feeds(reports):
    assert report(reports, "bt-runs-after") == {"bars": 24}


@pytest.mark.parametrize("framework", ["backtrader", "vectorbt"])
def test_missing_framework_names_the_extra(reports, framework):
    result = report(reports, "bt-missing" if framework == "backtrader" else "vbt-missing")
    assert result["error"] is not None, "using the adapter without its framework must fail"
    assert EXTRA_HINT.format(extra=framework) in result["error"]["message"]
    assert result["error"]["import_error"] is True
    assert result["candles"] == 4


def test_broken_framework_on_sys_path(reports):
    """The user's own import fails with its own error; the adapter names the extra."""
    result = report(reports, "bt-broken")
    assert result["user"] == "simulated: backtrader is not installed"
    assert EXTRA_HINT.format(extra="backtrader") in result["adapter"]
