"""Built-in result post-processing: sorted by timestamp, no duplicate timestamps."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..hookspecs import hookimpl
from ..vocabulary.requests import sorted_unique_candles

if TYPE_CHECKING:
    import pandas as pd

    from ..client.fetcher import FetchContext
    from ..vocabulary.requests import FetchRequest


@hookimpl(trylast=True)
def dexorder_process_result(context: FetchContext, request: FetchRequest, frame: pd.DataFrame) -> pd.DataFrame:
    return sorted_unique_candles(frame)
