"""Everything a dexorder-feeds plugin imports, from one module.

::

    from dexorder_feeds.plugin import hookimpl, IngestSource, SourceCandles, MarketInfo, fill_from_source

The hooks are documented in :mod:`dexorder_feeds.hookspecs` (docs/plugins.md has a tour). A plugin
is a module or object with ``@hookimpl`` functions, registered through the ``dexorder_feeds``
entry point group. Names not listed in ``__all__`` are internal and may change in any release.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any

from .client.fetcher import FetchContext
from .client.transport import HistoryTransport, raise_for_error, result_from_notification
from .events import emit
from .hookspecs import hookimpl
from .ingest.historian import Historian
from .ingest.sources import IngestSource, SourceCandles, SourceRegistry
from .vocabulary.markets import MarketInfo
from .vocabulary.periods import shift_periods
from .vocabulary.ranges import Interval
from .vocabulary.requests import CacheRead, FetchRequest
from .vocabulary.tickers import Ticker, parse_ticker
from .wire import HistoryRequest

__all__ = [
    "hookimpl",
    "IngestSource",
    "SourceCandles",
    "MarketInfo",
    "Ticker",
    "parse_ticker",
    "FetchRequest",
    "CacheRead",
    "Interval",
    "FetchContext",
    "HistoryTransport",
    "fill_from_source",
]


class _OneSource(SourceRegistry):
    """A source registry that serves one given source for every exchange (and never closes it)."""

    def __init__(self, source: IngestSource) -> None:  # no plugin lookup: the source is given
        self._source = source

    def spec_for(self, exchange: str) -> str:
        return self._source.name

    def source_for(self, ticker: Ticker) -> IngestSource:
        return self._source

    def close(self) -> None:
        pass  # the plugin owns its source


async def fill_from_source(
    context: FetchContext, request: FetchRequest, ranges: Sequence[Interval], source: IngestSource
) -> list[dict[str, Any]]:
    """Store ``ranges`` of ``request`` from ``source`` in the client's warehouse, as the historian would.

    For a ``dexorder_fill_gaps`` implementation: return ``fill_from_source(context, request,
    ranges, my_source)`` (the awaitable) from it. Each half-open µs range is asked of
    ``source.fetch_candles`` and goes through the historian's checks (alignment, duplicates, no
    loss of precision) into one commit with its coverage, so the next cache read finds it and
    the range is never asked for again, also when it holds no candle (once it has settled: see
    ``IngestSource.settle_seconds`` and docs/sources.md, "The coverage ledger"). Emits
    ``dexorder_progress`` after each range. Returns one seed result dict per range; raises the
    historian's error (a ``ValueError`` naming what is wrong) for a range that fails. The source
    is called from a worker thread and is not closed.
    """
    historian = Historian(context.iceberg.warehouse, _OneSource(source), settle_seconds=context.settings.settle_seconds)
    results: list[dict[str, Any]] = []
    for start, stop in ranges:
        message = HistoryRequest(request_id=uuid.uuid4().hex, client_id=f"plugin-{source.name}",
                                 ticker=request.ticker, period_seconds=request.period_seconds,
                                 start_time=start, end_time=shift_periods(request.period_seconds, stop, -1))
        notification = await asyncio.to_thread(historian.handle, message)
        results.append(raise_for_error(result_from_notification(notification)))
        emit("dexorder_progress", hooks=context.hook, request=request, completed=len(results), total=len(ranges))
    return results
