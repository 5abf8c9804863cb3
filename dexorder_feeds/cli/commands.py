"""What the ``fetch`` and ``coverage`` CLI commands do (the CLI prints; the library never does)."""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd

from ..hookspecs import hookimpl

__all__ = ["fetch_command", "coverage_command", "forget_command", "export_frame", "write_export", "BulkProgress", "output_paths",
           "resolve_range", "split_list"]


class ProgressBar:
    """An observer plugin drawing a tqdm bar once a gap fill has run for a second."""

    def __init__(self, enabled: bool, *, file: Any = None, delay: float = 1.0) -> None:
        self.enabled = enabled
        self.file = file
        self.delay = delay
        self.bar: Any = None

    @hookimpl
    def dexorder_cache_checked(self, request: Any, cached_rows: int, missing_ranges: Any) -> None:
        if self.enabled and missing_ranges and self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=None, desc=f"filling {request.ticker}", unit="range", delay=self.delay,
                            file=self.file or sys.stderr)

    @hookimpl
    def dexorder_progress(self, request: Any, completed: int, total: int) -> None:
        if self.bar is not None:
            self.bar.total = total
            # update(), not n= and refresh(): tqdm then honours its delay and ends the line on close
            self.bar.update(completed - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class BulkProgress:
    """One tqdm bar over every series of a bulk fetch, with an ETA.

    Each series counts 1: its gap fill's ranges move it up to 0.9 as they complete (through the
    ``dexorder_progress`` events of its request), :meth:`done` (the ``on_done`` of ``fetch_many``)
    to 1.
    """

    def __init__(self, enabled: bool, keys: list[tuple[str, int]], *, file: Any = None, delay: float = 1.0) -> None:
        from ..vocabulary.tickers import parse_ticker

        self.enabled = enabled
        self.keys = keys
        self.share: dict[tuple[str, int], float] = {key: 0.0 for key in keys}
        self.finished = 0
        self._by_request = {(str(parse_ticker(ticker)), period): (ticker, period) for ticker, period in keys}
        self._lock = threading.Lock()
        self.bar: Any = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=len(keys), desc=self._desc(), unit="series", delay=delay, file=file or sys.stderr,
                            bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}{postfix}]")

    def _desc(self) -> str:
        return f"fetching {self.finished}/{len(self.keys)} series"

    def _redraw(self, postfix: str | None = None) -> None:
        if self.bar is not None:
            self.bar.set_description_str(self._desc(), refresh=False)
            if postfix is not None:
                self.bar.set_postfix_str(postfix, refresh=False)
            # update(), not n= and refresh(): tqdm then honours its delay and ends the line on close
            self.bar.update(round(sum(self.share.values()), 3) - self.bar.n)

    @hookimpl
    def dexorder_progress(self, request: Any, completed: int, total: int) -> None:
        key = self._by_request.get((request.ticker, request.period_seconds))
        if key is None or not total:
            return
        with self._lock:
            if self.share[key] < 1.0:
                self.share[key] = 0.9 * completed / total
                self._redraw()

    def done(self, key: tuple[str, int], result: Any, seconds: float) -> None:
        from ..vocabulary.periods import period_label

        with self._lock:
            self.share[key] = 1.0
            self.finished += 1
            self._redraw(f"{key[0]} {period_label(key[1])}" + (" failed" if isinstance(result, BaseException) else ""))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def split_list(values: list[str] | None, default: list[str]) -> list[str]:
    """Repeated and comma-separated command-line values as one list (``default`` if none)."""
    items = [item.strip() for value in (values or []) for item in value.split(",") if item.strip()]
    return items or default


def resolve_range(start: str | None, end: str | None, days: float | None, now: int | None = None) -> tuple[int, int]:
    """``--start``/``--end``/``--days`` as µs (relative times counted from one ``now``)."""
    from ..vocabulary.errors import InvalidRequestError
    from ..vocabulary.times import now_micros, to_micros

    now = now_micros() if now is None else now
    end_us = to_micros(end if end is not None else "now", name="--end", now=now)
    if days is not None:
        if start is not None:
            raise InvalidRequestError("give either --start or --days, not both")
        if not 0 < days < 100_000:
            raise InvalidRequestError(f"--days {days:g} must be more than 0 and less than 100000 (the days up to --end)")
        return end_us - round(days * 86_400_000_000), end_us
    if start is None:
        raise InvalidRequestError("give --start (e.g. 2025-01-01 or '30 days ago') or --days N")
    return to_micros(start, name="--start", round_up=True, now=now), end_us


