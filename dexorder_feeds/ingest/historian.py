"""The historian: turns a history request into stored candles and a completion notification.

For a request it validates the input, rounds the range to whole periods, leaves out periods
that have not closed, asks the exchange's ingest source, converts prices and volumes to integers
with the market's decimals, and commits through the warehouse's single committer: the market
(first time only, on its own), then the candles not already stored and then the coverage row
(also for an empty range), each in one append shared with the other fills that finished
meanwhile (group commit, see :meth:`Warehouse.commit_fills`). Candles are committed before
coverage, so a crash in between leaves stored candles that gap detection already counts, never
coverage without candles.

A candle that cannot be real is refused, never stored: a high below ``max(open, close)``, a low
above ``min(open, close)``, or a negative price or volume. The request then fails with
:class:`~dexorder_feeds.vocabulary.errors.InvalidCandleError` naming the source, the candle's
time and the values, and nothing of the range is stored (no candle, no coverage): a backtest
never runs on a candle whose fills it could not have had, and fixing the source's data and
asking again stores the range.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from ..vocabulary.errors import (
    DataError,
    DexOrderError,
    InvalidCandleError,
    InvalidPeriodError,
    InvalidRequestError,
    InvalidTimeRangeError,
    PrecisionError,
    StoredCandleChangedError,
    UnknownSourceError,
)
from ..vocabulary.markets import PRICE_COLUMNS, VALUE_COLUMNS, MarketInfo, scale_to_integers
from ..vocabulary.aggregate import aggregate_candles, coarsest_divisor
from ..vocabulary.periods import (
    divides,
    is_aligned,
    period_ceil,
    period_count,
    period_floor,
    period_label,
    shift_periods,
)
from ..vocabulary.requests import closed_period_stop
from ..vocabulary.ranges import (
    Interval,
    candle_interval,
    intersect_intervals,
    merge_intervals,
    split_interval,
    subtract_from_all,
    subtract_intervals,
)
from ..vocabulary.tickers import Ticker, parse_ticker
from ..vocabulary.times import format_micros, now_micros, to_micros
from ..storage.ledger import drop_stale_coverage
from ..storage.warehouse import CoveragePart, Fill, FillOutcome, Warehouse, candle_arrow_schema, coverage_row
from ..wire import HistoryRequest, Notification
from ..wire.errors import wire_name
from .sources import IngestSource, SourceCandles, SourceRegistry

__all__ = ["Historian", "ValidatedRequest", "check_candles", "validate_request", "default_settle_seconds",
           "DEFAULT_MAX_RANGE_CANDLES", "DEFAULT_SETTLE_FLOOR_SECONDS"]

log = logging.getLogger(__name__)

DEFAULT_MAX_RANGE_CANDLES = 5_000_000
DEFAULT_SETTLE_FLOOR_SECONDS = 300
_MAX_PERIOD_SECONDS = 366 * 86400


@dataclass(frozen=True)
class ValidatedRequest:
    """A request that passed validation, with its whole-period interval (None if empty)."""

    request_id: str
    ticker: Ticker
    period_seconds: int
    interval: Interval | None

    @property
    def period_us(self) -> int:
        return self.period_seconds * 1_000_000


def validate_request(
    request: HistoryRequest, *, now: int | None = None, max_range_candles: int = DEFAULT_MAX_RANGE_CANDLES
) -> ValidatedRequest:
    """Check a request before any work; raise an :class:`InvalidRequestError` saying what to fix.

    The interval excludes the period that has not closed yet at ``now`` (an end in the future is
    allowed) and is cut to ``limit`` candles when one is given.
    """
    ticker = parse_ticker(request.ticker)
    period = request.period_seconds
    if period <= 0:
        raise InvalidPeriodError(f"period_seconds={period} must be a positive whole number of seconds")
    if period > _MAX_PERIOD_SECONDS:
        raise InvalidPeriodError(f"period_seconds={period} is longer than a year; is it in seconds?")
    start = to_micros(request.start_time, name="start_time")
    end = to_micros(request.end_time, name="end_time")
    if start > end:
        raise InvalidTimeRangeError(f"start_time={start} is after end_time={end}; swap them")
    period_us = period * 1_000_000
    count = period_count(period, period_floor(period, start), end + 1)
    if count > max_range_candles:
        raise InvalidRequestError(
            f"the range holds {count} candles, more than the limit of "
            f"{max_range_candles}; split it into smaller requests"
        )
    if request.HasField("limit") and request.limit <= 0:
        raise InvalidRequestError(f"limit={request.limit} must be positive")
    interval = candle_interval(start, end, period_us)
    if interval is not None:
        stop = min(interval[1], closed_period_stop(period, now))
        if request.HasField("limit"):
            stop = min(stop, shift_periods(period, interval[0], request.limit))
        interval = (interval[0], stop) if stop > interval[0] else None
    return ValidatedRequest(request.request_id, ticker, period, interval)


def default_settle_seconds(period_seconds: int) -> float:
    """The settle horizon of a source that names none: ``max(5 minutes, one period)``.

    Exchanges publish a closed candle within seconds, sometimes a minute or two late; a period
    gives slow exchanges and daily candles (published after a day's books close) as long again.
    Longer costs little (an empty answer is asked again, a candle given is stored at once);
    shorter risks the permanent hole the ledger exists to prevent.
    """
    return float(max(DEFAULT_SETTLE_FLOOR_SECONDS, period_seconds))


def _whole_periods(intervals: list[Interval], period_seconds: int) -> list[Interval]:
    """Each interval shrunk to the whole periods inside it (a part vouched for at a finer
    period covers a coarser period only if it covers all of it)."""
    out = [(period_ceil(period_seconds, s), period_floor(period_seconds, e)) for s, e in intervals]
    return [(s, e) for s, e in out if e > s]


def _coverage_parts(todo: list[Interval], interval: Interval, stored: int, table: pa.Table,
                    served_by: list[tuple[tuple[int, int], str]] | None, source_name: str,
                    period_seconds: int) -> list[CoveragePart]:
    """One coverage row per part to record, split where another source served (``served_by``,
    its bounds moved to the start of the period they fall in), each with its candle count (the
    interval's stored count when it is one row for all)."""
    named: list[tuple[Interval, str]] = []
    snapped = [((period_floor(period_seconds, s), period_floor(period_seconds, e)), name)
               for (s, e), name in served_by or ()]
    for part in todo:
        rest = [part]
        for (s, e), name in snapped:
            lo, hi = max(s, part[0]), min(e, part[1])
            if hi > lo:
                named.append(((lo, hi), name))
                rest = subtract_from_all(rest, [(lo, hi)])
        named += [(piece, source_name) for piece in rest]
    named.sort()
    if len(named) == 1 and named[0][0] == interval:
        return [CoveragePart(interval, stored, named[0][1])]
    ts = table["timestamp"].to_numpy() if table.num_rows else np.array([], dtype=np.int64)
    return [CoveragePart(iv, int(((ts >= iv[0]) & (ts < iv[1])).sum()), name) for iv, name in named]


def _holds(source: IngestSource, valid: ValidatedRequest) -> bool:
    """Whether ``source`` holds the request's period itself (None: it serves any period)."""
    offered = source.periods(valid.ticker)
    return offered is None or valid.period_seconds in offered


def _iso(micros: int) -> str:
    return pd.Timestamp(int(micros), unit="us", tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ")


def check_candles(scaled: pd.DataFrame, market: MarketInfo, period_seconds: int, source: str) -> None:
    """Refuse candles that cannot be real (see the module docstring), naming the first one."""
    if scaled.empty:
        return

    def value(column: str, i: int) -> Decimal:
        return market.to_decimal(column, int(scaled[column].iloc[i]))

    ints = {c: scaled[c].to_numpy(dtype=np.int64) for c in (*PRICE_COLUMNS, "volume")}
    top, bottom = np.maximum(ints["open"], ints["close"]), np.minimum(ints["open"], ints["close"])
    problems: list[tuple[np.ndarray, Callable[[int], str]]] = [
        (ints["high"] < top,
         lambda i: f"high {value('high', i)} is below max(open, close) {market.to_decimal('open', int(top[i]))}"),
        (ints["low"] > bottom,
         lambda i: f"low {value('low', i)} is above min(open, close) {market.to_decimal('open', int(bottom[i]))}"),
    ]

    def is_negative(column: str) -> Callable[[int], str]:
        return lambda i: f"{column} {value(column, i)} is negative"

    for column in (*PRICE_COLUMNS, "volume", "buy_vol", "sell_vol", "open_interest"):
        if column in scaled.columns:
            negative = (scaled[column].fillna(0) < 0).to_numpy(dtype=bool)
            problems.append((negative, is_negative(column)))
    bad = [(int(np.argmax(mask)), describe) for mask, describe in problems if mask.any()]
    if not bad:
        return
    first, describe = min(bad, key=lambda item: item[0])
    count = int(np.logical_or.reduce([mask for mask, _ in problems]).sum())
    ts = int(scaled["timestamp"].iloc[first])
    raise InvalidCandleError(
        f"{market.ticker}: the {source} source gave an impossible {period_seconds}s candle at {_iso(ts)} "
        f"(timestamp {ts}): {describe(first)}"
        + (f"; {count} candles of the range are impossible" if count > 1 else "")
        + ". Nothing of the range was stored; correct the source's data and ask again"
    )


def _rescale(frame: pd.DataFrame, source_market: MarketInfo, stored: MarketInfo) -> pd.DataFrame:
    """Integers at the source's decimals to integers at the stored decimals, exactly."""
    out = frame.copy()
    for column in VALUE_COLUMNS:
        if column not in out.columns:
            continue
        shift = stored.decimals_for(column) - source_market.decimals_for(column)
        if shift == 0:
            continue
        values = out[column].astype("Int64")
        if shift > 0:
            out[column] = values * 10**shift
        else:
            divisor = 10 ** (-shift)
            if ((values.dropna() % divisor) != 0).any():
                raise PrecisionError(
                    f"{stored.ticker}: the source now reports {source_market.decimals_for(column)} decimals for "
                    f"{column}, finer than the {stored.decimals_for(column)} stored; storing would lose precision"
                )
            out[column] = values // divisor
    return out


def _cores() -> int:
    """The cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


class Historian:
    """Serves history requests into one warehouse. ``handle`` is blocking and thread-safe."""

    def __init__(
        self,
        warehouse: Warehouse,
        sources: SourceRegistry | None = None,
        *,
        max_range_candles: int = DEFAULT_MAX_RANGE_CANDLES,
        settle_seconds: float | None = None,
    ) -> None:
        self.warehouse = warehouse
        self.sources = sources if sources is not None else SourceRegistry()
        self.max_range_candles = max_range_candles
        if settle_seconds is not None and settle_seconds < 0:
            raise InvalidRequestError(f"settle_seconds={settle_seconds} must be zero or more")
        self.settle_seconds = settle_seconds
        self._fingerprinted: set[tuple[str, int]] | None = None  # (ticker, period) whose coverage has a fingerprint
        self._fingerprinted_lock = threading.Lock()
        self._recheck_locks: dict[str, threading.Lock] = {}  # one re-check of a ticker at a time
        # Fills from local sources (pure CPU) run at most one per core at once (IngestSource.local).
        self._local_fills = threading.BoundedSemaphore(_cores())

    def validate(self, request: HistoryRequest) -> ValidatedRequest:
        """Validate a request (also checks that a source serves its exchange)."""
        valid = validate_request(request, max_range_candles=self.max_range_candles)
        self.sources.source_for(valid.ticker)
        return valid

    def handle(self, request: HistoryRequest) -> Notification:
        """Ingest the request's range and return its completion notification (never raises)."""
        return self.begin(request).result()

    def begin(self, request: HistoryRequest) -> concurrent.futures.Future[Notification]:
        """Do the work of a request up to its commit on this thread; the future gives its
        completion notification (never an exception) once the committer has committed it, with
        the other fills that finished meanwhile. A worker thread can take the next request
        instead of waiting for the commit, so more fills share each commit."""
        began = time.perf_counter()
        timings: dict[str, float] = {}
        try:
            valid = self.validate(request)
            pending = self._ingest(valid, timings)
        except Exception as exc:
            pending = concurrent.futures.Future()
            pending.set_exception(exc)
            valid = None
        done: concurrent.futures.Future[Notification] = concurrent.futures.Future()

        def finish(outcome: concurrent.futures.Future[tuple[int, int]]) -> None:
            if "submitted" in timings:
                timings["commit"] = time.perf_counter() - timings.pop("submitted")
            try:
                done.set_result(self._notification(request, valid, outcome, timings, began))
            except BaseException as exc:  # never leave the request waiting
                done.set_result(Notification(request_id=request.request_id, client_id=request.client_id,
                                             status=Notification.ERROR,
                                             error_message=f"internal error in the historian: {exc!r}"))

        pending.add_done_callback(finish)
        return done

    def _notification(self, request: HistoryRequest, valid: ValidatedRequest | None,
                      outcome: concurrent.futures.Future[tuple[int, int]], timings: dict[str, float],
                      began: float) -> Notification:
        notification = Notification(
            request_id=request.request_id,
            client_id=request.client_id,
            iceberg_namespace=self.warehouse.namespace,
            iceberg_table=self.warehouse.candles_table_name,
        )
        try:
            added, stored = outcome.result()
            if valid is not None and valid.interval is not None:
                notification.covered_start, notification.covered_end = valid.interval
            notification.row_count = stored
            notification.status = Notification.OK if stored else Notification.NOT_FOUND
        except DexOrderError as exc:
            notification.status = Notification.ERROR
            notification.error_message = str(exc)
            notification.error_type = wire_name(exc)
            added = 0
        except Exception as exc:  # a bug or a backend failure: report it, keep serving
            log.error("request %s failed", request.request_id, exc_info=exc)
            notification.status = Notification.ERROR
            notification.error_message = f"internal error in the historian: {type(exc).__name__}: {exc}"
            added = 0
        log.info(
            "request %s %s %ss [%s, %s] -> %s rows=%d added=%d source=%.1fms commit=%.1fms total=%.1fms",
            request.request_id, request.ticker, request.period_seconds, request.start_time, request.end_time,
            Notification.Status.Name(notification.status), notification.row_count, added,
            timings.get("source", 0) * 1e3, timings.get("commit", 0) * 1e3, (time.perf_counter() - began) * 1e3,
        )
        return notification

    def settle_us(self, source: IngestSource, period_seconds: int) -> int:
        """The settle horizon (µs) of ``source`` for a period: its own, else the configured
        default, else :func:`default_settle_seconds`."""
        own = source.settle_seconds(period_seconds)
        if own is None:
            own = self.settle_seconds if self.settle_seconds is not None else default_settle_seconds(period_seconds)
        return max(0, int(own * 1_000_000))

    def _ingest(self, valid: ValidatedRequest, timings: dict[str, float], *,
                recheck: bool = False) -> concurrent.futures.Future[tuple[int, int]]:
        """Everything up to the commit; the future gives ``(added, stored)`` once committed."""
        done: concurrent.futures.Future[tuple[int, int]] = concurrent.futures.Future()
        interval = valid.interval
        if interval is None:
            done.set_result((0, 0))
            return done
        if not recheck:
            stored = self.warehouse.stored_if_covered(str(valid.ticker), valid.period_seconds, interval)
            if stored is not None:  # ingested before: no source call, no commit
                done.set_result((0, stored))
                return done
        source = self.sources.source_for(valid.ticker)
        # Fills from local sources (pure CPU) run at most one per core at once; a range found
        # ingested above needed no slot (plugins may not subclass IngestSource: no ``local``).
        with self._local_fills if getattr(source, "local", False) else contextlib.nullcontext():
            return self._fill(valid, source, timings, recheck)

    def _fill(self, valid: ValidatedRequest, source: IngestSource, timings: dict[str, float],
              recheck: bool) -> concurrent.futures.Future[tuple[int, int]]:
        """Read the source for ``valid``'s interval and queue the fill for the committer."""
        interval = valid.interval
        assert interval is not None
        source_name = self.sources.spec_for(valid.ticker.exchange)
        t0 = time.perf_counter()
        fingerprint = source.fingerprint(valid.ticker)  # before the read: a change during it is seen later
        asked_at = now_micros()
        fetch_period = self._fetch_period(source, valid)
        # A re-check asks the source itself: finer stored candles may be what changed.
        from_store = self._stored_finer(valid) if fetch_period == valid.period_seconds \
            and not _holds(source, valid) and not recheck else None
        if from_store is not None:  # built from finer candles already in the warehouse
            fetch_period, got = from_store
        else:
            got = source.fetch_candles(valid.ticker, fetch_period, *interval)
        timings["source"] = time.perf_counter() - t0
        frame = self._in_interval(got.frame, valid, fetch_period)
        ticker = str(valid.ticker)
        source_market = MarketInfo(ticker, got.market.price_decimals, got.market.volume_decimals)
        # What may be remembered: the parts the source vouched for that have settled.
        settled_stop = closed_period_stop(valid.period_seconds, asked_at - self.settle_us(source, valid.period_seconds))
        answered = [interval] if got.checked is None else _whole_periods(intersect_intervals(got.checked, [interval]),
                                                                         valid.period_seconds)
        settled = intersect_intervals(answered, [(interval[0], min(interval[1], settled_stop))])

        def scale(market: MarketInfo) -> pd.DataFrame:
            scaled = _rescale(frame, source_market, market) if got.scaled else scale_to_integers(frame, market)
            check_candles(scaled, market, valid.period_seconds, source.name)  # before anything is written
            return scaled

        market = self.warehouse.read_market(ticker)
        scaled = scale(market or source_market)
        if market is None and not frame.empty:
            # An empty answer says nothing about the market's precision: store decimals
            # only with the first candles, so files added later are not held to 0/0.
            # stored with the other markets queued meanwhile, in one commit
            market = self.warehouse.committer.submit_market(source_market, source.name).result()
            if market != source_market:  # another writer stored the market first
                scaled = scale(market)
        if fetch_period != valid.period_seconds:  # exact, on integers; incomplete periods give none
            scaled = aggregate_candles(scaled, fetch_period, valid.period_seconds)
        table = self._to_arrow(ticker, valid.period_seconds, scaled)
        if fingerprint is not None and table.num_rows:
            self._check_unchanged(ticker, valid.period_seconds, interval, table, source_name)
        # Committed with the other fills that finish meanwhile: candles, then coverage.
        rows = functools.partial(self._coverage_rows, valid, settled, table, got.served_by, source_name,
                                 fingerprint, recheck)
        fill = Fill(ticker, valid.period_seconds, interval, table, rows)
        timings["submitted"] = time.perf_counter()
        return self.warehouse.submit_fill(fill)

    def _coverage_rows(self, valid: ValidatedRequest, settled: list[Interval], table: pa.Table,
                       served_by: list[tuple[tuple[int, int], str]] | None, source_name: str,
                       fingerprint: str | None, recheck: bool, outcome: FillOutcome) -> list[dict[str, Any]]:
        """The coverage rows that record a committed fill: its settled, vouched-for parts not
        recorded yet (a repeat of a range already recorded adds no snapshot; a re-check records
        them all again, with the source's new fingerprint), one per source that served."""
        assert valid.interval is not None
        ticker = str(valid.ticker)
        todo = settled
        if not recheck:
            todo = subtract_from_all(settled, outcome.covered)
        parts = _coverage_parts(todo, valid.interval, outcome.stored, table, served_by, source_name,
                                valid.period_seconds)
        if parts and fingerprint is not None:
            self._note_fingerprinted(ticker, valid.period_seconds)
        return [coverage_row(ticker, valid.period_seconds, part.interval, part.row_count, valid.request_id,
                             source=part.source, fingerprint=fingerprint) for part in parts]

    def _check_unchanged(self, ticker: str, period_seconds: int, interval: Interval, table: pa.Table,
                         source_name: str) -> None:
        """Refuse an answer that gives other values for a candle already stored (a file edited
        after its candles were stored): stored candles are never replaced behind a reader."""
        stored, _ = self.warehouse.read_candles(ticker, period_seconds, interval)
        if not stored.num_rows:
            return
        fresh = table.sort_by("timestamp").to_pandas().set_index("timestamp")
        old = stored.to_pandas().drop_duplicates("timestamp").set_index("timestamp")
        common = old.index.intersection(fresh.index)
        if common.empty:
            return
        columns = [c for c in VALUE_COLUMNS if c in fresh.columns and c in old.columns]
        empty = np.iinfo(np.int64).min  # an empty value equals only an empty value
        a = old.loc[common, columns].astype("Int64").fillna(empty)
        b = fresh.loc[common, columns].astype("Int64").fillna(empty)
        differs = a != b
        rows = differs.any(axis=1)
        if not rows.any():
            return
        at = int(rows[rows].index[0])
        column = next(c for c in columns if bool(differs.loc[at, c]))
        market = self.warehouse.read_market(ticker)

        def shown(value: object) -> str:
            if value is None or pd.isna(value):
                return "empty"
            number = int(str(value))
            return str(market.to_decimal(column, number)) if market is not None else str(number)

        raise StoredCandleChangedError(
            f"{ticker}: {source_name} now gives another {period_label(period_seconds)} candle at {_iso(at)} than the "
            f"one stored ({column} {shown(old.loc[at, column])} stored, {shown(fresh.loc[at, column])} now; "
            f"{int(rows.sum())} candles differ). Stored candles are never replaced silently: to take the new values run "
            f"`dexorder-feeds forget {ticker} --period {period_label(period_seconds)} --start {_iso(at)} "
            f"--end {_iso(at)} --candles` (or forget(..., candles=True) in Python) and fetch again; to keep the "
            "stored ones, restore the source's data")

    def _note_fingerprinted(self, ticker: str, period_seconds: int) -> None:
        with self._fingerprinted_lock:
            if self._fingerprinted is not None:
                self._fingerprinted.add((ticker, period_seconds))

    def revalidate_all(self) -> int:
        """:meth:`revalidate` every ticker and period whose coverage carries a fingerprint
        (found once in the warehouse, then kept up to date by this historian's own ingests). A
        relay runs it every few seconds. Returns the ranges re-checked; an error of one ticker
        is raised after the others were checked."""
        with self._fingerprinted_lock:
            known = self._fingerprinted
        if known is None:
            rows = self.warehouse.read_coverage_table()
            found = {(str(t), int(p)) for t, p, f in zip(rows["ticker"].to_pylist(), rows["period_seconds"].to_pylist(),
                                                        rows["fingerprint"].to_pylist()) if f}
            with self._fingerprinted_lock:
                if self._fingerprinted is None:
                    self._fingerprinted = found
                else:
                    self._fingerprinted |= found
        with self._fingerprinted_lock:
            pairs = sorted(self._fingerprinted or ())
        rechecked, failure = 0, None
        for ticker, period in pairs:  # finer periods first (sorted): coarser ones may be built from them
            try:
                rechecked += self.revalidate(ticker, period)
            except DexOrderError as exc:
                failure = failure or exc
        if failure is not None:
            raise failure
        return rechecked

    def revalidate(self, ticker: str, period_seconds: int | None = None) -> int:
        """Re-check what a source backs whose data changed since it was ingested.

        Coverage rows carry the fingerprint of what the source held when they were written
        (:meth:`IngestSource.fingerprint`, a files source's files). When the source's
        fingerprint for ``ticker`` differs now, every such range (of ``period_seconds``, or of
        every period) is asked of the source again (new candles stored, a changed stored candle
        refused with :class:`StoredCandleChangedError`), then the rows with the old fingerprint
        are dropped. Returns the ranges re-checked (0: all still current, after a stat of the
        files and a memoised coverage read). Blocking.
        """
        name = str(parse_ticker(ticker))
        rows = self.warehouse.read_ledger(name, period_seconds)
        if not rows.num_rows or rows["fingerprint"].null_count == rows.num_rows:
            return 0
        with self._fingerprinted_lock:
            lock = self._recheck_locks.setdefault(name, threading.Lock())
        with lock:  # a concurrent fetch waits, then finds the ranges re-checked
            return self._revalidate(name, period_seconds)

    def _revalidate(self, name: str, period_seconds: int | None) -> int:
        rows = self.warehouse.read_ledger(name, period_seconds)
        parsed = parse_ticker(name)
        try:
            current = self.sources.source_for(parsed).fingerprint(parsed)
        except UnknownSourceError as exc:  # the source is gone (its directory): keep serving what is stored
            log.warning("%s: cannot check whether its source data changed: %s", name, exc)
            return 0
        if current is None:  # the source cannot tell now: nothing to compare with
            return 0
        stale: dict[int, list[Interval]] = {}
        for period, start, stop, fingerprint in zip(*(rows[c].to_pylist() for c in
                                                      ("period_seconds", "start_time", "end_time", "fingerprint"))):
            if fingerprint is not None and fingerprint != current:
                stale.setdefault(int(period), []).append((int(start), int(stop)))
        if not stale:
            return 0
        rechecked = 0
        for period in sorted(stale):  # finer periods first: coarser ones may be built from them
            for start, stop in merge_intervals(stale[period]):
                for piece_start, piece_stop in split_interval((start, stop), period, self.max_range_candles):
                    request_id = f"recheck-{name}-{period}-{piece_start}"
                    valid = ValidatedRequest(request_id, parsed, period, (piece_start, piece_stop))
                    self._ingest(valid, {}, recheck=True).result()
                    rechecked += 1
        dropped = self.warehouse.committer.submit(
            drop_stale_coverage, self.warehouse, name, current, period_seconds).result()
        log.info("%s: the source's data changed; re-checked %d ranges, dropped %d outdated coverage rows",
                 name, rechecked, dropped)
        return rechecked

    def _stored_finer(self, valid: ValidatedRequest) -> tuple[int, SourceCandles] | None:
        """Stored candles of the coarsest finer period dividing the request's, when the warehouse
        holds that period for the whole interval (else None: the source is asked as usual)."""
        assert valid.interval is not None
        ticker = str(valid.ticker)
        market = self.warehouse.read_market(ticker)
        if market is None:
            return None
        periods = set(self.warehouse.read_coverage_table(ticker)["period_seconds"].to_pylist())
        for fine in sorted((p for p in periods if p < valid.period_seconds and divides(p, valid.period_seconds)),
                           reverse=True):
            if subtract_intervals(valid.interval, self.warehouse.read_coverage(ticker, fine)):
                continue
            table, _ = self.warehouse.read_candles(ticker, fine, valid.interval)
            frame = table.select(["timestamp", *VALUE_COLUMNS]).to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)
            frame["timestamp"] = frame["timestamp"].astype(np.int64)
            return fine, SourceCandles(market, frame, scaled=True)
        return None

    @staticmethod
    def _fetch_period(source: IngestSource, valid: ValidatedRequest) -> int:
        """The period to ask ``source`` for: the request's, or a finer one it holds that divides it."""
        offered = source.periods(valid.ticker)
        if offered is None or valid.period_seconds in offered:
            return valid.period_seconds
        finer = coarsest_divisor(valid.period_seconds, offered)
        return valid.period_seconds if finer is None else finer

    @staticmethod
    def _in_interval(frame: pd.DataFrame, valid: ValidatedRequest, period: int) -> pd.DataFrame:
        """The source's candles inside the interval, checked for alignment and duplicates."""
        assert valid.interval is not None
        missing = [c for c in ("timestamp", *PRICE_COLUMNS, "volume") if c not in frame.columns]
        if missing:
            raise DataError(f"{valid.ticker}: the source returned no {', '.join(missing)} column")
        ts = frame["timestamp"].to_numpy(dtype=np.int64)
        keep = (ts >= valid.interval[0]) & (ts < valid.interval[1])
        frame = frame.loc[keep]
        ts = ts[keep]
        misaligned = ~is_aligned(period, ts)
        if misaligned.any():
            bad = int(ts[np.argmax(misaligned)])
            raise DataError(f"{valid.ticker}: the source returned a candle at {format_micros(bad)}, not where a "
                            f"{period_label(period)} period opens")
        order = np.argsort(ts, kind="stable")
        if np.any(np.diff(ts[order]) == 0):
            frame = frame.drop_duplicates("timestamp", keep="last")
        return frame.reset_index(drop=True)

    @staticmethod
    def _to_arrow(ticker: str, period_seconds: int, scaled: pd.DataFrame) -> pa.Table:
        schema = candle_arrow_schema()
        n = len(scaled)
        columns = {
            "ticker": pa.array([ticker] * n, type=schema.field("ticker").type),
            "period_seconds": pa.array(np.full(n, period_seconds, dtype=np.int64)),
        }
        for name in schema.names[2:]:
            if name in scaled.columns:
                columns[name] = pa.array(scaled[name], type=pa.int64(), from_pandas=True)
            else:
                columns[name] = pa.nulls(n, type=pa.int64())
        return pa.table(columns, schema=schema)

    def close(self) -> None:
        self.sources.close()
