"""The one way observer events go out: :func:`emit`, which never lets an observer fail a fetch.

Each implementation of the event is called in pluggy's order through pluggy's public API. An
exception it raises is caught: the first one of each plugin for each event is logged with its
traceback, later ones only at DEBUG, and the other observers and the fetch go on.
"""

from __future__ import annotations

import inspect
import logging
import threading
from typing import Any

import pluggy

from .hookspecs import OBSERVER_EVENTS
from .plugins import get_plugin_manager

__all__ = ["emit"]

log = logging.getLogger(__name__)

_reported: set[tuple[str, str]] = set()
_lock = threading.Lock()


def _first_time(plugin_name: str, event: str) -> bool:
    with _lock:
        if (plugin_name, event) in _reported:
            return False
        _reported.add((plugin_name, event))
        return True


def emit(event: str, /, *, hooks: pluggy.HookRelay | None = None, **kwargs: Any) -> None:
    """Tell every observer of ``event`` (one of :data:`~dexorder_feeds.hookspecs.OBSERVER_EVENTS`).

    ``kwargs`` are the event's arguments, all of them; ``hooks`` is the plugin manager's hook
    relay to use (default: the process-wide one). Never raises because of an observer; raises
    ``ValueError`` for a name that is not an event or arguments that do not match its spec
    (a bug in the caller, not in a plugin).
    """
    if event not in OBSERVER_EVENTS:
        raise ValueError(f"{event!r} is not an observer event; pipeline steps are called through the hook relay")
    caller = getattr(hooks if hooks is not None else get_plugin_manager().hook, event)
    if caller.spec is not None and set(caller.spec.argnames) != set(kwargs):
        raise ValueError(f"{event} takes {sorted(caller.spec.argnames)}, not {sorted(kwargs)}")
    for impl in reversed(caller.get_hookimpls()):  # pluggy's own calling order
        if impl.hookwrapper or impl.wrapper:
            if _first_time(impl.plugin_name, event):
                log.error("dexorder_feeds plugin %r implements the event %s as a wrapper; events call plain "
                          "hook implementations only, so it is skipped", impl.plugin_name, event)
            continue
        arguments = [kwargs[name] for name in impl.argnames]
        try:
            outcome = impl.function(*arguments)
        except Exception:
            if _first_time(impl.plugin_name, event):
                log.error("dexorder_feeds plugin %r failed in %s; the fetch goes on (further failures of this "
                          "plugin in this event are logged at DEBUG)", impl.plugin_name, event, exc_info=True)
            else:
                log.debug("dexorder_feeds plugin %r failed in %s again", impl.plugin_name, event, exc_info=True)
            continue
        if inspect.iscoroutine(outcome):
            outcome.close()  # never awaited: close it rather than leave a "never awaited" warning
            if _first_time(impl.plugin_name, event):
                log.error("dexorder_feeds plugin %r implements the event %s as a coroutine; events are called "
                          "synchronously, make it a plain function", impl.plugin_name, event)
