"""Settings: from arguments, then environment variables, then a config file, then defaults.

How it works inside: docs/internals.md, "Settings".
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .storage.catalog import CATALOG_NAME, pyiceberg_catalog_config, redact, redact_uri
from .vocabulary.errors import InvalidRequestError

__all__ = ["Settings", "resolve_settings", "default_cache_dir", "DEFAULT_MAX_CANDLES"]

DEFAULT_MAX_CANDLES = 10_000_000
"""The most candles one fetch may return (about 1 GB as a DataFrame); ``max_candles`` raises it."""

ENV_PREFIX = "DEXORDER_"
_CURVE_KEYS = ("curve_secret_key", "curve_server_key", "curve_authorized_keys")
_SIMPLE_KEYS = ("iceberg_catalog_uri", "relay_endpoint", "notification_endpoint", "namespace", "request_timeout",
                "max_candles", "settle_seconds", *_CURVE_KEYS)


def default_cache_dir() -> Path:
    """Where the embedded warehouse lives: ``$DEXORDER_CACHE_DIR`` or the user cache dir."""
    env = os.environ.get("DEXORDER_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("dexorder-feeds", appauthor=False))


def _default_config_file() -> Path:
    env = os.environ.get("DEXORDER_CONFIG")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_config_dir

    return Path(user_config_dir("dexorder-feeds", appauthor=False)) / "config.toml"


@dataclass(frozen=True)
class Settings:
    """Resolved settings of a client or server. ``repr`` never shows secrets."""

    iceberg_catalog_uri: str
    relay_endpoint: str | None = None
    notification_endpoint: str | None = None
    namespace: str = "trading"
    request_timeout: float = 30.0
    catalog_properties: Mapping[str, str] = field(default_factory=dict)
    sources: Mapping[str, str] = field(default_factory=dict)
    curve_secret_key: str | None = None
    curve_server_key: str | None = None
    curve_authorized_keys: str | None = None
    max_candles: int = DEFAULT_MAX_CANDLES
    """The most candles one fetch may return; a larger fetch fails at once saying how to proceed."""
    settle_seconds: float | None = None
    """How long after a period closes an empty answer of a source may still change (it is not
    remembered as checked-empty before); None: each source's own, else max(5 minutes, one
    period). See docs/sources.md, "The coverage ledger"."""

    @property
    def embedded(self) -> bool:
        """True when gap fills run in-process (no relay configured)."""
        return self.relay_endpoint is None

    def key(self) -> tuple:
        """A hashable identity of these settings (for per-process caches)."""
        return (
            self.iceberg_catalog_uri, self.relay_endpoint, self.notification_endpoint, self.namespace,
            tuple(sorted(self.catalog_properties.items())), tuple(sorted(self.sources.items())),
            self.curve_secret_key, self.curve_server_key, self.curve_authorized_keys, self.max_candles,
            self.settle_seconds,
        )

    def __repr__(self) -> str:
        return (
            f"Settings(iceberg_catalog_uri={redact_uri(self.iceberg_catalog_uri)!r}, "
            f"relay_endpoint={self.relay_endpoint!r}, notification_endpoint={self.notification_endpoint!r}, "
            f"namespace={self.namespace!r}, request_timeout={self.request_timeout!r}, "
            f"catalog_properties={redact(self.catalog_properties)!r}, sources={dict(self.sources)!r}"
            + "".join(f", {name}={getattr(self, name)!r}" for name in _CURVE_KEYS if getattr(self, name))
            + ")"
        )


def _parse_sources(text: str) -> dict[str, str]:
    """``BINANCE=files:/d,ccxt:binance,KRAKEN=ccxt:kraken``: entries, each maybe a fallback chain."""
    from .ingest.sources import join_spec_list, parse_source_specs

    return parse_source_specs(join_spec_list(text.split(",")))


def _env_catalog_properties(environ: Mapping[str, str]) -> dict[str, str]:
    prefix = ENV_PREFIX + "CATALOG__"
    return {
        key[len(prefix):].lower().replace("__", ".").replace("_", "-"): value
        for key, value in environ.items()
        if key.startswith(prefix)
    }


def _pyiceberg_properties(name: str, uri: str | None) -> dict[str, str]:
    """pyiceberg's configuration of catalog ``name`` if it applies to ``uri`` (flat values only)."""
    config = pyiceberg_catalog_config(str(name))
    configured_uri = config.get("uri")
    if uri is not None and configured_uri is not None and str(configured_uri).rstrip("/") != str(uri).rstrip("/"):
        return {}
    return {str(k): str(v) for k, v in config.items() if isinstance(v, (str, int, float)) and k != "type"}


