"""Framework adapters (installed as ``dexorder_feeds.adapters``): backtrader, vectorbt and the
Decimal candle iterator.

This package is a plugin of the core: it registers post-import hooks so that
``bt.feeds.DexOrderData`` and ``vbt.DexOrderData`` appear whatever the import order, without
importing either framework itself (it is imported by ``import dexorder_feeds``, so it stays
free of framework imports). Each adapter module imports its framework at the top and, if the
framework is missing, raises :class:`~dexorder_feeds.vocabulary.errors.MissingDependencyError` naming the
extra to install.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from ..hookspecs import hookimpl

__all__ = ["dexorder_register_framework_adapters"]


def _install_backtrader(module: ModuleType) -> None:
    """Add ``DexOrderData`` to ``backtrader.feeds`` (called once backtrader is imported)."""
    from .backtrader import DexOrderData

    module.feeds.DexOrderData = DexOrderData


def _install_vectorbt(module: ModuleType) -> None:
    """Add ``DexOrderData`` to ``vectorbt`` and ``vectorbt.data`` (called once vectorbt is imported)."""
    from .vectorbt import DexOrderData

    module.DexOrderData = DexOrderData  # type: ignore[attr-defined]
    data = getattr(module, "data", None)
    if data is not None:
        data.DexOrderData = DexOrderData


@hookimpl
def dexorder_register_framework_adapters(register: Any) -> None:
    register("backtrader", _install_backtrader)
    register("vectorbt", _install_vectorbt)
