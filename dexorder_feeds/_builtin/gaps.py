"""Built-in gap detection: whole periods neither stored nor recorded as ingested."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..hookspecs import hookimpl

if TYPE_CHECKING:
    from ..client.fetcher import FetchContext
    from ..vocabulary.ranges import Interval
    from ..vocabulary.requests import CacheRead, FetchRequest


@hookimpl(trylast=True)
def dexorder_find_missing_ranges(context: FetchContext, request: FetchRequest, cached: CacheRead) -> list[Interval]:
    return context.iceberg.missing_intervals(request, cached)
