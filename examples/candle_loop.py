"""A custom strategy loop over DexOrder candles with exact ``Decimal`` prices.

A breakout strategy written as a plain ``for`` loop: buy when the close breaks above the highest
close of the last N candles, sell when it falls below the lowest close of the last N/2. All arithmetic is in
``Decimal``, so cash and positions never drift by a float rounding. Runs offline on the
embedded default::

    python examples/candle_loop.py --ticker SIM:BTC/USDT --period 1h
"""

from __future__ import annotations

import argparse
from collections import deque
from decimal import Decimal

import dexorder_feeds


def main(argv: list[str] | None = None) -> Decimal:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticker", default="SIM:BTC/USDT")
    parser.add_argument("--period", default="1h")
    parser.add_argument("--start", default="2025-01-01")
    parser.add_argument("--end", default="2025-02-28T23:59:59")
    parser.add_argument("--lookback", type=int, default=24)
    parser.add_argument("--cash", type=Decimal, default=Decimal("100000"))
    parser.add_argument("--fee", type=Decimal, default=Decimal("0.001"), help="fee rate per fill")
    args = parser.parse_args(argv)

    closes: deque[Decimal] = deque(maxlen=args.lookback)
    exit_window = max(1, args.lookback // 2)
    cash, units, fills, count = args.cash, Decimal(0), 0, 0
    last = None
    for candle in dexorder_feeds.candles(args.ticker, args.period, args.start, args.end):
        count += 1
        last = candle
        if len(closes) == args.lookback:
            if not units and candle.close > max(closes):
                units = (cash / (candle.close * (1 + args.fee))).quantize(Decimal("0.000001"), rounding="ROUND_DOWN")
                cash -= units * candle.close * (1 + args.fee)
                fills += 1
                print(f"{candle.time:%Y-%m-%d %H:%M} buy  {units} @ {candle.close}")
            elif units and candle.close < min(list(closes)[-exit_window:]):
                cash += units * candle.close * (1 - args.fee)
                print(f"{candle.time:%Y-%m-%d %H:%M} sell {units} @ {candle.close}")
                units, fills = Decimal(0), fills + 1
        closes.append(candle.close)

    equity = cash + (units * last.close if last is not None else 0)
    print(f"{args.ticker} {args.period}: {count} candles, {fills} fills, final equity {equity:.2f}")
    return equity


if __name__ == "__main__":
    main()
