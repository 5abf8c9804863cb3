"""The seed's import name: ``from dexorder import OHLCClient, IcebergClient, HistoryClient``.

A thin alias of :mod:`dexorder_feeds` (attributes resolve lazily, exactly as there), so code
written against DexOrder's documented Python client runs unchanged.
"""

from __future__ import annotations

from typing import Any

import dexorder_feeds
from dexorder_feeds import __all__ as __all__  # noqa: F401


def __getattr__(name: str) -> Any:
    return getattr(dexorder_feeds, name)


def __dir__() -> list[str]:
    return dir(dexorder_feeds)
