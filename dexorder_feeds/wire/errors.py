"""The error names of the wire contract: one table of wire name <-> error class, used by both sides.

A ``RequestReply`` or a ``Notification`` names the class of the error it reports in its
``error_type`` field. The names are part of the wire contract, like field numbers: they stay
the same when a class is renamed or moved, so a client and a relay of different versions
still understand each other. A sender names an error with :func:`wire_name` (a subclass the
table does not know, such as a plugin's own error, goes by its nearest listed ancestor); a
receiver looks a name up with :func:`error_class`, which gives ``None`` for an empty or unknown
name: the receiver then raises its documented default
(see :func:`dexorder_feeds.client.transport.error_from_type`).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from ..vocabulary import errors

__all__ = ["WIRE_ERRORS", "wire_name", "error_class"]

WIRE_ERRORS: Mapping[str, type[errors.DexOrderError]] = MappingProxyType({
    "DexOrderError": errors.DexOrderError,
    "InvalidRequestError": errors.InvalidRequestError,
    "InvalidTickerError": errors.InvalidTickerError,
    "InvalidPeriodError": errors.InvalidPeriodError,
    "InvalidTimeRangeError": errors.InvalidTimeRangeError,
    "UnknownSourceError": errors.UnknownSourceError,
    "UnknownSnapshotError": errors.UnknownSnapshotError,
    "RequestFailedError": errors.RequestFailedError,
    "WarehouseMismatchError": errors.WarehouseMismatchError,
    "DataError": errors.DataError,
    "SourceFormatError": errors.SourceFormatError,
    "PrecisionError": errors.PrecisionError,
    "InvalidCandleError": errors.InvalidCandleError,
    "StoredCandleChangedError": errors.StoredCandleChangedError,
    "FillRatioError": errors.FillRatioError,
    "MissingAtSnapshotError": errors.MissingAtSnapshotError,
    "ProtocolError": errors.ProtocolError,
    "RelayUnavailableError": errors.RelayUnavailableError,
    "RequestTimeoutError": errors.RequestTimeoutError,
    "WarehouseError": errors.WarehouseError,
    "ClientClosedError": errors.ClientClosedError,
    "MissingDependencyError": errors.MissingDependencyError,
    "FetchManyError": errors.FetchManyError,
})

_NAME_OF: dict[type[BaseException], str] = {cls: name for name, cls in WIRE_ERRORS.items()}


def wire_name(error: BaseException | type[BaseException]) -> str:
    """The wire name for an error (or error class): its own, or its nearest listed ancestor's.

    ``""`` for an error that is not a :class:`~dexorder_feeds.vocabulary.errors.DexOrderError`
    (the receiver then raises its default).
    """
    cls = error if isinstance(error, type) else type(error)
    for ancestor in cls.__mro__:
        name = _NAME_OF.get(ancestor)
        if name is not None:
            return name
    return ""


def error_class(name: str) -> type[errors.DexOrderError] | None:
    """The error class a wire name stands for; ``None`` for ``""`` or a name this version does not know."""
    return WIRE_ERRORS.get(name) if name else None
