"""``dexorder-feeds serve``: the relay and its historian as a process, until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio

from ..config import Settings
from ..ingest.historian import DEFAULT_MAX_RANGE_CANDLES
from .scheduling import DEFAULT_WORKERS
from .subscriptions import DEFAULT_MAX_TOPICS, DEFAULT_MAX_TOPICS_PER_PEER
from .server import RelayServer

__all__ = ["serve"]


def serve(
    settings: Settings,
    *,
    workers: int = DEFAULT_WORKERS,
    max_range_candles: int = DEFAULT_MAX_RANGE_CANDLES,
    max_topics_per_peer: int = DEFAULT_MAX_TOPICS_PER_PEER,
    max_topics: int = DEFAULT_MAX_TOPICS,
) -> None:
    """Run the relay and historian until SIGINT or SIGTERM, then shut down gracefully.

    Logs ``relay ready request=… notification=…`` at INFO once both sockets are bound.
    """
    server = RelayServer.from_settings(settings, workers=workers, max_range_candles=max_range_candles,
                                       max_topics_per_peer=max_topics_per_peer, max_topics=max_topics)
    asyncio.run(server.run(handle_signals=True))