def _file_safe(ticker: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "_" for c in ticker)


def output_paths(template: str, keys: list[tuple[str, int]]) -> dict[tuple[str, int], Path]:
    """Each series' export file: ``template`` with ``{ticker}`` (``SIM_BTC_USDT``) and ``{period}``
    (``1h``, ``1d``, ``1mo``) filled in. Raises when the names would not be one file per series."""
    from ..vocabulary.errors import InvalidRequestError
    from ..vocabulary.periods import is_calendar_month, period_label

    example = "'candles/{ticker}_{period}" + (Path(template).suffix or ".parquet") + "'"
    if len(keys) > 1 and "{" not in template:
        raise InvalidRequestError(
            f"--output {template} names one file, but {len(keys)} series were asked for; put {{ticker}} and "
            f"{{period}} in the name to write one file each, e.g. -o {example}")
    paths: dict[tuple[str, int], Path] = {}
    for ticker, period in keys:
        try:
            name = template.format(ticker=_file_safe(ticker), period="1mo" if is_calendar_month(period)
                                   else period_label(period))
        except (KeyError, IndexError, ValueError) as exc:
            raise InvalidRequestError(f"--output {template}: only {{ticker}} and {{period}} may appear in braces "
                                      f"({exc!r}); e.g. -o {example}") from None
        paths[(ticker, period)] = Path(name)
    if len(set(paths.values())) < len(paths):
        tickers, periods = {t for t, _ in keys}, {p for _, p in keys}
        need = [f"{{{n}}}" for n, many in (("ticker", len(tickers) > 1), ("period", len(periods) > 1))
                if many and f"{{{n}}}" not in template]
        raise InvalidRequestError(f"--output {template} gives several series the same file; add "
                                  f"{' and '.join(need) or '{ticker} and {period}'}, e.g. -o {example}")
    for path in paths.values():
        if path.suffix not in (".csv", ".parquet"):
            raise InvalidRequestError(f"--output must end in .csv or .parquet, not {path.suffix or 'nothing'}")
    return paths


def _settings_kwargs(args: argparse.Namespace, catalog_properties: dict[str, str]) -> dict[str, Any]:
    return dict(
        iceberg_catalog_uri=args.iceberg_catalog_uri,
        relay_endpoint=getattr(args, "relay_endpoint", None),
        notification_endpoint=getattr(args, "notification_endpoint", None),
        namespace=args.namespace,
        catalog_properties=catalog_properties or None,
        sources=args.source or None,
        settle_seconds=getattr(args, "settle_seconds", None),
    )


def _decimal_view(frame: pd.DataFrame, price_decimals: int, volume_decimals: int) -> pd.DataFrame:
    from decimal import Decimal

    view = pd.DataFrame({"time": pd.to_datetime(frame["timestamp"], unit="us", utc=True)})
    for column in ("open", "high", "low", "close"):
        view[column] = [Decimal(v).scaleb(-price_decimals) for v in frame[column].tolist()]
    view["volume"] = [Decimal(v).scaleb(-volume_decimals) for v in frame["volume"].tolist()]
    return view


_VALUE_COLUMNS = ("open", "high", "low", "close", "volume", "buy_vol", "sell_vol", "open_interest")


def export_frame(frame: pd.DataFrame, market: Any) -> pd.DataFrame:
    """The candles as people read them: ``ticker, period_seconds, time`` (ISO-8601 UTC, the
    period start) and the real prices and volumes as exact ``Decimal`` values (None where the
    source gives none)."""
    from ..vocabulary.markets import real_prices

    real = real_prices(frame, market, "decimal")
    return real[["ticker", "period_seconds", "time", *[c for c in _VALUE_COLUMNS if c in real.columns]]]


def write_export(frame: pd.DataFrame, market: Any, path: Path) -> None:
    """Write real prices: CSV as exact decimal text and ``2025-01-01T00:00:00Z`` times, Parquet
    as ``decimal128`` columns at the market's decimals and a UTC ``timestamp[us]`` column."""
    view = export_frame(frame, market)
    if path.suffix == ".csv":
        text = view.copy()
        text["time"] = view["time"].dt.strftime("%Y-%m-%dT%H:%M:%SZ") if len(view) else view["time"].astype(str)
        for column in _VALUE_COLUMNS:
            if column in text.columns:
                text[column] = [format(v, "f") if v is not None else "" for v in view[column].tolist()]
        text.to_csv(path, index=False)
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrays: dict[str, pa.Array] = {
        "ticker": pa.array(view["ticker"].astype(str).tolist(), type=pa.string()),
        "period_seconds": pa.array(view["period_seconds"].to_numpy(), type=pa.int64()),
        "time": pa.array(view["time"].to_numpy(), type=pa.timestamp("us", tz="UTC")),
    }
    for column in _VALUE_COLUMNS:
        if column in view.columns:
            decimals = market.decimals_for(column) if market is not None else 0
            arrays[column] = pa.array(view[column].tolist(), type=pa.decimal128(38, decimals))
    pq.write_table(pa.table(arrays), path)


