"""What the relays this process talks to said about the warehouses they write, for ``IcebergClient``.

The seed's second pattern uses a ``HistoryClient`` and an ``IcebergClient`` side by side: nothing
links the two, and an ``IcebergClient`` opened on another catalog than the relay's read nothing
back, silently. So every ``HistoryClient`` of the process records here, per ticker and period,
the range a relay reported stored (status ``OK`` or ``NOT_FOUND``) and the warehouse it named.
An ``IcebergClient`` read that overlaps such a range checks it (:func:`check`): if it reads
another warehouse (other table uuids) *and* that warehouse lacks part of the range the relay
stored, it raises :class:`~dexorder_feeds.vocabulary.errors.WarehouseMismatchError` naming both,
instead of returning nothing. A warehouse that holds the range (a copy kept on purpose) is not
an error; neither is any read when no relay spoke of its ticker and period (the usual case: one
dict look-up). Relays that name no warehouse (older versions) are never recorded.

Kept: the newest :data:`RANGES_PER_KEY` ranges of the newest :data:`KEYS_KEPT` (ticker, period)
pairs.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import NamedTuple

from ..vocabulary.identity import WarehouseIdentity, check_same_warehouse
from ..vocabulary.ranges import Interval, subtract_intervals

__all__ = ["record", "check", "forget", "KEYS_KEPT", "RANGES_PER_KEY"]

KEYS_KEPT = 4096
RANGES_PER_KEY = 16


class _Stored(NamedTuple):
    interval: Interval
    warehouse: WarehouseIdentity
    relay_endpoint: str


_stored: OrderedDict[tuple[str, int], list[_Stored]] = OrderedDict()
_lock = threading.Lock()


def record(ticker: str, period_seconds: int, interval: Interval | None, warehouse: WarehouseIdentity | None,
           relay_endpoint: str) -> None:
    """Remember that the relay at ``relay_endpoint`` stored ``interval`` (half-open, µs) of
    ``ticker``/``period_seconds`` into ``warehouse``."""
    if warehouse is None or interval is None or interval[0] >= interval[1]:
        return
    key = (ticker, period_seconds)
    with _lock:
        ranges = _stored.setdefault(key, [])
        ranges.append(_Stored(interval, warehouse, relay_endpoint))
        del ranges[:-RANGES_PER_KEY]
        _stored.move_to_end(key)
        while len(_stored) > KEYS_KEPT:
            _stored.popitem(last=False)


def check(ticker: str, period_seconds: int, interval: Interval | None, local: Callable[[], WarehouseIdentity],
          present: Callable[[], list[Interval]]) -> None:
    """Raise ``WarehouseMismatchError`` if a relay stored part of ``interval`` into another
    warehouse than ``local()`` and ``present()`` (the ranges this warehouse holds) lacks some of it."""
    ranges = _stored.get((ticker, period_seconds))
    if not ranges or interval is None:
        return
    with _lock:
        overlapping = [r for r in ranges if r.interval[0] < interval[1] and interval[0] < r.interval[1]]
    if not overlapping:
        return
    mine = local()
    foreign = [r for r in overlapping if r.warehouse.differs_from(mine)]
    if not foreign or len(foreign) < len(overlapping):
        return  # none, or a relay writing this very warehouse stored the range too
    held = present()
    for stored in reversed(foreign):
        wanted = (max(stored.interval[0], interval[0]), min(stored.interval[1], interval[1]))
        if subtract_intervals(wanted, held):
            check_same_warehouse(stored.warehouse, mine, relay_endpoint=stored.relay_endpoint)


def forget() -> None:
    """Drop everything recorded (a process that changes relays on purpose, tests)."""
    with _lock:
        _stored.clear()
