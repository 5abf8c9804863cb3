"""The adapter examples run as scripts, offline, on the embedded default."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Each example in its own interpreter and fresh cache dir, all started at once."""
    root = tmp_path_factory.mktemp("examples")
    commands = {
        "backtrader_sma_cross.py": ["--plot", str(root / "bt.png")],
        "vectorbt_ma_cross.py": ["--png", str(root / "vbt.png")],
        "candle_loop.py": [],
    }
    processes = {}
    for script, args in commands.items():
        workdir = root / script.removesuffix(".py")
        workdir.mkdir()
        env = dict(os.environ, MPLBACKEND="Agg", DEXORDER_CACHE_DIR=str(workdir / "cache"))
        processes[script] = subprocess.Popen([sys.executable, str(EXAMPLES / script), *args], cwd=workdir, env=env,
                                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = {}
    for script, process in processes.items():
        stdout, stderr = process.communicate(timeout=240)
        assert process.returncode == 0, f"{script} failed:\n{stderr}"
        out[script] = stdout
    return root, out


def test_backtrader_sma_cross(runs):
    root, out = runs
    stdout = out["backtrader_sma_cross.py"]
    match = re.search(r"(\d+) bars, (\d+) orders filled", stdout)
    assert match and int(match[1]) == 59 * 24 and int(match[2]) > 0
    value = float(re.search(r"final value: ([\d,.]+)", stdout)[1].replace(",", ""))
    assert value != 100_000.0  # it traded
    assert re.search(r"data quality: SIM:BTC/USDT 3600s: 1416 of 1416 candles stored, 0 missing", stdout)
    assert (root / "bt.png").read_bytes()[:8] == PNG_MAGIC


def test_vectorbt_ma_cross_saves_its_plot(runs):
    root, out = runs
    stdout = out["vectorbt_ma_cross.py"]
    assert len(re.findall(r"SIM:\w+/USDT: [1-9]\d* entries, total return [+-]\d", stdout)) == 2
    png = root / "vbt.png"
    assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 20_000


def test_candle_loop(runs):
    _, out = runs
    stdout = out["candle_loop.py"]
    match = re.search(r"(\d+) candles, (\d+) fills, final equity (\d+\.\d\d)", stdout)
    assert match and int(match[1]) == 59 * 24 and int(match[2]) > 0
    assert re.search(r"buy +\d+\.\d{6} @ \d+\.\d\d$", stdout, re.MULTILINE)  # exact Decimal prices printed
