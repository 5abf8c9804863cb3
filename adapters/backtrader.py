"""``bt.feeds.DexOrderData``: a backtrader data feed of DexOrder candles.

::

    import backtrader as bt
    import dexorder_feeds  # adds bt.feeds.DexOrderData

    data = bt.feeds.DexOrderData(ticker="SIM:BTC/USDT", period_seconds=3600,
                                 fromdate=datetime(2025, 1, 1), todate=datetime(2025, 3, 1))

The whole range is fetched once when cerebro starts the feed, converted to floats in bulk
(exactly: each price is the float nearest to ``int / 10**decimals``) and to backtrader's date
numbers in bulk (equal to ``bt.date2num``). ``_load`` then only copies precomputed values, and
with ``preload`` on (the default) the line buffers are filled in one step per line.

Bar times never leak the future (``bar_time="close"``, the default): a bar is stamped when its
period has closed, as backtrader's own feeds do. An intraday candle is stamped at its period end
(the 1h candle of 10:00 at 11:00); a candle whose period ends at midnight UTC (the last intraday
candle of a day, every daily, weekly or longer candle) is stamped at the session end of the day
it closes, 23:59:59.999990 UTC, so a daily bar's ``date()`` is its own day and it arrives together
with the last hourly bar of that day. ``fromdate``/``todate`` select candles by their open time
(UTC, naive = UTC), as in every other face. ``bar_time="open"`` stamps bars at their period start
instead: a strategy then sees each bar's close at its open time, a look-ahead of one period as
soon as bars are compared with anything else (another timeframe, another feed, the broker's
fills); use it only for a single feed whose strategy knows this.
"""

from __future__ import annotations

import array
import math
from datetime import datetime, time
from typing import Any

import numpy as np

from ..vocabulary.quality import QualityReport
from ..vocabulary.errors import InvalidPeriodError, InvalidRequestError, missing_dependency
from ..client.sync import run_sync
from ..vocabulary.tickers import parse_ticker
from ..vocabulary.periods import MONTH
from ..vocabulary.times import now_micros, parse_period, to_micros
from ._source import (
    CLIENT_SETTINGS,
    check_max_fill_ratio,
    check_missing,
    client_settings,
    exact_floats,
    fetch_candles,
    period_end,
    sync_client,
)

try:
    import backtrader as bt
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise missing_dependency("backtrader", "backtrader") from exc

__all__ = ["DexOrderData", "bar_times", "date_numbers", "timeframe_for", "period_for", "BAR_TIMES"]

#: What a bar's datetime can be: its close (default, no look-ahead) or its open (opt-in).
BAR_TIMES = ("close", "open")

_US_PER_DAY = 86_400_000_000
_US_PER_HOUR = 3_600_000_000
_US_PER_MINUTE = 60_000_000
_EPOCH_ORDINAL = 719_163  # datetime(1970, 1, 1).toordinal()

_SECONDS_PER_UNIT = {
    bt.TimeFrame.Seconds: 1,
    bt.TimeFrame.Minutes: 60,
    bt.TimeFrame.Days: 86_400,
    bt.TimeFrame.Weeks: 604_800,
}


def timeframe_for(period_seconds: int) -> tuple[int, int]:
    """backtrader's ``(timeframe, compression)`` for a period in seconds (1h -> Minutes x 60).

    The calendar month (``2592000``, ``"1M"``) is ``Months x 1``.
    """
    if period_seconds == MONTH:
        return bt.TimeFrame.Months, 1
    for timeframe in (bt.TimeFrame.Weeks, bt.TimeFrame.Days, bt.TimeFrame.Minutes, bt.TimeFrame.Seconds):
        unit = _SECONDS_PER_UNIT[timeframe]
        if period_seconds % unit == 0:
            return timeframe, period_seconds // unit
    raise AssertionError("unreachable: every period is whole seconds")


