"""The ``dexorder-feeds`` command: ``serve``, ``fetch``, ``coverage``, ``forget``, ``compact``, ``pin``, ``pins``, ``unpin``, ``keys``, ``team-up``."""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import logging
import os
import sys
from collections.abc import Sequence
from importlib.metadata import version

from ..vocabulary.errors import DexOrderError

__all__ = ["main", "build_parser"]

DEFAULT_SERVE_RELAY = "tcp://127.0.0.1:5555"
DEFAULT_SERVE_NOTIFY = "tcp://127.0.0.1:5557"


def _add_warehouse_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--iceberg-catalog-uri", help="catalog URI (sqlite:///…, postgresql+psycopg://…, http(s)://…)")
    parser.add_argument("--namespace", help="Iceberg namespace (default: trading)")
    parser.add_argument("--catalog-property", action="append", default=[], metavar="KEY=VALUE",
                        help="pyiceberg catalog property, repeatable (e.g. s3.endpoint=http://…)")
    parser.add_argument("--source", action="append", default=[], metavar="EXCHANGE=SPEC",
                        help="ingest source for an exchange, repeatable: sim, files:/dir, ccxt:binance, "
                           "or a fallback chain files:/dir,ccxt:binance")


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
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('dexorder-feeds')}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the relay server and historian as a process")
    serve.add_argument("--relay-endpoint", help=f"request endpoint to bind (env DEXORDER_RELAY_ENDPOINT, default {DEFAULT_SERVE_RELAY})")
    serve.add_argument("--notification-endpoint",
                       help=f"notification endpoint to bind (env DEXORDER_NOTIFICATION_ENDPOINT, default {DEFAULT_SERVE_NOTIFY})")
    _add_warehouse_options(serve)
    serve.add_argument("--settle-seconds", type=float, default=None, metavar="SECONDS",
                       help="how long after a period closes an empty answer is not yet remembered as empty "
                            "(env DEXORDER_SETTLE_SECONDS; default: the source's own, else max(300, the period))")
    serve.add_argument("--workers", type=int, default=None, help="historian worker threads (env DEXORDER_WORKERS, default 4)")
    serve.add_argument("--max-range-candles", type=int, default=None, help="largest range one request may ask for")
    serve.add_argument("--max-topics-per-peer", type=int, default=None,
                       help="live subscriptions one peer may hold (a connection, or a CURVE key; default 1000)")
    serve.add_argument("--max-topics", type=int, default=None, help="live subscriptions in all (default 10000)")
    serve.add_argument("--curve-secret-key", metavar="FILE",
                       help="the relay's NAME.key_secret: require CURVE (env DEXORDER_CURVE_SECRET_KEY)")
    serve.add_argument("--curve-authorized-keys", metavar="DIR",
                       help="directory of admitted client .key files (env DEXORDER_CURVE_AUTHORIZED_KEYS); "
                            "SIGHUP re-reads it")
    serve.set_defaults(handler=_serve)

    fetch = sub.add_parser(
        "fetch", help="fetch candles into the warehouse and print or save them",
        description="Fetch candles of one or more tickers and periods. One ticker and period prints the candles; "
                    "several are fetched concurrently with one progress bar and a summary line each.",
        epilog="times: ISO 8601 (2025-01-01, 2025-01-01T12:00Z), integer µs, or relative: now, today, yesterday, "
               "'7 days ago', '3 months ago' (UTC). Dates such as 01/02/2025 are refused as ambiguous.")
    fetch.add_argument("ticker", nargs="+", metavar="TICKER",
                       help="EXCHANGE:BASE/QUOTE, one or more (also comma-separated), e.g. SIM:BTC/USDT SIM:ETH/USDT")
    fetch.add_argument("--period", action="append", default=None, metavar="PERIOD",
                       help="seconds or 1m/5m/15m/1h/4h/1d/1w (Monday weeks)/1M (calendar months), repeatable or "
                            "comma-separated: --period 1h --period 1d or --period 1h,1d (default 1h)")
    fetch.add_argument("--start", help="first candle time, e.g. 2025-01-01 or '30 days ago' (or give --days)")
    fetch.add_argument("--end", help="last candle time, inclusive (default: now)")
    fetch.add_argument("--days", type=float, default=None, metavar="N",
                       help="the N days up to --end (default now), instead of --start")
    fetch.add_argument("--concurrency", type=int, default=None, metavar="N",
                       help="series fetched at once with several tickers or periods (default 8)")
    fetch.add_argument("-o", "--output", help="write .csv or .parquet instead of printing (real prices as exact "
                       "decimals, ISO-8601 UTC times); with several tickers or periods, a name holding {ticker} and "
                       "{period}, e.g. 'data/{ticker}_{period}.parquet' (one file each, folders created)")
    fetch.add_argument("--raw", action="store_true",
                       help="with -o: write the stored integers and µs timestamps instead of real prices")
    fetch.add_argument("--relay-endpoint")
    fetch.add_argument("--notification-endpoint")
    fetch.add_argument("--timeout", type=float, default=None, help="request timeout in seconds")
    fetch.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    fetch.add_argument("--curve-secret-key", metavar="FILE",
                       help="this client's NAME.key_secret, for a relay requiring CURVE (env DEXORDER_CURVE_SECRET_KEY)")
    fetch.add_argument("--curve-server-key", metavar="FILE",
                       help="the relay's public NAME.key (env DEXORDER_CURVE_SERVER_KEY)")
    _add_warehouse_options(fetch)
    fetch.add_argument("--settle-seconds", type=float, default=None, metavar="SECONDS",
                       help="how long after a period closes an empty answer is not yet remembered as empty "
                            "(env DEXORDER_SETTLE_SECONDS; default: the source's own, else max(300, the period))")
    fetch.set_defaults(handler=_fetch)

    coverage = sub.add_parser("coverage", help="list the ranges the warehouse holds")
    coverage.add_argument("ticker", nargs="?")
    _add_warehouse_options(coverage)
    coverage.set_defaults(handler=_coverage)

    forget = sub.add_parser("forget", help="forget ingested ranges so the next fetch asks the source again")
    forget.add_argument("ticker")
    forget.add_argument("--period", help="only this period (seconds or 1m/1h/1d/…; default: every period)")
    forget.add_argument("--start", help="from this time (ISO or µs, default: the beginning)")
    forget.add_argument("--end", help="to this time, inclusive (ISO or µs, default: the end)")
    forget.add_argument("--candles", action="store_true",
                        help="also delete the stored candles there (to store the source's values afresh)")
    _add_warehouse_options(forget)
    forget.set_defaults(handler=_forget)

    compact = sub.add_parser("compact", help="compact small files and expire old snapshots (safe while others read and write)")
    _add_warehouse_options(compact)
    compact.add_argument("--min-files", type=int, default=2, help="compact partitions holding at least this many files (default 2)")
    compact.add_argument("--keep-snapshots", type=int, default=None, help="newest snapshots to keep (default 4)")
    compact.add_argument("--retention", type=float, default=None, metavar="SECONDS",
                         help="keep files replaced by compaction at least this long (default 60)")
    compact.set_defaults(handler=_compact)

    from .pins import add_pin_commands

    add_pin_commands(sub, _add_warehouse_options, _catalog_properties)

    keys = sub.add_parser("keys", help="generate a CURVE key pair (NAME.key public, NAME.key_secret private)")
    keys.add_argument("directory", help="where to write the key files (created if missing)")
    keys.add_argument("--name", default="client", help="file name stem, e.g. relay or alice (default: client)")
    keys.set_defaults(handler=_keys)

    team = sub.add_parser("team-up", help="try a team warehouse: start SeaweedFS (S3 + REST catalog) and serve on it")
    team.add_argument("--dir", help="where its data, keys and the teammates' team.toml live (default <cache dir>/team)")
    team.add_argument("--host", default="127.0.0.1", help="address to serve on; a LAN address lets teammates in (default 127.0.0.1)")
    team.add_argument("--catalog-port", type=int, default=8181, help="Iceberg REST catalog port (default 8181)")
    team.add_argument("--s3-port", type=int, default=8333, help="S3 port (default 8333)")
    team.add_argument("--relay-port", type=int, default=5555, help="relay request port (default 5555)")
    team.add_argument("--notification-port", type=int, default=5557, help="notification port (default 5557)")
    team.add_argument("--namespace", default="trading", help="Iceberg namespace (default: trading)")
    team.add_argument("--source", action="append", default=[], metavar="EXCHANGE=SPEC",
                      help="ingest source for an exchange, repeatable: sim, files:/dir, ccxt:binance, "
                           "or a fallback chain files:/dir,ccxt:binance")
    team.add_argument("--workers", type=int, default=4, help="historian worker threads (default 4)")
    team.add_argument("--weed-port", action="append", default=[], metavar="OPTION=PORT",
                      help="another SeaweedFS port, repeatable, e.g. master.port=9333 (defaults: SeaweedFS's own)")
    team.add_argument("--start-timeout", type=float, default=60.0,
                      help="seconds to wait for SeaweedFS to answer (default 60)")
    team.set_defaults(handler=_team_up)
    return parser


