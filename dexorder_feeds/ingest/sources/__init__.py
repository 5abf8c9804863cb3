"""Ingest sources: where the historian gets candles from.

A source is a small :class:`IngestSource` with one method. Sources are registered by plugins
(hook ``dexorder_register_sources``) under a name, and picked per exchange by a spec
``NAME[:ARGUMENT]``: ``sim``, ``files:/path/to/dir``, ``ccxt:binance``. Defaults: ``SIM`` →
``sim``; any other exchange ``X`` → ``ccxt:x``. ``--source BINANCE=files:/data`` overrides.

A spec may list several sources in order, a fallback chain: ``files:/data,ccxt:binance`` asks
the files first and the exchange for what they lack (:class:`SourceChain`). A comma starts a
new member only where a registered source name follows it (``ccxt``, ``ccxt:…``); any other
comma belongs to the argument before it, so ``files:/data/a,b`` is one directory.
"""

from __future__ import annotations

import abc
import logging
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ...vocabulary.errors import RequestFailedError, UnknownSourceError
from ...vocabulary.markets import VALUE_COLUMNS, MarketInfo, scale_to_integers
from ...vocabulary.ranges import (
    Interval,
    intersect_intervals,
    intervals_from_timestamps,
    merge_intervals,
    subtract_from_all,
    timestamps_inside,
)
from ...vocabulary.tickers import Ticker

__all__ = ["IngestSource", "SourceCandles", "SourceChain", "SourceRegistry", "join_spec_list", "parse_source_specs",
           "split_chain"]

log = logging.getLogger(__name__)

#: A chain asks a member once per part still lacking candles, up to this many parts; with more
#: (a sparse file), it asks once for the span from the first part to the last.
MAX_CHAIN_PARTS = 8


@dataclass
class SourceCandles:
    """What a source returns for one range.

    ``frame`` has an integer ``timestamp`` column (µs, period start) and the value columns
    ``open, high, low, close, volume`` plus, where known, ``buy_vol, sell_vol, open_interest``.
    Values are in natural units (float, int, Decimal or str) unless ``scaled`` is true, in which
    case they are already integers with ``market``'s decimals. ``market`` gives the decimals the
    values need (the source's precision).

    ``checked`` lists the parts of the asked range ``[start, stop)`` the source answered for
    positively (µs intervals, sorted, disjoint); ``None`` means all of it. Only checked parts may
    be remembered as empty in the coverage ledger: a page that started late, a page that was cut
    short or skipped, or an answer about other times leaves the rest unknown, to be asked again.

    ``served_by`` says which source answered which part (``((start, stop), source_name)``), for a
    source that delegates (a fallback chain); ``None`` means this source answered the whole range.
    """

    market: MarketInfo
    frame: pd.DataFrame
    scaled: bool = False
    checked: list[tuple[int, int]] | None = None
    served_by: list[tuple[tuple[int, int], str]] | None = None


class IngestSource(abc.ABC):
    """Gives candles for a ticker, period and range. Must be safe to call from several threads."""

    name: str = "source"

    @abc.abstractmethod
    def fetch_candles(self, ticker: Ticker, period_seconds: int, start: int, stop: int) -> SourceCandles:
        """Candles with ``start <= timestamp < stop`` (µs, period-aligned, closed periods only)."""

    def periods(self, ticker: Ticker) -> list[int] | None:
        """The periods this source holds for ``ticker`` as given, or None if it serves any period.

        When a requested period is not listed, the historian asks for the coarsest listed period
        that divides it exactly and aggregates (see :mod:`dexorder_feeds.vocabulary.aggregate`).
        """
        return None

    local: bool = False
    """True when a fetch is work for this process's CPU alone, with no network to wait on (the
    simulator, files): the historian then runs at most as many such fetches at once as the
    machine has cores, however many workers it has (more would only take the interpreter lock
    from its committer). Network sources leave it False: more workers overlap their waits."""

    settle: float | None = None
    """Seconds after a period closes before this source's answer for it is final (see
    :meth:`settle_seconds`); None: the historian's default."""

    def settle_seconds(self, period_seconds: int) -> float | None:
        """How long after a period closes an empty answer for it may still change.

        Inside this horizon an empty answer is never remembered as checked-empty (the periods
        stay unknown and are asked again); candles the source gives are stored at once. None
        (the default, from :attr:`settle`) leaves it to the historian: ``max(5 minutes, one
        period)`` unless configured (``settle_seconds`` setting); a static source returns 0.
        """
        return self.settle

    def fingerprint(self, ticker: Ticker) -> str | None:
        """A short text that changes when what this source holds for ``ticker`` changes, or
        None when it cannot tell (an exchange).

        Coverage recorded from an answer carries the fingerprint taken before it; when the
        fingerprint differs later, the historian re-checks those ranges (a file was added,
        changed or appended). Called before each fetch: keep it cheap (``stat`` calls).
        """
        return None

    def close(self) -> None:
        """Release connections or files (optional)."""


