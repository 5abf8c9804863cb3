"""Every hook of dexorder-feeds: when it is called, what it gets, what it returns.

Plugin authors import :data:`hookimpl` and the types below from :mod:`dexorder_feeds.plugin`.
Three kinds of hook, kept apart:

- **pipeline steps** (:data:`PIPELINE_STEPS`): the fetch itself. Built-in implementations
  (``dexorder_feeds._builtin``) are registered like any plugin, ``trylast``; a ``tryfirst``
  implementation returning non-None replaces a step, a ``wrapper=True`` one wraps it. An error
  raised by a step fails the fetch.
- **observer events** (:data:`OBSERVER_EVENTS`): told what happened; return values are ignored.
  They go out through :func:`dexorder_feeds.events.emit`, so an observer that raises is logged
  once and never fails a fetch.
- **registrations** (:data:`REGISTRATIONS`): plugins add ingest sources and framework adapters.

The steps of one ``fetch_ohlc``: :func:`dexorder_revalidate_cache`, :func:`dexorder_read_cache`, :func:`dexorder_find_missing_ranges`
(then the event :func:`dexorder_cache_checked`), :func:`dexorder_fill_gaps` (events
:func:`dexorder_request_sent`, :func:`dexorder_notification_received`, :func:`dexorder_progress`),
:func:`dexorder_read_cache` again, :func:`dexorder_process_result`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import pandas as pd

    from .client.fetcher import FetchContext
    from .ingest.sources import SourceFactory
    from .vocabulary.markets import MarketInfo
    from .vocabulary.ranges import Interval
    from .vocabulary.requests import CacheRead, FetchRequest

__all__ = ["hookspec", "hookimpl", "PROJECT_NAME", "PIPELINE_STEPS", "OBSERVER_EVENTS", "REGISTRATIONS"]

PROJECT_NAME = "dexorder_feeds"
hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

PIPELINE_STEPS = (
    "dexorder_revalidate_cache",
    "dexorder_read_cache",
    "dexorder_find_missing_ranges",
    "dexorder_fill_gaps",
    "dexorder_process_result",
    "dexorder_price_scale",
)
OBSERVER_EVENTS = (
    "dexorder_cache_checked",
    "dexorder_request_sent",
    "dexorder_notification_received",
    "dexorder_progress",
)
REGISTRATIONS = ("dexorder_register_sources", "dexorder_register_framework_adapters")


# -- pipeline steps: the fetch ---------------------------------------------------------------
@hookspec(firstresult=True)
def dexorder_revalidate_cache(context: FetchContext, request: FetchRequest) -> int | None:
    """Let the historian re-check what changed source data backs, before the cache is read.

    Called once per fetch (not for reads ``as_of`` a snapshot), in a worker thread, first of
    all steps: a candle file added, edited or appended since its ranges were ingested makes
    those ranges be asked again (docs/sources.md, "The coverage ledger"). The built-in calls
    ``context.history.revalidate(ticker, period_seconds)``: the in-process historian checks the
    request's period with one ``stat`` per file (nothing more when nothing changed); a relay's
    historian checks on its own. Returns the ranges re-checked. Stops at the first non-None
    result.
    """


@hookspec(firstresult=True)
def dexorder_read_cache(context: FetchContext, request: FetchRequest) -> CacheRead | None:
    """Read what the warehouse holds for ``request``.

    Called twice per fetch, in a worker thread: before gap detection and after the gap fill.
    Gets the client's :class:`FetchContext` and the :class:`FetchRequest`. Returns a
    :class:`CacheRead` (a ``pyarrow.Table`` of candle columns, the covered intervals, the
    snapshot id read). Stops at the first non-None result.
    """


@hookspec(firstresult=True)
def dexorder_find_missing_ranges(context: FetchContext, request: FetchRequest, cached: CacheRead) -> list[Interval] | None:
    """Decide which whole periods of ``request`` must be filled, given the ``cached`` read.

    Called after each cache read. Returns half-open, period-aligned ``(start, stop)`` µs
    intervals, merged and sorted (empty when nothing is missing). The built-in counts a period
    as present if a candle is stored for it or it lies in a range recorded as ingested, and
    always reports the period that has not closed yet as missing. Stops at the first non-None
    result.
    """


@hookspec(firstresult=True)
def dexorder_fill_gaps(
    context: FetchContext, request: FetchRequest, ranges: list[Interval]
) -> Awaitable[list[dict[str, Any]]] | None:
    """Fill the missing ``ranges`` of ``request`` so that the next cache read finds them.

    Called on the client's event loop with closed, half-open µs ranges that no other fetch of
    this client is filling already. Returns an awaitable resolving to one seed result dict
    (``request_id``, ``status``, ``error_message``, ``iceberg_namespace``, ``iceberg_table``,
    ``row_count``) per range; raising fails the fetch. The built-in sends one request per range
    through ``context.history``; :func:`dexorder_feeds.plugin.fill_from_source` writes a
    plugin's own candles. Stops at the first non-None result.
    """


@hookspec(firstresult=True)
def dexorder_process_result(context: FetchContext, request: FetchRequest, frame: pd.DataFrame) -> pd.DataFrame | None:
    """Post-process the fetch result before the caller gets it.

    Called once per fetch with ``frame``, a ``pandas.DataFrame`` in the seed's columns. Returns
    the frame to hand to the caller. The built-in (``trylast``) sorts by timestamp and drops
    duplicate timestamps; wrap it (``wrapper=True``) to transform its result. Stops at the
    first non-None result.
    """


@hookspec(firstresult=True)
def dexorder_price_scale(context: FetchContext, ticker: str) -> MarketInfo | None:
    """Look up how ``ticker``'s stored integers turn into prices and volumes.

    Called by the adapters (and ``price_scale``) in a worker thread, with the canonical ticker.
    Returns the :class:`MarketInfo` (price and volume decimals), or None if unknown. The
    built-in reads the warehouse's ``markets`` table. Stops at the first non-None result.
    """


# -- observer events: return values are ignored, errors are logged, never raised --------------
@hookspec
def dexorder_cache_checked(request: FetchRequest, cached_rows: int, missing_ranges: list[tuple[int, int]]) -> None:
    """Called after gap detection, once per fetch, on the client's event loop.

    Gets the :class:`FetchRequest`, the number of candles found in the cache and the missing
    ranges as inclusive ``(first_ts, last_ts)`` µs pairs (empty for a cache hit).
    """


@hookspec
def dexorder_request_sent(request_id: str, ticker: str, period_seconds: int, start_time: int, end_time: int) -> None:
    """Called when a history request leaves for the relay or the in-process historian.

    Gets its id, ticker, period and inclusive µs range. A request re-sent with the same id is
    reported once.
    """


@hookspec
def dexorder_notification_received(result: dict[str, Any]) -> None:
    """Called when a history request completes, with the seed's result dict (``status`` OK,
    NOT_FOUND or ERROR, ``row_count``, ``error_message`` …), before an ERROR is raised."""


@hookspec
def dexorder_progress(request: FetchRequest, completed: int, total: int) -> None:
    """Called by the built-in gap fill each time one of a fetch's requests is done:
    ``completed`` of ``total`` requests of the :class:`FetchRequest` are stored."""


# -- registrations ---------------------------------------------------------------------------
@hookspec
def dexorder_register_sources(register: Callable[[str, SourceFactory], None]) -> None:
    """Register ingest sources; called each time a historian's source registry is built.

    Call ``register(name, factory)``: ``factory(argument)`` returns an :class:`IngestSource`,
    ``argument`` being the text after ``name:`` in a source spec such as ``files:/data/candles``
    or ``ccxt:binance`` (or None). Returns nothing.
    """


@hookspec
def dexorder_register_framework_adapters(register: Callable[[str, Callable[[ModuleType], None]], None]) -> None:
    """Register framework adapters; called at ``import dexorder_feeds`` for the built-ins and
    when plugins load. Call ``register(module_name, install)``: ``install(module)`` adds the
    adapter once ``module_name`` (e.g. ``"backtrader"``) is imported. Must not import the
    framework itself. Returns nothing."""
