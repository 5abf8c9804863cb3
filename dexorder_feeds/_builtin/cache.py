"""Built-in cache read: the Iceberg warehouse, through the client's ``IcebergClient``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..hookspecs import hookimpl

if TYPE_CHECKING:
    from ..client.fetcher import FetchContext
    from ..vocabulary.requests import CacheRead, FetchRequest


@hookimpl(trylast=True)
def dexorder_read_cache(context: FetchContext, request: FetchRequest) -> CacheRead:
    return context.iceberg.read_cache(request)