SourceFactory = Callable[[str | None], IngestSource]

_EXCHANGE_ENTRY = re.compile(r"^\s*[A-Za-z][A-Za-z0-9_]{0,31}\s*=")


def parse_source_specs(specs: Mapping[str, str] | list[str] | None) -> dict[str, str]:
    """``["BINANCE=files:/d", …]`` or a mapping to ``{"BINANCE": "files:/d"}`` (exchange upper-cased)."""
    if not specs:
        return {}
    if isinstance(specs, Mapping):
        return {k.upper(): v for k, v in specs.items()}
    out: dict[str, str] = {}
    for item in specs:
        exchange, sep, spec = item.partition("=")
        if not sep or not exchange.strip() or not spec.strip():
            raise UnknownSourceError(f"source option {item!r} must look like EXCHANGE=SPEC, e.g. BINANCE=files:/data")
        out[exchange.strip().upper()] = spec.strip()
    return out


def join_spec_list(items: Iterable[str]) -> list[str]:
    """Comma-split ``EXCHANGE=SPEC`` entries with fallback chains put back together.

    In ``BINANCE=files:/d,ccxt:binance,KRAKEN=ccxt:kraken`` (``DEXORDER_SOURCES``), a piece
    that does not start with ``EXCHANGE=`` continues the chain of the entry before it.
    """
    out: list[str] = []
    for item in items:
        if not item.strip():
            continue
        if out and not _EXCHANGE_ENTRY.match(item):
            out[-1] = f"{out[-1]},{item.strip()}"
        else:
            out.append(item.strip())
    return out


def split_chain(spec: str, names: Iterable[str]) -> list[str]:
    """The member specs of a fallback chain (one member for a plain spec).

    A comma starts a new member only when a source name in ``names`` follows it (alone or
    before ``:``); any other comma is part of the argument before it.
    """
    known = set(names)
    members: list[str] = []
    for piece in spec.split(","):
        if members and piece.strip().partition(":")[0] not in known:
            members[-1] = f"{members[-1]},{piece}"
        else:
            members.append(piece)
    return [m.strip() for m in members if m.strip()]


def _member_names(spec: str, names: Iterable[str]) -> list[str]:
    """The source names a spec uses, including a mistyped one a chain split would have glued to
    the argument before it (``files:/d,ccxtt:binance``: ``ccxtt``)."""
    found: list[str] = []
    for member in split_chain(spec, names) or [spec]:
        head, *rest = member.split(",")
        found.append(head.partition(":")[0].strip())
        found.extend(piece.strip().partition(":")[0] for piece in rest
                     if re.match(r"^\s*[A-Za-z][\w-]*(:|\s*$)", piece) and (":" in piece or ":" not in member))
    return found


