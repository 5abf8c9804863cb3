"""Built-in gap fill: one history request per missing range, through the client's transport
(the relay's ``HistoryClient``, or the in-process historian).

At most :data:`MAX_REQUESTS_IN_FLIGHT` requests of one fetch are outstanding at a time, so
each request's timeout covers that request's own work, not its wait behind the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from ..events import emit
from ..hookspecs import hookimpl
from ..vocabulary.periods import shift_periods

if TYPE_CHECKING:
    from ..client.fetcher import FetchContext
    from ..vocabulary.ranges import Interval
    from ..vocabulary.requests import FetchRequest

MAX_REQUESTS_IN_FLIGHT = 4


async def fill_ranges(context: FetchContext, request: FetchRequest, ranges: list[Interval]) -> list[dict[str, Any]]:
    """Ask ``context.history`` for each range (at most :data:`MAX_REQUESTS_IN_FLIGHT` at a time)."""
    from ..client.transport import raise_for_error

    slots = asyncio.Semaphore(MAX_REQUESTS_IN_FLIGHT)
    done = 0

    async def one(start: int, stop: int) -> dict[str, Any]:
        nonlocal done
        async with slots:
            result = await context.history.request_historical_ohlc(
                request.ticker, request.period_seconds, start, shift_periods(request.period_seconds, stop, -1), timeout=context.request_timeout
            )
        raise_for_error(result)
        done += 1
        emit("dexorder_progress", hooks=context.hook, request=request, completed=done, total=len(ranges))
        return result

    return list(await asyncio.gather(*(one(start, stop) for start, stop in ranges)))


@hookimpl(trylast=True)
def dexorder_fill_gaps(context: FetchContext, request: FetchRequest, ranges: list[Interval]) -> Awaitable[list[dict[str, Any]]]:
    return fill_ranges(context, request, list(ranges))
