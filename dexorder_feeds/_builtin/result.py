"""Built-in result post-processing: sorted by timestamp, no duplicate timestamps."""

from __future__ import annotations

from typing import Any

from ..hookspecs import hookimpl


@hookimpl(trylast=True)
def dexorder_process_result(context: Any, request: Any, frame: Any) -> Any:
    if not frame["timestamp"].is_monotonic_increasing:
        frame = frame.sort_values("timestamp", kind="stable")
    if frame["timestamp"].duplicated().any():
        frame = frame.drop_duplicates("timestamp", keep="first")
    return frame.reset_index(drop=True)
