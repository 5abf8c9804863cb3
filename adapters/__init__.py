"""Framework adapters (installed as ``dexorder_feeds.adapters``): backtrader, vectorbt and the
Decimal candle iterator. This package is a plugin of the core: it registers post-import hooks
so ``bt.feeds.DexOrderData`` and ``vbt.DexOrderData`` appear whatever the import order, without
importing either framework itself."""

from __future__ import annotations

from typing import Any

from ..hookspecs import hookimpl


@hookimpl
def dexorder_register_framework_adapters(register: Any) -> None:
    pass
