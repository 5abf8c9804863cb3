"""A long-lived client process for the team tests: one teammate's machine, driven by a test.

It reads its settings the way a teammate's machine does (``DEXORDER_*`` variables, its own
config file and cache dir) and answers one JSON line per command read from stdin:

- ``{"op": "fetch", "ticker": ..., "period": ..., "start": ..., "end": ...}`` →
  ``{"rows": n, "requests": [[start, end], ...], "digest": ..., "first": ts, "last": ts}``
  (``requests``: the gap-fill requests this fetch sent; ``digest``: a hash of the candles)
- ``{"op": "missing", ...same range...}`` → ``{"missing": [[first, last], ...]}``
- ``{"op": "stop"}`` → exits.

Errors come back as ``{"error": "TypeName: message"}``. One client and one event loop live for
the whole process, so a stale table state would show.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import threading

from dexorder_feeds import OHLCClient, hookimpl
from dexorder_feeds.plugins import get_plugin_manager


class Requests:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sent: list[list[int]] = []

    @hookimpl
    def dexorder_request_sent(self, request_id, ticker, period_seconds, start_time, end_time):
        with self.lock:
            self.sent.append([start_time, end_time])

    def take(self) -> list[list[int]]:
        with self.lock:
            sent, self.sent = self.sent, []
        return sent


def digest(frame) -> str:
    columns = ["timestamp", "open", "high", "low", "close", "volume"]
    return hashlib.sha256(frame[columns].to_numpy().tobytes()).hexdigest()[:16]


async def main() -> None:
    recorder = Requests()
    get_plugin_manager().register(recorder)
    loop = asyncio.get_running_loop()
    async with OHLCClient() as client:
        print(json.dumps({"ready": True, "embedded": client.settings.embedded}), flush=True)
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                return
            command = json.loads(line)
            try:
                if command["op"] == "stop":
                    return
                args = (command["ticker"], command["period"], command["start"], command["end"])
                if command["op"] == "fetch":
                    recorder.take()
                    frame = await client.fetch_ohlc(*args)
                    ts = frame["timestamp"]
                    reply = {"rows": len(frame), "requests": recorder.take(), "digest": digest(frame),
                             "first": int(ts.iloc[0]) if len(ts) else None,
                             "last": int(ts.iloc[-1]) if len(ts) else None,
                             "unique": bool(ts.is_unique)}
                elif command["op"] == "missing":
                    missing = await asyncio.to_thread(client.iceberg.find_missing_ranges, *args)
                    reply = {"missing": [list(r) for r in missing]}
                else:
                    reply = {"error": f"unknown op {command['op']!r}"}
            except Exception as exc:  # reported to the test, which fails with it
                reply = {"error": f"{type(exc).__name__}: {exc}"}
            print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
