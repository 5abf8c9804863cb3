"""ArcticDB (LMDB backend) as an anchor for B1 and B2, in a venv of its own.

ArcticDB needs pandas < 3 and protobuf < 7; we need pandas 3 (vectorbt) and protobuf >= 7, so
it cannot share our environment. The benchmark builds a venv for it once, in a cache directory
reused across runs (``$DEXORDER_BENCH_CACHE``, else ``~/.cache/dexorder-feeds-bench``), and
talks to ``arcticdb_child.py`` running in it over a pipe. The child times each read itself,
around ``library.read`` alone, so the pipe costs nothing to the figure; ours is timed around
``await OHLCClient.fetch_ohlc`` in this process. If the venv cannot be built (no package index
reachable, an unsupported platform), every ArcticDB line says "anchor unavailable: <reason>".
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REQUIREMENTS = ("arcticdb", "pandas<3", "protobuf<7")
INSTALL_TIMEOUT = 900


def cache_dir() -> Path:
    configured = os.environ.get("DEXORDER_BENCH_CACHE")
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dexorder-feeds-bench"


def venv_python(build: bool = True) -> tuple[Path | None, str]:
    """The Python of a venv holding ArcticDB (built on first use unless ``build`` is false),
    or None and why not."""
    if os.environ.get("DEXORDER_BENCH_NO_ARCTICDB"):
        return None, "DEXORDER_BENCH_NO_ARCTICDB is set"
    venv = cache_dir() / f"arcticdb-venv-py{sys.version_info.major}{sys.version_info.minor}"
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    check = [str(python), "-c", "import arcticdb, pandas; assert int(pandas.__version__.split('.')[0]) < 3"]
    if python.exists() and subprocess.run(check, capture_output=True, timeout=120).returncode == 0:
        return python, ""
    if not build:
        return None, f"its venv is not built in {venv} (a full run builds it; a --tiny run never does)"
    print(f"    building ArcticDB's venv in {venv} (once; reused by later runs)", flush=True)
    try:
        venv.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, capture_output=True,
                       timeout=300)
        done = subprocess.run([str(python), "-m", "pip", "install", "-q", *REQUIREMENTS], capture_output=True,
                              text=True, timeout=INSTALL_TIMEOUT)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["pip failed"])[-1]
            return None, f"pip install {' '.join(REQUIREMENTS)} failed: {last}"
        if subprocess.run(check, capture_output=True, timeout=120).returncode != 0:
            return None, "arcticdb installed but does not import"
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"could not build its venv: {exc}"
    return python, ""


class ArcticDB:
    """One ArcticDB child process on an LMDB library in a temporary directory."""

    def __init__(self, python: Path, workdir: Path) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="arcticdb-", dir=workdir)
        self._process = subprocess.Popen([str(python), str(HERE / "arcticdb_child.py"), self._dir.name],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        hello = self._receive()
        self.version = hello.get("arcticdb", "?")
        self.symbols: dict[str, int] = {}

    def _receive(self) -> dict[str, Any]:
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError(f"the ArcticDB child exited ({self._process.wait()})")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"ArcticDB: {answer['error']}")
        return answer

    def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps(request) + "\n")
        self._process.stdin.flush()
        return self._receive()

    def write(self, symbol: str, frame: Any) -> None:
        """Store a fetched candle frame: its timestamp as the index, its integer columns that
        hold values (an all-null column is left out: ArcticDB under pandas 2 has no Int64)."""
        columns = {"timestamp": frame["timestamp"].to_numpy(dtype=np.int64)}
        for name in ("open", "high", "low", "close", "volume", "buy_vol", "sell_vol", "open_interest"):
            if name in frame.columns and not frame[name].isna().any():
                columns[name] = frame[name].to_numpy(dtype=np.int64)
        path = Path(self._dir.name) / f"{len(self.symbols)}.npz"
        np.savez(path, **columns)
        self._ask({"op": "write", "symbol": symbol, "npz": str(path)})
        path.unlink()
        self.symbols[symbol] = len(columns) - 1

    def read(self, symbol: str, start: int | None, stop: int | None) -> tuple[float, int]:
        """Seconds ``library.read`` took for ``start <= t < stop``, and the rows it returned."""
        answer = self._ask({"op": "read", "symbol": symbol, "start": start, "stop": stop})
        return answer["seconds"], answer["rows"]

    def close(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._dir.cleanup()


_anchor: ArcticDB | None = None
_reason = ""


def arcticdb_anchor(workdir: Path, build: bool = True) -> tuple[ArcticDB | None, str]:
    """The run's ArcticDB child (started once, shared by B1 and B2), or None and why not."""
    global _anchor, _reason
    if _anchor is None and not _reason:
        python, _reason = venv_python(build)
        if python is not None:
            try:
                _anchor = ArcticDB(python, workdir)
            except (OSError, RuntimeError, ValueError) as exc:
                _reason = f"its process did not start: {exc}"
    return _anchor, _reason


def close_anchor() -> None:
    global _anchor
    if _anchor is not None:
        _anchor.close()
        _anchor = None
