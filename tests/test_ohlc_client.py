"""OHLCClient on the embedded default: caching, gap detection, shared gap fills, inputs."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import pandas as pd
import pyarrow.compute as pc
import pytest

from dexorder_feeds import ClientClosedError, OHLCClient
from dexorder_feeds.vocabulary.errors import InvalidPeriodError, InvalidTickerError, InvalidTimeRangeError, RequestTimeoutError
from dexorder_feeds.vocabulary.requests import FetchRequest

from conftest import SEED_END, SEED_START, SEED_TICKER
from observer import recording

H = 3_600_000_000
SEED_COLUMNS = ["ticker", "period_seconds", "timestamp", "open", "high", "low", "close",
                "volume", "buy_vol", "sell_vol", "open_interest"]


def run(coro):
    return asyncio.run(coro)


def all_stored_timestamps(client: OHLCClient, ticker: str, period: int) -> list[int]:
    table, _ = client.iceberg.warehouse.read_candles(ticker, period, (0, 2**62))
    return table["timestamp"].to_pylist()


def test_default_client_uses_the_cache_dir_and_the_in_process_historian(tmp_path, monkeypatch):
    monkeypatch.setenv("DEXORDER_CACHE_DIR", str(tmp_path / "cache"))

    async def main():
        async with OHLCClient() as client:
            assert client.settings.embedded
            df = await client.fetch_ohlc(SEED_TICKER, 3600, SEED_START, SEED_END)
            return client, df

    client, df = run(main())
    assert (tmp_path / "cache" / "catalog.db").exists()
    assert len(df) == 168
    assert list(df.columns) == SEED_COLUMNS
    assert df["timestamp"].is_monotonic_increasing and df["timestamp"].is_unique
    assert df["timestamp"].iloc[0] == SEED_START and df["timestamp"].iloc[-1] == SEED_START + 167 * H
    for column in SEED_COLUMNS[1:]:
        assert pd.api.types.is_integer_dtype(df[column]), column
    assert isinstance(df.attrs["snapshot_id"], int)


def test_second_fetch_sends_no_request():
    async def main():
        async with OHLCClient() as client:
            with recording() as rec:
                first = await client.fetch_ohlc(SEED_TICKER, 3600, SEED_START, SEED_END)
                sent_first = len(rec.requests)
                second = await client.fetch_ohlc(SEED_TICKER, 3600, SEED_START, SEED_END)
            return first, second, sent_first, rec

    first, second, sent_first, rec = run(main())
    assert sent_first == 1
    assert len(rec.requests) == 1, "the second fetch must be served from the cache"
    assert rec.cache_checks[-1] == (SEED_TICKER, 168, [])
    pd.testing.assert_frame_equal(first, second)


def test_widening_a_range_requests_exactly_the_two_outer_ranges():
    a, b, k = SEED_START, SEED_START + 47 * H, 5 * H

    async def main():
        async with OHLCClient() as client:
            await client.fetch_ohlc(SEED_TICKER, 3600, a, b)
            with recording() as rec:
                df = await client.fetch_ohlc(SEED_TICKER, 3600, a - k, b + k)
            return df, rec, client

    df, rec, client = run(main())
    assert sorted(r[2:] for r in rec.requests) == [(a - k, a - H), (b + H, b + k)]
    assert len(df) == 48 + 10
    assert rec.cache_checks[0][1] == 48 and rec.cache_checks[0][2] == [(a - k, a - H), (b + H, b + k)]


def test_an_empty_range_is_requested_once_then_remembered():
    before_listing = 1388534400000000  # 2014-01-01: SIM markets list on 2015-01-01

    async def main():
        async with OHLCClient() as client:
            with recording() as rec:
                first = await client.fetch_ohlc(SEED_TICKER, 86400, before_listing, before_listing + 9 * 86400_000000)
                second = await client.fetch_ohlc(SEED_TICKER, 86400, before_listing, before_listing + 9 * 86400_000000)
            missing = client.iceberg.find_missing_ranges(SEED_TICKER, 86400, before_listing, before_listing + 9 * 86400_000000)
            return first, second, rec, missing

    first, second, rec, missing = run(main())
    assert len(first) == len(second) == 0
    assert len(rec.requests) == 1
    assert [n["status"] for n in rec.notifications] == ["NOT_FOUND"]
    assert missing == [], "an ingested-and-empty range is not missing"


def test_twenty_concurrent_overlapping_fetches_share_requests():
    ranges = [(SEED_START + (i % 7) * 5 * H, SEED_START + (i % 7) * 5 * H + (24 + i) * H) for i in range(20)]

    async def main():
        async with OHLCClient() as client:
            with recording() as rec:
                frames = await asyncio.gather(*(client.fetch_ohlc(SEED_TICKER, 3600, s, e) for s, e in ranges))
            return frames, rec, all_stored_timestamps(client, SEED_TICKER, 3600)

    frames, rec, stored = run(main())
    for (s, e), frame in zip(ranges, frames):
        assert frame["timestamp"].tolist() == list(range(s, e + 1, H))
    requested = sorted(r[2:] for r in rec.requests)
    for (s1, e1), (s2, e2) in zip(requested, requested[1:]):
        assert e1 < s2, f"ranges {requested} overlap: a range was asked for twice"
    assert len(stored) == len(set(stored)), "duplicate rows in the warehouse"
    union = {t for s, e in ranges for t in range(s, e + 1, H)}
    assert set(stored) == union


def test_accepts_datetimes_timestamps_and_iso_strings():
    async def main():
        async with OHLCClient() as client:
            ints = await client.fetch_ohlc(SEED_TICKER, 3600, SEED_START, SEED_END)
            dts = await client.fetch_ohlc(SEED_TICKER, "1h", datetime(2025, 1, 1, tzinfo=timezone.utc),
                                          datetime(2025, 1, 7, 23, 59, 59))
            pds = await client.fetch_ohlc(SEED_TICKER, 3600, pd.Timestamp("2025-01-01"), pd.Timestamp("2025-01-07 23:59:59", tz="UTC"))
            iso = await client.fetch_ohlc(SEED_TICKER, 3600, "2025-01-01T00:00:00Z", "2025-01-07T23:59:59")
            return ints, dts, pds, iso

    ints, *others = run(main())
    for other in others:
        assert other["timestamp"].tolist() == ints["timestamp"].tolist()
        assert other["close"].tolist() == ints["close"].tolist()


@pytest.mark.parametrize(
    "args, error, text",
    [
        (("NOPE", 3600, SEED_START, SEED_END), InvalidTickerError, "EXCHANGE:BASE/QUOTE"),
        ((SEED_TICKER, 0, SEED_START, SEED_END), InvalidPeriodError, "positive"),
        ((SEED_TICKER, -60, SEED_START, SEED_END), InvalidPeriodError, "positive"),
        ((SEED_TICKER, 3600, SEED_END, SEED_START), InvalidTimeRangeError, "after"),
        ((SEED_TICKER, 3600, 1735689600, SEED_END), InvalidTimeRangeError, "seconds"),
        ((SEED_TICKER, 3600, 1735689600000, SEED_END), InvalidTimeRangeError, "milliseconds"),
    ],
)
def test_bad_input_gets_clear_errors_and_stores_nothing(args, error, text):
    async def main():
        async with OHLCClient() as client:
            with recording() as rec:
                with pytest.raises(error, match=text) as info:
                    await client.fetch_ohlc(*args)
            return rec, info

    rec, info = run(main())
    assert isinstance(info.value, ValueError)
    assert rec.requests == []


@pytest.mark.parametrize(
    "sources, ticker, text",
    [
        (None, "NOSUCHEXCHANGE:BTC/USDT", "nosuchexchange"),
        ({"NOWHERE": "files:/definitely/not/here"}, "NOWHERE:BTC/USDT", "/definitely/not/here"),
        ({"NOWHERE": "nosuchsource:x"}, "NOWHERE:BTC/USDT", "nosuchsource"),
    ],
)
def test_unserved_exchanges_are_clear_errors_and_keep_the_warehouse_intact(sources, ticker, text):
    async def main():
        async with OHLCClient() as client:
            before = await client.fetch_ohlc(SEED_TICKER, 3600, SEED_START, SEED_END)
        with pytest.raises(ValueError, match=text):
            async with OHLCClient(sources=sources) as other:
                await other.fetch_ohlc(ticker, 3600, SEED_START, SEED_END)
        async with OHLCClient() as client:
            after = await client.fetch_ohlc(SEED_TICKER, 3600, SEED_START, SEED_END)
        return before, after

    before, after = run(main())
    pd.testing.assert_frame_equal(before, after)


def test_an_end_in_the_future_is_allowed_and_the_open_period_is_not_stored():
    now = pd.Timestamp.now(tz="UTC")
    start = (now - pd.Timedelta(hours=5)).floor("h")
    end = now + pd.Timedelta(hours=3)

    async def main():
        async with OHLCClient() as client:
            df = await client.fetch_ohlc(SEED_TICKER, 3600, start, end)
            missing = client.iceberg.find_missing_ranges(SEED_TICKER, 3600, start, end)
            return df, missing

    df, missing = run(main())
    open_period = now.floor("h").value // 1000
    assert df["timestamp"].max() < open_period, "a candle whose period has not closed was stored"
    assert len(df) == 5
    assert missing and missing[0][0] == open_period, "the open period is always missing"


def test_a_stopped_client_raises_a_clear_error():
    async def main():
        client = OHLCClient()
        await client.start()
        await client.stop()
        with pytest.raises(ClientClosedError, match="create a new one"):
            await client.fetch_ohlc(SEED_TICKER, 3600, SEED_START, SEED_END)

    run(main())


def test_fetch_before_start_starts_the_client():
    async def main():
        client = OHLCClient()
        try:
            return await client.fetch_ohlc(SEED_TICKER, 3600, SEED_START, SEED_START + 2 * H)
        finally:
            await client.stop()

    assert len(run(main())) == 3


def test_fetch_request_validation_matches_the_seed_example():
    request = FetchRequest.create(SEED_TICKER, 3600, SEED_START, SEED_END)
    assert request.interval == (SEED_START, SEED_START + 168 * H)


def test_a_fill_committed_by_another_process_during_the_cache_read_is_never_half_seen(monkeypatch):
    """Another historian commits candles, then coverage, while this fetch reads the cache: the
    fetch must see either neither (and fill) or both, never the coverage without its candles."""
    import uuid

    from dexorder_feeds.storage.catalog import open_catalog
    from dexorder_feeds.ingest.historian import Historian
    from dexorder_feeds.storage.warehouse import Warehouse
    from dexorder_feeds.wire import HistoryRequest

    async def main():
        async with OHLCClient() as client:
            warehouse = client.iceberg.warehouse
            other = Historian(Warehouse(open_catalog(client.settings.iceberg_catalog_uri, cache=False)))
            real = Warehouse._tables
            fired = []

            def tables(self, *names):
                # The other process commits just before this fetch loads the coverage table.
                if not fired and self is warehouse and "coverage" in names:
                    fired.append(other.handle(HistoryRequest(
                        request_id=uuid.uuid4().hex, client_id="other", ticker=SEED_TICKER, period_seconds=3600,
                        start_time=SEED_START, end_time=SEED_START + 24 * H - 1)))
                return real(self, *names)

            monkeypatch.setattr(Warehouse, "_tables", tables)
            df = await client.fetch_ohlc(SEED_TICKER, 3600, SEED_START, SEED_START + 24 * H - 1)
            other.warehouse.close()
            return df, fired

    df, fired = run(main())
    assert fired and fired[0].row_count == 24
    assert len(df) == 24


def test_a_fetch_waiting_on_another_fetchs_fill_survives_that_fetchs_cancellation_or_timeout():
    """Two fetches share a gap fill; the one that owns it is cancelled, or times out on its own
    short timeout: the other, which nobody cancelled, must still get its candles."""

    async def main():
        async with OHLCClient() as client:
            history = client._fetcher.context.history
            real = history.request_historical_ohlc

            async def slow(*args, timeout=30.0, **kwargs):
                # A historian that needs 0.5 s, behind a transport that honours the timeout.
                if timeout < 0.5:
                    await asyncio.sleep(timeout)
                    raise RequestTimeoutError(f"no notification within {timeout} s")
                await asyncio.sleep(0.5)
                return await real(*args, timeout=timeout, **kwargs)

            history.request_historical_ohlc = slow
            day = (SEED_TICKER, 3600, SEED_START, SEED_START + 24 * H - 1)
            owner = asyncio.create_task(client.fetch_ohlc(*day))
            await asyncio.sleep(0.05)
            waiter = asyncio.create_task(client.fetch_ohlc(*day))
            await asyncio.sleep(0.05)
            owner.cancel()
            first = await waiter

            next_day = (SEED_TICKER, 3600, SEED_START + 24 * H, SEED_START + 48 * H - 1)
            impatient = asyncio.create_task(client.fetch_ohlc(*next_day, request_timeout=0.1))
            await asyncio.sleep(0.05)
            patient = asyncio.create_task(client.fetch_ohlc(*next_day, request_timeout=60))
            with pytest.raises(TimeoutError):
                await impatient
            second = await patient
            return first, second

    first, second = run(main())
    assert len(first) == 24 and len(second) == 24
