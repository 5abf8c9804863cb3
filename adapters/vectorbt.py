"""``vbt.DexOrderData``: DexOrder candles as a vectorbt ``Data``.

::

    import vectorbt as vbt
    import dexorder_feeds  # adds vbt.DexOrderData

    data = vbt.DexOrderData.download(["SIM:BTC/USDT", "SIM:ETH/USDT"],
                                     start="2025-01-01", end="2025-03-01", timeframe="1h")
    close = data.get("Close")
    data = data.update()  # only the candles after the last one (the last one re-read)

Columns: ``Open, High, Low, Close, Volume`` (floats, each the nearest float to the stored
``int / 10**decimals``), plus ``Buy Volume``, ``Sell Volume`` and ``Open Interest`` where a
symbol's source gives them, on a UTC ``DatetimeIndex`` of candle period starts (``Open time``,
vectorbt's convention: a row's values are known only at ``index + period``; docs/backtesting.md
shows how to use a coarser timeframe on a finer one without look-ahead).
The symbols of one ``download``/``update`` are fetched concurrently.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from ..vocabulary.errors import InvalidRequestError, missing_dependency
from ..client.ohlc_client import OHLCClient
from ..client.sync import run_sync
from ..vocabulary.tickers import parse_ticker
from ..vocabulary.times import now_micros, parse_period, to_micros
from ._source import (
    Fetched,
    check_max_fill_ratio,
    check_missing,
    client_settings,
    exact_floats,
    fetch_candles,
    market_info,
    sync_client,
)

try:
    import vectorbt as vbt
    from vectorbt.data.base import symbol_dict
    from vectorbt.utils import checks
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise missing_dependency("vectorbt", "vectorbt") from exc

__all__ = ["DexOrderData", "COLUMNS"]

#: Frame column names: candle column -> vectorbt column.
COLUMNS = {
    "open": "Open",
    "high": "High",
    "low": "Low",
    "close": "Close",
    "volume": "Volume",
    "buy_vol": "Buy Volume",
    "sell_vol": "Sell Volume",
    "open_interest": "Open Interest",
}
_ALWAYS = ("Open", "High", "Low", "Close", "Volume")
_OPTIONAL = ("buy_vol", "sell_vol", "open_interest")
INDEX_NAME = "Open time"


def to_vbt_frame(fetched: Fetched, columns: list[str] | None = None) -> pd.DataFrame:
    """The fetched integer candles as a float frame (``columns``: the ones to keep, in order)."""
    frame, market = fetched.frame, fetched.market
    index = pd.DatetimeIndex(pd.to_datetime(frame["timestamp"].to_numpy(dtype=np.int64), unit="us", utc=True),
                             name=INDEX_NAME)
    out: dict[str, np.ndarray] = {}
    for column, name in COLUMNS.items():
        if column in _OPTIONAL and (columns is None or name not in columns) and not frame[column].notna().any():
            continue
        if market is None:  # no candles at all
            out[name] = np.full(len(frame), np.nan)
        else:
            out[name] = exact_floats(frame[column], market.decimals_for(column))
    result = pd.DataFrame(out, index=index)
    if columns is not None:
        result = result.reindex(columns=columns)
    result.attrs["snapshot_id"] = fetched.snapshot_id  # the Iceberg snapshot read (reproducibility)
    result.attrs["content_hash"] = fetched.content_hash
    result.attrs["quality"] = fetched.quality
    return result


class DexOrderData(vbt.Data):
    """vectorbt ``Data`` of DexOrder candles.

    ``download(symbols, start=..., end=None, timeframe="1h", period_seconds=None, missing="nan",
    show_progress=False, client=None, **client settings)``:

    - ``symbols``: one ticker or a list (``EXCHANGE:BASE/QUOTE``)
    - ``start`` (required), ``end`` (default: now): the range, inclusive; int µs, datetime,
      ``pandas.Timestamp`` or ISO string (naive = UTC)
    - ``timeframe`` (``"1m"``, ``"1h"``, ``"1d"``…) or ``period_seconds``
    - ``missing``: what a period without a stored candle becomes: ``"nan"`` (default),
      ``"drop"`` or ``"ffill"`` (flat at the previous close, zero volume)
    - ``max_fill_ratio``: the largest share (0 to 1) of a symbol's rows the ``missing`` policy
      may make up; above it ``download``/``update`` raise
      :class:`~dexorder_feeds.vocabulary.errors.FillRatioError` (default None: no limit)
    - ``client`` (an ``OHLCClient``, then used on the sync loop) or the client settings
      ``iceberg_catalog_uri``, ``relay_endpoint``, ``notification_endpoint``, ``namespace``,
      ``request_timeout``.

    Like every ``vbt.Data``, per-symbol arguments can be given as ``vbt.symbol_dict``.

    ``data.quality`` maps each symbol to the
    :class:`~dexorder_feeds.vocabulary.quality.QualityReport` of its last download or update
    (also ``data.data[symbol].attrs["quality"]``).
    """

    @property
    def quality(self) -> dict[Any, Any]:
        """Each symbol's data-quality report (of its last download or update)."""
        return {symbol: frame.attrs.get("quality") for symbol, frame in self.data.items()}

    # -- fetching ----------------------------------------------------------------------------
    @classmethod
    def _plan(cls, symbol: Any, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        kwargs = dict(kwargs)
        start = kwargs.pop("start", None)
        if start is None:
            raise InvalidRequestError("DexOrderData.download needs start=... (the first candle time, naive = UTC)")
        end = kwargs.pop("end", None)
        timeframe = kwargs.pop("timeframe", "1h")
        period_seconds = kwargs.pop("period_seconds", None)
        period = parse_period(period_seconds if period_seconds is not None else timeframe)
        missing = check_missing(kwargs.pop("missing", "nan"))
        max_fill_ratio = check_max_fill_ratio(kwargs.pop("max_fill_ratio", None))
        client = kwargs.pop("client", None)
        as_of = kwargs.pop("as_of", None)
        kwargs.pop("show_progress", None)
        kwargs.pop("tqdm_kwargs", None)
        settings = client_settings(kwargs)
        return dict(ticker=symbol, period=period, start=start, end=end, missing=missing, client=client,
                    settings=settings, max_fill_ratio=max_fill_ratio, as_of=as_of)

    @staticmethod
    async def _fetch_one(plan: Mapping[str, Any]) -> Fetched:
        client: OHLCClient = await sync_client(plan["client"], plan["settings"])
        end = plan["end"] if plan["end"] is not None else now_micros()
        previous = None
        if plan.get("last_close") is not None:
            # ffill across an update's boundary carries the last close, as a stored integer.
            market = await market_info(client, str(parse_ticker(plan["ticker"])))
            if market is not None:
                previous = {"close": round(plan["last_close"] * 10**market.price_decimals)}
        return await fetch_candles(
            client, plan["ticker"], plan["period"], plan["start"], end, missing=plan["missing"],
            request_timeout=plan["settings"].get("request_timeout"), grid_start=plan.get("grid_start"),
            previous=previous, max_fill_ratio=plan.get("max_fill_ratio"), as_of=plan.get("as_of"),
        )

    @classmethod
    def _fetch_all(cls, plans: Mapping[Any, Mapping[str, Any]], show_progress: bool = False,
                   tqdm_kwargs: Mapping[str, Any] | None = None) -> dict[Any, Fetched]:
        """Fetch every symbol's plan concurrently on the sync loop."""

        async def fetch_all() -> dict[Any, Fetched]:
            tasks = {symbol: asyncio.ensure_future(cls._fetch_one(plan)) for symbol, plan in plans.items()}
            try:
                if show_progress:
                    from tqdm.auto import tqdm

                    with tqdm(total=len(tasks), desc="DexOrderData", **(tqdm_kwargs or {})) as bar:
                        for finished in asyncio.as_completed(list(tasks.values())):
                            await finished
                            bar.update(1)
                await asyncio.gather(*tasks.values())
            finally:
                for task in tasks.values():
                    task.cancel()  # a no-op for finished ones; stops the rest after a failure
            return {symbol: task.result() for symbol, task in tasks.items()}

        return run_sync(fetch_all())

    @staticmethod
    def _frames(
        fetched: Mapping[Any, Fetched], columns: Mapping[Any, list[str]] | None = None
    ) -> dict[Any, pd.DataFrame]:
        if columns is not None:
            return {symbol: to_vbt_frame(item, columns[symbol]) for symbol, item in fetched.items()}
        frames = {symbol: to_vbt_frame(item) for symbol, item in fetched.items()}
        # Every symbol gets the same columns (NaN where a source has none), in one order.
        present = {name for frame in frames.values() for name in frame.columns}
        order = [name for name in COLUMNS.values() if name in present or name in _ALWAYS]
        return {symbol: frame.reindex(columns=order) for symbol, frame in frames.items()}

    # -- vectorbt's Data API -----------------------------------------------------------------
    @classmethod
    def download_symbol(cls, symbol: Any, **kwargs: Any) -> pd.DataFrame:
        """One symbol's candles as a DataFrame (see the class docstring for the arguments)."""
        fetched = cls._fetch_all({symbol: cls._plan(symbol, kwargs)})
        return cls._frames(fetched)[symbol]

    @classmethod
    def download(
        cls,
        symbols: Any,
        tz_localize: Any = None,
        tz_convert: Any = None,
        missing_index: str | None = None,
        missing_columns: str | None = None,
        wrapper_kwargs: dict | None = None,
        **kwargs: Any,
    ) -> DexOrderData:
        """Download ``symbols`` concurrently (see the class docstring for the arguments)."""
        if checks.is_hashable(symbols):
            symbols = [symbols]
        elif not checks.is_sequence(symbols):
            raise TypeError("Symbols must be either hashable or sequence of hashable")
        plans = {symbol: cls._plan(symbol, cls.select_symbol_kwargs(symbol, kwargs)) for symbol in symbols}
        fetched = cls._fetch_all(plans, bool(kwargs.get("show_progress", False)), kwargs.get("tqdm_kwargs"))
        return cls.from_data(
            cls._frames(fetched),
            tz_localize=tz_localize,
            tz_convert=tz_convert,
            missing_index=missing_index,
            missing_columns=missing_columns,
            wrapper_kwargs=wrapper_kwargs,
            download_kwargs=kwargs,
        )

    def _update_plan(self, symbol: Any, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """Fetch from the last candle (inclusive: a last candle still open is replaced) to
        ``end`` (default: now, whatever ``end`` the download had)."""
        merged = dict(self.select_symbol_kwargs(symbol, self.download_kwargs))
        merged.pop("end", None)
        merged.update(kwargs)
        frame = self.data[symbol]
        if frame.empty:  # nothing downloaded yet: update from the download's own start
            return self._plan(symbol, merged)
        last = frame.index[-1]
        merged["start"] = last
        plan = self._plan(symbol, merged)
        plan["grid_start"] = to_micros(last)
        if plan["missing"] == "ffill" and "Close" in frame.columns and pd.notna(frame["Close"].iloc[-1]):
            plan["last_close"] = float(frame["Close"].iloc[-1])
        return plan

    def update_symbol(self, symbol: Any, _fetched: Fetched | None = None, **kwargs: Any) -> pd.DataFrame:
        """The candles of ``symbol`` from its last one on (see :meth:`update`)."""
        if _fetched is None:
            _fetched = self._fetch_all({symbol: self._update_plan(symbol, kwargs)})[symbol]
        return to_vbt_frame(_fetched, list(self.data[symbol].columns))

    def update(self, **kwargs: Any) -> DexOrderData:
        """A new ``Data`` with the candles after each symbol's last one, fetched concurrently.

        Each symbol is fetched from its last candle (inclusive, so a last candle that was still
        open is replaced) to ``end`` (default: now). Other arguments override the download's.
        """
        plans = {symbol: self._update_plan(symbol, self.select_symbol_kwargs(symbol, kwargs))
                 for symbol in self.symbols}
        fetched = self._fetch_all(plans, bool(kwargs.get("show_progress", False)), kwargs.get("tqdm_kwargs"))
        updated = super().update(_fetched=symbol_dict(fetched))
        for symbol, item in fetched.items():  # vectorbt concatenates frames, which drops attrs
            updated.data[symbol].attrs.update(snapshot_id=item.snapshot_id, quality=item.quality)
        return updated
