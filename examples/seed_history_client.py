"""The seed's HistoryClient example, verbatim but for the endpoints (from the environment).

Start a relay first, e.g.::

    dexorder-feeds serve --relay-endpoint tcp://127.0.0.1:5559 --notification-endpoint tcp://127.0.0.1:5558 \\
        --source BINANCE=files:examples/data/candles
    DEXORDER_RELAY_ENDPOINT=tcp://127.0.0.1:5559 DEXORDER_NOTIFICATION_ENDPOINT=tcp://127.0.0.1:5558 \\
        python examples/seed_history_client.py
"""

import asyncio
import os

from dexorder import HistoryClient


async def main():
    client = HistoryClient(
        relay_endpoint=os.environ.get("DEXORDER_RELAY_ENDPOINT", "tcp://127.0.0.1:5559"),
        notification_endpoint=os.environ.get("DEXORDER_NOTIFICATION_ENDPOINT", "tcp://127.0.0.1:5558"),
    )

    # CRITICAL: Connect first to prevent race condition
    await client.connect()

    # Now safe to make requests
    result = await client.request_historical_ohlc(
        ticker=os.environ.get("DEXORDER_EXAMPLE_TICKER", "BINANCE:BTC/USDT"),
        period_seconds=3600,
        start_time=1735689600000000,
        end_time=1736294399000000,
    )
    print(result)

    await client.close()


asyncio.run(main())
