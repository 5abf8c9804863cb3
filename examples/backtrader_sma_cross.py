"""A backtrader SMA crossover on DexOrder candles.

Runs offline on the embedded default (synthetic ``SIM:`` markets, cached in a local Iceberg
warehouse)::

    python examples/backtrader_sma_cross.py
    python examples/backtrader_sma_cross.py --ticker SIM:ETH/USDT --period 4h --plot sma_cross.png
"""

from __future__ import annotations

import argparse
from datetime import datetime

import backtrader as bt

import dexorder_feeds  # noqa: F401  - adds bt.feeds.DexOrderData


class SmaCross(bt.Strategy):
    """Long while the fast SMA is above the slow one."""

    params = dict(fast=10, slow=30, stake=0.5)

    def __init__(self) -> None:
        fast = bt.ind.SMA(period=self.p.fast)
        slow = bt.ind.SMA(period=self.p.slow)
        self.crossover = bt.ind.CrossOver(fast, slow)
        self.trades: list[tuple[datetime, float, float]] = []

    def next(self) -> None:
        if not self.position and self.crossover > 0:
            self.buy(size=self.p.stake)
        elif self.position and self.crossover < 0:
            self.close()

    def notify_order(self, order: bt.Order) -> None:
        if order.status == order.Completed:
            self.trades.append((bt.num2date(order.executed.dt), order.executed.size, order.executed.price))


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticker", default="SIM:BTC/USDT")
    parser.add_argument("--period", default="1h", help="candle period: seconds or 1m/1h/1d")
    parser.add_argument("--start", default="2025-01-01")
    parser.add_argument("--end", default="2025-02-28T23:59:59")
    parser.add_argument("--cash", type=float, default=100_000.0)
    parser.add_argument("--plot", metavar="PNG", help="save cerebro's plot to this file")
    args = parser.parse_args(argv)

    cerebro = bt.Cerebro()
    # Bars are stamped at their close (the default bar_time="close"): no look-ahead.
    data = bt.feeds.DexOrderData(ticker=args.ticker, period_seconds=args.period,
                                 fromdate=datetime.fromisoformat(args.start), todate=datetime.fromisoformat(args.end))
    cerebro.adddata(data)
    cerebro.addstrategy(SmaCross)
    cerebro.broker.setcash(args.cash)
    cerebro.addanalyzer(bt.analyzers.TradeAnalyzer, _name="trades")
    strategy = cerebro.run()[0]

    value = cerebro.broker.getvalue()
    closed = strategy.analyzers.trades.get_analysis().get("total", {}).get("closed", 0)
    print(f"{args.ticker} {args.period}: {len(data)} bars, {len(strategy.trades)} orders filled, "
          f"{closed} trades closed")
    print(f"final value: {value:,.2f} (start {args.cash:,.2f})")
    print(f"data quality: {data.quality}")  # candles expected, present, missing (and why), filled
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")  # draw to files; must come before backtrader's plot module picks TkAgg
        import matplotlib.pyplot  # noqa: F401

        figures = cerebro.plot(iplot=False, volume=False)
        figure = figures[0][0]
        figure.set_size_inches(12, 8)
        figure.savefig(args.plot, dpi=80)
        print(f"plot saved to {args.plot}")
    return value


if __name__ == "__main__":
    main()
