"""Built-in ingest sources: ``sim``, ``files`` and ``ccxt``."""

from __future__ import annotations

from typing import Any

from ..hookspecs import hookimpl


def _sim(argument: str | None) -> Any:
    from ..ingest.sources.sim import SimulatedSource

    return SimulatedSource()


def _files(argument: str | None) -> Any:
    from ..ingest.sources.files import FilesSource

    return FilesSource(argument)


def _ccxt(argument: str | None) -> Any:
    from ..ingest.sources.ccxt_source import CcxtSource

    return CcxtSource(argument)


@hookimpl
def dexorder_register_sources(register: Any) -> None:
    register("sim", _sim)
    register("files", _files)
    register("ccxt", _ccxt)
