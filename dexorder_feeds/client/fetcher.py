"""The core fetcher: cache check, gap detection, gap fill, re-read – each step a pluggy hook.

One :class:`Fetcher` belongs to one client and one event loop. Concurrent fetches through it
share gap fills: a range another fetch is already filling is awaited, not asked for again.

A lost notification is not a lost fetch: when a gap fill fails with ``TimeoutError``
(:class:`~dexorder_feeds.vocabulary.errors.RequestTimeoutError`) or ``ConnectionError``
(:class:`~dexorder_feeds.vocabulary.errors.RelayUnavailableError`), the fetcher reads the warehouse once
more. If the ranges it asked for are stored by now (the historian committed but its notification
never arrived: the relay died or restarted in between), it logs a warning and returns the
candles; only if something is still missing does the error reach the caller. The warehouse is
the truth; the notification is only the fast path to it.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
import dataclasses
import inspect
import logging
from dataclasses import dataclass

import pandas as pd
import pluggy

from ..vocabulary import errors
from ..config import Settings
from ..events import emit
from .iceberg_client import IcebergClient, candles_to_frame
from ..vocabulary.quality import quality_report
from ..vocabulary.ranges import Interval, split_interval, subtract_intervals, to_inclusive
from ..vocabulary.requests import CacheRead, FetchRequest, closed_period_stop
from .transport import HistoryTransport
from ..vocabulary.fingerprint import content_hash, table_content_hash
from ..vocabulary.identity import WarehouseIdentity, check_same_warehouse
from ..vocabulary.times import format_micros as _iso

__all__ = ["Fetcher", "FetchContext", "MAX_CANDLES_PER_REQUEST"]

log = logging.getLogger(__name__)

# Big gaps are split into requests of at most this many candles: the historian works on them
# in parallel, progress is visible, and each stays well inside a request timeout.
MAX_CANDLES_PER_REQUEST = 100_000
_HASHES_KEPT = 4096
_HASH_IN_THREAD_ROWS = 20_000  # hashing more candles than this would block the event loop for ~1 ms


@dataclass(frozen=True)
class FetchContext:
    """What pipeline-step hook implementations get as ``context``: the client's ``iceberg``
    (:class:`IcebergClient`, its ``warehouse``), its ``history`` transport (the relay or the
    in-process historian), its ``settings``, the plugin manager's ``hook`` relay and the
    ``request_timeout`` (s) of the fetch."""

    iceberg: IcebergClient
    history: HistoryTransport
    settings: Settings
    hook: pluggy.HookRelay
    request_timeout: float


def _check_size(request: FetchRequest, limit: int) -> None:
    """Refuse at once a fetch of more than ``limit`` candles (counted up to now: no later
    candle exists), before anything is read or asked for."""
    if request.interval is None:
        return
    stop = min(request.interval[1], closed_period_stop(request.period_seconds) + request.period_us)
    count = max(stop - request.interval[0], 0) // request.period_us
    if count > limit:
        raise errors.InvalidTimeRangeError(
            f"{request.ticker} {request.period_seconds}s from {_iso(request.start_time)} to {_iso(request.end_time)} "
            f"is up to {count:,} candles, more than the limit of {limit:,} per fetch (max_candles). Fetch it in "
            "pieces (a loop over shorter ranges, or the streaming iterator dexorder_feeds.candles), or raise the "
            "limit: DEXORDER_MAX_CANDLES, max_candles in the config file, or resolve_settings(max_candles=...)")


def _expect_new_commits(context: FetchContext) -> None:
    """A gap fill just committed (maybe in another process): the next read checks the catalog
    even where reads may otherwise be stale by a bound (REST catalogs)."""
    reader = getattr(getattr(context.iceberg, "warehouse", None), "reader", None)
    if reader is not None:
        reader.invalidate()


class Fetcher:
    """Runs the fetch steps through the plugin hooks."""

    def __init__(self, context: FetchContext) -> None:
        self.context = context
        self._in_flight: dict[tuple[str, int], list[tuple[Interval, asyncio.Future[None]]]] = {}
        self._decimals: dict[str, tuple[int, int]] = {}
        self._hashes: OrderedDict[tuple, str] = OrderedDict()
        self._verified: tuple[WarehouseIdentity, WarehouseIdentity] | None = None  # (relay's, read) found equal

    @staticmethod
    def _revalidate_and_read(context: FetchContext, request: FetchRequest) -> CacheRead:
        """The first read of a fetch: the historian's re-check of changed source data, then the
        cache (one worker-thread hop for both)."""
        if request.as_of is None and request.interval is not None:
            context.hook.dexorder_revalidate_cache(context=context, request=request)
        return context.hook.dexorder_read_cache(context=context, request=request)

    async def _read(self, context: FetchContext, request: FetchRequest) -> CacheRead:
        return await asyncio.to_thread(context.hook.dexorder_read_cache, context=context, request=request)

    async def fetch(self, request: FetchRequest, request_timeout: float | None = None) -> pd.DataFrame:
        """The candles of ``request``: cached ones plus whatever the gap fill added."""
        context = self.context
        if request_timeout is not None:
            context = dataclasses.replace(context, request_timeout=request_timeout)
        hook = context.hook
        _check_size(request, context.settings.max_candles)
        cached = await asyncio.to_thread(self._revalidate_and_read, context, request)
        await self._check_warehouse(context)
        missing = hook.dexorder_find_missing_ranges(context=context, request=request, cached=cached) or []
        emit("dexorder_cache_checked", hooks=hook, request=request, cached_rows=cached.num_rows,
             missing_ranges=to_inclusive(missing, request.period_us))
        # Only closed periods can be filled: the open one is reported missing, never requested.
        closed_stop = closed_period_stop(request.period_seconds, cached.snapshot_time)
        fillable = [(s, min(e, closed_stop)) for s, e in missing if min(e, closed_stop) > s]
        if fillable and request.as_of is not None:
            shown = ", ".join(f"{_iso(s)} to {_iso(e - request.period_us)}" for s, e in fillable[:5])
            raise errors.MissingAtSnapshotError(
                f"{request.ticker} {request.period_seconds}s as of {request.as_of!r}: the snapshot holds no candles "
                f"and no ingested range for {shown}{' …' if len(fillable) > 5 else ''}; a read as_of never fills "
                "gaps: narrow the range to what was fetched then, or fetch without as_of")
        if fillable:
            try:
                await self._fill(context, request, fillable)
            except (errors.RequestTimeoutError, errors.RelayUnavailableError) as exc:
                cached = await self._recover(context, request, fillable, exc)
            else:
                await self._check_warehouse(context)  # the relay may have named another warehouse since
                _expect_new_commits(context)
                cached = await self._read(context, request)
        frame = candles_to_frame(cached.table)
        frame = hook.dexorder_process_result(context=context, request=request, frame=frame)
        decimals = self._decimals.get(request.ticker)
        if decimals is None:
            market = await asyncio.to_thread(context.iceberg.market_info, request.ticker)
            decimals = (market.price_decimals, market.volume_decimals) if market else (0, 0)
            if market is not None:  # stored decimals never change: first write wins
                self._decimals[request.ticker] = decimals
        # One snapshot and one range always hold the same candles: their hash is computed once.
        key = (cached.snapshot_id, request.ticker, request.period_seconds, request.interval, len(frame), decimals)
        digest = self._hashes.get(key) if cached.snapshot_id is not None else None
        if digest is None:
            if len(frame) >= _HASH_IN_THREAD_ROWS:
                digest = await asyncio.to_thread(self._content_hash, request, cached, frame, decimals)
            else:
                digest = self._content_hash(request, cached, frame, decimals)
            if cached.snapshot_id is not None and len(frame) == cached.num_rows:
                self._hashes[key] = digest
                if len(self._hashes) > _HASHES_KEPT:
                    self._hashes.popitem(last=False)
        else:
            self._hashes.move_to_end(key)
        frame.attrs.update(snapshot_id=cached.snapshot_id, ticker=request.ticker, period_seconds=request.period_seconds,
                           content_hash=digest)
        if request.as_of is not None:
            frame.attrs["as_of"] = request.as_of
        frame.attrs["quality"] = quality_report(request.ticker, request.period_seconds, request.interval,
                                                frame["timestamp"].to_numpy(), cached.covered,
                                                now=cached.snapshot_time, served=cached.served)
        return frame

    async def _check_warehouse(self, context: FetchContext) -> None:
        """Raise ``WarehouseMismatchError`` if the historian writes another warehouse than the
        one read here (a client given the relay's endpoints but not its catalog would otherwise
        read nothing back, silently). The uuids compared are the ones the read just loaded and the
        relay's last reply or notification named: no round trip. A relay that names no warehouse
        (an older version) and the embedded historian (the same warehouse) are not checked."""
        relay = context.history.warehouse_identity
        if relay is None:
            return
        warehouse = context.iceberg.warehouse
        local = warehouse.identity(load=False)
        if not (local.ohlc_uuid and local.coverage_uuid):  # a plugin read the cache its own way
            local = await asyncio.to_thread(warehouse.identity)
        verified = self._verified
        if verified is not None and verified[0] is relay and verified[1] is local:
            return  # the usual case: both the very objects already compared
        check_same_warehouse(relay, local, relay_endpoint=getattr(context.history, "relay_endpoint", None))
        self._verified = (relay, local)

    @staticmethod
    def _content_hash(request: FetchRequest, cached: CacheRead, frame: pd.DataFrame, decimals: tuple[int, int]) -> str:
        """The content hash of the candles read: from the Arrow table when the frame holds exactly
        its rows (the same value, without pandas' per-column cost), else from the frame."""
        if len(frame) == cached.num_rows:
            digest = table_content_hash(cached.table, request.ticker, request.period_seconds, *decimals)
            if digest is not None:
                return digest
        return content_hash(frame, request.ticker, request.period_seconds, *decimals)

    async def _recover(self, context: FetchContext, request: FetchRequest, asked: list[Interval],
                       error: Exception) -> CacheRead:
        """After a failed fill: the warehouse read again, if it now holds every range asked for."""
        _expect_new_commits(context)
        cached = await self._read(context, request)
        missing = context.hook.dexorder_find_missing_ranges(context=context, request=request, cached=cached) or []
        if any(s < e2 and s2 < e for s, e in asked for s2, e2 in missing):
            raise error
        log.warning("%s %ss: the gap fill reported %s: %s; but the warehouse holds every range asked for, "
                    "so the notification was lost: returning the stored candles", request.ticker,
                    request.period_seconds, type(error).__name__, error)
        return cached

    async def _fill(self, context: FetchContext, request: FetchRequest, missing: list[Interval]) -> None:
        key = (request.ticker, request.period_seconds)
        registry = self._in_flight.setdefault(key, [])
        others = [(iv, fut) for iv, fut in registry if any(iv[0] < e and s < iv[1] for s, e in missing)]
        mine: list[Interval] = []
        for interval in missing:
            mine += subtract_intervals(interval, [iv for iv, _ in others])
        pieces = [piece for interval in mine
                  for piece in split_interval(interval, request.period_seconds, MAX_CANDLES_PER_REQUEST)]
        loop = asyncio.get_running_loop()
        own = [(piece, loop.create_future()) for piece in pieces]
        registry.extend(own)
        try:
            if pieces:
                outcome = context.hook.dexorder_fill_gaps(context=context, request=request, ranges=pieces)
                if inspect.isawaitable(outcome):
                    outcome = await outcome
                for _, future in own:
                    future.set_result(None)
            if others:
                outcomes = await asyncio.gather(*(asyncio.shield(fut) for _, fut in others), return_exceptions=True)
                failed = [iv for (iv, _), outcome in zip(others, outcomes) if isinstance(outcome, BaseException)]
                if failed:
                    # Their owner failed or was cancelled (its own timeout, its caller gave up):
                    # that is no verdict on this fetch, which fills the part it needs itself.
                    retry = [(max(s, fs), min(e, fe)) for fs, fe in failed for s, e in missing if fs < e and s < fe]
                    await self._fill(context, request, retry)
        except BaseException as exc:
            for _, future in own:
                if not future.done():
                    future.set_exception(exc if isinstance(exc, Exception) else asyncio.CancelledError())
                    future.exception()  # mark retrieved: the waiters re-raise it themselves
            raise
        finally:
            for item in own:
                registry.remove(item)
            if not registry:
                self._in_flight.pop(key, None)
