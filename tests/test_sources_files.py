"""The ``files`` ingest source: layout, exact decimals, errors naming file and line, caching.

The historian tests run against a real SQLite-backed Iceberg warehouse (``warehouse`` fixture).
"""

from __future__ import annotations

import gzip
import os
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dexorder_feeds.vocabulary.errors import SourceFormatError, UnknownSourceError
from dexorder_feeds.vocabulary.markets import scale_to_integers
from dexorder_feeds.ingest.historian import Historian
from dexorder_feeds.ingest.sources import SourceRegistry
from dexorder_feeds.ingest.sources import files as files_module
from dexorder_feeds.ingest.sources.files import FilesSource, pair_directory_name
from dexorder_feeds.vocabulary.tickers import parse_ticker
from dexorder_feeds.wire import HistoryRequest, Notification

HOUR_US = 3_600_000_000
WEEK_START = 1735689600000000  # 2025-01-01 00:00 UTC
WEEK_END = 1736294399000000  # 2025-01-07 23:59:59 UTC
BTC = parse_ticker("BINANCE:BTC/USDT")
EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "data" / "candles"
HEADER = "timestamp,open,high,low,close,volume"


def candle_rows(first_us: int, count: int, period_us: int = HOUR_US) -> list[list[str]]:
    """Rows of decimal text with varying decimal places (at most 2 for prices, 6 for volumes)."""
    rng = np.random.default_rng(7)
    rows = []
    for i in range(count):
        cents = [int(x) for x in rng.integers(9_300_000, 10_200_000, 4)]
        o, c = cents[0], cents[1]
        h, lo = max(cents[2], o, c), min(cents[3], o, c)
        prices = [_price_text(v, i + k) for k, v in enumerate((o, h, lo, c))]
        micro = int(rng.integers(1, 3_000_000_000))
        volume = f"{Decimal(micro).scaleb(-6)}"
        rows.append([str(first_us + i * period_us), *prices, volume])
    return rows


def _price_text(cents: int, salt: int) -> str:
    text = str(Decimal(cents).scaleb(-2))
    if salt % 7 == 0 and text.endswith("0"):
        return text.rstrip("0")  # "93500.1" and "93500." -- fewer places, same value
    return text


def write_csv(path: Path, rows: list[list[str]], header: str = HEADER) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([header] + [",".join(r) for r in rows]) + "\n")
    return path


def pair_dir(root: Path, ticker: str = "BINANCE:BTC/USDT") -> Path:
    parsed = parse_ticker(ticker)
    return root / parsed.exchange / pair_directory_name(parsed)


@pytest.fixture
def week_dir(tmp_path: Path) -> tuple[Path, list[list[str]]]:
    """A files directory with 192 hourly BINANCE:BTC/USDT candles around the seed week."""
    rows = candle_rows(WEEK_START - 12 * HOUR_US, 192)
    write_csv(pair_dir(tmp_path / "candles") / "1h.csv", rows)
    return tmp_path / "candles", rows


def history_request(ticker: str = "BINANCE:BTC/USDT", request_id: str = "r1", **kw: Any) -> HistoryRequest:
    fields = {"start_time": WEEK_START, "end_time": WEEK_END, "period_seconds": 3600, **kw}
    return HistoryRequest(request_id=request_id, client_id="test", ticker=ticker, **fields)


# -- through the historian, into a real warehouse ---------------------------------------------
def test_historian_serves_binance_from_a_files_directory(week_dir: Any, warehouse: Any) -> None:
    root, rows = week_dir
    historian = Historian(warehouse, SourceRegistry({"BINANCE": f"files:{root}"}))
    note = historian.handle(history_request())
    assert note.status == Notification.OK, note.error_message
    assert note.row_count == 168
    assert (note.covered_start, note.covered_end) == (WEEK_START, WEEK_START + 168 * HOUR_US)

    market = warehouse.read_market("BINANCE:BTC/USDT")
    assert (market.price_decimals, market.volume_decimals) == (2, 6)
    table, _ = warehouse.read_candles("BINANCE:BTC/USDT", 3600, (WEEK_START, WEEK_START + 168 * HOUR_US))
    stored = table.sort_by("timestamp").to_pydict()
    week = rows[12:180]
    assert stored["timestamp"] == [int(r[0]) for r in week]
    for i, name in enumerate(("open", "high", "low", "close"), start=1):
        assert stored[name] == [int(Decimal(r[i]) * 10**2) for r in week], name
    assert stored["volume"] == [int(Decimal(r[5]) * 10**6) for r in week]

    again = historian.handle(history_request(request_id="r2"))
    assert (again.status, again.row_count) == (Notification.OK, 168)
    historian.close()