def _serve(args: argparse.Namespace) -> int:
    import os

    from ..config import resolve_settings
    from ..relay import serve

    settings = resolve_settings(
        iceberg_catalog_uri=args.iceberg_catalog_uri,
        relay_endpoint=args.relay_endpoint or os.environ.get("DEXORDER_RELAY_ENDPOINT") or DEFAULT_SERVE_RELAY,
        notification_endpoint=args.notification_endpoint or os.environ.get("DEXORDER_NOTIFICATION_ENDPOINT") or DEFAULT_SERVE_NOTIFY,
        namespace=args.namespace,
        catalog_properties=_catalog_properties(args.catalog_property),
        sources=args.source,
        curve_secret_key=args.curve_secret_key,
        curve_authorized_keys=args.curve_authorized_keys,
        settle_seconds=args.settle_seconds,
    )
    workers = args.workers if args.workers is not None else int(os.environ.get("DEXORDER_WORKERS", "4"))
    kwargs: dict[str, int] = {} if args.max_range_candles is None else {"max_range_candles": args.max_range_candles}
    for name in ("max_topics_per_peer", "max_topics"):
        value = getattr(args, name)
        if value is not None:
            if value < 1:
                raise DexOrderError(f"--{name.replace('_', '-')}={value} must be at least 1")
            kwargs[name] = value
    serve(settings, workers=workers, **kwargs)
    return 0


