"""``files:DIR`` – candles from CSV or Parquet files a user brings.

How it works inside: docs/internals.md, "The files source".
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ...vocabulary.errors import InvalidPeriodError, InvalidTickerError, SourceFormatError, UnknownSourceError
from ...vocabulary.markets import PRICE_COLUMNS, VALUE_COLUMNS, MarketInfo
from ...vocabulary.tickers import Ticker
from ...vocabulary.periods import is_aligned, parse_period, period_label
from ...vocabulary.times import format_micros
from . import IngestSource, SourceCandles

__all__ = ["FilesSource", "pair_directory_name", "MARKET_FILE", "CANDLE_SUFFIXES"]

log = logging.getLogger(__name__)

MARKET_FILE = "market.json"
CANDLE_SUFFIXES = (".csv", ".csv.gz", ".parquet")
REQUIRED_COLUMNS = ("open", "high", "low", "close", "volume")
TIMESTAMP_ALIASES = ("timestamp", "time", "datetime", "date", "open_time")

_MAX_DECIMALS = 18
_INT64_MAX = 2**63 - 1
_DECIMAL_RE = r"^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$"
_INTEGER_RE = r"^-?[0-9]+$"  # a sign too: -3600 is a (refused) negative epoch time, not the year -3600
_DEFAULT_CACHE_FILES = 32


def pair_directory_name(ticker: Ticker) -> str:
    """The directory holding a ticker's files: ``BTC-USDT`` (``BTC-USDT-USDT`` with a settle).

    One directory per ticker: ``-`` separates the parts, so a ticker with ``-`` inside its
    base, quote or settle (``BINANCE:BTC-USDT/X`` would read the directory of
    ``BINANCE:BTC/USDT:X``) is refused with :class:`InvalidTickerError`.
    """
    parts = [ticker.base, ticker.quote] + ([ticker.settle] if ticker.settle else [])
    dashed = [part for part in parts if "-" in part]
    if dashed:
        raise InvalidTickerError(
            f"the files source cannot read {ticker}: {dashed[0]!r} holds a '-', which separates base, quote and "
            "settle in its directory name (BASE-QUOTE or BASE-QUOTE-SETTLE), so the directory would be another "
            "ticker's; rename the asset without '-' or serve this exchange from another source (--source)")
    return "-".join(parts)


def _candle_stem(name: str) -> str | None:
    """``1h.csv`` -> ``1h``; None for a file that is not a candle file."""
    lower = name.lower()
    for suffix in CANDLE_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


@dataclass(frozen=True)
class _CandleFile:
    """One parsed candle file: sorted µs timestamps and the value columns as decimal text."""

    path: Path
    timestamps: np.ndarray
    values: dict[str, pa.Array]
    price_decimals: int
    volume_decimals: int


class _Locator:
    """Turns a row index into the place a user can find it: CSV line or Parquet row."""

    def __init__(self, path: Path, delimiter: str | None) -> None:
        self.path = path
        self.delimiter = delimiter
        self._lines: list[int] | None = None

    def where(self, row: int) -> str:
        if self.delimiter is None:
            return f"{self.path}, row {row}"
        if self._lines is None:
            self._lines = _csv_record_lines(self.path, self.delimiter)
        # pyarrow skips empty lines; the records list does too, so data row i is record i + 1.
        line = self._lines[row + 1] if row + 1 < len(self._lines) else row + 2
        return f"{self.path}, line {line}"

    def error(self, row: int, message: str) -> SourceFormatError:
        return SourceFormatError(f"{self.where(row)}: {message}")


def _read_text(path: Path) -> str:
    with pa.input_stream(str(path)) as stream:  # decompresses .gz by its extension
        return stream.read().decode("utf-8", errors="replace")


def _csv_record_lines(path: Path, delimiter: str) -> list[int]:
    """The 1-based line on which each non-empty CSV record starts (record 0 is the header)."""
    reader = csv.reader(io.StringIO(_read_text(path), newline=""), delimiter=delimiter)
    starts: list[int] = []
    previous = 0
    try:
        for record in reader:
            if record:
                starts.append(previous + 1)
            previous = reader.line_num
    except csv.Error:
        pass
    return starts


def _find_bad_csv_line(path: Path, delimiter: str, columns: int) -> tuple[int, str] | None:
    """Describe the first line pyarrow could not parse (invalid UTF-8, wrong field count)."""
    with pa.input_stream(str(path)) as stream:
        raw = stream.read()
    for number, line in enumerate(raw.split(b"\n"), start=1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            return number, "not UTF-8 text"
    reader = csv.reader(io.StringIO(raw.decode("utf-8"), newline=""), delimiter=delimiter, strict=True)
    previous = 0
    try:
        for record in reader:
            if record and len(record) != columns:
                return previous + 1, f"{len(record)} fields where the header has {columns}"
            previous = reader.line_num
    except csv.Error as exc:
        return reader.line_num, str(exc)
    return None


def _read_csv(path: Path) -> tuple[pa.Table, _Locator]:
    import pyarrow.csv as pcsv

    try:
        with pa.input_stream(str(path)) as stream:
            head = stream.read(65536)
    except OSError as exc:
        raise SourceFormatError(f"{path}: cannot be read: {exc}") from exc
    first_line = head.split(b"\n", 1)[0].decode("utf-8-sig", errors="replace").rstrip("\r")
    if not first_line.strip():
        raise SourceFormatError(f"{path}, line 1: no header; the first line must name the columns, such as "
                                "timestamp,open,high,low,close,volume")
    delimiter = max((",", ";", "\t"), key=first_line.count)
    names = next(csv.reader([first_line], delimiter=delimiter))
    locator = _Locator(path, delimiter)
    try:
        table = pcsv.read_csv(
            str(path),
            parse_options=pcsv.ParseOptions(delimiter=delimiter),
            convert_options=pcsv.ConvertOptions(
                column_types={name: pa.string() for name in names},
                null_values=[""],  # only an empty field is empty: "nan", "NA", "null" are reported as written
                strings_can_be_null=True,
                quoted_strings_can_be_null=True,
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowKeyError) as exc:
        found = _find_bad_csv_line(path, delimiter, len(names))
        if found is None:
            raise SourceFormatError(f"{path}: malformed CSV: {exc}") from exc
        raise SourceFormatError(f"{path}, line {found[0]}: malformed CSV: {found[1]}") from exc
    return table, locator


def _read_parquet(path: Path) -> tuple[pa.Table, _Locator]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(str(path))
    except (pa.ArrowException, OSError) as exc:
        raise SourceFormatError(f"{path}: not a readable Parquet file ({exc})") from exc
    return table, _Locator(path, None)


def _pick_columns(table: pa.Table, locator: _Locator) -> dict[str, pa.Array]:
    """The timestamp and value columns by their normalised names, header errors reported."""
    by_name: dict[str, pa.Array] = {}
    for name, column in zip(table.column_names, table.columns):
        key = name.strip().lower()
        if key in by_name:
            raise SourceFormatError(f"{locator.path}{_header_place(locator)}: column {key!r} appears twice")
        by_name[key] = column.combine_chunks()
    timestamp_name = next((n for n in TIMESTAMP_ALIASES if n in by_name), None)
    missing = [c for c in REQUIRED_COLUMNS if c not in by_name]
    if timestamp_name is None:
        missing.insert(0, "timestamp")
    if missing:
        found = ", ".join(table.column_names) or "none"
        raise SourceFormatError(
            f"{locator.path}{_header_place(locator)}: missing column{'s' if len(missing) > 1 else ''} "
            f"{', '.join(missing)} (found: {found}); a candle file needs timestamp, open, high, low, close, volume"
        )
    picked = {"timestamp": by_name[timestamp_name]}  # type: ignore[index]
    picked.update({c: by_name[c] for c in VALUE_COLUMNS if c in by_name})
    return picked


def _header_place(locator: _Locator) -> str:
    return ", line 1" if locator.delimiter is not None else ""


def _first(mask: np.ndarray) -> int:
    return int(np.argmax(mask))


def _timestamps_micros(column: pa.Array, locator: _Locator) -> np.ndarray:
    """A timestamp column as int64 µs since the epoch, UTC (see docs/internals.md)."""
    if column.null_count:
        row = _first(column.is_null().to_numpy(zero_copy_only=False))
        raise locator.error(row, "empty timestamp")
    kind = column.type
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
        try:
            micros = column.cast(pa.timestamp("us", tz=getattr(kind, "tz", None))).cast(pa.int64())
        except pa.ArrowInvalid as exc:
            raise SourceFormatError(f"{locator.path}: timestamps finer than a microsecond ({exc})") from exc
        return micros.to_numpy()
    if pa.types.is_integer(kind):
        return _epoch_to_micros(column.cast(pa.int64()).to_numpy(), locator)
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise SourceFormatError(f"{locator.path}: the timestamp column has type {kind}; "
                                "give integer epoch times or ISO 8601 text")
    text = pc.utf8_trim_whitespace(column)
    is_integer = pc.match_substring_regex(text, _INTEGER_RE).to_numpy(zero_copy_only=False)
    out = np.zeros(len(text), dtype=np.int64)
    if is_integer.any():
        digits = text.filter(pa.array(is_integer))
        length = pc.utf8_length(digits)
        too_long = pc.or_(pc.greater(length, 19), pc.and_(pc.equal(length, 19), pc.greater(digits, str(_INT64_MAX))))
        too_long = too_long.to_numpy(zero_copy_only=False)
        if too_long.any():
            row = int(np.flatnonzero(is_integer)[_first(too_long)])
            raise locator.error(row, f"timestamp {text[row].as_py()!r} is too large for an epoch time")
        out[is_integer] = _epoch_to_micros(digits.cast(pa.int64()).to_numpy(), locator, np.flatnonzero(is_integer))
    if not is_integer.all():
        rows = np.flatnonzero(~is_integer)
        iso = pd.Series(text.filter(pa.array(~is_integer)).to_pylist(), dtype=object)
        parsed = pd.to_datetime(iso, format="ISO8601", utc=True, errors="coerce")
        bad = parsed.isna().to_numpy()
        if bad.any():
            row = int(rows[_first(bad)])
            raise locator.error(row, f"timestamp {text[row].as_py()!r} is neither ISO 8601 "
                                     "(2025-01-01T00:00:00Z) nor an integer epoch time")
        out[rows] = parsed.dt.as_unit("us").astype("int64").to_numpy()
    return out


def _epoch_to_micros(values: np.ndarray, locator: _Locator, rows: np.ndarray | None = None) -> np.ndarray:
    """Integer epoch times in s, ms, µs or ns (by size) to µs."""
    if (values < 0).any():
        index = _first(values < 0)
        raise locator.error(int(rows[index]) if rows is not None else index,
                            f"timestamp {int(values[index])} is negative")
    return np.select(
        [values < 10**11, values < 10**14, values < 10**17],
        [values * 1_000_000, values * 1_000, values],
        values // 1_000,
    ).astype(np.int64)


def _value_text(column: pa.Array, name: str, locator: _Locator) -> pa.Array:
    """A value column as trimmed decimal text (nulls kept), checked to be numbers."""
    kind = column.type
    if pa.types.is_floating(kind):
        finite = pc.is_finite(column).fill_null(True).to_numpy(zero_copy_only=False)
        if not finite.all():
            row = _first(~finite)
            raise locator.error(row, f"{name} value {column[row].as_py()!r} is not a finite number")
        column = column.cast(pa.float64()).cast(pa.string())
    elif pa.types.is_integer(kind) or pa.types.is_decimal(kind):
        column = column.cast(pa.string())
    elif pa.types.is_large_string(kind):
        column = column.cast(pa.string())
    elif not pa.types.is_string(kind):
        raise SourceFormatError(f"{locator.path}: column {name} has type {kind}; give decimal numbers")
    text = pc.utf8_trim_whitespace(column)
    valid = pc.match_substring_regex(text, _DECIMAL_RE).fill_null(False).to_numpy(zero_copy_only=False)
    nulls = text.is_null().to_numpy(zero_copy_only=False)
    if name in REQUIRED_COLUMNS and nulls.any():
        raise locator.error(_first(nulls), f"empty {name} value")
    bad = ~valid & ~nulls
    if bad.any():
        row = _first(bad)
        raise locator.error(row, f"{name} value {text[row].as_py()!r} is not a decimal number")
    return text


def _decimal_places(text: pa.Array, name: str, locator: _Locator) -> np.ndarray:
    """Decimal places written in each value (0 for nulls), e.g. ``42000.10`` -> 2."""
    filled = text.fill_null("0")
    length = pc.utf8_length(filled).to_numpy(zero_copy_only=False).astype(np.int64)
    dot = pc.find_substring(filled, ".").to_numpy(zero_copy_only=False).astype(np.int64)
    places = np.where(dot >= 0, length - dot - 1, 0)
    has_exponent = pc.match_substring(filled, "e", ignore_case=True).to_numpy(zero_copy_only=False)
    for at in np.flatnonzero(has_exponent):
        exponent = Decimal(filled[int(at)].as_py()).as_tuple().exponent
        places[at] = max(0, -int(exponent))
    if places.size and places.max() > _MAX_DECIMALS:
        row = _first(places > _MAX_DECIMALS)
        raise locator.error(row, f"{name} value {text[row].as_py()!r} has more than {_MAX_DECIMALS} decimals")
    return places


def _check_fits(values: dict[str, pa.Array], price_decimals: int, volume_decimals: int, locator: _Locator) -> None:
    """Every value times 10**decimals must fit a 64-bit integer."""
    for name, text in values.items():
        decimals = price_decimals if name in PRICE_COLUMNS else volume_decimals
        magnitude = np.abs(pc.cast(text.fill_null("0"), pa.float64()).to_numpy(zero_copy_only=False))
        limit = _INT64_MAX / 10**decimals
        if magnitude.size and magnitude.max() * 0.999 >= limit:
            row = _first(magnitude * 0.999 >= limit)
            hint = f" with {decimals} decimals; give fewer decimals in {MARKET_FILE}" if decimals else ""
            raise locator.error(row, f"{name} value {text[row].as_py()!r} is too large to store as a 64-bit "
                                     f"integer{hint}")


def _read_market_file(pair_dir: Path) -> tuple[int | None, int | None, tuple[int, int] | None]:
    """``market.json`` decimals (None where not given) and the file's fingerprint."""
    path = pair_dir / MARKET_FILE
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None, None, None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SourceFormatError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise SourceFormatError(f"{path}: must be a JSON object like {{\"price_decimals\": 2, \"volume_decimals\": 5}}")
    unknown = set(data) - {"price_decimals", "volume_decimals"}
    if unknown:
        raise SourceFormatError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}; "
                                "known: price_decimals, volume_decimals")
    out: list[int | None] = []
    for key in ("price_decimals", "volume_decimals"):
        value = data.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_DECIMALS):
            raise SourceFormatError(f"{path}: {key}={value!r} must be a whole number from 0 to {_MAX_DECIMALS}")
        out.append(value)
    return out[0], out[1], (stat.st_mtime_ns, stat.st_size)


