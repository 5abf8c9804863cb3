"""Built-in price-scale lookup: the decimals stored in the warehouse's ``markets`` table."""

from __future__ import annotations

from typing import Any

from ..hookspecs import hookimpl


@hookimpl(trylast=True)
def dexorder_price_scale(context: Any, ticker: str) -> Any:
    return context.iceberg.market_info(ticker)
