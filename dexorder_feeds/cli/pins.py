"""``dexorder-feeds pin NAME``, ``pins`` and ``unpin NAME``."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

from ..config import resolve_settings
from ..storage.catalog import open_catalog
from ..storage.maintenance import MANUAL
from ..storage.pins import create_pin, list_pins, remove_pin
from ..storage.warehouse import Warehouse

__all__ = ["pin_command", "pins_command", "unpin_command"]


@contextmanager
def _warehouse(args: argparse.Namespace, properties: Mapping[str, str]) -> Iterator[Warehouse]:
    settings = resolve_settings(iceberg_catalog_uri=args.iceberg_catalog_uri, namespace=args.namespace,
                                catalog_properties=dict(properties) or None)
    warehouse = Warehouse(open_catalog(settings.iceberg_catalog_uri, settings.catalog_properties),
                          settings.namespace, maintenance=MANUAL)
    try:
        yield warehouse
    finally:
        warehouse.close()


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def pin_command(args: argparse.Namespace, properties: Mapping[str, str]) -> int:
    with _warehouse(args, properties) as warehouse:
        pin = create_pin(warehouse, args.name)
    print(f"pinned {pin.name}: snapshot {pin.snapshot_id} of {_when(pin.timestamp_ms)}, {pin.candles:,} candles; "
          f"read it with as_of={pin.name!r}")
    return 0


def pins_command(args: argparse.Namespace, properties: Mapping[str, str]) -> int:
    with _warehouse(args, properties) as warehouse:
        pins = list_pins(warehouse)
    if not pins:
        print("no pins; `dexorder-feeds pin NAME` keeps the current snapshot under NAME")
        return 0
    print(f"{'name':<24} {'snapshot':>20}  {'made (UTC)':<24} {'candles':>12} {'data MB':>9}")
    for pin in pins:
        print(f"{pin.name:<24} {pin.snapshot_id:>20}  {_when(pin.timestamp_ms):<24} {pin.candles:>12,} "
              f"{pin.data_bytes / 1e6:>9.2f}")
    return 0


def unpin_command(args: argparse.Namespace, properties: Mapping[str, str]) -> int:
    with _warehouse(args, properties) as warehouse:
        remove_pin(warehouse, args.name)
    print(f"unpinned {args.name}: its snapshot now expires like any other")
    return 0


COMMANDS: dict[str, tuple[str, Callable[[argparse.Namespace, Mapping[str, str]], int], bool]] = {
    "pin": ("keep the warehouse's current snapshot under NAME (an Iceberg tag) for exact re-reads", pin_command, True),
    "pins": ("list the pins with their time and size", pins_command, False),
    "unpin": ("drop a pin; its snapshot then expires like any other", unpin_command, True),
}


def add_pin_commands(sub: Any, add_warehouse_options: Callable[[argparse.ArgumentParser], None],
                     catalog_properties: Callable[[Any], dict[str, str]]) -> None:
    for name, (help_text, command, takes_name) in COMMANDS.items():
        parser = sub.add_parser(name, help=help_text)
        if takes_name:
            parser.add_argument("name", metavar="NAME")
        add_warehouse_options(parser)
        parser.set_defaults(handler=lambda args, c=command: c(args, catalog_properties(args.catalog_property)))
