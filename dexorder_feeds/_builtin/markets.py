"""Built-in price-scale lookup: the decimals stored in the warehouse's ``markets`` table."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..hookspecs import hookimpl

if TYPE_CHECKING:
    from ..client.fetcher import FetchContext
    from ..vocabulary.markets import MarketInfo


@hookimpl(trylast=True)
def dexorder_price_scale(context: FetchContext, ticker: str) -> MarketInfo | None:
    return context.iceberg.market_info(ticker)