def fetch_command(args: argparse.Namespace, catalog_properties: dict[str, str]) -> int:
    from ..client.ohlc_client import series_keys
    from ..vocabulary.tickers import parse_ticker

    from ..vocabulary.errors import InvalidRequestError

    tickers = split_list(args.ticker, [])
    if not tickers:
        raise InvalidRequestError("give at least one ticker, e.g. SIM:BTC/USDT")
    periods = split_list(args.period, ["1h"])
    for ticker in tickers:
        parse_ticker(ticker)  # a typo fails before anything is fetched
    keys = series_keys(tickers, periods)
    start, end = resolve_range(args.start, args.end, args.days)
    paths = output_paths(args.output, keys) if args.output else None
    if len(keys) == 1:
        return _fetch_one(args, catalog_properties, keys[0], start, end, paths)
    return _fetch_bulk(args, catalog_properties, keys, start, end, paths)


def _write(frame: pd.DataFrame, market: Any, path: Path, raw: bool) -> str:
    """Write one series' candles to ``path``; the line saying what was written."""
    if raw:
        if path.suffix == ".parquet":
            frame.to_parquet(path, index=False)
        else:
            frame.to_csv(path, index=False)
        return (f"wrote {len(frame)} candles to {path} (raw: integer prices, divide by "
                f"10**{market.price_decimals if market else '?'}; µs timestamps)")
    write_export(frame, market, path)
    return f"wrote {len(frame)} candles to {path} (real prices, UTC times)"


def _fetch_one(args: argparse.Namespace, catalog_properties: dict[str, str], key: tuple[str, int], start: int,
               end: int, paths: dict[tuple[str, int], Path] | None) -> int:
    from ..plugins import get_plugin_manager
    from ..client.sync import fetch_ohlc, price_scale

    ticker, period = key
    progress = ProgressBar(enabled=not args.no_progress and sys.stderr.isatty())
    pm = get_plugin_manager()
    pm.register(progress, name="dexorder-feeds-cli-progress")
    try:
        frame = fetch_ohlc(ticker, period, start, end, request_timeout=args.timeout,
                           **_settings_kwargs(args, catalog_properties))
    finally:
        progress.close()
        pm.unregister(progress)
    market = price_scale(ticker, **_settings_kwargs(args, catalog_properties))
    if paths is not None:
        print(_write(frame, market, paths[key], args.raw))
        return 0
    print(f"{len(frame)} candles of {ticker} ({frame.attrs.get('period_seconds')} s), "
          f"Iceberg snapshot {frame.attrs.get('snapshot_id')}")
    quality = frame.attrs.get("quality")
    if quality is not None and quality.missing:
        print(str(quality).split("\n", 1)[0])
        for item in quality.missing[:5]:
            print(f"  missing {item}")
        if len(quality.missing) > 5:
            print(f"  … {len(quality.missing) - 5} more missing ranges")
    if len(frame) and market is not None:
        view = _decimal_view(frame, market.price_decimals, market.volume_decimals)
        with pd.option_context("display.width", 120, "display.max_columns", 10):
            print(view.head(5).to_string(index=False))
            if len(view) > 5:
                print("…")
                print(view.tail(3).to_string(index=False, header=False))
    return 0