def _parse_file(path: Path, period_seconds: int, market: tuple[int | None, int | None]) -> _CandleFile:
    """Read, validate and sort one candle file."""
    if path.name.lower().endswith(".parquet"):
        table, locator = _read_parquet(path)
    else:
        table, locator = _read_csv(path)
    columns = _pick_columns(table, locator)
    timestamps = _timestamps_micros(columns.pop("timestamp"), locator)
    misaligned = ~is_aligned(period_seconds, timestamps)
    if misaligned.any():
        row = _first(misaligned)
        raise locator.error(row, f"timestamp {timestamps[row]} µs ({format_micros(int(timestamps[row]))}) is not "
                                 f"where a {period_label(period_seconds)} period opens (a candle's timestamp is the "
                                 "start of its period; weeks open Monday 00:00 UTC, months on the 1st)")
    order = np.argsort(timestamps, kind="stable")
    ordered = timestamps[order]
    duplicate = np.flatnonzero(ordered[1:] == ordered[:-1])
    if duplicate.size:
        first, second = sorted((int(order[duplicate[0]]), int(order[duplicate[0] + 1])))
        raise locator.error(second, f"a second candle for timestamp {ordered[duplicate[0]]} "
                                    f"(the first is at {locator.where(first).rpartition(', ')[2]})")
    values: dict[str, pa.Array] = {}
    decimals = {"price": 0, "volume": 0}
    places_by_column: dict[str, np.ndarray] = {}
    for name, column in columns.items():
        text = _value_text(column, name, locator)
        places = _decimal_places(text, name, locator)
        group = "price" if name in PRICE_COLUMNS else "volume"
        if places.size:
            decimals[group] = max(decimals[group], int(places.max()))
        values[name] = text
        places_by_column[name] = places
    given_price, given_volume = market
    for name, places in places_by_column.items():
        given = given_price if name in PRICE_COLUMNS else given_volume
        if given is not None and places.size and places.max() > given:
            row = _first(places > given)
            raise locator.error(row, f"{name} value {values[name][row].as_py()!r} has more decimals than the "
                                     f"{given} given in {MARKET_FILE}")
    price_decimals = given_price if given_price is not None else decimals["price"]
    volume_decimals = given_volume if given_volume is not None else decimals["volume"]
    _check_fits(values, price_decimals, volume_decimals, locator)
    take = pa.array(order)
    return _CandleFile(
        path=path,
        timestamps=ordered,
        values={name: text.take(take) for name, text in values.items()},
        price_decimals=decimals["price"],
        volume_decimals=decimals["volume"],
    )


