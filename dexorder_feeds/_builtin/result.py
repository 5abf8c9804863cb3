"""Built-in result post-processing: sorted by timestamp, no duplicate timestamps."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..hookspecs import hookimpl
from ..vocabulary.requests import FetchRequest, sorted_unique_candles

if TYPE_CHECKING:
    import pandas as pd


@hookimpl(trylast=True)
def dexorder_process_result(context: object, request: FetchRequest, frame: pd.DataFrame) -> pd.DataFrame:
    return sorted_unique_candles(frame)
