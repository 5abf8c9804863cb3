"""Every hook of dexorder-feeds, with when it is called, what it gets and what it returns.

Implement hooks with ``@dexorder_feeds.hookimpl`` in a module or object and register it through
the ``dexorder_feeds`` entry point group (or ``plugins.get_plugin_manager().register(obj)``).
Built-in behaviour is implemented by default plugins (``dexorder_feeds._builtin``) registered
exactly like third-party ones, so any step can be wrapped (``wrapper=True``) or replaced (a
``tryfirst=True`` implementation returning non-None).

The fetcher's steps, in order, for each ``fetch_ohlc``:

1. :func:`dexorder_read_cache` – what the warehouse holds for the range,
2. :func:`dexorder_find_missing_ranges` – which whole periods must be asked for,
3. :func:`dexorder_fill_gaps` – ask for exactly those and wait until they are stored,
4. :func:`dexorder_read_cache` again, then :func:`dexorder_process_result`.

``context`` is a :class:`dexorder_feeds.client.fetcher.FetchContext` (the client's ``IcebergClient``
as ``context.iceberg``, its history transport as ``context.history``, its settings) and
``request`` a :class:`dexorder_feeds.client.fetcher.FetchRequest` (``ticker``, ``period_seconds``,
``interval``: the half-open, period-aligned candle range in µs).
"""

from __future__ import annotations

from typing import Any

import pluggy

__all__ = ["hookspec", "hookimpl", "PROJECT_NAME"]

PROJECT_NAME = "dexorder_feeds"
hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


# -- fetcher steps ---------------------------------------------------------------------------
@hookspec(firstresult=True)
def dexorder_read_cache(context: Any, request: Any) -> Any:
    """Read the candles the cache holds for ``request``.

    Called twice per fetch: before gap detection and after gap fill.
    Returns a :class:`dexorder_feeds.client.fetcher.CacheRead` (a ``pyarrow.Table`` of candle columns,
    the covered intervals, and the snapshot id read). Stops at the first non-None result.
    """


@hookspec(firstresult=True)
def dexorder_find_missing_ranges(context: Any, request: Any, cached: Any) -> Any:
    """Decide which whole periods of ``request`` must be filled, given the ``cached`` read.

    Returns a list of half-open, period-aligned ``(start, stop)`` µs intervals, merged and
    sorted (empty when nothing is missing). The built-in treats a period as present if a candle
    is stored for it or it lies in a range recorded as ingested (also empty ones), and always
    treats the period that has not closed yet as missing. Stops at the first non-None result.
    """


@hookspec(firstresult=True)
def dexorder_fill_gaps(context: Any, request: Any, ranges: Any) -> Any:
    """Fill the missing ``ranges`` of ``request`` so that a re-read finds them.

    Called only with ranges no other fetch in this client is already filling. Returns an
    awaitable resolving to a list of the seed's result dicts (``request_id``, ``status``,
    ``error_message``, ``iceberg_namespace``, ``iceberg_table``, ``row_count``), one per range;
    an error status raises. The built-in sends one request per range through
    ``context.history`` (the relay, or the in-process historian). Stops at the first non-None
    result.
    """


@hookspec(firstresult=True)
def dexorder_process_result(context: Any, request: Any, frame: Any) -> Any:
    """Post-process the fetch result ``frame`` (a ``pandas.DataFrame`` in the seed's columns).

    The built-in (``trylast``) sorts by timestamp and drops duplicate timestamps. Wrap it
    (``wrapper=True``) to transform the result. Returns the frame to hand to the caller.
    Stops at the first non-None result.
    """


# -- events for observers (return values are ignored) ----------------------------------------
@hookspec
def dexorder_cache_checked(request: Any, cached_rows: int, missing_ranges: Any) -> None:
    """After gap detection: ``cached_rows`` candles were in the cache, ``missing_ranges`` (a list
    of inclusive ``(first_ts, last_ts)`` pairs) are missing. Empty ranges mean a cache hit."""


@hookspec
def dexorder_request_sent(request_id: str, ticker: str, period_seconds: int, start_time: int, end_time: int) -> None:
    """A history request was sent to the relay or to the in-process historian (inclusive µs range)."""


@hookspec
def dexorder_notification_received(result: dict) -> None:
    """A completion notification arrived; ``result`` is the seed's result dict."""


@hookspec
def dexorder_progress(request: Any, completed: int, total: int) -> None:
    """Gap fill progress of one fetch: ``completed`` of ``total`` ranges are done."""


# -- adapters --------------------------------------------------------------------------------
@hookspec(firstresult=True)
def dexorder_price_scale(context: Any, ticker: str) -> Any:
    """Return the :class:`dexorder_feeds.vocabulary.markets.MarketInfo` (price and volume decimals) that
    turns ``ticker``'s stored integers into values, or None if unknown. Adapters call it to
    convert candles. Stops at the first non-None result."""


@hookspec
def dexorder_register_framework_adapters(register: Any) -> None:
    """Register framework adapters: call ``register(module_name, install)`` where ``install(module)``
    adds the adapter to the framework once ``module_name`` (e.g. ``"backtrader"``) is imported.
    Called at ``import dexorder_feeds`` for built-in adapters; must not import the framework."""


# -- server side -----------------------------------------------------------------------------
@hookspec
def dexorder_register_sources(register: Any) -> None:
    """Register ingest sources: call ``register(name, factory)`` where ``factory(argument)`` returns
    a :class:`dexorder_feeds.ingest.sources.IngestSource`; ``argument`` is the text after
    ``name:`` in a source spec such as ``files:/data/candles`` or ``ccxt:binance`` (or None)."""
