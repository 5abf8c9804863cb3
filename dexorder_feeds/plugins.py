"""The plugin manager: built-in plugins, then third-party ones from entry points, loaded once.

Set ``DEXORDER_FEEDS_PLUGINS`` to a comma-separated list of entry point names to load only those
third-party plugins (an empty string loads none); built-ins always load.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
from importlib.metadata import entry_points

import pluggy

from . import hookspecs

__all__ = ["DEFAULT_PLUGINS", "ENV_PLUGINS", "get_plugin_manager", "install_framework_adapters", "reset_plugin_manager"]

log = logging.getLogger(__name__)

ENV_PLUGINS = "DEXORDER_FEEDS_PLUGINS"
DEFAULT_PLUGINS = (
    "dexorder_feeds._builtin.cache",
    "dexorder_feeds._builtin.gaps",
    "dexorder_feeds._builtin.fill",
    "dexorder_feeds._builtin.result",
    "dexorder_feeds._builtin.markets",
    "dexorder_feeds._builtin.sources",
    "dexorder_feeds.adapters",
)

_pm: pluggy.PluginManager | None = None
_entry_points_loaded = False
_lock = threading.RLock()


def _load_entry_points(pm: pluggy.PluginManager) -> None:
    allowed = os.environ.get(ENV_PLUGINS)
    names = None if allowed is None else {n.strip() for n in allowed.split(",") if n.strip()}
    for ep in entry_points(group=hookspecs.PROJECT_NAME):
        if names is not None and ep.name not in names:
            continue
        if pm.get_plugin(ep.name) is not None:
            continue
        try:
            plugin = ep.load()
        except Exception:
            log.exception("could not load dexorder_feeds plugin %r (%s)", ep.name, ep.value)
            continue
        pm.register(plugin, name=ep.name)


def _builtin_plugin_manager() -> pluggy.PluginManager:
    global _pm
    with _lock:
        if _pm is None:
            pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
            pm.add_hookspecs(hookspecs)
            for name in DEFAULT_PLUGINS:
                pm.register(importlib.import_module(name), name=name)
            _pm = pm
        return _pm


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager; the first call loads built-ins and entry points."""
    global _entry_points_loaded
    pm = _builtin_plugin_manager()
    with _lock:
        if not _entry_points_loaded:
            _entry_points_loaded = True
            _load_entry_points(pm)
            install_framework_adapters(pm)
    return pm


def install_framework_adapters(pm: pluggy.PluginManager | None = None) -> None:
    """Hook every registered framework adapter into its framework's import.

    ``import dexorder_feeds`` calls this with the built-in plugins only, so entry points stay
    unloaded until a fetch or a hook first needs them.
    """
    from .importhooks import when_imported

    (pm or _builtin_plugin_manager()).hook.dexorder_register_framework_adapters(register=when_imported)


def reset_plugin_manager() -> None:
    """Forget the plugin manager so the next use reloads plugins (for tests and notebooks)."""
    global _pm, _entry_points_loaded
    with _lock:
        _pm = None
        _entry_points_loaded = False
