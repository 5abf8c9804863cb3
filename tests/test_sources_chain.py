"""Fallback source chains: ``BINANCE=files:/data,ccxt:binance``.

The chain members are real sources (files, SIM) and a plugin source registered through the
real plugin manager; the end-to-end test fetches through the embedded default client into a
real SQLite-backed Iceberg warehouse.
"""

from __future__ import annotations

import asyncio
import socket
from decimal import Decimal
from pathlib import Path
from typing import Any

import ccxt
import numpy as np
import pandas as pd
import pytest

from dexorder_feeds import OHLCClient
from dexorder_feeds.config import resolve_settings
from dexorder_feeds.hookspecs import hookimpl
from dexorder_feeds.ingest.historian import Historian
from dexorder_feeds.ingest.sources import (
    IngestSource,
    SourceCandles,
    SourceChain,
    SourceRegistry,
    join_spec_list,
    split_chain,
)
from dexorder_feeds.ingest.sources.ccxt_source import CcxtSource
from dexorder_feeds.ingest.sources.files import FilesSource, pair_directory_name
from dexorder_feeds.ingest.sources.sim import SimulatedSource
from dexorder_feeds.plugins import get_plugin_manager
from dexorder_feeds.vocabulary.errors import RequestFailedError, UnknownSourceError
from dexorder_feeds.vocabulary.markets import MarketInfo
from dexorder_feeds.vocabulary.tickers import Ticker, parse_ticker
from dexorder_feeds.wire import HistoryRequest, Notification

H = 3_600_000_000
DAY = 24 * H
JAN1 = 1_735_689_600_000_000  # 2025-01-01 00:00 UTC
WEEK = (JAN1, JAN1 + 7 * DAY)
HOLE = (JAN1 + 2 * DAY, JAN1 + 3 * DAY)  # Jan 3, missing from the files
BTC = parse_ticker("BINANCE:BTC/USDT")
NAMES = ("files", "ccxt", "sim", "gapfill")


def file_rows(hole: tuple[int, int] | None = HOLE) -> list[list[str]]:
    rows = []
    for k in range(7 * 24):
        t = JAN1 + k * H
        if hole is not None and hole[0] <= t < hole[1]:
            continue
        price = Decimal(94000 + k).scaleb(0) + Decimal("0.25")
        rows.append([str(t), str(price), str(price + 10), str(price - 10), str(price + 1), f"{k % 9 + 1}.125"])
    return rows


def write_files(root: Path, rows: list[list[str]], ticker: Ticker = BTC) -> Path:
    directory = root / ticker.exchange / pair_directory_name(ticker)
    directory.mkdir(parents=True, exist_ok=True)
    lines = ["timestamp,open,high,low,close,volume"] + [",".join(r) for r in rows]
    (directory / "1h.csv").write_text("\n".join(lines) + "\n")
    return root


