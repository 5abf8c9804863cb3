"""A metrics observer: counts every event dexorder-feeds emits.

Observers only watch: their return values are ignored, and an exception raised here is logged
by dexorder-feeds (once per event) without failing the fetch.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from dexorder_feeds.plugin import FetchRequest, hookimpl

COUNTS: Counter[str] = Counter()
REQUESTS: list[tuple[str, int, int, int]] = []


@hookimpl
def dexorder_cache_checked(request: FetchRequest, cached_rows: int, missing_ranges: list[tuple[int, int]]) -> None:
    COUNTS["cache_hit" if not missing_ranges else "cache_miss"] += 1
    COUNTS["cached_rows"] += cached_rows


@hookimpl
def dexorder_request_sent(request_id: str, ticker: str, period_seconds: int, start_time: int, end_time: int) -> None:
    COUNTS["request_sent"] += 1
    REQUESTS.append((ticker, period_seconds, start_time, end_time))


@hookimpl
def dexorder_notification_received(result: dict[str, Any]) -> None:
    COUNTS["notification_received"] += 1
    COUNTS[f"status_{result['status']}"] += 1


@hookimpl
def dexorder_progress(request: FetchRequest, completed: int, total: int) -> None:
    COUNTS["progress"] += 1