def test_historian_reports_not_found_for_a_pair_without_files(week_dir: Any, warehouse: Any) -> None:
    root, _ = week_dir
    historian = Historian(warehouse, SourceRegistry({"BINANCE": f"files:{root}"}))
    note = historian.handle(history_request("BINANCE:ETH/USDT"))
    assert note.status == Notification.NOT_FOUND, note.error_message
    assert note.row_count == 0
    assert warehouse.read_coverage("BINANCE:ETH/USDT", 3600) == [(WEEK_START, WEEK_START + 168 * HOUR_US)]


def test_historian_reports_a_bad_file_as_an_error_naming_file_and_line(tmp_path: Path, warehouse: Any) -> None:
    rows = candle_rows(WEEK_START, 5)
    rows[2][4] = "n/a"
    path = write_csv(pair_dir(tmp_path) / "1h.csv", rows)
    historian = Historian(warehouse, SourceRegistry({"BINANCE": f"files:{tmp_path}"}))
    note = historian.handle(history_request())
    assert note.status == Notification.ERROR
    assert note.error_type == "SourceFormatError"
    assert str(path) in note.error_message and "line 4" in note.error_message


def test_historian_reports_a_missing_directory(tmp_path: Path, warehouse: Any) -> None:
    historian = Historian(warehouse, SourceRegistry({"BINANCE": f"files:{tmp_path / 'absent'}"}))
    note = historian.handle(history_request())
    assert note.status == Notification.ERROR
    assert str(tmp_path / "absent") in note.error_message and "does not exist" in note.error_message


# -- the shipped demo directory ----------------------------------------------------------------
def test_example_directory_holds_the_seed_week() -> None:
    source = FilesSource(EXAMPLES)
    got = source.fetch_candles(BTC, 3600, WEEK_START, WEEK_START + 168 * HOUR_US)
    frame = got.frame
    assert len(frame) == 168
    np.testing.assert_array_equal(frame["timestamp"], WEEK_START + np.arange(168) * HOUR_US)
    assert (got.market.price_decimals, got.market.volume_decimals) == (2, 5)
    closes = [Decimal(v) for v in frame["close"]]
    assert Decimal(90000) < min(closes) and max(closes) < Decimal(105000)
    assert all(Decimal(b) + Decimal(s) == Decimal(v) for b, s, v in zip(frame["buy_vol"], frame["sell_vol"], frame["volume"]))
    assert all(Decimal(h) >= max(Decimal(o), Decimal(c)) >= min(Decimal(o), Decimal(c)) >= Decimal(lo)
               for o, h, lo, c in zip(frame["open"], frame["high"], frame["low"], frame["close"]))
    assert (EXAMPLES / "BINANCE" / "BTC-USDT" / "1h.csv").stat().st_size < 100_000


# -- layout and values -------------------------------------------------------------------------
def test_values_are_exact_decimal_text_and_only_the_range_is_returned(week_dir: Any) -> None:
    root, rows = week_dir
    got = FilesSource(root).fetch_candles(BTC, 3600, WEEK_START + 10 * HOUR_US, WEEK_START + 20 * HOUR_US)
    expected = rows[22:32]
    assert list(got.frame["timestamp"]) == [int(r[0]) for r in expected]
    assert list(got.frame["close"]) == [r[4] for r in expected]
    assert got.frame["close"].dtype == object and got.scaled is False
    scaled = scale_to_integers(got.frame, got.market)
    assert list(scaled["volume"]) == [int(Decimal(r[5]).scaleb(6)) for r in expected]


