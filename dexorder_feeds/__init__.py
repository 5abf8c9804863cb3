"""dexorder-feeds: DexOrder's historical OHLC candles for backtesting.

``OHLCClient`` fetches candles (cached in an Iceberg warehouse, gaps filled by the historian),
``IcebergClient`` queries the warehouse, ``HistoryClient`` talks to the relay; ``fetch_ohlc`` is
the blocking face (``fetch_many`` for many tickers and periods at once), ``candles``/``acandles``
iterate candles with exact ``Decimal`` prices.
After ``import dexorder_feeds``, ``bt.feeds.DexOrderData`` and ``vbt.DexOrderData`` exist as
soon as backtrader / vectorbt are imported. Heavy modules load on first use.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version as _package_version
from typing import TYPE_CHECKING, Any

from .vocabulary import errors as _errors
from .vocabulary.errors import *  # noqa: F403 - the exception tree is public
from .hookspecs import hookimpl

if TYPE_CHECKING:
    from .adapters.iterator import Candle, acandles, candles
    from .config import Settings
    from .client.history_client import HistoryClient
    from .client.iceberg_client import IcebergClient
    from .vocabulary.markets import MarketInfo
    from .client.ohlc_client import OHLCClient
    from .client.sync import fetch_many, fetch_ohlc

try:
    __version__ = _package_version("dexorder-feeds")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

_LAZY = {
    "OHLCClient": ".client.ohlc_client",
    "IcebergClient": ".client.iceberg_client",
    "HistoryClient": ".client.history_client",
    "fetch_ohlc": ".client.sync",
    "fetch_many": ".client.sync",
    "candles": ".adapters.iterator",
    "acandles": ".adapters.iterator",
    "Candle": ".adapters.iterator",
    "MarketInfo": ".vocabulary.markets",
    "Settings": ".config",
}

__all__ = [
    "OHLCClient",
    "IcebergClient",
    "HistoryClient",
    "fetch_ohlc",
    "fetch_many",
    "candles",
    "acandles",
    "Candle",
    "MarketInfo",
    "Settings",
    "hookimpl",
    *_errors.__all__,
    "__version__",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dexorder_feeds' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def _install_adapters() -> None:
    from ._compat import install
    from .plugins import install_framework_adapters

    install()
    install_framework_adapters()


_install_adapters()
