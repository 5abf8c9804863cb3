"""Both ends of the dependency ranges pyproject declares.

The newest end is this test environment (the ``test`` extra brings protobuf 7 and pandas 3);
the oldest end is built here: a fresh venv with protobuf 4.22.0, pandas 2.2.0 and the other
core dependencies at their floors, this project installed into it without extras (a real,
non-editable install), then a wire round trip against frames this environment encoded and a
real embedded fetch whose candles must equal this environment's.

It needs PyPI (CI has it). Without it the test fails, saying so; it never skips.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import google.protobuf
import pandas as pd
import pytest

import dexorder_feeds
from dexorder_feeds import wire
from dexorder_feeds.client.sync import close_sync_clients

from conftest import SEED_TICKER

REPO = Path(__file__).resolve().parent.parent

# The oldest versions the core is declared to work with, as a pip constraints file. protobuf and
# pandas are the floors in pyproject's dependencies; numpy is the newest 1.x, the numpy
# environments capped at pandas 2.2 tend to have; pyarrow 18 is the effective floor (pyiceberg
# 0.12's pyarrow extra asks for it, above our own pyarrow>=17).
OLDEST = {
    (3, 11): {"protobuf": "4.22.0", "pandas": "2.2.0", "numpy": "1.26.4", "pyarrow": "18.0.0",
              "pyzmq": "26.0.0", "pyiceberg": "0.12.0", "pluggy": "1.5.0", "platformdirs": "4.0.0",
              "tqdm": "4.66.0"},
}
OLDEST[(3, 12)] = OLDEST[(3, 11)]  # the same releases ship wheels for 3.12

# Frames the newest end encodes; the oldest end must decode them and encode them back to the
# same bytes (field presence included: limit set, limit unset, limit explicitly 0).
MESSAGES = [
    wire.HistoryRequest(request_id="r1", client_id="c1", ticker="SIM:BTC/USDT", period_seconds=3600,
                        start_time=1735689600000000, end_time=1736294399000000, limit=10),
    wire.HistoryRequest(request_id="r2", client_id="c1", ticker="SIM:ETH/USDT", period_seconds=60),
    wire.HistoryRequest(request_id="r3", limit=0),
    wire.SubscribeCheck(client_id="c1", request_id="chk"),
    wire.RequestReply(request_id="r1", accepted=False, reason="ticker is malformed", error_type="InvalidTickerError"),
    wire.Notification(request_id="r1", client_id="c1", status=wire.Notification.NOT_FOUND, row_count=168,
                      covered_start=1735689600000000, covered_end=1736294400000000),
]

FETCH = (SEED_TICKER, "1h", "2025-01-01", "2025-01-07T23:59:59")
INT_COLUMNS = ["timestamp", "open", "high", "low", "close", "volume", "buy_vol", "sell_vol"]

# Runs inside the oldest-end venv; prints one JSON line.
SCRIPT = textwrap.dedent("""
    import json, sys
    import google.protobuf, numpy, pandas, pyarrow, pyiceberg, zmq
    from google.protobuf.internal import api_implementation
    import dexorder_feeds
    from dexorder_feeds import wire

    frames = [bytes.fromhex(h) for h in json.load(open(sys.argv[1]))]
    echoed = [wire.encode_frame(wire.decode_frame(frame)).hex() for frame in frames]
    flags = [wire.decode_frame(frame).HasField("limit") for frame in frames[:3]]

    df = dexorder_feeds.fetch_ohlc(*json.loads(sys.argv[2]))
    print(json.dumps({
        "versions": {"protobuf": google.protobuf.__version__, "pandas": pandas.__version__,
                     "numpy": numpy.__version__, "pyarrow": pyarrow.__version__,
                     "pyiceberg": pyiceberg.__version__, "pyzmq": zmq.__version__},
        "protobuf_backend": api_implementation.Type(),
        "installed_at": dexorder_feeds.__file__,
        "echoed": echoed,
        "limit_presence": flags,
        "rows": len(df),
        "candles": {c: [int(v) for v in df[c]] for c in json.loads(sys.argv[3])},
    }))
