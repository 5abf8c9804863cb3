"""The seed's Quick Start, verbatim but for the endpoints, which come from the environment.

With no DEXORDER_* variables set it runs on the embedded default (no servers). To serve the
seed's BINANCE ticker offline, map BINANCE to the bundled files::

    DEXORDER_SOURCES=BINANCE=files:examples/data/candles python examples/seed_quickstart.py

or point it at a served relay with DEXORDER_RELAY_ENDPOINT / DEXORDER_NOTIFICATION_ENDPOINT
(and DEXORDER_ICEBERG_CATALOG_URI naming the relay's warehouse).
"""

import asyncio
import os

from dexorder import OHLCClient


async def main():
    # Initialize client
    client = OHLCClient(
        iceberg_catalog_uri=os.environ.get("DEXORDER_ICEBERG_CATALOG_URI"),
        relay_endpoint=os.environ.get("DEXORDER_RELAY_ENDPOINT"),
        notification_endpoint=os.environ.get("DEXORDER_NOTIFICATION_ENDPOINT"),
    )

    # Start background notification listener
    await client.start()

    try:
        # Fetch OHLC data (automatically checks cache and requests missing data)
        df = await client.fetch_ohlc(
            ticker="BINANCE:BTC/USDT",
            period_seconds=3600,  # 1-hour candles
            start_time=1735689600000000,  # microseconds
            end_time=1736294399000000,
        )

        print(f"Fetched {len(df)} candles")
        print(df.head())
    finally:
        await client.stop()


# Run
asyncio.run(main())
