"""What the ``fetch`` and ``coverage`` CLI commands do (the CLI prints; the library never does)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from ..hookspecs import hookimpl

__all__ = ["fetch_command", "coverage_command", "forget_command", "export_frame", "write_export"]


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
            self.bar.n = completed
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


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
    from ..plugins import get_plugin_manager
    from ..client.sync import fetch_ohlc, price_scale

    progress = ProgressBar(enabled=not args.no_progress and sys.stderr.isatty())
    pm = get_plugin_manager()
    pm.register(progress, name="dexorder-feeds-cli-progress")
    try:
        frame = fetch_ohlc(args.ticker, args.period, args.start, args.end, request_timeout=args.timeout,
                           **_settings_kwargs(args, catalog_properties))
    finally:
        progress.close()
        pm.unregister(progress)
    market = price_scale(args.ticker, **_settings_kwargs(args, catalog_properties))
    if args.output:
        path = Path(args.output)
        if path.suffix not in (".csv", ".parquet"):
            print(f"error: --output must end in .csv or .parquet, not {path.suffix or 'nothing'}", file=sys.stderr)
            return 2
        if args.raw:
            if path.suffix == ".parquet":
                frame.to_parquet(path, index=False)
            else:
                frame.to_csv(path, index=False)
            print(f"wrote {len(frame)} candles to {path} (raw: integer prices, divide by "
                  f"10**{market.price_decimals if market else '?'}; µs timestamps)")
        else:
            write_export(frame, market, path)
            print(f"wrote {len(frame)} candles to {path} (real prices, UTC times)")
        return 0
    print(f"{len(frame)} candles of {args.ticker} ({frame.attrs.get('period_seconds')} s), "
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