def resolve_settings(
    *,
    config_file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    **arguments: Any,
) -> Settings:
    """Merge arguments (non-None win), environment, config file and defaults into :class:`Settings`."""
    environ = os.environ if environ is None else environ
    path = Path(config_file) if config_file is not None else _default_config_file()
    from_file: dict[str, Any] = {}
    if path.is_file():
        try:
            from_file = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise InvalidRequestError(f"config file {path} cannot be read: {exc}") from exc
    elif config_file is not None:
        raise InvalidRequestError(f"config file {path} does not exist")

    values: dict[str, Any] = {}
    for key in _SIMPLE_KEYS:
        for candidate in (arguments.get(key), environ.get(ENV_PREFIX + key.upper()), from_file.get(key)):
            if candidate not in (None, ""):
                values[key] = candidate
                break

    catalog_properties = {**from_file.get("catalog_properties", {}), **_env_catalog_properties(environ),
                          **(arguments.get("catalog_properties") or {})}
    sources = dict(from_file.get("sources", {}))
    if environ.get(ENV_PREFIX + "SOURCES"):
        sources.update(_parse_sources(environ[ENV_PREFIX + "SOURCES"]))
    if arguments.get("sources"):
        from .ingest.sources import parse_source_specs

        sources.update(parse_source_specs(arguments["sources"]))

    uri = values.get("iceberg_catalog_uri")
    configured = _pyiceberg_properties(arguments.get("catalog_name") or environ.get(ENV_PREFIX + "CATALOG_NAME")
                                       or from_file.get("catalog_name") or CATALOG_NAME, uri)
    if uri is None:
        uri = configured.get("uri") or "sqlite:///" + str((default_cache_dir() / "catalog.db").resolve())
    configured.pop("uri", None)
    catalog_properties = {**configured, **catalog_properties}
    relay, notify = values.get("relay_endpoint"), values.get("notification_endpoint")
    if (relay is None) != (notify is None):
        raise InvalidRequestError(
            "relay_endpoint and notification_endpoint go together: give both to use a relay, "
            "or neither for the in-process historian"
        )
    try:
        timeout = float(values.get("request_timeout", 30.0))
    except (TypeError, ValueError):
        raise InvalidRequestError(f"request_timeout={values.get('request_timeout')!r} is not a number of seconds") from None
    if timeout <= 0:
        raise InvalidRequestError(f"request_timeout={timeout} must be positive")
    raw_max = values.get("max_candles", DEFAULT_MAX_CANDLES)
    try:
        max_candles = int(str(raw_max).replace("_", "")) if not isinstance(raw_max, bool) else 0
    except ValueError:
        max_candles = 0
    if max_candles <= 0:
        raise InvalidRequestError(f"max_candles={raw_max!r} must be a positive whole number of candles")
    raw_settle = values.get("settle_seconds")
    settle: float | None = None
    if raw_settle is not None:
        try:
            settle = float(raw_settle) if not isinstance(raw_settle, bool) else -1.0
        except (TypeError, ValueError):
            settle = -1.0
        if not settle >= 0:  # also NaN
            raise InvalidRequestError(f"settle_seconds={raw_settle!r} must be a number of seconds, zero or more "
                                      "(DEXORDER_SETTLE_SECONDS, --settle-seconds or settle_seconds in the config file)")
    return Settings(
        iceberg_catalog_uri=str(uri),
        settle_seconds=settle,
        relay_endpoint=relay,
        notification_endpoint=notify,
        namespace=str(values.get("namespace", "trading")),
        request_timeout=timeout,
        max_candles=max_candles,
        catalog_properties={str(k): str(v) for k, v in catalog_properties.items()},
        sources={str(k).upper(): str(v) for k, v in sources.items()},
        **{name: str(values[name]) for name in _CURVE_KEYS if name in values},
    )