class GapFill(IngestSource):
    """An 'exchange' with every hour of the week, at 4 price decimals (finer than the files)."""

    name = "gapfill"

    def __init__(self, checked: list[tuple[int, int]] | None = None, has: tuple[int, int] = WEEK) -> None:
        self.asked: list[tuple[int, int]] = []
        self.vouch = checked
        self.has = has

    def fetch_candles(self, ticker: Ticker, period_seconds: int, start: int, stop: int) -> SourceCandles:
        self.asked.append((start, stop))
        ts = np.arange(max(start, self.has[0]), min(stop, self.has[1]), period_seconds * 1_000_000, dtype=np.int64)
        price = [Decimal(50000 + int((t - JAN1) // H)) + Decimal("0.1234") for t in ts]
        frame = pd.DataFrame({"timestamp": ts, "open": price, "high": [p + 5 for p in price],
                              "low": [p - 5 for p in price], "close": price,
                              "volume": [Decimal("2.5")] * len(ts)})
        checked = None if self.vouch is None else [(max(a, start), min(b, stop)) for a, b in self.vouch
                                                   if max(a, start) < min(b, stop)]
        return SourceCandles(MarketInfo(str(ticker), 4, 1), frame, checked=checked)


@pytest.fixture
def gapfill() -> Any:
    source = GapFill()

    class Plugin:
        @hookimpl
        def dexorder_register_sources(self, register: Any) -> None:
            register("gapfill", lambda argument: source)

    pm = get_plugin_manager()
    pm.register(Plugin(), name="test-gapfill")
    yield source
    pm.unregister(name="test-gapfill")


# -- parsing ------------------------------------------------------------------------------------------

def test_a_chain_spec_splits_only_where_a_source_name_follows_the_comma() -> None:
    assert split_chain("files:/data,ccxt:binance", NAMES) == ["files:/data", "ccxt:binance"]
    assert split_chain("files:/data/a,b", NAMES) == ["files:/data/a,b"]  # a comma inside a path
    assert split_chain("files:/data/x:y,sim", NAMES) == ["files:/data/x:y", "sim"]  # ':' in a path
    assert split_chain("sim", NAMES) == ["sim"]
    assert split_chain("files:/a, files:/b ,ccxt", NAMES) == ["files:/a", "files:/b", "ccxt"]


def test_the_environment_variable_takes_chains_between_exchanges(monkeypatch: pytest.MonkeyPatch) -> None:
    assert join_spec_list("BINANCE=files:/d,ccxt:binance,KRAKEN=ccxt:kraken".split(",")) == [
        "BINANCE=files:/d,ccxt:binance", "KRAKEN=ccxt:kraken"]
    monkeypatch.setenv("DEXORDER_SOURCES", "BINANCE=files:/d,ccxt:binance, kraken=ccxt:kraken")
    settings = resolve_settings(config_file=None, iceberg_catalog_uri="sqlite:///x.db")
    assert settings.sources == {"BINANCE": "files:/d,ccxt:binance", "KRAKEN": "ccxt:kraken"}


def test_a_chain_member_with_an_unknown_name_is_refused() -> None:
    for spec in ("sim,nosuch:x", "sim,nosuch", "files:/d,nosuch:binance"):
        with pytest.raises(UnknownSourceError, match="unknown source 'nosuch'.*known sources"):
            SourceRegistry({"BINANCE": spec})
    SourceRegistry({"BINANCE": "files:/data/a,b"}).close()  # a comma inside a path is no member


def test_the_registry_builds_one_chain_whose_members_are_shared(tmp_path: Path) -> None:
    root = write_files(tmp_path, file_rows())
    registry = SourceRegistry({"BINANCE": f"files:{root},sim", "OTHER": f"files:{root}"})
    try:
        chain = registry.source_for(BTC)
        assert isinstance(chain, SourceChain)
        assert [spec for spec, _ in chain.members] == [f"files:{root}", "sim"]
        assert registry.source_for(BTC) is chain
        assert registry.source_for(parse_ticker("OTHER:BTC/USDT")) is chain.members[0][1]
        assert chain.name == "files,sim"
        assert chain.local  # files and the simulator: pure CPU, fetched one per core at once
        assert not SourceChain([("files:D", chain.members[0][1]), ("ccxt:binance", CcxtSource("binance"))]).local
    finally:
        registry.close()


# -- answers ------------------------------------------------------------------------------------------

def test_the_next_source_fills_the_hole_and_the_first_keeps_what_it_has(tmp_path: Path) -> None:
    files = FilesSource(write_files(tmp_path, file_rows()))
    second = GapFill()
    chain = SourceChain([("files:D", files), ("gapfill", second)])
    got = chain.fetch_candles(BTC, 3600, *WEEK)

    assert second.asked == [HOLE]
    assert list(got.frame["timestamp"]) == list(range(WEEK[0], WEEK[1], H))
    by_ts = dict(zip(got.frame["timestamp"], got.frame["close"]))
    assert Decimal(str(by_ts[JAN1])) == Decimal("94001.25")  # from the files
    assert by_ts[HOLE[0]] == Decimal("50048.1234")  # from the second source
    assert got.checked == [WEEK]
    assert got.served_by == [((JAN1, HOLE[0]), "files:D"), (HOLE, "gapfill"), ((HOLE[1], WEEK[1]), "files:D")]
    assert (got.market.price_decimals, got.market.volume_decimals) == (4, 3)  # the finest of both
    assert got.scaled is False


def test_a_hole_no_later_source_vouches_for_stays_unknown(tmp_path: Path) -> None:
    files = FilesSource(write_files(tmp_path, file_rows()))
    quiet = GapFill(checked=[], has=(JAN1, JAN1))  # no candles, and vouches for nothing (empty pages)
    chain = SourceChain([("files:D", files), ("quiet", quiet)])
    got = chain.fetch_candles(BTC, 3600, *WEEK)
    assert len(got.frame) == 6 * 24
    assert got.checked == [(JAN1, HOLE[0]), (HOLE[1], WEEK[1])]  # the files' "no candle" is not the last word
    assert got.served_by == [((JAN1, HOLE[0]), "files:D"), ((HOLE[1], WEEK[1]), "files:D")]
    assert (got.market.price_decimals, got.market.volume_decimals) == (2, 3)


def test_an_empty_part_every_source_vouches_for_is_checked_and_named(tmp_path: Path) -> None:
    files = FilesSource(write_files(tmp_path, file_rows()))
    exchange_hole = GapFill(checked=None, has=(JAN1, JAN1))  # lacks the day too, and says so
    chain = SourceChain([("files:D", files), ("exchange", exchange_hole)])
    got = chain.fetch_candles(BTC, 3600, *WEEK)
    assert got.checked == [WEEK]
    assert got.served_by is not None and (HOLE, "exchange") in got.served_by


def test_what_the_first_source_did_not_check_is_asked_of_the_next() -> None:
    first = GapFill(checked=[(JAN1, JAN1 + DAY)], has=(JAN1, JAN1 + DAY))  # knows Jan 1 only
    second = GapFill()
    chain = SourceChain([("first", first), ("second", second)])
    got = chain.fetch_candles(BTC, 3600, JAN1, JAN1 + 2 * DAY)
    assert second.asked == [(JAN1 + DAY, JAN1 + 2 * DAY)]
    assert got.checked == [(JAN1, JAN1 + 2 * DAY)]
    assert got.served_by == [((JAN1, JAN1 + DAY), "first"), ((JAN1 + DAY, JAN1 + 2 * DAY), "second")]


def test_scaled_and_natural_answers_merge_at_the_finest_decimals_exactly(tmp_path: Path) -> None:
    rows = [[r[0], *(str(Decimal(v).quantize(Decimal("0.1"))) for v in r[1:5]), "0.00000001"] for r in file_rows()]
    files = FilesSource(write_files(tmp_path, rows))  # 1 price decimal, 8 volume decimals
    chain = SourceChain([("files:D", files), ("sim", SimulatedSource())])  # SIM: integers at 2 and 6
    got = chain.fetch_candles(BTC, 3600, *WEEK)
    assert got.scaled is True
    assert (got.market.price_decimals, got.market.volume_decimals) == (2, 8)
    assert list(got.frame["timestamp"]) == list(range(WEEK[0], WEEK[1], H))
    first = got.frame.iloc[0]
    assert int(first["close"]) == int(Decimal(rows[0][4]).scaleb(2)) and int(first["volume"]) == 1
    sim = SimulatedSource().fetch_candles(BTC, 3600, *HOLE).frame
    hole = got.frame[(got.frame["timestamp"] >= HOLE[0]) & (got.frame["timestamp"] < HOLE[1])]
    assert list(hole["close"]) == list(sim["close"])  # 2 decimals both sides
    assert list(hole["volume"]) == [int(v) * 100 for v in sim["volume"]]  # 6 -> 8 decimals, exact
    assert str(got.frame["buy_vol"].dtype) == "Int64"  # the files have none: nulls, never floats
    assert got.frame["buy_vol"].isna().sum() == 6 * 24
    assert list(hole["buy_vol"]) == [int(v) * 100 for v in sim["buy_vol"]]


def test_a_source_without_the_period_is_skipped_and_periods_are_the_common_ones(tmp_path: Path) -> None:
    files = FilesSource(write_files(tmp_path, file_rows()))
    chain = SourceChain([("files:D", files), ("sim", SimulatedSource())])
    assert chain.periods(BTC) == [3600]  # the historian asks 1h and aggregates coarser periods
    other = parse_ticker("BINANCE:ETH/USDT")  # no files for it: SIM alone
    assert chain.periods(other) is None
    got = chain.fetch_candles(other, 60, JAN1, JAN1 + 5 * 60_000_000)
    assert got.served_by == [((JAN1, JAN1 + 5 * 60_000_000), "sim")]
    assert len(got.frame) == 5


# -- end to end ---------------------------------------------------------------------------------------

def store_week_through(warehouse: Any, spec: str) -> None:
    """The historian stores BINANCE:BTC/USDT's week through the source ``spec``: all 168 candles."""
    historian = Historian(warehouse, SourceRegistry({"BINANCE": spec}))
    try:
        note = historian.handle(HistoryRequest(request_id="chain", client_id="test", ticker=str(BTC),
                                               period_seconds=3600, start_time=WEEK[0], end_time=WEEK[1] - 1))
    finally:
        historian.close()
    assert note.status == Notification.OK, note.error_message
    assert note.row_count == 168


def test_historian_stores_the_chain_answer_at_the_finest_decimals(tmp_path: Path, warehouse: Any,
                                                                  gapfill: GapFill) -> None:
    store_week_through(warehouse, f"files:{write_files(tmp_path, file_rows())},gapfill")
    market = warehouse.read_market(str(BTC))
    assert (market.price_decimals, market.volume_decimals) == (4, 3)
    table, _ = warehouse.read_candles(str(BTC), 3600, WEEK)
    stored = dict(zip(table["timestamp"].to_pylist(), table["close"].to_pylist()))
    assert stored[JAN1] == 940012500 and stored[HOLE[0]] == 500481234


def test_the_embedded_client_fetches_the_full_range_through_a_chain(tmp_path: Path, gapfill: GapFill,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    root = write_files(tmp_path / "candles", file_rows())
    monkeypatch.setenv("DEXORDER_CACHE_DIR", str(tmp_path / "cache"))

    async def main() -> pd.DataFrame:
        async with OHLCClient(sources=[f"BINANCE=files:{root},gapfill"]) as client:
            return await client.fetch_ohlc(str(BTC), 3600, WEEK[0], WEEK[1] - 1)

    df = asyncio.run(main())
    assert len(df) == 168
    assert list(df["timestamp"]) == list(range(WEEK[0], WEEK[1], H))
    assert gapfill.asked == [HOLE]


# -- a source that cannot be reached ------------------------------------------------------------------

def unreachable_binance() -> CcxtSource:
    """A real ccxt Binance whose API addresses are a loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    exchange = ccxt.binance({"enableRateLimit": False, "timeout": 5000})
    exchange.urls["api"] = {key: f"http://127.0.0.1:{port}/{key}" if isinstance(url, str) else url
                            for key, url in exchange.urls["api"].items()}
    return CcxtSource("binance", exchange=exchange)


def test_an_unreachable_source_is_passed_over_and_what_it_was_asked_stays_unknown(tmp_path: Path) -> None:
    files = FilesSource(write_files(tmp_path, file_rows()))
    chain = SourceChain([("files:D", files), ("ccxt:binance", unreachable_binance())])
    got = chain.fetch_candles(BTC, 3600, WEEK[0], WEEK[1] + DAY)  # Jan 8 is in no file either
    assert len(got.frame) == 6 * 24
    assert got.checked == [(JAN1, HOLE[0]), (HOLE[1], WEEK[1])]
    with_later = SourceChain([("files:D", files), ("ccxt:binance", unreachable_binance()), ("gapfill", GapFill())])
    got = with_later.fetch_candles(BTC, 3600, *WEEK)
    assert got.checked == [WEEK] and len(got.frame) == 7 * 24


def test_when_no_source_answers_the_first_failure_is_raised(tmp_path: Path) -> None:
    files = FilesSource(write_files(tmp_path, file_rows()))
    chain = SourceChain([("files:D", files), ("ccxt:binance", unreachable_binance())])
    with pytest.raises(RequestFailedError, match="binance could not be reached.*--source BINANCE=files:DIR"):
        chain.fetch_candles(parse_ticker("BINANCE:ETH/USDT"), 3600, *WEEK)  # no files for ETH


class Holds(GapFill):
    """A GapFill that holds only the given periods."""

    def __init__(self, periods: list[int]) -> None:
        super().__init__()
        self.held = periods

    def periods(self, ticker: Ticker) -> list[int] | None:
        return self.held


def test_without_a_common_period_the_chain_offers_all_and_skips_who_lacks_the_asked_one() -> None:
    two_hours, hourly = Holds([7200]), Holds([60, 3600])
    chain = SourceChain([("two", two_hours), ("hourly", hourly)])
    assert chain.periods(BTC) == [60, 3600, 7200]
    got = chain.fetch_candles(BTC, 3600, JAN1, JAN1 + 4 * H)
    assert two_hours.asked == [] and hourly.asked == [(JAN1, JAN1 + 4 * H)]
    assert got.served_by == [((JAN1, JAN1 + 4 * H), "hourly")]
    assert SourceChain([("a", Holds([3600, 86400])), ("b", Holds([60, 3600, 86400]))]).periods(BTC) == [3600, 86400]


def test_historian_stores_files_and_sim_merged_as_integers(tmp_path: Path, warehouse: Any) -> None:
    store_week_through(warehouse, f"files:{write_files(tmp_path, file_rows())},sim")
    market = warehouse.read_market(str(BTC))
    assert (market.price_decimals, market.volume_decimals) == (2, 6)  # SIM's 6 volume decimals beat 3
    table, _ = warehouse.read_candles(str(BTC), 3600, WEEK)
    stored = {t: (c, v, b) for t, c, v, b in zip(*(table[n].to_pylist() for n in ("timestamp", "close", "volume",
                                                                                   "buy_vol")))}
    assert stored[JAN1] == (9400125, 1125000, None)  # files: 94001.25 and 1.125, no taker volume
    sim = SimulatedSource().fetch_candles(BTC, 3600, HOLE[0], HOLE[0] + H).frame.iloc[0]
    assert stored[HOLE[0]] == (int(sim["close"]), int(sim["volume"]), int(sim["buy_vol"]))


def test_a_chain_settles_as_its_slowest_member_and_fingerprints_its_files(tmp_path: Path) -> None:
    files = FilesSource(write_files(tmp_path, file_rows()))
    assert SourceChain([("files", files), ("sim", SimulatedSource())]).settle_seconds(3600) == 0
    assert SourceChain([("files", files), ("gapfill", GapFill())]).settle_seconds(3600) is None
    chain = SourceChain([(f"files:{tmp_path}", files), ("gapfill", GapFill())])
    before = chain.fingerprint(BTC)
    assert before is not None and files.fingerprint(BTC) in before
    write_files(tmp_path, file_rows(hole=None))
    assert chain.fingerprint(BTC) != before
    assert SourceChain([("gapfill", GapFill())]).fingerprint(BTC) is None


def test_a_file_filling_a_hole_behind_a_chain_is_served_by_the_next_fetch(tmp_path: Path, gapfill: GapFill,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The hole is checked empty by both members first (the exchange vouches for it, with no
    candles); once the file gains those hours the next fetch re-checks and serves them."""
    root = write_files(tmp_path / "candles", file_rows())
    gapfill.has = (WEEK[0], WEEK[0])  # has nothing, vouches for everything asked
    monkeypatch.setenv("DEXORDER_CACHE_DIR", str(tmp_path / "cache"))

    async def fetch() -> pd.DataFrame:
        async with OHLCClient(sources=[f"BINANCE=files:{root},gapfill"]) as client:
            return await client.fetch_ohlc(str(BTC), 3600, WEEK[0], WEEK[1] - 1)

    assert len(asyncio.run(fetch())) == 7 * 24 - 24
    assert gapfill.asked == [HOLE]
    assert len(asyncio.run(fetch())) == 7 * 24 - 24 and gapfill.asked == [HOLE]  # remembered as empty
    write_files(root, file_rows(hole=None))
    df = asyncio.run(fetch())
    assert list(df["timestamp"]) == list(range(WEEK[0], WEEK[1], H))
