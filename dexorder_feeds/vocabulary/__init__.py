"""The shared vocabulary every layer speaks: errors, tickers, times, periods, ranges, markets
and the fetch request. Imports nothing from the rest of the package."""
