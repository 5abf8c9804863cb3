"""``vbt.DexOrderData``: DexOrder candles as a vectorbt ``Data``.

::

    import vectorbt as vbt
    import dexorder_feeds  # adds vbt.DexOrderData

    data = vbt.DexOrderData.download(["SIM:BTC/USDT", "SIM:ETH/USDT"],
                                     start="2025-01-01", end="2025-03-01", timeframe="1h")
    close = data.get("Close")
    data = data.update()  # only the candles after the last one (the last one re-read)
    data = vbt.DexOrderData.pull("SIM:BTC/USDT", start="30 days ago", tz="Europe/Berlin")  # vectorbt PRO's name

Columns: ``Open, High, Low, Close, Volume`` (floats, each the nearest float to the stored
``int / 10**decimals``), plus ``Buy Volume``, ``Sell Volume`` and ``Open Interest`` where a
symbol's source gives them, on a UTC ``DatetimeIndex`` of candle period starts (``Open time``,
vectorbt's convention: a row's values are known only at ``index + period``; docs/backtesting.md
shows how to use a coarser timeframe on a finer one without look-ahead).
The symbols of one ``download``/``update`` are fetched concurrently, each with its own tqdm
bar (``show_progress=True`` by default on ``download``/``pull``, off on ``update``, as
vectorbt's ``BinanceData`` and ``CCXTData`` do).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from ..hookspecs import hookimpl
from ..plugins import get_plugin_manager
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
    from vectorbt.utils.datetime_ import to_timezone
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


class _SymbolBars:
    """One tqdm bar per symbol (vectorbt's convention), moved by its gap fill's
    ``dexorder_progress`` events and completed when the symbol's candles are in."""

    def __init__(self, plans: Mapping[Any, Mapping[str, Any]], tqdm_kwargs: Mapping[str, Any] | None) -> None:
        from tqdm.auto import tqdm

        self._lock = threading.Lock()
        self.bars: dict[Any, Any] = {}
        self._by_request: dict[tuple[str, int], Any] = {}
        for position, (symbol, plan) in enumerate(plans.items()):
            options = dict(desc=str(symbol), total=100, position=position, leave=True,
                           bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}{postfix}]")
            options.update(tqdm_kwargs or {})
            self.bars[symbol] = tqdm(**options)
            self._by_request[(str(parse_ticker(plan["ticker"])), plan["period"])] = symbol

    @hookimpl
    def dexorder_progress(self, request: Any, completed: int, total: int) -> None:
        symbol = self._by_request.get((request.ticker, request.period_seconds))
        if symbol is not None and total:
            with self._lock:
                bar = self.bars[symbol]
                bar.update(max(0, min(99, 90 * completed // total) - bar.n))

    def done(self, symbol: Any, fetched: Fetched) -> None:
        with self._lock:
            bar = self.bars[symbol]
            bar.set_postfix_str(f"{len(fetched.frame)} candles", refresh=False)
            bar.update(bar.total - bar.n)
            bar.refresh()  # the last state even within tqdm's mininterval

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


def _check_tz(tz: Any) -> Any:
    """``tz`` as pandas takes it (an hour offset becomes a fixed zone); a clear error if not a zone."""
    from datetime import timedelta, timezone

    if isinstance(tz, (int, float)) and not isinstance(tz, bool):
        tz = timezone(timedelta(hours=tz))
    try:
        pd.Timestamp(0, tz="UTC").tz_convert(tz)
    except Exception as exc:
        raise InvalidRequestError(f"tz={tz!r} is not a time zone; give an IANA name such as 'UTC' or "
                                  "'America/New_York', a UTC offset in hours, or a tzinfo") from exc
    return tz


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
    tz=None, show_progress=True, tqdm_kwargs=None, client=None, **client settings)``, also
    reachable as ``pull`` (vectorbt PRO's name):

    - ``symbols``: one ticker or a list (``EXCHANGE:BASE/QUOTE``)
    - ``start`` (required), ``end`` (default: now): the range, inclusive; int µs, datetime,
      ``pandas.Timestamp``, ISO string (naive = UTC) or relative text as vectorbt reads it:
      ``"now"``, ``"now UTC"``, ``"yesterday"``, ``"30 days ago"`` (UTC)
    - ``tz``: the time zone of the index (the same instants; default UTC): an IANA name such
      as ``"America/New_York"`` (daylight saving followed, unlike vectorbt's ``tz_convert``,
      which fixes the offset), an hour offset or a tzinfo; ``update`` keeps it
    - ``show_progress``: a tqdm bar per symbol (default True, as vectorbt's own data classes;
      ``update`` defaults to False), ``tqdm_kwargs`` passed to each bar
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
        kwargs.pop("tz", None)  # applied to the frames (see _frames)
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
        """Fetch every symbol's plan concurrently on the sync loop (a bar per symbol if asked)."""
        bars = _SymbolBars(plans, tqdm_kwargs) if show_progress else None

        async def fetch_all() -> dict[Any, Fetched]:
            async def one(symbol: Any, plan: Mapping[str, Any]) -> Fetched:
                fetched = await cls._fetch_one(plan)
                if bars is not None:
                    bars.done(symbol, fetched)
                return fetched

            tasks = {symbol: asyncio.ensure_future(one(symbol, plan)) for symbol, plan in plans.items()}
            try:
                await asyncio.gather(*tasks.values())
            finally:
                for task in tasks.values():
                    task.cancel()  # a no-op for finished ones; stops the rest after a failure
            return {symbol: task.result() for symbol, task in tasks.items()}

        if bars is None:
            return run_sync(fetch_all())
        manager = get_plugin_manager()
        manager.register(bars, name=f"dexorder-feeds-vbt-progress-{id(bars)}")
        try:
            return run_sync(fetch_all())
        finally:
            manager.unregister(bars)
            bars.close()

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
        fetched = cls._fetch_all({symbol: cls._plan(symbol, kwargs)}, bool(kwargs.get("show_progress", True)),
                                 kwargs.get("tqdm_kwargs"))
        frame = cls._frames(fetched)[symbol]
        tz = kwargs.get("tz")
        return frame if tz is None else frame.tz_convert(_check_tz(tz))

    @classmethod
    def download(
        cls,
        symbols: Any,
        tz_localize: Any = None,
        tz_convert: Any = None,
        missing_index: str | None = None,
        missing_columns: str | None = None,
        wrapper_kwargs: dict | None = None,
        *,
        tz: Any = None,
        show_progress: bool = True,
        tqdm_kwargs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> DexOrderData:
        """Download ``symbols`` concurrently (see the class docstring for the arguments)."""
        if checks.is_hashable(symbols):
            symbols = [symbols]
        elif not checks.is_sequence(symbols):
            raise TypeError("Symbols must be either hashable or sequence of hashable")
        if tz is not None:
            if tz_convert is not None:
                raise InvalidRequestError("give tz=... (the zone of the index, kept by update) or vectorbt's "
                                          "tz_convert=..., not both")
            kwargs["tz"] = _check_tz(tz)  # kept in download_kwargs: update converts its candles too
        plans = {symbol: cls._plan(symbol, cls.select_symbol_kwargs(symbol, kwargs)) for symbol in symbols}
        fetched = cls._fetch_all(plans, bool(show_progress), tqdm_kwargs)
        data = cls.from_data(
            cls._frames(fetched),
            tz_localize=tz_localize,
            tz_convert=tz_convert,
            missing_index=missing_index,
            missing_columns=missing_columns,
            wrapper_kwargs=wrapper_kwargs,
            download_kwargs=kwargs,
        )
        return data._in_zone(kwargs.get("tz"))

    def _in_zone(self, tz: Any) -> DexOrderData:
        """This data with its index in ``tz`` (a real zone, daylight saving followed); itself if None.

        vectorbt's own ``tz_convert`` fixes a zone at today's UTC offset, so ``tz`` is applied here
        after vectorbt has built (or updated) the data in UTC."""
        if tz is None:
            return self
        data = {symbol: frame.tz_convert(tz) for symbol, frame in self.data.items()}
        index = self.wrapper.index.tz_convert(tz)
        index.freq = self.wrapper.index.freq
        return self.replace(wrapper=self.wrapper.replace(index=index), data=data)

    @classmethod
    def pull(cls, symbols: Any, **kwargs: Any) -> DexOrderData:
        """:meth:`download` under vectorbt PRO's name (the same arguments and result)."""
        return cls.download(symbols, **kwargs)

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
        tz = self.download_kwargs.get("tz")
        base = self._in_zone("UTC") if tz is not None else self  # vectorbt joins the new candles in UTC
        updated = vbt.Data.update(base, _fetched=symbol_dict(fetched))
        for symbol, item in fetched.items():  # vectorbt concatenates frames, which drops attrs
            updated.data[symbol].attrs.update(snapshot_id=item.snapshot_id, quality=item.quality)
        return updated._in_zone(tz)
