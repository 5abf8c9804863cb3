"""The sync face: plain script, inside a running loop (a notebook cell), many threads, fork."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

import dexorder_feeds
from dexorder_feeds.vocabulary.errors import InvalidTickerError, RequestTimeoutError
from dexorder_feeds.client.sync import close_sync_clients, run_sync

from conftest import SEED_END, SEED_START, SEED_TICKER

H = 3_600_000_000


@pytest.fixture(autouse=True)
def _fresh_sync_clients():
    yield
    close_sync_clients()


def test_plain_call():
    df = dexorder_feeds.fetch_ohlc(SEED_TICKER, 3600, SEED_START, SEED_END)
    assert len(df) == 168


def test_inside_a_running_event_loop():
    async def notebook_cell():
        # A notebook runs cells inside a loop: the blocking face must still work there.
        return dexorder_feeds.fetch_ohlc(SEED_TICKER, "1h", "2025-01-01", "2025-01-01T05:00:00")

    df = asyncio.run(notebook_cell())
    assert df["timestamp"].tolist() == [SEED_START + i * H for i in range(6)]


def test_from_eight_threads_at_once():
    barrier = threading.Barrier(8)

    def work(i: int):
        barrier.wait()
        start = SEED_START + i * 12 * H
        return dexorder_feeds.fetch_ohlc(SEED_TICKER, 3600, start, start + 47 * H)

    with ThreadPoolExecutor(8) as pool:
        frames = list(pool.map(work, range(8)))
    for i, frame in enumerate(frames):
        start = SEED_START + i * 12 * H
        assert frame["timestamp"].tolist() == list(range(start, start + 48 * H, H))
    union = dexorder_feeds.fetch_ohlc(SEED_TICKER, 3600, SEED_START, SEED_START + (7 * 12 + 47) * H)
    assert union["timestamp"].is_unique and len(union) == 7 * 12 + 48


def test_the_original_exception_reaches_the_caller():
    with pytest.raises(InvalidTickerError):
        dexorder_feeds.fetch_ohlc("bad ticker", 3600, SEED_START, SEED_END)


def test_timeouts_are_honoured():
    with pytest.raises(RequestTimeoutError):
        run_sync(asyncio.sleep(5), timeout=0.2)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_works_after_fork(tmp_path):
    script = textwrap.dedent(f"""
        import os, sys
        import dexorder_feeds
        dexorder_feeds.fetch_ohlc({SEED_TICKER!r}, 3600, {SEED_START}, {SEED_START + 3 * H})
        pid = os.fork()
        if pid == 0:
            df = dexorder_feeds.fetch_ohlc({SEED_TICKER!r}, 3600, {SEED_START}, {SEED_START + 5 * H})
            os._exit(0 if len(df) == 6 else 3)
        _, status = os.waitpid(pid, 0)
        sys.exit(os.waitstatus_to_exitcode(status))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "DEXORDER_CACHE_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr


def test_interpreter_exit_does_not_hang(tmp_path):
    script = f"import dexorder_feeds; print(len(dexorder_feeds.fetch_ohlc({SEED_TICKER!r}, 3600, {SEED_START}, {SEED_END})))"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "DEXORDER_CACHE_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "168"