def test_directory_names_are_case_insensitive_and_periods_take_aliases(tmp_path: Path) -> None:
    rows = candle_rows(WEEK_START, 3)
    write_csv(tmp_path / "binance" / "btc-usdt" / "60m.csv", rows)
    write_csv(tmp_path / "binance" / "btc-usdt" / "86400.csv", candle_rows(WEEK_START, 2, 86400 * 10**6))
    source = FilesSource(tmp_path)
    assert len(source.fetch_candles(BTC, 3600, WEEK_START, WEEK_START + 3 * HOUR_US).frame) == 3
    assert len(source.fetch_candles(BTC, 86400, WEEK_START, WEEK_START + 2 * 86400 * 10**6).frame) == 2


def test_settled_tickers_use_base_quote_settle(tmp_path: Path) -> None:
    ticker = parse_ticker("BINANCE:BTC/USDT:USDT")
    assert pair_directory_name(ticker) == "BTC-USDT-USDT"
    write_csv(tmp_path / "BINANCE" / "BTC-USDT-USDT" / "1h.csv", candle_rows(WEEK_START, 2))
    assert len(FilesSource(tmp_path).fetch_candles(ticker, 3600, WEEK_START, WEEK_START + 2 * HOUR_US).frame) == 2


def test_missing_pair_or_period_gives_no_candles(week_dir: Any) -> None:
    root, _ = week_dir
    source = FilesSource(root)
    none = source.fetch_candles(parse_ticker("BINANCE:ETH/USDT"), 3600, WEEK_START, WEEK_START + HOUR_US)
    assert len(none.frame) == 0 and {"timestamp", "open", "close", "volume"} <= set(none.frame.columns)
    daily = source.fetch_candles(BTC, 86400, WEEK_START, WEEK_START + 86400 * 10**6)
    assert len(daily.frame) == 0
    # The pair's decimals still come from its other files, so a first empty answer fixes no wrong decimals.
    assert (daily.market.price_decimals, daily.market.volume_decimals) == (2, 6)


def test_missing_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(UnknownSourceError, match="does not exist"):
        FilesSource(tmp_path / "absent")
    with pytest.raises(UnknownSourceError, match="needs a directory"):
        FilesSource(None)