def _fetch(args: argparse.Namespace) -> int:
    import os

    from .commands import fetch_command

    # The CURVE options travel as the environment variables they stand for (this process only).
    for option, variable in (("curve_secret_key", "DEXORDER_CURVE_SECRET_KEY"),
                             ("curve_server_key", "DEXORDER_CURVE_SERVER_KEY")):
        if getattr(args, option, None):
            os.environ[variable] = getattr(args, option)
    return fetch_command(args, _catalog_properties(args.catalog_property))


def _keys(args: argparse.Namespace) -> int:
    from ..auth import generate_keypair

    public, secret = generate_keypair(args.directory, args.name)
    print(f"public key (give it out): {public}")
    print(f"secret key (keep it private, mode 0600): {secret}")
    return 0


def _coverage(args: argparse.Namespace) -> int:
    from .commands import coverage_command

    return coverage_command(args, _catalog_properties(args.catalog_property))


def _forget(args: argparse.Namespace) -> int:
    from .commands import forget_command

    return forget_command(args, _catalog_properties(args.catalog_property))


def _compact(args: argparse.Namespace) -> int:
    from ..config import resolve_settings
    from ..storage.catalog import open_catalog
    from ..storage.maintenance import MANUAL, run_maintenance
    from ..storage.warehouse import Warehouse

    props = _catalog_properties(args.catalog_property)
    settings = resolve_settings(iceberg_catalog_uri=args.iceberg_catalog_uri, namespace=args.namespace,
                                catalog_properties=props or None)
    warehouse = Warehouse(open_catalog(settings.iceberg_catalog_uri, settings.catalog_properties),
                          settings.namespace, maintenance=MANUAL)
    try:
        compacted, expired = run_maintenance(warehouse, min_files=args.min_files,
                                             keep_snapshots=args.keep_snapshots, retention_seconds=args.retention)
    finally:
        warehouse.close()
    for result in compacted:
        print(f"compacted {result.table} {'/'.join(map(str, result.partition)) or '(all)'}: "
              f"{result.files_before} files -> {result.files_after}, {result.rows_after} rows")
    for expiry in expired:
        print(f"expired {expiry.snapshots_expired} snapshots of {expiry.table} "
              f"({expiry.snapshots_kept} kept), deleted {expiry.files_deleted} files")
    if not compacted and not expired:
        print("nothing to compact or expire")
    return 0


def _team_up(args: argparse.Namespace) -> int:
    from .team import describe, team_up

    def ready(setup) -> None:
        print("\n".join(describe(setup)), flush=True)

    team_up(args.dir, host=args.host, catalog_port=args.catalog_port, s3_port=args.s3_port,
            relay_port=args.relay_port, notification_port=args.notification_port, namespace=args.namespace,
            sources=args.source, workers=args.workers, on_ready=ready, start_timeout=args.start_timeout,
            weed_ports={k: int(v) for k, _, v in (item.partition("=") for item in args.weed_port)})
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = args.log_level or ("INFO" if args.command in ("serve", "team-up") else "WARNING")
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.handler(args) or 0)
    except DexOrderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except (asyncio.CancelledError, concurrent.futures.CancelledError):
        # never a traceback for a cancellation nobody asked for: one line, like every error
        print("error: the operation was cancelled before it finished (the relay or the warehouse went away?); "
              "run it again", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (`… | head`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
