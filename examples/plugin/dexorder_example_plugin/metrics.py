"""A metrics observer: counts every event dexorder-feeds emits."""

from __future__ import annotations

from collections import Counter
from typing import Any

from dexorder_feeds import hookimpl

COUNTS: Counter[str] = Counter()
REQUESTS: list[tuple[str, int, int, int]] = []


@hookimpl
def dexorder_cache_checked(request: Any, cached_rows: int, missing_ranges: Any) -> None:
    COUNTS["cache_hit" if not missing_ranges else "cache_miss"] += 1
    COUNTS["cached_rows"] += cached_rows


@hookimpl
def dexorder_request_sent(request_id: str, ticker: str, period_seconds: int, start_time: int, end_time: int) -> None:
    COUNTS["request_sent"] += 1
    REQUESTS.append((ticker, period_seconds, start_time, end_time))


@hookimpl
def dexorder_notification_received(result: dict) -> None:
    COUNTS["notification_received"] += 1
    COUNTS[f"status_{result['status']}"] += 1


@hookimpl
def dexorder_progress(request: Any, completed: int, total: int) -> None:
    COUNTS["progress"] += 1
