"""The ``dexorder-feeds`` command: ``serve``, ``fetch``, ``coverage``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from .errors import DexOrderError

__all__ = ["main", "build_parser"]

DEFAULT_SERVE_RELAY = "tcp://127.0.0.1:5555"
DEFAULT_SERVE_NOTIFY = "tcp://127.0.0.1:5557"


def _add_warehouse_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--iceberg-catalog-uri", help="catalog URI (sqlite:///…, postgresql+psycopg://…, http(s)://…)")
    parser.add_argument("--namespace", help="Iceberg namespace (default: trading)")
    parser.add_argument("--catalog-property", action="append", default=[], metavar="KEY=VALUE",
                        help="pyiceberg catalog property, repeatable (e.g. s3.endpoint=http://…)")
    parser.add_argument("--source", action="append", default=[], metavar="EXCHANGE=SPEC",
                        help="ingest source for an exchange, repeatable: sim, files:/dir, ccxt:binance")


def _catalog_properties(items: Sequence[str]) -> dict[str, str]:
    props = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--catalog-property {item!r} must look like KEY=VALUE")
        props[key.strip()] = value
    return props


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dexorder-feeds", description="DexOrder historical candles for backtesting.")
    parser.add_argument("--log-level", default=None,
                        help="DEBUG, INFO, WARNING or ERROR (default: INFO for serve, WARNING otherwise)")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the relay server and historian as a process")
    serve.add_argument("--relay-endpoint", help=f"request endpoint to bind (env DEXORDER_RELAY_ENDPOINT, default {DEFAULT_SERVE_RELAY})")
    serve.add_argument("--notification-endpoint",
                       help=f"notification endpoint to bind (env DEXORDER_NOTIFICATION_ENDPOINT, default {DEFAULT_SERVE_NOTIFY})")
    _add_warehouse_options(serve)
    serve.add_argument("--workers", type=int, default=None, help="historian worker threads (env DEXORDER_WORKERS, default 4)")
    serve.add_argument("--max-range-candles", type=int, default=None, help="largest range one request may ask for")
    serve.set_defaults(handler=_serve)

    fetch = sub.add_parser("fetch", help="fetch candles into the warehouse and print or save them")
    fetch.add_argument("ticker")
    fetch.add_argument("--period", default="1h", help="seconds or 1m/5m/15m/1h/4h/1d/1w (default 1h)")
    fetch.add_argument("--start", required=True, help="ISO time or µs, e.g. 2025-01-01")
    fetch.add_argument("--end", required=True, help="ISO time or µs, inclusive")
    fetch.add_argument("-o", "--output", help="write .csv or .parquet instead of printing")
    fetch.add_argument("--relay-endpoint")
    fetch.add_argument("--notification-endpoint")
    fetch.add_argument("--timeout", type=float, default=None, help="request timeout in seconds")
    fetch.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    _add_warehouse_options(fetch)
    fetch.set_defaults(handler=_fetch)

    coverage = sub.add_parser("coverage", help="list the ranges the warehouse holds")
    coverage.add_argument("ticker", nargs="?")
    _add_warehouse_options(coverage)
    coverage.set_defaults(handler=_coverage)
    return parser


def _serve(args: argparse.Namespace) -> int:
    import os

    from .config import resolve_settings
    from .server.relay import serve

    settings = resolve_settings(
        iceberg_catalog_uri=args.iceberg_catalog_uri,
        relay_endpoint=args.relay_endpoint or os.environ.get("DEXORDER_RELAY_ENDPOINT") or DEFAULT_SERVE_RELAY,
        notification_endpoint=args.notification_endpoint or os.environ.get("DEXORDER_NOTIFICATION_ENDPOINT") or DEFAULT_SERVE_NOTIFY,
        namespace=args.namespace,
        catalog_properties=_catalog_properties(args.catalog_property),
        sources=args.source,
    )
    workers = args.workers if args.workers is not None else int(os.environ.get("DEXORDER_WORKERS", "4"))
    kwargs = {} if args.max_range_candles is None else {"max_range_candles": args.max_range_candles}
    serve(settings, workers=workers, **kwargs)
    return 0


def _fetch(args: argparse.Namespace) -> int:
    from .commands import fetch_command

    return fetch_command(args, _catalog_properties(args.catalog_property))


def _coverage(args: argparse.Namespace) -> int:
    from .commands import coverage_command

    return coverage_command(args, _catalog_properties(args.catalog_property))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = args.log_level or ("INFO" if args.command == "serve" else "WARNING")
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.handler(args) or 0)
    except DexOrderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
