"""Ingest sources: where the historian gets candles from.

A source is a small :class:`IngestSource` with one method. Sources are registered by plugins
(hook ``dexorder_register_sources``) under a name, and picked per exchange by a spec
``NAME[:ARGUMENT]``: ``sim``, ``files:/path/to/dir``, ``ccxt:binance``. Defaults: ``SIM`` →
``sim``; any other exchange ``X`` → ``ccxt:x``. ``--source BINANCE=files:/data`` overrides.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import pandas as pd

from ...vocabulary.errors import UnknownSourceError
from ...vocabulary.markets import MarketInfo
from ...vocabulary.tickers import Ticker

__all__ = ["IngestSource", "SourceCandles", "SourceRegistry", "parse_source_specs"]


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


class SourceRegistry:
    """Picks (and caches) the ingest source for a ticker's exchange."""

    def __init__(self, specs: Mapping[str, str] | None = None) -> None:
        from ...plugins import get_plugin_manager

        self._specs = {"SIM": "sim", **{k.upper(): v for k, v in (specs or {}).items()}}
        self._factories: dict[str, SourceFactory] = {}
        get_plugin_manager().hook.dexorder_register_sources(register=self._register)
        for exchange, spec in self._specs.items():
            name = spec.partition(":")[0]
            if name not in self._factories:
                raise UnknownSourceError(
                    f"source {spec!r} for {exchange} names unknown source {name!r}; "
                    f"known sources: {', '.join(sorted(self._factories))}"
                )
        self._sources: dict[str, IngestSource] = {}
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
            source = self._sources.get(spec)
            if source is None:
                name, _, argument = spec.partition(":")
                factory = self._factories.get(name)
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
