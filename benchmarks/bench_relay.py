"""B4: a cold gap fill through a served relay, and the request -> notification latency.

A real ``dexorder-feeds serve`` process (started with ``tests/relay_process.py``, 4 historian
workers, its own SQLite catalog) and an ``OHLCClient`` configured with its endpoints:

- cold fill: ``fetch_ohlc`` of a year of 1-minute ``SIM:`` candles (525,600) into an empty
  warehouse; the wall time split into the ingest source's own time (the historian's
  ``source=`` timings, summed over the requests the fetcher split the range into) and the rest.
- latency: ``HistoryClient.request_historical_ohlc`` of an hour that is already stored (the
  historian finds every candle in place and commits nothing), request to notification, p50/p99,
  beside a raw pyzmq REQ/REP round trip of a frame of the same size to an echo process, timed
  in the same run.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from pathlib import Path

import zmq

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))  # relay_process: the served relay helper the tests use

from _common import DAY, M, START_2025, Result, Size, median, ms, percentile  # noqa: E402

TICKER = "SIM:COLD/USDT"
_ECHO = """
import sys, zmq
context = zmq.Context()
socket = context.socket(zmq.REP)
port = socket.bind_to_random_port("tcp://127.0.0.1")
print(port, flush=True)
while True:
    message = socket.recv()
    if message == b"stop":
        socket.send(b"")
        break
    socket.send(message)
"""


def raw_round_trips(payload: bytes, count: int) -> list[float]:
    """REQ/REP round trips of ``payload`` to an echo server in another process (seconds)."""
    echo = subprocess.Popen([sys.executable, "-c", _ECHO], stdout=subprocess.PIPE, text=True)
    try:
        assert echo.stdout is not None
        port = int(echo.stdout.readline())
        context = zmq.Context()
        socket = context.socket(zmq.REQ)
        socket.setsockopt(zmq.LINGER, 0)
        socket.connect(f"tcp://127.0.0.1:{port}")
        for _ in range(20):  # connect and warm up
            socket.send(payload)
            socket.recv()
        samples = []
        for _ in range(count):
            began = time.perf_counter()
            socket.send(payload)
            socket.recv()
            samples.append(time.perf_counter() - began)
        socket.send(b"stop")
        socket.recv()
        socket.close()
        context.term()
        return samples
    finally:
        echo.wait(10)


def bench_b4(size: Size, base_dir: Path) -> Result:
    from relay_process import relay_process

    from dexorder_feeds.client.history_client import HistoryClient
    from dexorder_feeds.client.ohlc_client import OHLCClient
    from dexorder_feeds.wire import HistoryRequest, encode_frame

    start, stop = START_2025 - size.b4_days * DAY, START_2025
    with relay_process(base_dir, workers=4) as relay:

        async def run() -> tuple[float, int, list[float]]:
            async with OHLCClient(iceberg_catalog_uri=relay.catalog_uri, relay_endpoint=relay.relay_endpoint,
                                  notification_endpoint=relay.notification_endpoint, request_timeout=600) as client:
                began = time.perf_counter()
                frame = await client.fetch_ohlc(TICKER, 60, start, stop - 1)
                cold = time.perf_counter() - began
            latencies = []
            async with HistoryClient(relay.relay_endpoint, relay.notification_endpoint) as history:
                hour = (start + 3 * DAY, start + 3 * DAY + 60 * M)
                for i in range(size.b4_requests + 10):
                    began = time.perf_counter()
                    result = await history.request_historical_ohlc(TICKER, 60, hour[0], hour[1] - 1)
                    if i >= 10:  # the first ones warm the relay's and historian's caches
                        latencies.append(time.perf_counter() - began)
                    assert result["status"] == "OK" and result["row_count"] == 60, result
            return cold, len(frame), latencies

        cold, rows, latencies = asyncio.run(run())
        log_text = relay.logs()
    timings = [tuple(float(v) for v in match) for match in re.findall(
        rf"request \S+ {re.escape(TICKER)} 60s .*? source=([\d.]+)ms commit=([\d.]+)ms total=([\d.]+)ms", log_text)]
    cold_requests = timings[: len(timings) - size.b4_requests - 10]
    source = sum(t[0] for t in cold_requests) / 1000
    commit = sum(t[1] for t in cold_requests) / 1000
    payload = encode_frame(HistoryRequest(request_id="0" * 32, client_id="0" * 32, ticker=TICKER, period_seconds=60,
                                          start_time=start, end_time=stop))
    raw = raw_round_trips(payload, size.b4_requests)
    p50, p99, raw50, raw99 = median(latencies), percentile(latencies, 99), median(raw), percentile(raw, 99)
    overhead = p50 - raw50
    result = Result(
        "B4", "cold gap fill and latency through a served relay",
        f"cold fill of {rows:,} 1m candles {cold:.2f} s = source {source:.2f} s + ours {cold - source:.2f} s | "
        f"cached-range request->notification p50 {ms(p50)} p99 {ms(p99)} | anchor raw REQ/REP p50 {ms(raw50)} "
        f"p99 {ms(raw99)} | overhead p50 {ms(overhead)}",
        figures={"cold_s": cold, "source_s": source, "ours_s": cold - source, "commit_s": commit,
                 "latency_p50_ms": p50 * 1e3, "latency_p99_ms": p99 * 1e3, "raw_p50_ms": raw50 * 1e3,
                 "raw_p99_ms": raw99 * 1e3, "overhead_p50_ms": overhead * 1e3},
    )
    result.details.append(
        f"the fetch split the range into {len(cold_requests)} requests run by 4 historian workers; their source "
        f"times sum to {source:.2f} s and their waits for the committer (fills finishing together share a "
        f"commit) to {commit:.2f} s")
    result.details.append(f"{len(latencies)} requests of one stored hour (60 candles) through HistoryClient; "
                          f"{len(raw)} raw round trips of a {len(payload)}-byte frame to an echo process")
    relay_lines = [tuple(float(v) for v in match) for match in re.findall(
        rf"relay request \S+ {re.escape(TICKER)} 60s -> \w+ queue=([\d.]+)ms historian=([\d.]+)ms total=([\d.]+)ms",
        log_text)][-size.b4_requests:]
    if relay_lines:
        historian_ms = median([line[1] for line in relay_lines])
        relay_ms = median([line[2] for line in relay_lines])
        result.details.append(
            f"where the cached-range p50 goes (relay log): historian {historian_ms:.2f} ms (a coverage "
            f"check and a count of the stored candles), relay total {relay_ms:.2f} ms, the rest {p50 * 1e3 - relay_ms:.2f} ms is "
            f"ZeroMQ + asyncio in the client and relay")
        result.figures["historian_p50_ms"] = historian_ms
        result.figures["relay_p50_ms"] = relay_ms
    result.goals["cold fill: ours <= 1.0x the source's own time"] = cold - source <= source
    result.goals["overhead p50 <= 2 ms beyond raw REQ/REP"] = overhead <= 0.002
    return result
