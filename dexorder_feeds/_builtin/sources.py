"""Built-in ingest sources: ``sim``, ``files`` and ``ccxt`` (each imported on first use)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..hookspecs import hookimpl

if TYPE_CHECKING:
    from ..ingest.sources import IngestSource, SourceFactory


def _sim(argument: str | None) -> IngestSource:
    from ..ingest.sources.sim import SimulatedSource

    return SimulatedSource()


def _files(argument: str | None) -> IngestSource:
    from ..ingest.sources.files import FilesSource

    return FilesSource(argument)


def _ccxt(argument: str | None) -> IngestSource:
    from ..ingest.sources.ccxt_source import CcxtSource

    return CcxtSource(argument)


@hookimpl
def dexorder_register_sources(register: Callable[[str, SourceFactory], None]) -> None:
    register("sim", _sim)
    register("files", _files)
    register("ccxt", _ccxt)