def period_for(timeframe: int, compression: int) -> int:
    """The period in seconds of a backtrader ``timeframe`` x ``compression`` (``Months x 1``: ``1M``)."""
    if timeframe == bt.TimeFrame.Months and compression == 1:
        return MONTH
    unit = _SECONDS_PER_UNIT.get(timeframe)
    if unit is None:
        name = bt.TimeFrame.getname(timeframe, compression)
        raise InvalidPeriodError(
            f"timeframe {name} is not a period dexorder-feeds offers; use Seconds, Minutes, Days, Weeks "
            "or Months x 1 (or give period_seconds such as '1M')"
        )
    if not isinstance(compression, int) or compression <= 0:
        raise InvalidPeriodError(f"compression={compression!r} must be a positive integer")
    return unit * compression


def bar_times(starts: np.ndarray, period_seconds: int, bar_time: str = "close",
              session_end_us: int = 86_399_999_990) -> np.ndarray:
    """The datetimes (int µs, UTC) of bars whose candles open at ``starts``.

    ``"close"``: the period end (:func:`~dexorder_feeds.adapters._source.period_end`), except that
    a period ending at midnight UTC is stamped at ``session_end_us`` (µs into the day) of the day
    it closes, where backtrader's own feeds put a day's bars. ``"open"``: the period start.
    """
    starts = np.asarray(starts, dtype=np.int64)
    if bar_time == "open":
        return starts
    ends = np.asarray(period_end(starts, period_seconds), dtype=np.int64)
    at_midnight = ends % _US_PER_DAY == 0
    return np.where(at_midnight, ends - _US_PER_DAY + session_end_us, ends)


def date_numbers(timestamps: np.ndarray) -> list[float]:
    """backtrader date numbers of integer µs timestamps, equal to ``bt.date2num`` of each.

    ``bt.date2num`` is ``math.fsum`` of the day ordinal and hour/24, minute/1440, second/86400,
    microsecond/86400e6; the same terms are computed here with numpy and summed with
    ``math.fsum``, so every number is bit-for-bit what backtrader computes (the shortcut
    ``ts / 86400e6 + 719163`` differs in the last bit for about 1% of timestamps).
    """
    ts = np.asarray(timestamps, dtype=np.int64)
    days, rest = np.divmod(ts, _US_PER_DAY)
    hours, rest = np.divmod(rest, _US_PER_HOUR)
    minutes, rest = np.divmod(rest, _US_PER_MINUTE)
    seconds, micros = np.divmod(rest, 1_000_000)
    ordinals = (days + _EPOCH_ORDINAL).astype(np.float64)
    if not micros.any() and not seconds.any() and not minutes.any() and not hours.any():
        return ordinals.tolist()
    terms = (ordinals.tolist(), (hours / 24.0).tolist(), (minutes / 1440.0).tolist(),
             (seconds / 86400.0).tolist(), (micros / 86400e6).tolist())
    return list(map(math.fsum, zip(*terms)))


