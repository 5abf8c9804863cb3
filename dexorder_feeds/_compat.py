"""Import paths of 0.1 that moved in 0.2, kept for one release.

``import dexorder_feeds.fetcher`` (or any old path below) still works and warns with a
``DeprecationWarning`` naming the new path; the module it gives forwards every attribute to the
new module, so classes and functions are the very same objects. Removed in 0.3 (CHANGELOG.md).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType
from typing import Any

__all__ = ["MOVED_MODULES", "install"]

MOVED_MODULES: dict[str, str] = {
    "dexorder_feeds.errors": "dexorder_feeds.vocabulary.errors",
    "dexorder_feeds.tickers": "dexorder_feeds.vocabulary.tickers",
    "dexorder_feeds.timeconv": "dexorder_feeds.vocabulary.times",
    "dexorder_feeds.ranges": "dexorder_feeds.vocabulary.ranges",
    "dexorder_feeds.markets": "dexorder_feeds.vocabulary.markets",
    "dexorder_feeds.catalog": "dexorder_feeds.storage.catalog",
    "dexorder_feeds.warehouse": "dexorder_feeds.storage.warehouse",
    "dexorder_feeds.maintenance": "dexorder_feeds.storage.maintenance",
    "dexorder_feeds.table_reader": "dexorder_feeds.storage.reader",
    "dexorder_feeds.server": "dexorder_feeds.ingest",
    "dexorder_feeds.server.historian": "dexorder_feeds.ingest.historian",
    "dexorder_feeds.server.sources": "dexorder_feeds.ingest.sources",
    "dexorder_feeds.server.sources.sim": "dexorder_feeds.ingest.sources.sim",
    "dexorder_feeds.server.sources.files": "dexorder_feeds.ingest.sources.files",
    "dexorder_feeds.server.sources.ccxt_source": "dexorder_feeds.ingest.sources.ccxt_source",
    "dexorder_feeds.server.relay": "dexorder_feeds.relay",
    "dexorder_feeds.ohlc_client": "dexorder_feeds.client.ohlc_client",
    "dexorder_feeds.fetcher": "dexorder_feeds.client.fetcher",
    "dexorder_feeds.iceberg_client": "dexorder_feeds.client.iceberg_client",
    "dexorder_feeds.sync": "dexorder_feeds.client.sync",
    "dexorder_feeds.history_client": "dexorder_feeds.client.history_client",
    "dexorder_feeds.transport": "dexorder_feeds.client.transport",
    "dexorder_feeds.embedded": "dexorder_feeds.client.embedded",
    "dexorder_feeds.commands": "dexorder_feeds.cli.commands",
    "dexorder_feeds.team": "dexorder_feeds.cli.team",
}
# Names that moved out of a module that still exists.
_MOVED_NAMES: dict[str, dict[str, str]] = {
    "dexorder_feeds.client.iceberg_client": {"FetchRequest": "dexorder_feeds.vocabulary.requests",
                                             "CacheRead": "dexorder_feeds.vocabulary.requests"},
    "dexorder_feeds.client.fetcher": {"FetchRequest": "dexorder_feeds.vocabulary.requests",
                                      "CacheRead": "dexorder_feeds.vocabulary.requests"},
}


class _ForwardingModule(ModuleType):
    """An old module path: every attribute is looked up on the new module."""

    _target: str

    def __getattr__(self, name: str) -> Any:
        target = importlib.import_module(object.__getattribute__(self, "_target"))
        try:
            return getattr(target, name)
        except AttributeError:
            moved = _MOVED_NAMES.get(target.__name__, {}).get(name)
            if moved is None:
                raise
            return getattr(importlib.import_module(moved), name)

    def __dir__(self) -> list[str]:
        return dir(importlib.import_module(object.__getattribute__(self, "_target")))


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED_MODULES:
            return None
        is_package = any(other.startswith(fullname + ".") for other in MOVED_MODULES)
        return importlib.machinery.ModuleSpec(fullname, self, is_package=is_package)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = _ForwardingModule(spec.name)
        module._target = MOVED_MODULES[spec.name]
        if spec.submodule_search_locations is not None:
            module.__path__ = []
        return module

    def exec_module(self, module: ModuleType) -> None:
        new = MOVED_MODULES[module.__name__]
        warnings.warn(f"{module.__name__} moved to {new}; import it from there "
                      "(the old path goes away in dexorder-feeds 0.3)", DeprecationWarning, stacklevel=2)
        importlib.import_module(new)


_finder = _MovedModuleFinder()


def install() -> None:
    """Make the old import paths resolve (idempotent)."""
    if _finder not in sys.meta_path:
        sys.meta_path.append(_finder)
