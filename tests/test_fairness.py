"""Fair queueing: the relay's workers are shared round-robin between clients, so one client's
backlog never holds up another client's request.

:class:`FairQueue` alone (the order in which slots are handed out), the :class:`Scheduler` over a
real historian and warehouse (a second client's request runs before the first client's backlog),
and a served relay (another client's fetch completes while a backlog of 300 requests is still
queued; ``benchmarks/bench_flood.py`` measures the latency with 2,000).
"""

from __future__ import annotations

import asyncio

import pytest
from relay_process import relay_process

from dexorder_feeds.client.history_client import HistoryClient
from dexorder_feeds.client.ohlc_client import OHLCClient
from dexorder_feeds.ingest.historian import Historian
from dexorder_feeds.relay.results import ResultCache
from dexorder_feeds.relay.scheduling import FairQueue, Scheduler
from dexorder_feeds.wire import HistoryRequest, Notification

SEED_START = 1735689600000000  # 2025-01-01 00:00 UTC
H = 3600 * 1_000_000


def test_slots_go_to_the_client_served_least():
    async def main() -> list[str]:
        fair = FairQueue(1)
        order: list[str] = []
        await fair.acquire("busy")  # the one slot is taken

        async def one(client: str, n: int) -> None:
            await fair.acquire(client)
            order.append(f"{client}{n}")
            fair.release()

        tasks = [asyncio.create_task(one("busy", n)) for n in range(4)]
        await asyncio.sleep(0)
        tasks += [asyncio.create_task(one("other", n)) for n in range(2)]
        await asyncio.sleep(0)
        assert len(fair) == 6
        fair.release()
        await asyncio.gather(*tasks)
        return order

    # "busy" already holds a slot: "other" goes first, then they alternate
    assert asyncio.run(main()) == ["other0", "busy0", "other1", "busy1", "busy2", "busy3"]


def test_a_cancelled_waiter_gives_up_its_turn_and_close_refuses_the_rest():
    async def main() -> None:
        fair = FairQueue(1)
        await fair.acquire("a")
        gone = asyncio.create_task(fair.acquire("b"))
        stays = asyncio.create_task(fair.acquire("c"))
        await asyncio.sleep(0)
        gone.cancel()
        await asyncio.gather(gone, return_exceptions=True)
        assert len(fair) == 1
        fair.release()
        await stays  # c got the slot, not the cancelled b
        late = asyncio.create_task(fair.acquire("d"))
        await asyncio.sleep(0)
        fair.close()
        with pytest.raises(RuntimeError):
            await late
        with pytest.raises(RuntimeError):
            await fair.acquire("e")

    asyncio.run(main())


def test_scheduler_serves_another_client_before_a_backlog(warehouse):
    published: list[str] = []

    async def publish(notification: Notification) -> None:
        assert notification.status == Notification.OK, notification.error_message
        published.append(notification.request_id)

    def request(request_id: str, client_id: str, ticker: str) -> HistoryRequest:
        return HistoryRequest(request_id=request_id, client_id=client_id, ticker=ticker, period_seconds=3600,
                              start_time=SEED_START, end_time=SEED_START + 24 * H - 1)

    async def main() -> None:
        scheduler = Scheduler(Historian(warehouse), workers=1, results=ResultCache(), publish=publish)
        try:
            for n in range(6):
                scheduler.submit(request(f"flood{n}", "flooder", f"SIM:F{n}/USDT"), received=0.0)
            scheduler.submit(request("victim", "victim", "SIM:V/USDT"), received=0.0)
            await asyncio.gather(*scheduler.running())
        finally:
            scheduler.close()

    asyncio.run(main())
    assert len(published) == 7
    assert published.index("victim") <= 1, published  # only the one already running came first


def test_a_backlog_of_one_client_does_not_hold_up_another(tmp_path):
    backlog = 300

    async def main() -> tuple[int, int]:
        with relay_process(tmp_path / "relay", workers=2) as relay:
            async with HistoryClient(relay.relay_endpoint, relay.notification_endpoint) as flooder, \
                    OHLCClient(iceberg_catalog_uri=relay.catalog_uri, relay_endpoint=relay.relay_endpoint,
                               notification_endpoint=relay.notification_endpoint, request_timeout=120) as victim:
                done = 0

                async def one(n: int) -> None:
                    nonlocal done
                    await flooder.request_historical_ohlc(f"SIM:B{n}/USDT", 60, SEED_START, SEED_START + H - 1,
                                                          timeout=600)
                    done += 1

                tasks = [asyncio.create_task(one(n)) for n in range(backlog)]
                while flooder_sent(relay) < 1:
                    await asyncio.sleep(0.05)
                frame = await victim.fetch_ohlc("SIM:VICTIM/USDT", 3600, SEED_START, SEED_START + 23 * H)
                finished_before = done
                await asyncio.gather(*tasks)
                return len(frame), finished_before

    rows, finished_before = asyncio.run(main())
    print(f"\nanother client's fetch finished while {backlog - finished_before} of {backlog} backlog requests waited")
    assert rows == 24
    assert finished_before < backlog // 2


def flooder_sent(relay) -> int:
    """Requests the relay finished so far (its per-request log lines)."""
    return relay.logs().count("relay request ")
