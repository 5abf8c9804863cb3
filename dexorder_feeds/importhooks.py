"""Post-import hooks: run a callback when a module finishes importing (or now, if it has).

This is how ``bt.feeds.DexOrderData`` and ``vbt.DexOrderData`` appear whatever the import order
without ``import dexorder_feeds`` importing backtrader or vectorbt.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import logging
import sys
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any

__all__ = ["when_imported"]

log = logging.getLogger(__name__)

Callback = Callable[[ModuleType], None]

_callbacks: dict[str, list[Callback]] = {}
_lock = threading.RLock()
_resolving: set[str] = set()


def _run(callbacks: list[Callback], module: ModuleType) -> None:
    for callback in callbacks:
        try:
            callback(module)
        except Exception:  # an adapter must never break the user's import of its framework
            log.exception("could not install the dexorder_feeds adapter for %s", module.__name__)


class _CallbackLoader(importlib.abc.Loader):
    def __init__(self, loader: Any, name: str) -> None:
        self._loader = loader
        self._name = name

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        create = getattr(self._loader, "create_module", None)
        return create(spec) if create is not None else None

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        with _lock:
            callbacks = list(_callbacks.get(self._name, ()))
        _run(callbacks, module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


class _PostImportFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        with _lock:
            if fullname not in _callbacks or fullname in _resolving:
                return None
            _resolving.add(fullname)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            with _lock:
                _resolving.discard(fullname)
        if spec is None or not hasattr(spec.loader, "exec_module"):
            return None  # a legacy loader: leave the import alone rather than break it
        spec.loader = _CallbackLoader(spec.loader, fullname)
        return spec


_finder = _PostImportFinder()


def when_imported(module_name: str, callback: Callback) -> None:
    """Call ``callback(module)`` once ``module_name`` is imported (now, if it already is).

    Registering the same callback twice for a module has no further effect.
    """
    with _lock:
        registered = _callbacks.setdefault(module_name, [])
        if callback in registered:
            return
        registered.append(callback)
        if _finder not in sys.meta_path:
            sys.meta_path.insert(0, _finder)
        module = sys.modules.get(module_name)
    if module is not None and getattr(getattr(module, "__spec__", None), "_initializing", False) is False:
        _run([callback], module)