class SourceChain(IngestSource):
    """A fallback chain (``files:/data,ccxt:binance``): each source is asked, in order, for
    the parts of the range the ones before it returned no candles for.

    - **Candles**: the first source with a candle for a period serves it; later ones are
      asked only about the parts still without candles (once per part, or once for their
      span when there are more than :data:`MAX_CHAIN_PARTS`).
    - **checked**: a period holding a candle is answered; a period without one is answered
      only when *every* source asked about it vouched for it (``checked``). A file that lacks
      a day while the exchange could not be asked leaves that day unknown, to be asked again.
    - **served_by**: per part of the range, the spec of the source whose answer stands (the
      one that gave its candles, or for an empty part the last one asked).
    - **periods**: the periods every source that has candles for the ticker holds (so the
      historian asks a period all of them can give and aggregates), else all of them; a
      source that lacks the asked period is skipped.
    - **precision**: the finest decimals of the sources that gave candles; values of the
      others are widened exactly, so nothing loses precision.
    - **failures**: a source that cannot be reached or refuses (:class:`RequestFailedError`)
      is logged and passed over: what it was asked stays unknown unless a later source answers.
      When no source answered anything, the first failure is raised. Other errors (a malformed
      file, impossible candles) are raised at once.
    """

    name = "chain"

    def __init__(self, members: list[tuple[str, IngestSource]]) -> None:
        if not members:
            raise UnknownSourceError("a source chain needs at least one source")
        self.members = list(members)
        self.name = ",".join(source.name for _, source in self.members)
        self.local = all(source.local for _, source in self.members)

    def __repr__(self) -> str:
        return f"SourceChain({[spec for spec, _ in self.members]!r})"

    def settle_seconds(self, period_seconds: int) -> float | None:
        """The longest horizon of the members; None (the historian's default) when any member
        leaves it to the default: a chain's empty answer is final only when every member's is."""
        horizons = [source.settle_seconds(period_seconds) for _, source in self.members]
        if any(h is None for h in horizons):
            return None
        return max(h for h in horizons if h is not None)

    def fingerprint(self, ticker: Ticker) -> str | None:
        """The members' fingerprints together (None when no member can tell): a file added,
        changed or appended behind a chain re-checks what the chain recorded, as for files alone."""
        known = [(spec, source.fingerprint(ticker)) for spec, source in self.members]
        parts = [f"{spec}={fp}" for spec, fp in known if fp is not None]
        return "|".join(parts) if parts else None

    def periods(self, ticker: Ticker) -> list[int] | None:
        offered = [source.periods(ticker) for _, source in self.members]
        held = [set(p) for p in offered if p]
        if not held:
            return None if any(p is None for p in offered) else []
        common = set.intersection(*held)
        return sorted(common or set.union(*held))

    def fetch_candles(self, ticker: Ticker, period_seconds: int, start: int, stop: int) -> SourceCandles:
        period_us = period_seconds * 1_000_000
        lacking: list[Interval] = [(start, stop)]
        answers: list[tuple[SourceCandles, pd.DataFrame]] = []
        first: SourceCandles | None = None
        served: list[tuple[Interval, str]] = []
        candle_parts: list[Interval] = []
        vouched: list[tuple[str, list[Interval]]] = []  # per source asked: what it vouched for
        failures: list[RequestFailedError] = []
        for spec, source in self.members:
            if not lacking:
                break
            offered = source.periods(ticker)
            if offered is not None and period_seconds not in offered:
                log.debug("%s: %s holds no %ss candles for %s; asking the next source", self, spec,
                          period_seconds, ticker)
                continue
            asks = lacking if len(lacking) <= MAX_CHAIN_PARTS else [(lacking[0][0], lacking[-1][1])]
            checked: list[Interval] = []
            stamps: list[np.ndarray] = []
            for a, b in asks:
                try:
                    got = source.fetch_candles(ticker, period_seconds, a, b)
                except RequestFailedError as exc:  # unreachable or refused: the next source is asked
                    log.warning("%s: %s failed for %s [%d, %d), which stays unknown unless a later source "
                                "answers: %s", self, spec, ticker, a, b, exc)
                    failures.append(exc)
                    continue
                first = first or got
                checked.extend([(a, b)] if got.checked is None else intersect_intervals(got.checked, [(a, b)]))
                ts = got.frame["timestamp"].to_numpy(dtype=np.int64)
                keep = timestamps_inside(ts, lacking)
                if keep.any():
                    frame = got.frame.loc[keep].reset_index(drop=True)
                    answers.append((got, frame))
                    stamps.append(ts[keep])
            covered = intervals_from_timestamps(np.concatenate(stamps), period_us) if stamps else []
            covered = intersect_intervals(covered, lacking)
            served.extend((part, spec) for part in covered)
            candle_parts.extend(covered)
            vouched.append((spec, intersect_intervals(checked, lacking)))
            lacking = subtract_from_all(lacking, covered)
            log.info("%s: %s gave candles for %d part(s) of %s %ss; %d part(s) left", self, spec, len(covered),
                     ticker, period_seconds, len(lacking))
        empty: list[Interval] = lacking if vouched else []
        for _, parts in vouched:
            empty = intersect_intervals(empty, parts)
        if vouched:
            served.extend((part, vouched[-1][0]) for part in empty)
        checked_all = intersect_intervals(candle_parts + empty, [(start, stop)])
        if failures and not checked_all:
            raise failures[0]  # no source answered anything: say why the first could not
        market, frame, scaled = self._merge(ticker, answers, first)
        return SourceCandles(market, frame, scaled=scaled, checked=checked_all,
                             served_by=sorted(served, key=lambda item: item[0]))

    @staticmethod
    def _merge(ticker: Ticker, answers: list[tuple[SourceCandles, pd.DataFrame]],
               first: SourceCandles | None) -> tuple[MarketInfo, pd.DataFrame, bool]:
        """One frame from the sources' answers, at the finest decimals any of them gave."""
        if not answers:
            if first is not None:
                return first.market, first.frame.iloc[0:0].reset_index(drop=True), first.scaled
            return MarketInfo(str(ticker), 0, 0), pd.DataFrame({"timestamp": np.array([], dtype=np.int64)}), False
        market = MarketInfo(str(ticker), max(got.market.price_decimals for got, _ in answers),
                            max(got.market.volume_decimals for got, _ in answers))
        if not any(got.scaled for got, _ in answers):
            frames = [frame for _, frame in answers]
            scaled = False
        else:  # integers at the finest decimals: natural values scaled, integers widened exactly
            frames = []
            for got, frame in answers:
                widened = scale_to_integers(frame, market) if not got.scaled else frame.copy()
                for column in VALUE_COLUMNS:
                    if column in widened.columns:  # nullable integers: a column one source lacks
                        shift = 0 if not got.scaled else market.decimals_for(column) - got.market.decimals_for(column)
                        widened[column] = widened[column].astype("Int64") * 10**shift  # stays exact, not float
                frames.append(widened)
            scaled = True
        merged = pd.concat(frames, ignore_index=True, sort=False)
        merged = merged.drop_duplicates("timestamp", keep="first").sort_values("timestamp", kind="stable")
        return market, merged.reset_index(drop=True), scaled


