"""Built-in cache read: the Iceberg warehouse, through the client's ``IcebergClient``; and
before it, the historian's re-check of ranges whose source data changed."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..hookspecs import hookimpl

if TYPE_CHECKING:
    from ..client.fetcher import FetchContext
    from ..vocabulary.requests import CacheRead, FetchRequest


@hookimpl(trylast=True)
def dexorder_read_cache(context: FetchContext, request: FetchRequest) -> CacheRead:
    return context.iceberg.read_cache(request)


@hookimpl(trylast=True)
def dexorder_revalidate_cache(context: FetchContext, request: FetchRequest) -> int:
    return context.history.revalidate(request.ticker, request.period_seconds)