""")

_NOT_SOURCES = {".git", "build", "dist", "__pycache__", ".pytest_cache", ".hypothesis", ".mypy_cache"}


def _ignore_non_sources(directory: str, names: list[str]) -> set[str]:
    """For copytree: leave out VCS data, build output, caches and virtualenvs (any name)."""
    return {name for name in names
            if name in _NOT_SOURCES or name.endswith(".egg-info")
            or (Path(directory, name) / "pyvenv.cfg").exists()}


def _run(args: list[str], *, what: str, timeout: float, **kwargs) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kwargs)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{what} took over {timeout:.0f} s:\n{exc.stdout or ''}\n{exc.stderr or ''}")
    if proc.returncode != 0:
        pytest.fail(f"{what} failed (exit {proc.returncode}): {' '.join(args)}\n"
                    f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}")
    return proc


def test_the_core_works_at_the_oldest_protobuf_and_pandas(tmp_path):
    pins = OLDEST.get(sys.version_info[:2])
    if pins is None:
        pytest.fail(f"no oldest-dependency pins for Python {sys.version_info[0]}.{sys.version_info[1]}: "
                    "add a set with wheels for it to OLDEST in tests/test_compat_matrix.py")
    # The newest end, computed here, is what the oldest end must reproduce.
    expected = dexorder_feeds.fetch_ohlc(*FETCH)
    close_sync_clients()

    base_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("PYTHON", "DEXORDER_", "PYICEBERG_", "VIRTUAL_ENV"))}
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], what="creating a venv", timeout=120)
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")

    # Install from a copy so the build writes no build/ or *.egg-info into the work tree.
    source = tmp_path / "src"
    shutil.copytree(REPO, source, ignore=_ignore_non_sources)
    constraints = tmp_path / "oldest.txt"
    constraints.write_text("".join(f"{name}=={version}\n" for name, version in pins.items()))
    proc = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--retries", "2",
         "--timeout", "30", "-c", str(constraints), str(source)],
        capture_output=True, text=True, timeout=900, env=base_env)
    if proc.returncode != 0:
        pytest.fail("pip could not install dexorder-feeds with the oldest dependencies into a fresh venv. "
                    "This test needs PyPI (or the configured index) to be reachable; if it was, the pins "
                    f"in {constraints.name} no longer resolve.\n--- constraints\n{constraints.read_text()}"
                    f"--- pip stderr\n{proc.stderr[-4000:]}\n--- pip stdout\n{proc.stdout[-2000:]}")

    frames = tmp_path / "frames.json"
    frames.write_text(json.dumps([wire.encode_frame(m).hex() for m in MESSAGES]))
    script = tmp_path / "oldest_end.py"
    script.write_text(SCRIPT)
    home = tmp_path / "home"
    home.mkdir()
    env = {**base_env, "HOME": str(home), "DEXORDER_CACHE_DIR": str(home / "cache"),
           "DEXORDER_CONFIG": str(home / "config.toml")}
    out = _run([str(python), "-I", str(script), str(frames), json.dumps(FETCH), json.dumps(INT_COLUMNS)],
               what="the wire round trip and fetch in the oldest-dependency venv", timeout=300,
               env=env, cwd=tmp_path).stdout
    result = json.loads(out.strip().splitlines()[-1])

    for name in ("protobuf", "pandas", "numpy", "pyarrow", "pyiceberg", "pyzmq"):
        assert result["versions"][name] == pins[name], result["versions"]
    assert Path(result["installed_at"]).is_relative_to(venv), "the venv must import its own installed copy"

    assert result["echoed"] == [wire.encode_frame(m).hex() for m in MESSAGES]
    assert [wire.decode_frame(bytes.fromhex(h)) for h in result["echoed"]] == MESSAGES
    assert result["limit_presence"] == [True, False, True]

    assert result["rows"] == 168
    assert result["candles"] == {c: [int(v) for v in expected[c]] for c in INT_COLUMNS}


def test_the_suite_itself_runs_at_the_newest_end():
    """The rest of the suite is the newest end of the matrix: protobuf 7 and pandas 3."""
    assert int(google.protobuf.__version__.split(".")[0]) == 7, google.protobuf.__version__
    assert int(pd.__version__.split(".")[0]) == 3, pd.__version__
