"""Built-in gap fill: one history request per missing range, through the client's transport
(the relay's ``HistoryClient``, or the in-process historian).

At most :data:`MAX_REQUESTS_IN_FLIGHT` requests of one fetch are outstanding at a time, so
each request's timeout covers that request's own work, not its wait behind the others.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..hookspecs import hookimpl

MAX_REQUESTS_IN_FLIGHT = 4


async def fill_ranges(context: Any, request: Any, ranges: list[tuple[int, int]]) -> list[dict]:
    from ..client.transport import raise_for_error

    period_us = request.period_seconds * 1_000_000
    slots = asyncio.Semaphore(MAX_REQUESTS_IN_FLIGHT)
    done = 0

    async def one(start: int, stop: int) -> dict:
        nonlocal done
        async with slots:
            result = await context.history.request_historical_ohlc(
                request.ticker, request.period_seconds, start, stop - period_us, timeout=context.request_timeout
            )
        raise_for_error(result)
        done += 1
        context.hook.dexorder_progress(request=request, completed=done, total=len(ranges))
        return result

    return list(await asyncio.gather(*(one(start, stop) for start, stop in ranges)))


@hookimpl(trylast=True)
def dexorder_fill_gaps(context: Any, request: Any, ranges: Any) -> Any:
    return fill_ranges(context, request, list(ranges))
