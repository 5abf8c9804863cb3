"""Built-in cache read: the Iceberg warehouse, through the client's ``IcebergClient``."""

from __future__ import annotations

from typing import Any

from ..hookspecs import hookimpl


@hookimpl(trylast=True)
def dexorder_read_cache(context: Any, request: Any) -> Any:
    return context.iceberg.read_cache(request)