def _empty_frame() -> pd.DataFrame:
    frame = pd.DataFrame({"timestamp": np.array([], dtype=np.int64)})
    for name in REQUIRED_COLUMNS:
        frame[name] = pd.Series([], dtype=object)
    return frame


class FilesSource(IngestSource):
    """Candles from a directory of CSV/Parquet files (layout in docs/sources.md)."""

    name = "files"
    settle = 0.0  # files do not publish late: an empty answer is final once the period closed
    local = True  # pure CPU in this process: no network to wait on

    def __init__(self, directory: str | os.PathLike[str] | None, *, max_cached_files: int = _DEFAULT_CACHE_FILES) -> None:
        if directory is None or not str(directory).strip():
            raise UnknownSourceError("the files source needs a directory: use files:/path/to/candles")
        self.directory = Path(os.path.expanduser(str(directory))).resolve()
        self._check_directory()
        self._max_cached_files = max(1, max_cached_files)
        self._cache: OrderedDict[tuple[object, ...], _CandleFile] = OrderedDict()
        self._lock = threading.Lock()
        self._path_locks: dict[Path, threading.Lock] = {}

    def __repr__(self) -> str:
        return f"FilesSource({str(self.directory)!r})"

    def _check_directory(self) -> None:
        if not self.directory.is_dir():
            raise UnknownSourceError(
                f"the candle directory {self.directory} does not exist or is not a directory; "
                "create it or fix the source spec (files:/path/to/candles)"
            )

    # -- locating files -----------------------------------------------------------------
    @staticmethod
    def _child_directory(parent: Path, name: str) -> Path | None:
        exact = parent / name
        if exact.is_dir():
            return exact
        try:
            found = [Path(e.path) for e in os.scandir(parent) if e.name.lower() == name.lower() and e.is_dir()]
        except FileNotFoundError:
            return None
        if len(found) > 1:
            raise SourceFormatError(f"{parent}: several directories match {name!r} ({', '.join(p.name for p in found)}); keep one")
        return found[0] if found else None

    def pair_directory(self, ticker: Ticker) -> Path | None:
        """The directory holding ``ticker``'s files, or None if there is none."""
        self._check_directory()
        exchange_dir = self._child_directory(self.directory, ticker.exchange)
        if exchange_dir is None:
            return None
        return self._child_directory(exchange_dir, pair_directory_name(ticker))

    @staticmethod
    def candle_files(pair_dir: Path) -> dict[int, Path]:
        """The pair's candle files by period in seconds."""
        by_period: dict[int, Path] = {}
        for entry in sorted(os.scandir(pair_dir), key=lambda e: e.name):
            stem = _candle_stem(entry.name)
            if stem is None or not entry.is_file():
                continue
            try:
                seconds = parse_period(stem)
            except InvalidPeriodError:
                log.debug("ignoring %s: its name is not a period", entry.path)
                continue
            if seconds in by_period:
                raise SourceFormatError(
                    f"{pair_dir}: both {by_period[seconds].name} and {entry.name} hold {seconds}s candles; keep one"
                )
            by_period[seconds] = Path(entry.path)
        return by_period

    # -- parsing with a cache -----------------------------------------------------------
    def _load(self, path: Path, period_seconds: int, market: tuple[int | None, int | None, object]) -> _CandleFile:
        stat = path.stat()
        key = (path, stat.st_mtime_ns, stat.st_size, market)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
            path_lock = self._path_locks.setdefault(path, threading.Lock())
        with path_lock:
            with self._lock:
                hit = self._cache.get(key)
            if hit is not None:
                return hit
            log.debug("parsing %s", path)
            parsed = _parse_file(path, period_seconds, (market[0], market[1]))
            with self._lock:
                for stale in [k for k in self._cache if k[0] == path]:
                    del self._cache[stale]
                self._cache[key] = parsed
                while len(self._cache) > self._max_cached_files:
                    self._cache.popitem(last=False)
            return parsed

    def market_for(self, ticker: Ticker, pair_dir: Path | None = None) -> MarketInfo:
        """The decimals of ``ticker``: ``market.json``, else the widest seen in its files."""
        pair_dir = pair_dir if pair_dir is not None else self.pair_directory(ticker)
        price, volume = 0, 0
        if pair_dir is None:
            return MarketInfo(str(ticker), price, volume)
        given_price, given_volume, fingerprint = _read_market_file(pair_dir)
        market = (given_price, given_volume, fingerprint)
        if given_price is None or given_volume is None:
            for seconds, path in self.candle_files(pair_dir).items():
                parsed = self._load(path, seconds, market)
                price, volume = max(price, parsed.price_decimals), max(volume, parsed.volume_decimals)
        return MarketInfo(
            str(ticker),
            given_price if given_price is not None else price,
            given_volume if given_volume is not None else volume,
        )

    def fingerprint(self, ticker: Ticker) -> str | None:
        """What the pair's files are now: name, size, modification time and inode of each candle
        file and ``market.json`` (``stat`` calls only). A file added, changed, appended or
        removed, or the pair's directory appearing, changes it. None while the source's whole
        directory is missing (an unmounted disk is no change of data)."""
        try:
            pair_dir = self.pair_directory(ticker)
        except UnknownSourceError:  # the whole directory is gone: nothing to compare with
            return None
        if pair_dir is None:
            return "absent"
        seen: list[str] = []
        try:
            entries = sorted(os.scandir(pair_dir), key=lambda e: e.name)
        except FileNotFoundError:
            return "absent"
        for entry in entries:
            if entry.name != MARKET_FILE and _candle_stem(entry.name) is None:
                continue
            try:
                stat = entry.stat()
            except FileNotFoundError:
                continue
            seen.append(f"{entry.name}\0{stat.st_size}\0{stat.st_mtime_ns}\0{stat.st_ino}")
        return hashlib.sha256("\n".join(seen).encode()).hexdigest()[:16]

    # -- the source ---------------------------------------------------------------------
    def periods(self, ticker: Ticker) -> list[int] | None:
        """The periods with a candle file for ``ticker`` (coarser ones are aggregated from them)."""
        pair_dir = self.pair_directory(ticker)
        return [] if pair_dir is None else sorted(self.candle_files(pair_dir))

    def fetch_candles(self, ticker: Ticker, period_seconds: int, start: int, stop: int) -> SourceCandles:
        pair_dir = self.pair_directory(ticker)
        if pair_dir is None:
            log.info("no directory for %s under %s", ticker, self.directory)
            return SourceCandles(MarketInfo(str(ticker), 0, 0), _empty_frame())
        market = self.market_for(ticker, pair_dir)
        path = self.candle_files(pair_dir).get(period_seconds)
        if path is None:
            log.info("no %ss candle file for %s in %s", period_seconds, ticker, pair_dir)
            return SourceCandles(market, _empty_frame())
        parsed = self._load(path, period_seconds, _read_market_file(pair_dir))  # cached by market_for
        lo, hi = np.searchsorted(parsed.timestamps, [start, stop], side="left")
        frame = pd.DataFrame({"timestamp": parsed.timestamps[lo:hi].copy()})
        for name, text in parsed.values.items():
            frame[name] = pd.Series(text.slice(lo, hi - lo).to_numpy(zero_copy_only=False), dtype=object)
        return SourceCandles(market, frame, scaled=False)

    def close(self) -> None:
        with self._lock:
            self._cache.clear()
