"""Floods against a served relay: subscriptions, and one client's queue against another's fetch.

    python benchmarks/bench_flood.py                         # both parts (a few minutes on 2 cores)
    python benchmarks/bench_flood.py --only subscriptions --topics 200000
    python benchmarks/bench_flood.py --only fairness --queued 2000 --fetches 20
    python benchmarks/bench_flood.py --json out.json

One ``dexorder-feeds serve`` process (SQLite catalog in a temp dir, loopback ports, 4 workers).

**subscriptions** – an unauthenticated peer speaks raw ZMTP (it keeps nothing itself, so the
flood costs only the relay) and subscribes to ``--topics`` topics in one connection, twice: topics
of ``--topic-bytes`` bytes (~1 KB: what an attacker sends), then topics shaped like a client's
(``RESPONSE:`` and 32 hex digits). Reported: the relay's resident memory (``VmRSS``) before, at
its peak during each flood and 3 s after the peer left, how many topics the relay accepted, and
whether a good client (connect, subscribe check, one request of stored candles) worked during and
after each flood.

**fairness** – client A queues ``--queued`` requests (one hour of 1-minute candles each, each a
distinct SIM market so none overlaps another); while they wait, client B fetches 24 hourly candles
``--fetches`` times (a new range each time, so each needs the historian). Reported: B's latency
p50/p99/max, and how many of A's requests were still queued when B finished.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import socket
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # relay_process: starting a real serve process

START = 1_735_689_600_000_000  # 2025-01-01
HOUR = 3_600_000_000
MINUTE = 60_000_000


# -- a raw ZMTP 3.0 subscriber: the flood costs the relay, not us ------------------------------
def zmtp_subscriber(endpoint: str) -> socket.socket:
    """A TCP connection that has done the ZMTP 3.0 NULL handshake as a SUB socket."""
    host, port = endpoint.removeprefix("tcp://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)))
    sock.sendall(b"\xff" + b"\x00" * 8 + b"\x7f" + bytes([3, 0]) + b"NULL".ljust(20, b"\x00") + b"\x00" * 32)
    body = b"\x05READY" + bytes([11]) + b"Socket-Type" + struct.pack(">I", 3) + b"SUB"
    sock.sendall(bytes([0x04, len(body)]) + body)
    return sock


def _frame(body: bytes) -> bytes:
    if len(body) < 256:
        return bytes([0, len(body)]) + body
    return bytes([2]) + struct.pack(">Q", len(body)) + body


def flood(endpoint: str, topics: int, make_topic: Any, wait_seconds: float = 10.0) -> tuple[int, bool]:
    """Subscribe to ``topics`` topics in one connection; (topics sent, disconnected by the relay).

    A flood small enough to fit in the kernel's socket buffers is all "sent" before the relay has
    read any of it; whether the relay cut the peer off is then seen by waiting up to
    ``wait_seconds`` for it to close the connection.
    """
    sock = zmtp_subscriber(endpoint)
    sent = 0
    buffer = bytearray()
    try:
        for _ in range(topics):
            buffer += _frame(b"\x01" + make_topic())
            sent += 1
            if len(buffer) >= 1 << 20:
                sock.sendall(buffer)
                buffer.clear()
        sock.sendall(buffer)
        return sent, _closed_by_peer(sock, wait_seconds)
    except OSError:
        return sent, True
    finally:
        flood.last_socket = sock  # type: ignore[attr-defined]  # closed by the caller when it is done


def _closed_by_peer(sock: socket.socket, wait_seconds: float) -> bool:
    """Whether the other end closes ``sock`` within ``wait_seconds`` (what it sends is dropped)."""
    deadline = time.monotonic() + wait_seconds
    try:
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            if not sock.recv(65536):  # end of stream: the relay closed the connection
                return True
    except TimeoutError:
        return False
    except OSError:  # reset by the relay
        return True
    finally:
        sock.settimeout(None)
    return False


class RssSampler(threading.Thread):
    def __init__(self, relay: Any) -> None:
        super().__init__(daemon=True)
        self.relay = relay
        self.peak = relay.rss_kb()
        self.running = True

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.relay.rss_kb())
            time.sleep(0.05)

    def stop(self) -> int:
        self.running = False
        self.join()
        return max(self.peak, self.relay.rss_kb())


def good_client_works(relay: Any, timeout: float = 30.0) -> bool:
    """A fresh client connects (subscribe check included) and gets one stored range's notification."""
    from dexorder_feeds.client.history_client import HistoryClient

    async def main() -> bool:
        async with HistoryClient(relay.relay_endpoint, relay.notification_endpoint,
                                 connect_timeout=timeout) as client:
            result = await client.request_historical_ohlc("SIM:GOOD/USDT", 3600, START, START + 24 * HOUR - 1,
                                                          timeout=timeout)
            return result["status"] == "OK"

    try:
        return asyncio.run(main())
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        print(f"  good client failed: {type(exc).__name__}: {exc}")
        return False