def _fetch_bulk(args: argparse.Namespace, catalog_properties: dict[str, str], keys: list[tuple[str, int]],
                start: int, end: int, paths: dict[tuple[str, int], Path] | None) -> int:
    """Every series concurrently under one progress bar, then a summary line each."""
    from ..plugins import get_plugin_manager
    from ..client.sync import fetch_many, price_scale
    from ..vocabulary.periods import period_label
    settings = _settings_kwargs(args, catalog_properties)
    seconds: dict[tuple[str, int], float] = {}
    progress = BulkProgress(not args.no_progress and sys.stderr.isatty(), keys)

    def done(key: tuple[str, int], result: Any, took: float) -> None:
        seconds[key] = took
        progress.done(key, result, took)

    pm = get_plugin_manager()
    pm.register(progress, name="dexorder-feeds-cli-bulk-progress")
    began = time.perf_counter()
    try:
        results = fetch_many(list(dict.fromkeys(t for t, _ in keys)), list(dict.fromkeys(p for _, p in keys)),
                             start, end, args.timeout, return_exceptions=True, on_done=done,
                             concurrency=args.concurrency, **settings)
    finally:
        progress.close()
        pm.unregister(progress)
    wall = time.perf_counter() - began
    tickers = len({t for t, _ in keys})
    print(f"{len(keys)} series ({tickers} ticker{'s' * (tickers != 1)} × {len(keys) // tickers} "
          f"period{'s' * (len(keys) // tickers != 1)}), {_iso(start)} .. {_iso(end)} UTC, {wall:.2f} s")
    print(f"{'ticker':<24} {'period':>6} {'candles':>9} {'missing':>9} {'seconds':>8}")
    failed = 0
    for key, result in results.items():
        ticker, period = key
        head = f"{ticker:<24} {period_label(period):>6}"
        if isinstance(result, BaseException):
            failed += 1
            print(f"{head} {'-':>9} {'-':>9} {seconds.get(key, 0.0):>8.2f}  failed: {type(result).__name__}")
            print(f"error: {ticker} {period_label(period)}: {result}", file=sys.stderr)
            continue
        quality = result.attrs.get("quality")
        missing = quality.missing_candles if quality is not None else 0
        line = f"{head} {len(result):>9} {missing:>9} {seconds.get(key, 0.0):>8.2f}"
        if paths is not None:
            path = paths[key]
            path.parent.mkdir(parents=True, exist_ok=True)
            _write(result, price_scale(ticker, **settings), path, args.raw)
            line += f"  -> {path}"
        print(line)
    if failed:
        print(f"error: {failed} of {len(keys)} series failed (the others were fetched"
              f"{' and written' if paths is not None else ''})", file=sys.stderr)
        return 2
    return 0


def coverage_command(args: argparse.Namespace, catalog_properties: dict[str, str]) -> int:
    from ..config import resolve_settings
    from ..client.iceberg_client import IcebergClient

    settings = resolve_settings(**_settings_kwargs(args, catalog_properties))
    client = IcebergClient(settings.iceberg_catalog_uri, settings.namespace,
                           catalog_properties=settings.catalog_properties)
    ledger = client.ledger(args.ticker)
    if ledger.empty:
        print("the warehouse holds no ingested ranges" + (f" for {args.ticker}" if args.ticker else ""))
        return 0
    print(f"{'ticker':<24} {'period':>8}  {'from (UTC)':<19}  {'to (UTC, excl.)':<19}  {'state':<13} "
          f"{'candles':>9}  source, checked at")
    for row in ledger.itertuples(index=False):
        said = ""
        if row.state != "unknown":
            said = f"{row.source or '(not recorded)'}, {_iso(row.checked_at)}" if row.checked_at is not None \
                and not pd.isna(row.checked_at) else ""
        print(f"{row.ticker:<24} {int(row.period_seconds):>8}  {_iso(row.start_time):<19}  {_iso(row.end_time):<19}  "
              f"{row.state:<13} {int(row.candles):>9}  {said}".rstrip())
    return 0


def forget_command(args: argparse.Namespace, catalog_properties: dict[str, str]) -> int:
    from ..config import resolve_settings
    from ..client.iceberg_client import IcebergClient

    settings = resolve_settings(**_settings_kwargs(args, catalog_properties))
    client = IcebergClient(settings.iceberg_catalog_uri, settings.namespace,
                           catalog_properties=settings.catalog_properties)
    try:
        result = client.forget(args.ticker, args.period, args.start, args.end, candles=args.candles)
    finally:
        client.warehouse.close()
    what = f"{result.coverage_rows} coverage row{'s' if result.coverage_rows != 1 else ''}"
    if args.candles:
        what += f" and {result.candles} candle{'s' if result.candles != 1 else ''}"
    if result.coverage_rows or result.candles:
        print(f"forgot {what} of {args.ticker}; the next fetch of that range asks the source again")
    else:
        print(f"nothing to forget: no ingested range of {args.ticker} matches")
    return 0


def _iso(micros: int) -> str:
    return pd.Timestamp(int(micros), unit="us", tz="UTC").strftime("%Y-%m-%d %H:%M:%S")