@pytest.mark.parametrize("stamp", [
    lambda us: str(us // 1_000_000),  # seconds
    lambda us: str(us // 1_000),  # milliseconds
    lambda us: str(us),  # microseconds
    lambda us: str(us * 1_000),  # nanoseconds
    lambda us: np.datetime64(us, "us").astype(str) + "Z",  # ISO 8601, UTC
    lambda us: (np.datetime64(us, "us") + np.timedelta64(2, "h")).astype(str) + "+02:00",  # with an offset
])
def test_timestamp_forms(tmp_path: Path, stamp: Any) -> None:
    rows = candle_rows(WEEK_START, 3)
    for row in rows:
        row[0] = stamp(int(row[0]))
    write_csv(pair_dir(tmp_path) / "1h.csv", rows)
    got = FilesSource(tmp_path).fetch_candles(BTC, 3600, WEEK_START, WEEK_START + 3 * HOUR_US)
    assert list(got.frame["timestamp"]) == [WEEK_START + i * HOUR_US for i in range(3)]


def test_semicolons_gzip_header_case_and_extra_columns(tmp_path: Path) -> None:
    rows = candle_rows(WEEK_START, 4)
    text = "Timestamp;OPEN;High;Low;Close;Volume;trades;Buy_Vol\n" + "".join(
        ";".join(r + ["17", "1.5"]) + "\n" for r in rows)
    path = pair_dir(tmp_path) / "1h.csv.gz"
    path.parent.mkdir(parents=True)
    path.write_bytes(gzip.compress(text.encode()))
    got = FilesSource(tmp_path).fetch_candles(BTC, 3600, WEEK_START, WEEK_START + 4 * HOUR_US)
    assert list(got.frame["open"]) == [r[1] for r in rows]
    assert list(got.frame["buy_vol"]) == ["1.5"] * 4
    assert "trades" not in got.frame.columns


def test_excel_style_csv_with_bom_and_crlf(tmp_path: Path) -> None:
    rows = candle_rows(WEEK_START, 2)
    path = pair_dir(tmp_path) / "1h.csv"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join([HEADER] + [",".join(r) for r in rows]).encode() + b"\r\n")
    got = FilesSource(tmp_path).fetch_candles(BTC, 3600, WEEK_START, WEEK_START + 2 * HOUR_US)
    assert list(got.frame["timestamp"]) == [WEEK_START, WEEK_START + HOUR_US]
    assert list(got.frame["volume"]) == [rows[0][5], rows[1][5]]


def test_parquet_with_floats_decimals_and_ms_timestamps(tmp_path: Path) -> None:
    table = pa.table({
        "timestamp": pa.array([WEEK_START // 1000 + i * 3_600_000 for i in range(3)], pa.int64()),
        "open": pa.array([93500.1, 93600.25, 0.1]),
        "high": pa.array([Decimal("93700.10"), Decimal("93800.00"), Decimal("93900.99")], pa.decimal128(10, 2)),
        "low": pa.array(["93400.5", "93500", "93600.75"]),
        "close": pa.array([93600, 93700, 93800], pa.int64()),
        "volume": pa.array([1.5, 0.000123, 12.0]),
        "open_interest": pa.array([None, 10.5, None], pa.float64()),
    })
    path = pair_dir(tmp_path) / "1h.parquet"
    path.parent.mkdir(parents=True)
    pq.write_table(table, path)
    got = FilesSource(tmp_path).fetch_candles(BTC, 3600, WEEK_START, WEEK_START + 3 * HOUR_US)
    assert list(got.frame["open"]) == ["93500.1", "93600.25", "0.1"]
    assert list(got.frame["high"]) == ["93700.10", "93800.00", "93900.99"]
    assert list(got.frame["open_interest"]) == [None, "10.5", None]
    assert (got.market.price_decimals, got.market.volume_decimals) == (2, 6)
    scaled = scale_to_integers(got.frame, got.market)
    assert list(scaled["volume"]) == [1_500_000, 123, 12_000_000]


def test_decimals_are_the_widest_of_all_the_pairs_files(tmp_path: Path) -> None:
    write_csv(pair_dir(tmp_path) / "1h.csv", [[str(WEEK_START), "1.5", "1.5", "1.5", "1.5", "2"]])
    write_csv(pair_dir(tmp_path) / "1d.csv", [[str(WEEK_START), "1.125", "1.125", "1.125", "1.125", "2.0001"]])
    got = FilesSource(tmp_path).fetch_candles(BTC, 3600, WEEK_START, WEEK_START + HOUR_US)
    assert (got.market.price_decimals, got.market.volume_decimals) == (3, 4)


def test_market_json_sets_the_decimals(tmp_path: Path) -> None:
    write_csv(pair_dir(tmp_path) / "1h.csv", [[str(WEEK_START), "1.5", "1.5", "1.5", "1.5", "2"]])
    (pair_dir(tmp_path) / "market.json").write_text('{"price_decimals": 4, "volume_decimals": 8}')
    got = FilesSource(tmp_path).fetch_candles(BTC, 3600, WEEK_START, WEEK_START + HOUR_US)
    assert (got.market.price_decimals, got.market.volume_decimals) == (4, 8)


def test_market_json_narrower_than_the_data_names_the_line(tmp_path: Path) -> None:
    rows = candle_rows(WEEK_START, 3)
    rows[1][5] = "1.1234567"
    path = write_csv(pair_dir(tmp_path) / "1h.csv", rows)
    (pair_dir(tmp_path) / "market.json").write_text('{"volume_decimals": 6}')
    with pytest.raises(SourceFormatError) as info:
        FilesSource(tmp_path).fetch_candles(BTC, 3600, WEEK_START, WEEK_START + 3 * HOUR_US)
    assert f"{path}, line 3" in str(info.value) and "market.json" in str(info.value)


# -- bad input ---------------------------------------------------------------------------------
def fetch_error(root: Path, period: int = 3600) -> str:
    with pytest.raises(SourceFormatError) as info:
        FilesSource(root).fetch_candles(BTC, period, WEEK_START, WEEK_START + 10 * HOUR_US)
    return str(info.value)


def test_missing_column_names_file_and_column(tmp_path: Path) -> None:
    rows = [r[:4] + r[5:] for r in candle_rows(WEEK_START, 3)]
    path = write_csv(pair_dir(tmp_path) / "1h.csv", rows, header="timestamp,open,high,low,volume")
    message = fetch_error(tmp_path)
    assert str(path) in message and "missing column close" in message


def test_non_numeric_price_names_file_and_line(tmp_path: Path) -> None:
    rows = candle_rows(WEEK_START, 6)
    rows[4][2] = "abc"
    path = write_csv(pair_dir(tmp_path) / "1h.csv", rows)
    message = fetch_error(tmp_path)
    assert f"{path}, line 6" in message and "high value 'abc'" in message


def test_line_numbers_count_blank_lines(tmp_path: Path) -> None:
    rows = candle_rows(WEEK_START, 4)
    rows[3][4] = "NaN"
    lines = [HEADER, ",".join(rows[0]), "", ",".join(rows[1]), "", "", ",".join(rows[2]), ",".join(rows[3])]
    path = pair_dir(tmp_path) / "1h.csv"
    path.parent.mkdir(parents=True)
    path.write_text("\n".join(lines) + "\n")
    assert f"{path}, line 8" in fetch_error(tmp_path)


def test_empty_price_names_the_line(tmp_path: Path) -> None:
    rows = candle_rows(WEEK_START, 3)
    rows[0][3] = ""
    path = write_csv(pair_dir(tmp_path) / "1h.csv", rows)
    message = fetch_error(tmp_path)
    assert f"{path}, line 2" in message and "empty low" in message


def test_misaligned_timestamp_names_file_and_line(tmp_path: Path) -> None:
    rows = candle_rows(WEEK_START, 5)
    rows[3][0] = str(int(rows[3][0]) + 60_000_000)  # 00:01 past the hour
    path = write_csv(pair_dir(tmp_path) / "1h.csv", rows)
    message = fetch_error(tmp_path)
    assert f"{path}, line 5" in message and "where a 1h period opens" in message


def test_duplicate_timestamp_names_both_lines(tmp_path: Path) -> None:
    rows = candle_rows(WEEK_START, 5)
    rows[4][0] = rows[1][0]
    path = write_csv(pair_dir(tmp_path) / "1h.csv", rows)
    message = fetch_error(tmp_path)
    assert f"{path}, line 6" in message and "line 3" in message


def test_unparseable_timestamp_names_the_line(tmp_path: Path) -> None:
    rows = candle_rows(WEEK_START, 3)
    rows[2][0] = "yesterday"
    path = write_csv(pair_dir(tmp_path) / "1h.csv", rows)
    message = fetch_error(tmp_path)
    assert f"{path}, line 4" in message and "'yesterday'" in message


def test_malformed_csv_names_file_and_line(tmp_path: Path) -> None:
    rows = candle_rows(WEEK_START, 5)
    rows[2].append("surplus")
    path = write_csv(pair_dir(tmp_path) / "1h.csv", rows)
    message = fetch_error(tmp_path)
    assert str(path) in message and "line 4" in message and "7 fields where the header has 6" in message


def test_unterminated_quote_and_invalid_utf8_are_format_errors(tmp_path: Path) -> None:
    path = pair_dir(tmp_path) / "1h.csv"
    path.parent.mkdir(parents=True)
    path.write_text(HEADER + "\n" + f'{WEEK_START},"1,2,3,4,5\n')
    assert str(path) in fetch_error(tmp_path)
    path.write_bytes((HEADER + "\n" + f"{WEEK_START},1,2,3,4,5\n" + f"{WEEK_START + HOUR_US},1,2,3,4,\xff5\n").encode("latin-1"))
    message = fetch_error(tmp_path)
    assert f"{path}, line 3" in message and "UTF-8" in message


def test_empty_file_and_broken_parquet_are_format_errors(tmp_path: Path) -> None:
    path = pair_dir(tmp_path) / "1h.csv"
    path.parent.mkdir(parents=True)
    path.write_text("")
    assert f"{path}, line 1" in fetch_error(tmp_path)
    path.unlink()
    broken = pair_dir(tmp_path) / "1h.parquet"
    broken.write_bytes(b"PAR1 not really")
    assert str(broken) in fetch_error(tmp_path)


def test_parquet_errors_name_the_row_index(tmp_path: Path) -> None:
    path = pair_dir(tmp_path) / "1h.parquet"
    path.parent.mkdir(parents=True)
    pq.write_table(pa.table({
        "timestamp": [WEEK_START, WEEK_START + HOUR_US, WEEK_START + 2 * HOUR_US],
        "open": ["1", "2", "x"], "high": ["1", "2", "3"], "low": ["1", "2", "3"],
        "close": ["1", "2", "3"], "volume": ["1", "2", "3"],
    }), path)
    message = fetch_error(tmp_path)
    assert f"{path}, row 2" in message and "open value 'x'" in message


def test_two_files_for_one_period_are_an_error(tmp_path: Path) -> None:
    write_csv(pair_dir(tmp_path) / "1h.csv", candle_rows(WEEK_START, 2))
    write_csv(pair_dir(tmp_path) / "3600.csv", candle_rows(WEEK_START, 2))
    message = fetch_error(tmp_path)
    assert "1h.csv" in message and "3600.csv" in message


# -- caching and threads -------------------------------------------------------------------------
def counting_parser(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    parsed: list[Path] = []
    original = files_module._parse_file

    def parse(path: Path, *args: Any) -> Any:
        parsed.append(path)
        return original(path, *args)

    monkeypatch.setattr(files_module, "_parse_file", parse)
    return parsed


def test_parsed_files_are_cached_until_they_change(week_dir: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    root, rows = week_dir
    parsed = counting_parser(monkeypatch)
    source = FilesSource(root)
    for hours in (1, 5, 50):
        source.fetch_candles(BTC, 3600, WEEK_START, WEEK_START + hours * HOUR_US)
    assert len(parsed) == 1

    path = pair_dir(root) / "1h.csv"
    rows[12][4] = "12345.67"
    write_csv(path, rows)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    got = source.fetch_candles(BTC, 3600, WEEK_START, WEEK_START + HOUR_US)
    assert list(got.frame["close"]) == ["12345.67"]
    assert len(parsed) == 2


def test_concurrent_fetches_parse_once_and_agree(week_dir: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    root, rows = week_dir
    parsed = counting_parser(monkeypatch)
    source = FilesSource(root)
    barrier = threading.Barrier(8)
    results: dict[int, list[str]] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            barrier.wait()
            got = source.fetch_candles(BTC, 3600, WEEK_START + i * HOUR_US, WEEK_START + (i + 20) * HOUR_US)
            results[i] = list(got.frame["close"])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(parsed) == 1
    for i in range(8):
        assert results[i] == [r[4] for r in rows[12 + i:32 + i]]


def test_weekly_and_monthly_files_hold_calendar_periods(tmp_path: Path) -> None:
    monday, day = 1736121600000000, 86_400_000_000  # 2025-01-06
    write_csv(pair_dir(tmp_path) / "1w.csv", candle_rows(monday, 3, 7 * day))
    months = ["2024-11-01T00:00:00Z", "2024-12-01T00:00:00Z", "2025-01-01T00:00:00Z"]
    rows = candle_rows(0, 3)
    for row, stamp in zip(rows, months):
        row[0] = stamp
    write_csv(pair_dir(tmp_path) / "1M.csv", rows)
    source = FilesSource(tmp_path)
    assert source.periods(BTC) == [604800, 2592000]
    weeks = source.fetch_candles(BTC, 604800, monday - 7 * day, monday + 21 * day).frame
    assert list(weeks["timestamp"]) == [monday, monday + 7 * day, monday + 14 * day]
    got = source.fetch_candles(BTC, 2592000, 1730419200000000, 1738368000000000).frame
    assert list(got["timestamp"]) == [1730419200000000, 1733011200000000, 1735689600000000]


def test_a_weekly_file_on_epoch_weeks_names_the_line(tmp_path: Path) -> None:
    thursday = 1735776000000000  # 2025-01-02, a multiple of 604800 s since the epoch
    path = write_csv(pair_dir(tmp_path) / "1w.csv", candle_rows(thursday, 2, 7 * 86_400_000_000))
    message = fetch_error(tmp_path, 604800)
    assert f"{path}, line 2" in message and "1w period opens" in message and "Monday" in message
