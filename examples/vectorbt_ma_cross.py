"""A vectorbt moving-average crossover on DexOrder candles, with its plot saved as a PNG.

Runs offline on the embedded default (synthetic ``SIM:`` markets)::

    python examples/vectorbt_ma_cross.py --png ma_cross.png
"""

from __future__ import annotations

import argparse

import vectorbt as vbt

import dexorder_feeds  # noqa: F401  - adds vbt.DexOrderData


def main(argv: list[str] | None = None) -> vbt.Portfolio:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", nargs="+", default=["SIM:BTC/USDT", "SIM:ETH/USDT"])
    parser.add_argument("--timeframe", default="1h")
    parser.add_argument("--start", default="2025-01-01")
    parser.add_argument("--end", default="2025-02-28T23:59:59")
    parser.add_argument("--fast", type=int, default=10)
    parser.add_argument("--slow", type=int, default=30)
    parser.add_argument("--png", default="vectorbt_ma_cross.png", help="where to save the plot")
    args = parser.parse_args(argv)

    data = vbt.DexOrderData.download(args.symbols, start=args.start, end=args.end, timeframe=args.timeframe)
    close = data.get("Close")
    fast = vbt.MA.run(close, args.fast, short_name="fast")
    slow = vbt.MA.run(close, args.slow, short_name="slow")
    entries = fast.ma_crossed_above(slow)
    exits = fast.ma_crossed_below(slow)
    portfolio = vbt.Portfolio.from_signals(close, entries, exits, init_cash=10_000, fees=0.001, freq=args.timeframe)

    returns = portfolio.total_return()
    for symbol in args.symbols:
        print(f"{symbol}: {int(entries[(args.fast, args.slow, symbol)].sum())} entries, "
              f"total return {returns[(args.fast, args.slow, symbol)]:+.2%}")

    # Plotly images need kaleido; matplotlib draws the same picture without it.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(args.symbols), 2, figsize=(12, 3.5 * len(args.symbols)), squeeze=False)
    value = portfolio.value()
    for row, symbol in zip(axes, args.symbols):
        column = (args.fast, args.slow, symbol)
        price = close[symbol]
        row[0].plot(price.index, price, lw=0.8, label="close")
        row[0].plot(price.index, fast.ma[(args.fast, symbol)], lw=0.8, label=f"MA{args.fast}")
        row[0].plot(price.index, slow.ma[(args.slow, symbol)], lw=0.8, label=f"MA{args.slow}")
        row[0].plot(price.index[entries[column]], price[entries[column].to_numpy()], "^", color="green", label="entry")
        row[0].plot(price.index[exits[column]], price[exits[column].to_numpy()], "v", color="red", label="exit")
        row[0].set_title(f"{symbol} {args.timeframe}")
        row[0].legend(fontsize="small")
        row[1].plot(value.index, value[column], lw=0.8)
        row[1].set_title(f"{symbol} portfolio value")
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(args.png, dpi=80)
    print(f"plot saved to {args.png}")
    return portfolio


if __name__ == "__main__":
    main()
