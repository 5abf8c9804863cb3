"""A gap fill from a user's own CSV files, for tickers of the exchange ``MYCSV``.

It replaces the built-in gap fill (``tryfirst``) for those tickers only: the candles are read by
the files source from ``$DEXORDER_EXAMPLE_CSV_DIR`` and written into the client's own warehouse
by an in-process historian. For any other ticker it returns None, so the built-in runs.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any

from dexorder_feeds import hookimpl

FILLED: list[tuple[str, int, int]] = []


async def _fill(context: Any, request: Any, ranges: list[tuple[int, int]]) -> list[dict]:
    from dexorder_feeds.ingest.historian import Historian
    from dexorder_feeds.ingest.sources import SourceRegistry
    from dexorder_feeds.client.transport import raise_for_error, result_from_notification
    from dexorder_feeds.wire import HistoryRequest

    directory = os.environ["DEXORDER_EXAMPLE_CSV_DIR"]
    historian = Historian(context.iceberg.warehouse, SourceRegistry({"MYCSV": f"files:{directory}"}))
    results = []
    for start, stop in ranges:
        message = HistoryRequest(request_id=uuid.uuid4().hex, client_id="csv-fill", ticker=request.ticker,
                                 period_seconds=request.period_seconds, start_time=start,
                                 end_time=stop - request.period_us)
        notification = await asyncio.to_thread(historian.handle, message)
        results.append(raise_for_error(result_from_notification(notification)))
        FILLED.append((request.ticker, start, stop))
    return results


@hookimpl(tryfirst=True)
def dexorder_fill_gaps(context: Any, request: Any, ranges: Any) -> Any:
    if not request.ticker.startswith("MYCSV:"):
        return None
    return _fill(context, request, list(ranges))
