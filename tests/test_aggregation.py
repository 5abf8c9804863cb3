"""Every period of a market agrees: a coarse candle is the aggregation of its finer ones.

On SIM (every period is built from one minute path) and on a files source holding only a fine
file (the historian builds the coarse periods), for every pair of 1m, 5m, 15m, 1h, 4h, 1d, 1w
and 1M where the finer divides the coarser. Real SQLite-backed Iceberg warehouses throughout.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dexorder_feeds import OHLCClient
from dexorder_feeds.ingest.historian import Historian
from dexorder_feeds.ingest.sources import SourceRegistry
from dexorder_feeds.ingest.sources.files import FilesSource
from dexorder_feeds.ingest.sources.sim import SimulatedSource
from dexorder_feeds.vocabulary.aggregate import aggregate_candles, coarsest_divisor
from dexorder_feeds.vocabulary.periods import MONTH, WEEK, divides, period_label, period_starts
from dexorder_feeds.vocabulary.tickers import parse_ticker
from dexorder_feeds.wire import HistoryRequest, Notification

PERIODS = [60, 300, 900, 3600, 14400, 86400, WEEK, MONTH]
PAIRS = [(f, c) for f in PERIODS for c in PERIODS if f < c and divides(f, c)]
VALUES = ["open", "high", "low", "close", "volume", "buy_vol", "sell_vol"]
# 2024-01-29 (a Monday) .. 2024-03-04: all of February 2024 (leap), five whole weeks.
A = 1706486400_000000
B = 1709510400_000000
FEB, MAR = 1706745600_000000, 1709251200_000000
SIM_BTC = parse_ticker("SIM:BTC/USDT")


def test_the_pairs_cover_weeks_and_months() -> None:
    assert (86400, WEEK) in PAIRS and (86400, MONTH) in PAIRS and (60, MONTH) in PAIRS
    assert (WEEK, MONTH) not in PAIRS
    assert len(PAIRS) == 7 + 6 + 5 + 4 + 3 + 2


@pytest.fixture(scope="module")
def sim() -> SimulatedSource:
    return SimulatedSource()


@pytest.mark.parametrize("fine, coarse", PAIRS, ids=[f"{period_label(f)}-{period_label(c)}" for f, c in PAIRS])
def test_sim_coarse_equals_aggregated_fine(sim: SimulatedSource, fine: int, coarse: int) -> None:
    got = sim.fetch_candles(SIM_BTC, coarse, A, B).frame
    fine_frame = sim.fetch_candles(SIM_BTC, fine, A, B).frame
    built = aggregate_candles(fine_frame, fine, coarse)
    assert len(got) == len(period_starts(coarse, A, B)) > 0
    # the source's coarse candles open in [A, B) but may close after B; compare those complete here
    expected = got[got["timestamp"].isin(built["timestamp"])].reset_index(drop=True)
    assert len(expected) >= len(got) - 1
    for name in VALUES:
        assert expected[name].tolist() == built[name].astype(np.int64).tolist(), name


def test_sim_day_high_and_volume_are_its_hours(sim: SimulatedSource) -> None:
    day = sim.fetch_candles(SIM_BTC, 86400, 1735689600_000000, 1735776000_000000).frame
    hours = sim.fetch_candles(SIM_BTC, 3600, 1735689600_000000, 1735776000_000000).frame
    assert len(day) == 1 and len(hours) == 24
    assert day["high"][0] == hours["high"].max() and day["low"][0] == hours["low"].min()
    assert day["volume"][0] == hours["volume"].sum() and day["buy_vol"][0] == hours["buy_vol"].sum()
    assert day["open"][0] == hours["open"][0] and day["close"][0] == hours["close"].iloc[-1]
    # each candle opens where the previous closed, also across days
    assert (hours["open"].to_numpy()[1:] == hours["close"].to_numpy()[:-1]).all()


def test_sim_weeks_open_monday_and_months_on_the_first(sim: SimulatedSource) -> None:
    weeks = sim.fetch_candles(SIM_BTC, WEEK, 1735689600_000000, 1743465600_000000).frame  # 2025 Q1
    months = sim.fetch_candles(SIM_BTC, MONTH, 1735689600_000000, 1767225600_000000).frame  # 2025
    assert set(pd.to_datetime(weeks["timestamp"], unit="us").dt.day_name()) == {"Monday"}
    stamps = pd.to_datetime(months["timestamp"], unit="us")
    assert list(stamps.dt.month) == list(range(1, 13)) and set(stamps.dt.day) == {1}
    assert set(stamps.dt.hour) == {0}


def test_aggregation_rules_and_incomplete_periods() -> None:
    hour = 3_600_000_000
    frame = pd.DataFrame({
        "timestamp": np.array([0, 1, 2, 3, 4, 5, 6], dtype=np.int64) * hour + 1735689600_000000,
        "open": [10, 12, 11, 15, 20, 21, 22], "high": [13, 14, 16, 15, 25, 23, 24],
        "low": [9, 10, 11, 13, 19, 20, 18], "close": [12, 11, 15, 14, 21, 22, 23],
        "volume": [1, 2, 3, 4, 5, 6, 7],
        "buy_vol": pd.array([1, 1, 1, 1, 1, None, 1], dtype="Int64"),
        "open_interest": pd.array([5, 6, 7, None, 8, 9, 10], dtype="Int64"),
    })
    out = aggregate_candles(frame, 3600, 14400)
    # hours 0-3 make one 4h candle; hours 4-6 are an incomplete 4h period: no candle
    assert out["timestamp"].tolist() == [1735689600_000000]
    row = out.iloc[0]
    assert (row["open"], row["high"], row["low"], row["close"], row["volume"]) == (10, 16, 9, 14, 10)
    assert row["buy_vol"] == 4
    assert pd.isna(row["open_interest"])  # the last hour's, which is missing
    with_gap = frame.drop(index=1)
    assert len(aggregate_candles(with_gap, 3600, 14400)) == 0


def test_coarsest_divisor_picks_the_fewest_candles() -> None:
    assert coarsest_divisor(86400, [60, 3600, 14400]) == 14400
    assert coarsest_divisor(MONTH, [3600, 86400, WEEK]) == 86400
    assert coarsest_divisor(WEEK, [MONTH]) is None
    assert coarsest_divisor(3600, [60, 3600]) == 60  # the period itself is not a divisor


# -- files source -------------------------------------------------------------------------


def _write_fine_file(directory: Path, period: int, frame: pd.DataFrame, name: str | None = None) -> Path:
    pair = directory / "BINANCE" / "BTC-USDT"
    pair.mkdir(parents=True, exist_ok=True)
    text = pd.DataFrame({
        "timestamp": frame["timestamp"],
        **{c: [str(Decimal(int(v)).scaleb(-2)) for v in frame[c]] for c in ("open", "high", "low", "close")},
        **{c: [str(Decimal(int(v)).scaleb(-6)) for v in frame[c]] for c in ("volume", "buy_vol", "sell_vol")},
    })
    path = pair / f"{name or period_label(period)}.csv"
    text.to_csv(path, index=False)
    return path


def _historian_candles(warehouse: object, root: Path, period: int, start: int, stop: int) -> pd.DataFrame:
    historian = Historian(warehouse, SourceRegistry({"BINANCE": f"files:{root}"}))  # type: ignore[arg-type]
    try:
        request = HistoryRequest(request_id=f"r{period}", client_id="t", ticker="BINANCE:BTC/USDT",
                                 period_seconds=period, start_time=start, end_time=stop - 1)
        note = historian.handle(request)
        assert note.status in (Notification.OK, Notification.NOT_FOUND), note.error_message
        table, _ = warehouse.read_candles("BINANCE:BTC/USDT", period, (start, stop))  # type: ignore[attr-defined]
        return table.to_pandas().sort_values("timestamp").reset_index(drop=True)
    finally:
        historian.close()


@pytest.mark.parametrize("fine", [60, 3600])
def test_files_source_with_one_fine_file_serves_every_coarser_period(
        tmp_path: Path, warehouse: object, sim: SimulatedSource, fine: int) -> None:
    fine_frame = sim.fetch_candles(SIM_BTC, fine, A, B).frame
    _write_fine_file(tmp_path, fine, fine_frame)
    coarser = [c for c in PERIODS if c > fine and divides(fine, c)]
    assert FilesSource(tmp_path).periods(parse_ticker("BINANCE:BTC/USDT")) == [fine]
    for coarse in coarser:
        stored = _historian_candles(warehouse, tmp_path, coarse, A, B)
        expected = aggregate_candles(fine_frame, fine, coarse)
        assert len(stored) == len(expected) > 0, period_label(coarse)
        assert stored["timestamp"].tolist() == expected["timestamp"].tolist()
        for name in VALUES:
            assert stored[name].tolist() == expected[name].astype(np.int64).tolist(), (period_label(coarse), name)
        assert (stored["period_seconds"] == coarse).all()
    # the month of February and the five Monday weeks are all there
    monthly = _historian_candles(warehouse, tmp_path, MONTH, A, B)
    assert monthly["timestamp"].tolist() == [FEB]
    weekly = _historian_candles(warehouse, tmp_path, WEEK, A, B)
    assert len(weekly) == 5


def test_only_1h_csv_serves_4h_and_1d_through_the_client(tmp_path: Path, catalog_uri: str) -> None:
    sim = SimulatedSource()
    hourly = sim.fetch_candles(SIM_BTC, 3600, A, B).frame
    hourly = hourly[hourly["timestamp"] != FEB + 5 * 3_600_000_000]  # one hour absent on Feb 1
    _write_fine_file(tmp_path / "candles", 3600, hourly)

    async def fetch_all() -> dict[str, pd.DataFrame]:
        async with OHLCClient(iceberg_catalog_uri=catalog_uri,
                              sources={"BINANCE": f"files:{tmp_path / 'candles'}"}) as client:
            return {p: await client.fetch_ohlc("BINANCE:BTC/USDT", p, A, B - 1) for p in ("4h", "1d", "1w", "1M")}

    got = asyncio.run(fetch_all())
    four, daily = got["4h"], got["1d"]
    assert len(four) == len(period_starts(14400, A, B)) - 1  # the 4h period with the absent hour
    assert len(daily) == 35 - 1  # and its day: no candle from an incomplete set
    assert FEB not in daily["timestamp"].tolist() and FEB + 86_400_000_000 in daily["timestamp"].tolist()
    expected = aggregate_candles(hourly, 3600, 86400)
    assert daily["high"].tolist() == expected["high"].astype(np.int64).tolist()
    assert daily["volume"].tolist() == expected["volume"].astype(np.int64).tolist()
    assert len(got["1w"]) == 4  # the week holding Feb 1 is incomplete
    assert got["1M"].empty  # and so is February


def test_epoch_weeks_stored_by_an_older_version_are_kept_but_not_served(catalog_uri: str, warehouse: object) -> None:
    """604800 candles once opened on Thursdays (epoch weeks). They are not lost, not served, and
    their coverage does not hide the Monday weeks, which are ingested anew."""
    thursday = 1735776000_000000  # 2025-01-02
    week_us = WEEK * 1_000_000
    days = SimulatedSource().fetch_candles(SIM_BTC, 86400, thursday, thursday + 4 * week_us).frame
    by_week = {name: days[name].to_numpy().reshape(4, 7) for name in VALUES}
    legacy = pd.DataFrame({  # four epoch weeks, Thursday to Thursday
        "timestamp": thursday + np.arange(4) * week_us, "open": by_week["open"][:, 0],
        "high": by_week["high"].max(axis=1), "low": by_week["low"].min(axis=1), "close": by_week["close"][:, -1],
        **{name: by_week[name].sum(axis=1) for name in ("volume", "buy_vol", "sell_vol")},
    })
    interval = (thursday, thursday + 4 * week_us)
    table = Historian._to_arrow("SIM:BTC/USDT", WEEK, legacy)
    warehouse.append_new_candles("SIM:BTC/USDT", WEEK, interval, table)  # type: ignore[attr-defined]
    warehouse.record_coverage("SIM:BTC/USDT", WEEK, interval, 4, "legacy")  # type: ignore[attr-defined]

    async def fetch() -> pd.DataFrame:
        async with OHLCClient(iceberg_catalog_uri=catalog_uri) as client:
            return await client.fetch_ohlc("SIM:BTC/USDT", "1w", thursday, thursday + 4 * week_us - 1)

    weekly = asyncio.run(fetch())
    assert set(pd.to_datetime(weekly["timestamp"], unit="us").dt.day_name()) == {"Monday"}
    assert len(weekly) == 4  # Jan 6, 13, 20, 27
    expected = SimulatedSource().fetch_candles(SIM_BTC, WEEK, thursday, thursday + 4 * week_us).frame
    assert weekly["close"].tolist() == expected["close"].tolist()
    from pyiceberg.expressions import EqualTo

    raw = warehouse.catalog.load_table((warehouse.namespace, warehouse.candles_table_name)).scan(  # type: ignore[attr-defined]
        row_filter=EqualTo("period_seconds", WEEK)).to_arrow()
    days = set(pd.to_datetime(raw["timestamp"].to_numpy(), unit="us").day_name())
    assert days == {"Monday", "Thursday"} and raw.num_rows == 8  # the old rows are still there


def test_a_period_the_source_lacks_is_built_from_finer_stored_candles(tmp_path: Path, catalog_uri: str) -> None:
    """1h candles are stored; the files source then holds no file at all: 4h and 1d come from the warehouse."""
    sim = SimulatedSource()
    hourly = sim.fetch_candles(SIM_BTC, 3600, FEB, FEB + 3 * 86_400_000_000).frame
    root = tmp_path / "candles"
    path = _write_fine_file(root, 3600, hourly)

    async def fetch(period: str) -> pd.DataFrame:
        async with OHLCClient(iceberg_catalog_uri=catalog_uri, sources={"BINANCE": f"files:{root}"}) as client:
            return await client.fetch_ohlc("BINANCE:BTC/USDT", period, FEB, FEB + 3 * 86_400_000_000 - 1)

    assert len(asyncio.run(fetch("1h"))) == 72
    path.unlink()  # the source has nothing now
    assert FilesSource(root).periods(parse_ticker("BINANCE:BTC/USDT")) == []
    daily = asyncio.run(fetch("1d"))
    four = asyncio.run(fetch("4h"))
    assert len(daily) == 3 and len(four) == 18
    for got, period in ((daily, 86400), (four, 14400)):
        expected = aggregate_candles(hourly, 3600, period)
        for name in VALUES:
            assert got[name].tolist() == expected[name].astype(np.int64).tolist(), name