def run_subscriptions(relay: Any, topics: int, topic_bytes: int) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    good_client_works(relay)  # warm: the good client's range is stored, code paths loaded
    time.sleep(1)
    floods = {
        "oversized": lambda: b"RESPONSE:" + secrets.token_hex(max(topic_bytes - 9, 2) // 2).encode(),
        "client-shaped": lambda: b"RESPONSE:" + secrets.token_hex(16).encode(),
    }
    for name, make_topic in floods.items():
        baseline = relay.rss_kb()
        sampler = RssSampler(relay)
        sampler.start()
        began = time.perf_counter()
        sent, cut_off = flood(relay.notification_endpoint, topics, make_topic)
        time.sleep(2)  # the relay reads what was sent
        during = good_client_works(relay)
        peak = sampler.stop()
        flood.last_socket.close()  # type: ignore[attr-defined]
        time.sleep(3)
        after_rss = relay.rss_kb()
        after = good_client_works(relay)
        figures[name] = dict(topics=topics, topics_sent=sent, disconnected=cut_off,
                             seconds=round(time.perf_counter() - began, 1), rss_before_mb=round(baseline / 1024, 1),
                             rss_peak_mb=round(peak / 1024, 1), rss_growth_mb=round((peak - baseline) / 1024, 1),
                             rss_after_mb=round(after_rss / 1024, 1), good_client_during=during,
                             good_client_after=after)
        print(f"subscription flood, {name} topics: {sent:,} of {topics:,} sent"
              f"{' (then the relay disconnected the peer)' if cut_off else ''}; relay RSS "
              f"{baseline / 1024:.0f} MB before, peak {peak / 1024:.0f} MB (+{(peak - baseline) / 1024:.1f} MB), "
              f"{after_rss / 1024:.0f} MB 3 s after the peer left; good client during: {'ok' if during else 'FAILED'}, "
              f"after: {'ok' if after else 'FAILED'}", flush=True)
    refused = [line for line in relay.logs().splitlines() if "refused a subscription" in line]
    figures["refusal_log_lines"] = len(refused)
    return figures


def run_fairness(relay: Any, queued: int, fetches: int) -> dict[str, Any]:
    from dexorder_feeds.client.history_client import HistoryClient
    from dexorder_feeds.client.ohlc_client import OHLCClient

    async def main() -> dict[str, Any]:
        async with HistoryClient(relay.relay_endpoint, relay.notification_endpoint) as flooder, \
                OHLCClient(iceberg_catalog_uri=relay.catalog_uri, relay_endpoint=relay.relay_endpoint,
                           notification_endpoint=relay.notification_endpoint, request_timeout=60) as victim:
            await victim.fetch_ohlc("SIM:FAIRB/USDT", 3600, START - 48 * HOUR, START - 25 * HOUR)  # warm
            done = 0

            async def one(i: int) -> None:
                nonlocal done
                await flooder.request_historical_ohlc(f"SIM:Q{i}/USDT", 60, START, START + HOUR - 1, timeout=3600)
                done += 1

            backlog = [asyncio.create_task(one(i)) for i in range(queued)]
            await asyncio.sleep(3)  # every request sent and queued at the relay
            latencies = []
            for k in range(fetches):
                first = START + k * 24 * HOUR
                began = time.perf_counter()
                frame = await victim.fetch_ohlc("SIM:FAIRB/USDT", 3600, first, first + 23 * HOUR)
                latencies.append(time.perf_counter() - began)
                assert len(frame) == 24, len(frame)
            still_queued = queued - done
            await asyncio.gather(*backlog)
            return dict(latencies=latencies, flooder_still_queued=still_queued)

    began = time.perf_counter()
    out = asyncio.run(main())
    latencies = sorted(out["latencies"])
    p50 = latencies[len(latencies) // 2]
    p99 = latencies[min(len(latencies) - 1, int(round(0.99 * (len(latencies) - 1))))]
    figures = dict(queued=queued, fetches=fetches, p50_s=round(p50, 3), p99_s=round(p99, 3),
                   max_s=round(latencies[-1], 3), flooder_still_queued_at_end=out["flooder_still_queued"],
                   total_s=round(time.perf_counter() - began, 1))
    print(f"fairness: while one client had {queued:,} requests queued ({out['flooder_still_queued']:,} still queued "
          f"after the last fetch), another client's 24-candle fetch took p50 {p50:.3f} s, p99 {p99:.3f} s, "
          f"max {latencies[-1]:.3f} s over {fetches} fetches", flush=True)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["subscriptions", "fairness"], default=None)
    parser.add_argument("--topics", type=int, default=200_000)
    parser.add_argument("--topic-bytes", type=int, default=1_000)
    parser.add_argument("--queued", type=int, default=2_000)
    parser.add_argument("--fetches", type=int, default=20)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    from relay_process import start_relay_process

    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-flood-") as tmp:
        relay = start_relay_process(Path(tmp) / "relay", workers=args.workers)
        try:
            if args.only in (None, "subscriptions"):
                figures["subscriptions"] = run_subscriptions(relay, args.topics, args.topic_bytes)
            if args.only in (None, "fairness"):
                figures["fairness"] = run_fairness(relay, args.queued, args.fetches)
        finally:
            relay.stop()
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
