"""Open the Iceberg catalog named by a URI, the way the seed's ``iceberg_catalog_uri`` names it.

- ``sqlite:///path/catalog.db`` – pyiceberg's SQL catalog; data files go to ``warehouse/``
  beside the database unless a ``warehouse`` property says otherwise. One machine.
- ``postgresql+psycopg://user@host/db`` – pyiceberg's SQL catalog on PostgreSQL; give a
  ``warehouse`` property (shared object storage) for several machines.
- ``http://…`` / ``https://…`` – a REST catalog; ``credential``, ``token``, ``warehouse`` and
  ``s3.*`` properties are passed through to pyiceberg untouched.
- ``None`` with a properties dict – handed to :func:`pyiceberg.catalog.load_catalog` as is.

Properties given by pyiceberg's own configuration (``.pyiceberg.yaml``,
``PYICEBERG_CATALOG__DEXORDER__…`` variables) are merged by pyiceberg under the catalog name
``dexorder``. Catalog objects are cached per process: pyiceberg's catalogs are safe to share
between threads (its ``Table`` objects are not, see :mod:`dexorder_feeds.warehouse`).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .errors import InvalidRequestError, WarehouseError

__all__ = ["CATALOG_NAME", "open_catalog", "catalog_properties", "redact", "redact_uri", "scrub"]

CATALOG_NAME = "dexorder"
_SECRET_KEY = re.compile(r"(credential|token|secret|password|passwd|private|access-key|session)", re.I)

_catalogs: dict[tuple, Any] = {}
_catalogs_lock = threading.Lock()


def _forget_after_fork() -> None:
    global _catalogs_lock
    _catalogs.clear()  # database connections must not be shared with the parent
    _catalogs_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


def redact_uri(uri: str) -> str:
    """A URI with any password replaced by ``***`` (for logs and messages)."""
    return re.sub(r"(//[^/:@]*:)[^/@]*@", r"\1***@", uri)


def redact(properties: Mapping[str, Any]) -> dict[str, Any]:
    """Catalog properties with every secret-looking value replaced by ``***``."""
    out: dict[str, Any] = {}
    for key, value in properties.items():
        if _SECRET_KEY.search(key):
            out[key] = "***"
        elif isinstance(value, str):
            out[key] = redact_uri(value)
        else:
            out[key] = value
    return out


def scrub(text: str, properties: Mapping[str, Any]) -> str:
    """``text`` with every secret property value and URI password replaced by ``***``."""
    for key, value in properties.items():
        if _SECRET_KEY.search(key) and isinstance(value, str) and value:
            text = text.replace(value, "***")
            for part in value.split(":"):  # "client_id:secret" credentials
                if len(part) >= 6:
                    text = text.replace(part, "***")
    return redact_uri(text)


def catalog_properties(uri: str | None, properties: Mapping[str, Any] | None = None) -> dict[str, str]:
    """The pyiceberg properties for a catalog URI plus explicit properties (which win)."""
    props: dict[str, str] = {}
    extra = {k: str(v) for k, v in (properties or {}).items() if v is not None}
    if uri is None:
        if not extra:
            raise InvalidRequestError("no Iceberg catalog configured: give iceberg_catalog_uri or catalog properties")
        return extra
    scheme = urlsplit(uri).scheme.lower()
    if scheme == "sqlite":
        db_path = uri[len("sqlite:///") :] if uri.startswith("sqlite:///") else ""
        if not db_path:
            raise InvalidRequestError(f"SQLite catalog URI {uri!r} must look like sqlite:////abs/path/catalog.db")
        warehouse = Path(db_path).expanduser().resolve().parent / "warehouse"
        props.update(type="sql", uri=uri, warehouse=warehouse.as_uri())
    elif scheme.startswith("postgresql"):
        props.update(type="sql", uri=uri)
        if "warehouse" not in extra:
            raise InvalidRequestError(
                f"catalog {redact_uri(uri)} needs a 'warehouse' property naming shared storage "
                "(e.g. s3://bucket/path or file:///shared/dir)"
            )
    elif scheme in ("http", "https"):
        props.update(type="rest", uri=uri)
    else:
        raise InvalidRequestError(
            f"iceberg_catalog_uri {redact_uri(uri)!r} has an unsupported scheme; "
            "use sqlite:///…, postgresql+psycopg://… or http(s)://…"
        )
    props.update(extra)
    return props


def open_catalog(uri: str | None, properties: Mapping[str, Any] | None = None) -> Any:
    """Return the (cached) pyiceberg catalog for ``uri`` and ``properties``."""
    props = catalog_properties(uri, properties)
    key = tuple(sorted(props.items()))
    with _catalogs_lock:
        catalog = _catalogs.get(key)
        if catalog is not None:
            return catalog
        if props.get("type") == "sql" and props["uri"].startswith("sqlite:///"):
            Path(props["uri"][len("sqlite:///") :]).expanduser().parent.mkdir(parents=True, exist_ok=True)
        from pyiceberg.catalog import load_catalog

        try:
            catalog = load_catalog(CATALOG_NAME, **props)
        except Exception as exc:
            raise WarehouseError(
                f"cannot open Iceberg catalog {redact_uri(props.get('uri', '?'))}: "
                f"{type(exc).__name__}: {scrub(str(exc), props)}. Check the URI, that the catalog "
                "server is reachable and the credentials are right"
            ) from None
        _catalogs[key] = catalog
        return catalog
