"""Open the Iceberg catalog named by a URI, the way the seed's ``iceberg_catalog_uri`` names it.

How it works inside: docs/internals.md, "Opening a catalog".
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..vocabulary.errors import DexOrderError, InvalidRequestError, WarehouseError

__all__ = [
    "CATALOG_NAME",
    "catalog_label",
    "DEFAULT_TIMEOUT",
    "open_catalog",
    "rest_catalog_ready",
    "catalog_properties",
    "pyiceberg_catalog_config",
    "redact",
    "redact_uri",
    "scrub",
]

log = logging.getLogger(__name__)

CATALOG_NAME = "dexorder"
DEFAULT_TIMEOUT = 10.0
TIMEOUT_PROPERTY = "timeout"
_SECRET_KEY = re.compile(
    r"(credential|token|secret|password|passwd|private|access-key|session|account-key|authorization|sas)", re.I
)

_catalogs: dict[str, Any] = {}
_catalogs_lock = threading.Lock()


def _forget_after_fork() -> None:
    global _catalogs_lock
    _catalogs.clear()  # database connections must not be shared with the parent
    _catalogs_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


# -- secrets -----------------------------------------------------------------------------------
def redact_uri(uri: str) -> str:
    """A URI (or any text) with every ``user:password@`` password replaced by ``***``."""
    return re.sub(r"(//[^/:@\s]*:)[^/@\s]*@", r"\1***@", uri)


def redact(properties: Mapping[str, Any]) -> dict[str, Any]:
    """Catalog properties with every secret-looking value replaced by ``***``."""
    out: dict[str, Any] = {}
    for key, value in properties.items():
        if _SECRET_KEY.search(str(key)):
            out[key] = "***"
        elif isinstance(value, Mapping):
            out[key] = redact(value)
        elif isinstance(value, str):
            out[key] = redact_uri(value)
        else:
            out[key] = value
    return out


def _secret_values(properties: Mapping[str, Any]) -> list[str]:
    found: list[str] = []
    for key, value in properties.items():
        if isinstance(value, Mapping):
            found += _secret_values(value)
        elif isinstance(value, str) and value:
            if _SECRET_KEY.search(str(key)):
                found.append(value)
                found += [part for part in value.split(":") if len(part) >= 6]  # "client_id:secret"
            password = urlsplit(value).password if "://" in value else None
            if password:
                found.append(password)
    return sorted(set(found), key=len, reverse=True)


def scrub(text: str, properties: Mapping[str, Any]) -> str:
    """``text`` with every secret property value and URI password replaced by ``***``."""
    for secret in _secret_values(properties):
        text = text.replace(secret, "***")
    return redact_uri(text)


def catalog_label(catalog: Any) -> tuple[str, str]:
    """How messages name an open catalog: its URI without password or query (else the catalog's
    name), and its ``warehouse`` property (``""`` if none; a SQL catalog's is only where its
    files go, so it is left out)."""
    props = getattr(catalog, "properties", None) or {}
    uri = props.get("uri")
    label = scrub(str(uri), props).split("?")[0] if uri else str(getattr(catalog, "name", "") or CATALOG_NAME)
    warehouse = props.get("warehouse")
    if not warehouse or props.get("type") == "sql":
        return label, ""
    return label, scrub(str(warehouse), props).split("?")[0]


# -- properties --------------------------------------------------------------------------------
def pyiceberg_catalog_config(name: str = CATALOG_NAME) -> dict[str, Any]:
    """pyiceberg's own configuration of catalog ``name``, read now (.pyiceberg.yaml and
    ``PYICEBERG_CATALOG__<NAME>__…`` variables); empty if there is none."""
    try:
        from pyiceberg.utils.config import Config

        config = Config().get_catalog_config(name)
    except Exception as exc:  # a malformed .pyiceberg.yaml
        raise InvalidRequestError(f"pyiceberg's configuration (.pyiceberg.yaml / PYICEBERG_* variables) "
                                  f"cannot be read: {type(exc).__name__}: {exc}") from None
    return dict(config or {})


def _same_uri(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")


def _with_query_defaults(uri: str, defaults: Mapping[str, str]) -> str:
    parts = urlsplit(uri)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    for key, value in defaults.items():
        query.setdefault(key, value)
    return urlunsplit(parts._replace(query=urlencode(query)))


def _timeout(props: Mapping[str, Any]) -> float:
    raw = props.get(TIMEOUT_PROPERTY, DEFAULT_TIMEOUT)
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise InvalidRequestError(f"catalog property timeout={raw!r} is not a number of seconds") from None
    if value <= 0:
        raise InvalidRequestError(f"catalog property timeout={value} must be positive")
    return value


def catalog_properties(
    uri: str | None, properties: Mapping[str, Any] | None = None, *, catalog_name: str = CATALOG_NAME
) -> dict[str, Any]:
    """The pyiceberg properties for a catalog URI plus explicit properties (which win).

    Also merges pyiceberg's own configuration of ``catalog_name`` (see docs/internals.md) and
    adds the defaults for timeouts and the S3 region.
    """
    explicit = {k: (v if isinstance(v, Mapping) else str(v)) for k, v in (properties or {}).items() if v is not None}
    configured = {k: v for k, v in pyiceberg_catalog_config(catalog_name).items() if v is not None}
    if uri is None:
        named = explicit.get("uri") or configured.get("uri")
        uri = None if named is None else str(named)
        if uri is None and (explicit.get("type") or explicit.get("py-catalog-impl")):
            return {**configured, **explicit}  # another kind of pyiceberg catalog (glue, hive, ...)
        if uri is None:
            raise InvalidRequestError(
                "no Iceberg catalog configured: give iceberg_catalog_uri, or a 'uri' in the catalog "
                f"properties or in pyiceberg's configuration of the catalog {catalog_name!r}"
            )
    uri = str(uri)
    if configured.get("uri") is not None and not _same_uri(str(configured["uri"]), uri):
        configured = {}  # pyiceberg's configuration names another catalog: none of it applies
    props: dict[str, Any] = {}
    scheme = urlsplit(uri).scheme.lower()
    if scheme == "sqlite":
        db_path = uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else ""
        if not db_path:
            raise InvalidRequestError(f"SQLite catalog URI {uri!r} must look like sqlite:////abs/path/catalog.db")
        warehouse = Path(db_path).expanduser().resolve().parent / "warehouse"
        props.update(type="sql", warehouse=warehouse.as_uri())
    elif scheme.startswith("postgresql"):
        props.update(type="sql")
    elif scheme in ("http", "https"):
        props.update(type="rest")
        if "credential" in explicit or "credential" in configured:
            # the token endpoint of the REST spec, named so pyiceberg does not warn on every open
            props["oauth2-server-uri"] = uri.rstrip("/") + "/v1/oauth/tokens"
    else:
        raise InvalidRequestError(
            f"iceberg_catalog_uri {redact_uri(uri)!r} has an unsupported scheme; "
            "use sqlite:///…, postgresql+psycopg://… or http(s)://…"
        )
    props.update({k: v for k, v in configured.items() if k not in ("uri", "type")})
    props.update({k: v for k, v in explicit.items() if k not in ("uri", "type")})
    props["uri"] = uri
    timeout = _timeout(props)
    props[TIMEOUT_PROPERTY] = f"{timeout:g}"
    if scheme.startswith("postgresql"):
        if "warehouse" not in props:
            raise InvalidRequestError(
                f"catalog {redact_uri(uri)} needs a 'warehouse' property naming shared storage "
                "(e.g. s3://bucket/path or file:///shared/dir)"
            )
        props["uri"] = _with_query_defaults(uri, {
            # libpq may try twice (SSL, then plain): half the timeout each (libpq's minimum is 2 s)
            "connect_timeout": str(max(2, int(timeout // 2))),
            "options": f"-c statement_timeout={int(timeout * 1000)}",
        })
    if str(props.get("warehouse", "")).startswith(("s3://", "s3a://")) or "s3.endpoint" in props:
        props.setdefault("s3.connect-timeout", f"{min(timeout, 5.0):g}")
        props.setdefault("s3.request-timeout", f"{timeout:g}")
    if "s3.endpoint" in props and "s3.region" not in props and "client.region" not in props:
        props["s3.region"] = "us-east-1"
    return props


# -- opening -----------------------------------------------------------------------------------
def _rest_catalog(name: str, props: Mapping[str, Any]) -> Any:
    """pyiceberg's RestCatalog whose HTTP requests all carry a (connect, read) timeout.

    pyiceberg 0.12 sends its REST requests with no timeout at all, so a catalog that stops
    answering would hang every fetch; a default on the session's adapters bounds each request.
    """
    from pyiceberg.catalog.rest import RestCatalog
    from requests.adapters import HTTPAdapter

    seconds = _timeout(props)
    default = (min(seconds, 5.0), seconds)

    class TimeoutAdapter(HTTPAdapter):
        def send(self, request: Any, stream: bool = False, timeout: Any = None, verify: Any = True,
                 cert: Any = None, proxies: Any = None) -> Any:
            return super().send(request, stream=stream, timeout=default if timeout is None else timeout,
                                verify=verify, cert=cert, proxies=proxies)

    class TimeoutRestCatalog(RestCatalog):
        def _config_headers(self, session: Any) -> None:
            # The first thing _create_session does with a new session, before the OAuth token is
            # fetched through it (and RestCatalog.__init__ fetches its config through such a
            # session too), so every request of the catalog goes through the adapter.
            adapter = TimeoutAdapter()
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            super()._config_headers(session)

    return TimeoutRestCatalog(name, **props)


def rest_catalog_ready(uri: str, properties: Mapping[str, Any]) -> bool:
    """Whether a REST catalog at ``uri`` answers a namespace listing now (for start-up probes)."""
    from pyiceberg.catalog.rest import RestCatalog

    try:
        RestCatalog("probe", uri=uri, **properties).list_namespaces()
    except Exception:  # not up yet: the caller polls
        return False
    return True


def _sql_catalog(name: str, props: Mapping[str, Any]) -> Any:
    """pyiceberg's SqlCatalog, whose ``create_namespace`` is safe when two processes race, and
    whose commits do not load again the table they were made from while it is current.

    pyiceberg 0.12 checks that the namespace is missing, then inserts it: the loser of a race
    gets the database's ``IntegrityError`` instead of ``NamespaceAlreadyExistsError`` (which
    ``create_namespace_if_not_exists`` would have ignored). Its ``commit_table`` loads the table
    (a catalog query, and the metadata file read and parsed: ~10 ms of the one committer's time
    per commit here) only to compare the commit's requirements with the current metadata.
    """
    from pyiceberg.catalog.sql import SqlCatalog
    from pyiceberg.exceptions import NamespaceAlreadyExistsError
    from sqlalchemy.exc import IntegrityError

    from ._pyiceberg_shortcuts import current_metadata_location

    class RaceSafeSqlCatalog(SqlCatalog):
        _committing = threading.local()

        def commit_table(self, table: Any, requirements: Any, updates: Any) -> Any:
            # pyiceberg 0.12 loads the table again (reads and parses its metadata file) to check
            # the commit's requirements against the current metadata; when the catalog still
            # names the very file ``table`` was read from, that is ``table.metadata`` itself.
            # The update below still only succeeds if the location is unchanged by then.
            self._committing.table = table
            try:
                return super().commit_table(table, requirements, updates)
            finally:
                self._committing.table = None

        def load_table(self, identifier: Any) -> Any:
            held = getattr(self._committing, "table", None)
            if held is not None and self.identifier_to_tuple(identifier) == self.identifier_to_tuple(held.name()):
                self._committing.table = None  # once: a retry inside pyiceberg loads afresh
                if current_metadata_location(self, held.name()) == held.metadata_location:
                    return held
            return super().load_table(identifier)

        def create_namespace(self, namespace: Any, properties: Any = None) -> None:
            try:
                if properties is None:
                    super().create_namespace(namespace)
                else:
                    super().create_namespace(namespace, properties)
            except IntegrityError:
                if self.namespace_exists(namespace):
                    raise NamespaceAlreadyExistsError(f"Namespace {namespace} already exists") from None
                raise

    catalog = RaceSafeSqlCatalog(name, **props)
    if catalog.engine.dialect.name == "sqlite":
        _write_ahead_log(catalog.engine)
    return catalog


def _write_ahead_log(engine: Any) -> None:
    """Put a SQLite catalog in write-ahead-log mode (kept in the file, so once is enough).

    In SQLite's default mode a commit waits until no connection is reading (and fails with
    "database is locked" if one reads for longer than the busy timeout), and every read of the
    warehouse reads the catalog (the tables' metadata locations). With the log, readers and the
    one writer do not wait for each other. Best effort: a read-only file or a catalog another
    process holds locked just now keeps its mode (SQLite's own locking stays correct either way)."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        with engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA journal_mode=WAL")
    except SQLAlchemyError as exc:
        log.debug("the SQLite catalog keeps its journal mode: %s", exc)


def _check_storage(props: Mapping[str, Any]) -> None:
    """For an ``s3://`` warehouse with explicit S3 settings: the bucket exists, the keys work."""
    warehouse = str(props.get("warehouse", ""))
    if not warehouse.startswith(("s3://", "s3a://")) or not any(k.startswith("s3.") and k not in (
            "s3.connect-timeout", "s3.request-timeout", "s3.region") for k in props):
        return
    import pyarrow.fs

    bucket = urlsplit(warehouse).netloc
    endpoint = props.get("s3.endpoint")
    kwargs: dict[str, Any] = {
        "region": props.get("s3.region") or props.get("client.region") or None,
        "connect_timeout": float(props.get("s3.connect-timeout", 5)),
        "request_timeout": float(props.get("s3.request-timeout", DEFAULT_TIMEOUT)),
    }
    if endpoint:
        parts = urlsplit(str(endpoint))
        kwargs["endpoint_override"] = parts.netloc or str(endpoint)
        kwargs["scheme"] = parts.scheme or "https"
    if props.get("s3.access-key-id") and props.get("s3.secret-access-key"):
        kwargs.update(access_key=props["s3.access-key-id"], secret_key=props["s3.secret-access-key"],
                      session_token=props.get("s3.session-token"))
    where = f"S3 endpoint {endpoint}" if endpoint else "S3"
    try:
        info = pyarrow.fs.S3FileSystem(**kwargs).get_file_info(bucket)
    except OSError as exc:
        text = str(exc)
        if any(word in text for word in ("ACCESS_DENIED", "SIGNATURE", "INVALID_ACCESS_KEY", "403", "Forbidden")):
            hint = "the keys were refused: check s3.access-key-id and s3.secret-access-key"
        elif any(word in text for word in ("NETWORK_CONNECTION", "curlCode", "Timeout", "timed out")):
            hint = "it cannot be reached: check s3.endpoint and that the object store is running"
        else:
            hint = "check s3.endpoint and the S3 keys"
        raise WarehouseError(f"cannot use the warehouse bucket {bucket!r} on {where}: {scrub(text, props)}; "
                             f"{hint}") from None
    if info.type == pyarrow.fs.FileType.NotFound:
        raise WarehouseError(f"the warehouse bucket {bucket!r} does not exist on {where}: check the "
                             "'warehouse' property, or create the bucket")


def _open_error(props: Mapping[str, Any], exc: BaseException) -> WarehouseError:
    """A :class:`WarehouseError` for a catalog that failed to open: what happened, what to check."""
    uri = redact_uri(str(props.get("uri", "?")).split("?")[0])
    name = type(exc).__name__
    text = scrub(str(exc), props).strip().splitlines()[0] if str(exc).strip() else ""
    timeout = props.get(TIMEOUT_PROPERTY, DEFAULT_TIMEOUT)
    lower = text.lower()
    if name in ("OAuthError", "UnauthorizedError") or "password authentication failed" in lower:
        hint = "the credentials were refused: " + (
            "check the 'credential' (client_id:secret) or 'token' property" if props.get("type") == "rest"
            else "check the user and password in the URI")
    elif name == "ForbiddenError":
        hint = "the credentials may not use this catalog: check their permissions"
    elif name in ("ReadTimeout", "Timeout") or "timeout expired" in lower or "statement timeout" in lower \
            or "read timed out" in lower:
        hint = (f"the catalog did not answer within {timeout} s: check the server's health, or raise the "
                "'timeout' catalog property")
    elif name in ("ConnectionError", "ConnectTimeout") or any(text_ in lower for text_ in (
            "connection refused", "could not connect", "name or service not known", "failed to resolve",
            "max retries")):
        hint = "the catalog cannot be reached: check the URI and that the catalog server is running"
    elif name in ("NoSuchNamespaceError", "NoSuchWarehouseError") or "bucket" in lower or "warehouse" in lower:
        hint = "check that the 'warehouse' property names an existing warehouse (table bucket) of this catalog"
    elif "readonly database" in lower or "read-only" in lower or "read only" in lower:
        hint = ("the catalog database is read-only (an immutable or mode=ro SQLite URI, or file permissions), and "
                "opening it must create its tables: open a writable catalog, or one already set up")
    elif "unable to open database file" in lower:
        hint = ("the SQLite catalog file cannot be opened or created: check that the path in the URI exists and "
                "its directory is writable")
    elif "does not exist" in lower and "database" in lower:
        hint = "the database does not exist: check the database name in the URI, or create it"
    else:
        hint = "check the URI, that the catalog server is reachable and that the credentials are right"
    return WarehouseError(f"cannot open Iceberg catalog {uri}: {name}: {text}; {hint}")


def _open_sql_catalog(props: Mapping[str, Any], attempts: int = 3) -> Any:
    """pyiceberg's SQL catalog. Two processes opening a new catalog at once both try to create its
    tables, and the loser's CREATE fails (PostgreSQL: a unique violation; SQLite: "table ...
    already exists") although the tables now exist: that one is tried again."""
    for attempt in range(attempts):
        try:
            return _sql_catalog(CATALOG_NAME, props)
        except Exception as exc:
            text = str(exc).lower()
            racing = (type(exc).__name__ == "IntegrityError" or "duplicate key" in text
                      or ("table" in text and "already exists" in text))
            if not racing or attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def open_catalog(uri: str | None, properties: Mapping[str, Any] | None = None, *, cache: bool = True) -> Any:
    """Return the pyiceberg catalog for ``uri`` and ``properties``, checked to work.

    Catalogs are cached per process; ``cache=False`` opens a new one (a second client in one
    process, as tests and benchmarks of several machines need).
    """
    props = catalog_properties(uri, properties)
    key = json.dumps(props, sort_keys=True, default=str)
    with _catalogs_lock:
        catalog = _catalogs.get(key) if cache else None
        if catalog is not None:
            return catalog
        if props.get("type") == "sql" and props["uri"].startswith("sqlite:///"):
            Path(props["uri"][len("sqlite:///"):]).expanduser().parent.mkdir(parents=True, exist_ok=True)
        try:
            if props.get("type") == "rest":
                catalog = _rest_catalog(CATALOG_NAME, props)
                catalog.list_namespaces()  # proves the credentials and the warehouse now, not mid-fetch
            elif props.get("type") == "sql":
                catalog = _open_sql_catalog(props)  # connects and creates its tables if needed
            else:
                from pyiceberg.catalog import load_catalog

                catalog = load_catalog(CATALOG_NAME, **props)
        except DexOrderError:
            raise
        except Exception as exc:
            raise _open_error(props, exc) from None
        _check_storage(props)
        if cache:
            _catalogs[key] = catalog
        return catalog

