"""The coverage ledger through a real relay process: a late-publishing exchange (a plugin
source installed by an entry point) has its candle on the second fetch, and rows appended to a
file behind stored ranges are re-checked by the relay's historian with no user action."""

from __future__ import annotations

import asyncio
import os

import pytest

from dexorder_feeds import OHLCClient
from dexorder_feeds.vocabulary.requests import closed_period_stop

from relay_process import entry_point_plugin, relay_process

H = 3_600_000_000
T0 = 1735689600000000  # 2025-01-01 00:00 UTC
HEADER = "timestamp,open,high,low,close,volume\n"

LATE_PLUGIN = '''
import threading
import pandas as pd
from dexorder_feeds.plugin import IngestSource, MarketInfo, SourceCandles, hookimpl
from dexorder_feeds.vocabulary.requests import closed_period_stop


class LateSource(IngestSource):
    """Publishes the last closed period only from the second ask on."""

    name = "late"

    def __init__(self):
        self.seen = set()
        self.lock = threading.Lock()

    def fetch_candles(self, ticker, period_seconds, start, stop):
        last = closed_period_stop(period_seconds) - period_seconds * 1_000_000
        with self.lock:
            late = last in self.seen
            self.seen.add(last)
        step = period_seconds * 1_000_000
        times = [t for t in range(start, stop, step) if t < last or (late and t == last)]
        n = len(times)
        frame = pd.DataFrame({"timestamp": times, "open": ["10.00"] * n, "high": ["11.00"] * n,
                              "low": ["9.00"] * n, "close": ["10.50"] * n, "volume": ["1.5"] * n})
        return SourceCandles(MarketInfo(str(ticker), 2, 1), frame)


SOURCE = LateSource()


@hookimpl
def dexorder_register_sources(register):
    register("late", lambda argument: SOURCE)
'''


def fetch(relay, ticker: str, start: int, end: int, period: int = 3600):
    async def main():
        async with OHLCClient(iceberg_catalog_uri=relay.catalog_uri, relay_endpoint=relay.relay_endpoint,
                              notification_endpoint=relay.notification_endpoint) as client:
            return await client.fetch_ohlc(ticker, period, start, end)

    return asyncio.run(main())


def test_a_late_candle_through_the_relay(tmp_path):
    env = entry_point_plugin(tmp_path / "site", "ledger_late_plugin", LATE_PLUGIN)
    with relay_process(tmp_path / "relay", sources=["LATE=late"], env=env) as relay:
        closed = closed_period_stop(3600)
        first = fetch(relay, "LATE:BTC/USDT", closed - 4 * H, closed + H)
        second = fetch(relay, "LATE:BTC/USDT", closed - 4 * H, closed + H)
        assert first["timestamp"].tolist() == [closed - i * H for i in range(4, 1, -1)], relay.logs()
        assert second["timestamp"].tolist() == [closed - i * H for i in range(4, 0, -1)], relay.logs()


@pytest.mark.parametrize("change", ["append", "add"])
def test_a_file_appended_or_added_is_served_through_the_relay(tmp_path, change):
    data = tmp_path / "candles"
    path = data / "BINANCE" / "BTC-USDT" / "1h.csv"
    path.parent.mkdir(parents=True)
    rows = [f"{(T0 + h * H) // 1_000_000},10.00,11.00,9.00,10.50,1.5\n" for h in range(12)]
    if change == "append":
        path.write_text(HEADER + "".join(rows[:6]))
    with relay_process(tmp_path / "relay", sources=[f"BINANCE=files:{data}"]) as relay:
        assert len(fetch(relay, "BINANCE:BTC/USDT", T0, T0 + 12 * H - 1)) == (6 if change == "append" else 0)
        if change == "append":
            with path.open("a") as handle:
                handle.write("".join(rows[6:]))
        else:
            path.write_text(HEADER + "".join(rows))
        assert relay.wait_for_log("re-checked", 60), relay.logs()  # the relay noticed by itself
        after = fetch(relay, "BINANCE:BTC/USDT", T0, T0 + 12 * H - 1)
        assert after["timestamp"].tolist() == [T0 + h * H for h in range(12)], relay.logs()


def test_a_changed_candle_is_said_once_by_the_relay_and_the_stored_one_kept(tmp_path):
    data = tmp_path / "candles"
    path = data / "BINANCE" / "BTC-USDT" / "1h.csv"
    path.parent.mkdir(parents=True)

    def rows(close_2: str) -> str:
        return HEADER + "".join(f"{(T0 + h * H) // 1_000_000},10.00,11.00,9.00,{close_2 if h == 2 else '10.50'},1.5\n"
                                for h in range(6))

    path.write_text(rows("10.50"))
    with relay_process(tmp_path / "relay", sources=[f"BINANCE=files:{data}"]) as relay:
        assert len(fetch(relay, "BINANCE:BTC/USDT", T0, T0 + 6 * H - 1)) == 6
        replacement = path.with_name("1h.csv.new")
        replacement.write_text(rows("10.60"))
        os.replace(replacement, path)
        assert relay.wait_for_log("now gives another", 60), relay.logs()
        after = fetch(relay, "BINANCE:BTC/USDT", T0, T0 + 6 * H - 1)
        assert after["close"].tolist() == [1050] * 6  # the stored candles, unchanged
        assert relay.logs().count("now gives another") == 1, relay.logs()  # said once, not every poll
