"""Built-in gap detection: whole periods neither stored nor recorded as ingested."""

from __future__ import annotations

from typing import Any

from ..hookspecs import hookimpl


@hookimpl(trylast=True)
def dexorder_find_missing_ranges(context: Any, request: Any, cached: Any) -> Any:
    return context.iceberg.missing_intervals(request, cached)