class SourceRegistry:
    """Picks (and caches) the ingest source for a ticker's exchange."""

    def __init__(self, specs: Mapping[str, str] | None = None) -> None:
        from ...plugins import get_plugin_manager

        self._specs = {"SIM": "sim", **{k.upper(): v for k, v in (specs or {}).items()}}
        self._factories: dict[str, SourceFactory] = {}
        get_plugin_manager().hook.dexorder_register_sources(register=self._register)
        for exchange, spec in self._specs.items():
            for name in _member_names(spec, self._factories):
                if name not in self._factories:
                    raise UnknownSourceError(
                        f"source {spec!r} for {exchange} names unknown source {name!r}; "
                        f"known sources: {', '.join(sorted(self._factories))}"
                    )
        self._sources: dict[str, IngestSource] = {}
        self._chains: dict[str, SourceChain] = {}
        self._lock = threading.Lock()

    def _register(self, name: str, factory: SourceFactory) -> None:
        self._factories[name] = factory

    def spec_for(self, exchange: str) -> str:
        """The source spec serving ``exchange``."""
        return self._specs.get(exchange, f"ccxt:{exchange.lower()}")

    def source_for(self, ticker: Ticker) -> IngestSource:
        """The source serving ``ticker``'s exchange; raises :class:`UnknownSourceError`."""
        spec = self.spec_for(ticker.exchange)
        with self._lock:
            members = split_chain(spec, self._factories)
            if len(members) <= 1:
                return self._build(spec, ticker)
            chain = self._chains.get(spec)
            if chain is None:
                chain = SourceChain([(member, self._build(member, ticker)) for member in members])
                self._chains[spec] = chain
            return chain

    def _build(self, spec: str, ticker: Ticker) -> IngestSource:
        """The (cached) source for one plain spec; the caller holds the lock."""
        source = self._sources.get(spec)
        if source is None:
            name, _, argument = spec.partition(":")
            factory = self._factories.get(name.strip())
            if factory is None:
                raise UnknownSourceError(
                    f"no ingest source {name!r} for exchange {ticker.exchange}; "
                    f"configure one with --source {ticker.exchange}=SPEC"
                )
            source = factory(argument or None)
            self._sources[spec] = source
        return source

    def close(self) -> None:
        with self._lock:
            for source in self._sources.values():
                source.close()
            self._sources.clear()
            self._chains.clear()
