"""Built-in result post-processing: sorted by timestamp, no duplicate timestamps."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..hookspecs import hookimpl


@hookimpl(trylast=True)
def dexorder_process_result(context: Any, request: Any, frame: Any) -> Any:
    if not frame["timestamp"].is_monotonic_increasing:
        frame = frame.sort_values("timestamp", kind="stable").reset_index(drop=True)
    ts = frame["timestamp"].to_numpy()
    repeated = ts[1:] == ts[:-1]  # sorted: a duplicate sits next to its first
    if repeated.any():
        frame = frame.loc[np.concatenate(([True], ~repeated))].reset_index(drop=True)
    return frame