class DexOrderData(bt.feed.DataBase):
    """DexOrder candles of one ticker as a backtrader data feed.

    Params (besides backtrader's ``fromdate``, ``todate``, ``name``, ``tz``, …):

    - ``ticker``: ``EXCHANGE:BASE/QUOTE`` (``dataname`` is used if ``ticker`` is not given)
    - ``period_seconds``: candle period (seconds or ``"1h"``); when omitted, the usual
      ``timeframe``/``compression`` give it (Seconds, Minutes, Days or Weeks x compression)
    - ``fromdate`` (required), ``todate`` (default: now): the range, inclusive, naive = UTC
    - ``missing``: what a period without a stored candle becomes: ``"drop"`` (default),
      ``"nan"`` or ``"ffill"`` (flat at the previous close, zero volume)
    - ``max_fill_ratio``: the largest share (0 to 1) of the bars the ``missing`` policy may make
      up; above it the feed raises :class:`~dexorder_feeds.vocabulary.errors.FillRatioError`
      when cerebro starts it (default None: no limit). ``data.quality`` is the
      :class:`~dexorder_feeds.vocabulary.quality.QualityReport` of the candles loaded
    - ``bar_time``: what a bar's datetime is: ``"close"`` (default) stamps a bar once its period
      has closed: intraday bars at their period end, a period ending at midnight UTC (daily and
      longer bars, the day's last intraday bar) at the session end of the day it closes; mixed
      timeframes, backtrader's own feeds, resampling and replaying then stay in step. ``"open"``
      stamps bars at their period start: every bar is then visible one period before its close
      exists (look-ahead across feeds and timeframes); opt in only knowing this
    - ``sessionend``: backtrader's session end, default 23:59:59.999990 (candles cover 24-hour
      UTC days, so it must lie in the day's last second)
    - ``client``: an ``OHLCClient`` to fetch with (it then belongs to the sync loop), or the
      client settings ``iceberg_catalog_uri``, ``relay_endpoint``, ``notification_endpoint``,
      ``namespace``, ``request_timeout`` (default: environment / config / embedded)
    """

    params = (
        ("ticker", None),
        ("period_seconds", None),
        ("missing", "drop"),
        ("max_fill_ratio", None),
        ("bar_time", "close"),
        ("as_of", None),
        ("client", None),
    ) + tuple((name, None) for name in CLIENT_SETTINGS)

    def __init__(self) -> None:
        super().__init__()
        p = self.p
        ticker = p.ticker if p.ticker is not None else p.dataname
        self.ticker = str(parse_ticker(ticker))
        if p.period_seconds is not None:
            self.period_seconds = parse_period(p.period_seconds)
            p.timeframe, p.compression = timeframe_for(self.period_seconds)
        else:
            self.period_seconds = period_for(p.timeframe, p.compression)
        if p.fromdate is None:
            raise InvalidRequestError("DexOrderData needs fromdate=... (the first candle time, naive = UTC)")
        check_missing(p.missing)
        check_max_fill_ratio(p.max_fill_ratio)
        if p.bar_time not in BAR_TIMES:
            raise InvalidRequestError(f"bar_time={p.bar_time!r} must be 'close' (default, no look-ahead) or 'open'")
        end_of_day = p.sessionend if p.sessionend is not None else time(23, 59, 59, 999990)  # backtrader's
        if isinstance(end_of_day, datetime):
            end_of_day = end_of_day.time()
        self._session_end_us = ((end_of_day.hour * 60 + end_of_day.minute) * 60 + end_of_day.second) * 1_000_000 \
            + end_of_day.microsecond
        if self._session_end_us <= _US_PER_DAY - 1_000_000:
            raise InvalidRequestError(
                f"sessionend={end_of_day} ends the day early, but candles cover 24-hour UTC days; leave "
                "sessionend at its default (23:59:59.999990) or give a time in the day's last second"
            )
        self._settings = client_settings({name: getattr(p, name) for name in CLIENT_SETTINGS})
        if p.client is not None and self._settings:
            raise TypeError("pass either client=... or client settings, not both")
        if not self.p.name:
            self._name = self.ticker
        self._columns: list[list[float]] = []
        self._count = 0
        self._next = 0
        self.snapshot_id: int | None = None
        self.content_hash: str | None = None
        #: The data-quality report of the candles loaded (set when cerebro starts the feed).
        self.quality: QualityReport | None = None
        aliases = self.lines.getlinealiases()
        self._tick_pairs = [("tick_" + alias, line) for alias, line in zip(aliases, self.lines) if alias != "datetime"]
        self._tick_first = "tick_" + aliases[0]
        self._tick_nones = dict.fromkeys([key for key, _ in self._tick_pairs] + ["tick_last"])

    # -- loading ----------------------------------------------------------------------------
    def _gettzinput(self) -> Any:
        return None  # candle timestamps are UTC already: never reinterpret them

    def _start_finish(self) -> None:
        super()._start_finish()
        # The fetch selected the candles by open time already; backtrader's own filter would
        # compare bar datetimes (close times) with fromdate/todate and drop the last candles.
        self.fromdate, self.todate = -math.inf, math.inf

    def _range_micros(self) -> tuple[int, int]:
        tz = self._gettz()

        def micros(value: Any, name: str) -> int:
            if isinstance(value, datetime) and value.tzinfo is None and tz is not None:
                value = tz.localize(value)
            return to_micros(value, name=name)

        start = micros(self.p.fromdate, "fromdate")
        end = micros(self.p.todate, "todate") if self.p.todate is not None else None
        return start, end if end is not None else now_micros()

    def start(self) -> None:
        super().start()
        start, end = self._range_micros()
        # fromdate/todate select candles by their open time, as every face does.
        fetched = run_sync(self._fetch(start, end))
        frame, market = fetched.frame, fetched.market
        self.snapshot_id = fetched.snapshot_id
        self.content_hash = fetched.content_hash
        self.quality = fetched.quality
        count = len(frame)
        nan = [math.nan] * count
        starts = frame["timestamp"].to_numpy(dtype=np.int64)
        dt = date_numbers(bar_times(starts, self.period_seconds, self.p.bar_time, self._session_end_us))
        if count:
            assert market is not None
            prices = [exact_floats(frame[c], market.price_decimals).tolist() for c in ("open", "high", "low", "close")]
            volume = exact_floats(frame["volume"], market.volume_decimals).tolist()
            interest = exact_floats(frame["open_interest"], market.decimals_for("open_interest")).tolist()
        else:
            prices, volume, interest = [nan] * 4, nan, nan
        values = {"datetime": dt, "open": prices[0], "high": prices[1], "low": prices[2], "close": prices[3],
                  "volume": volume, "openinterest": interest}
        # One list per line, in the lines' order (subclasses may add lines: those stay NaN).
        self._columns = [values.get(alias, nan) for alias in self.lines.getlinealiases()]
        self._count = count
        self._next = 0

    async def _fetch(self, start: int, end: int) -> Any:
        client = await sync_client(self.p.client, self._settings)
        timeout = self._settings.get("request_timeout")
        return await fetch_candles(client, self.ticker, self.period_seconds, start, end, missing=self.p.missing,
                                   request_timeout=timeout, max_fill_ratio=self.p.max_fill_ratio,
                                   as_of=self.p.as_of)

    def _load(self) -> bool:
        i = self._next
        if i >= self._count:
            return False
        self._next = i + 1
        for line, column in zip(self.lines, self._columns):
            line[0] = column[i]
        return True

    # backtrader calls these two on every bar of every feed; these do what DataBase's do
    # (nullify / copy the current bar into the ``tick_*`` attributes the broker reads) without
    # the per-bar string building and getattr/setattr lookups.
    def _tick_nullify(self) -> None:
        self.__dict__.update(self._tick_nones)

    def _tick_fill(self, force: bool = False) -> None:
        attributes = self.__dict__
        if force or attributes.get(self._tick_first) is None:
            for key, line in self._tick_pairs:
                attributes[key] = line.array[line._idx]
            attributes["tick_last"] = attributes[self._tick_first]

    def _can_bulk_load(self) -> bool:
        if self._filters or self._barstack or self._barstash or self._next:
            return False
        return all(line.mode == line.UnBounded and not line.bindings and len(line) == 0 and line.buflen() == 0
                   for line in self.lines)

    def preload(self) -> None:
        """Fill the line buffers in one step per line (what ``load()`` bar by bar would give)."""
        if not self._can_bulk_load():
            super().preload()
            return
        dt = self._columns[self.lines.getlinealiases().index("datetime")]
        first, stop = 0, self._count
        # backtrader's fromdate/todate filter (in its own date numbers, output timezone aware).
        while first < stop and dt[first] < self.fromdate:
            first += 1
        while stop > first and dt[stop - 1] > self.todate:
            stop -= 1
        for line, column in zip(self.lines, self._columns):
            line.array.extend(array.array("d", column[first:stop]))
            line.idx, line.lencount = stop - first - 1, stop - first  # where forward() leaves them
        self._next = self._count
        self._last()
        self.home()
