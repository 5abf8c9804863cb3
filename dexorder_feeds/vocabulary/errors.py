"""The exceptions dexorder-feeds raises.

How it works inside: docs/internals.md, "The exception tree".
"""

from __future__ import annotations

__all__ = [
    "DexOrderError",
    "InvalidRequestError",
    "InvalidTickerError",
    "InvalidPeriodError",
    "InvalidTimeRangeError",
    "UnknownSourceError",
    "UnknownSnapshotError",
    "RequestFailedError",
    "WarehouseMismatchError",
    "DataError",
    "SourceFormatError",
    "PrecisionError",
    "InvalidCandleError", "StoredCandleChangedError",
    "FillRatioError",
    "MissingAtSnapshotError",
    "ProtocolError",
    "RelayUnavailableError",
    "RequestTimeoutError",
    "WarehouseError",
    "ClientClosedError",
    "MissingDependencyError",
    "FetchManyError",
]


class DexOrderError(Exception):
    """Base class of every error raised by dexorder-feeds."""


class InvalidRequestError(DexOrderError, ValueError):
    """The caller asked for something that cannot be served; the message says how to fix it."""


class InvalidTickerError(InvalidRequestError):
    """A ticker that is not ``EXCHANGE:BASE/QUOTE`` or names an unknown exchange."""


class InvalidPeriodError(InvalidRequestError):
    """A period that is not a positive whole number of seconds (or a known alias like ``1h``)."""


class InvalidTimeRangeError(InvalidRequestError):
    """A time range that is empty, reversed, or not in microseconds."""


class UnknownSourceError(InvalidRequestError):
    """No ingest source is configured for the ticker's exchange."""


class UnknownSnapshotError(InvalidRequestError):
    """``as_of`` names no pin and no snapshot the warehouse still keeps (never made, or expired)."""


class RequestFailedError(DexOrderError, ValueError):
    """The historian finished a request with status ``ERROR``; the message is the server's."""

    def __init__(self, message: str, *, request_id: str | None = None) -> None:
        super().__init__(message)
        self.request_id = request_id


class WarehouseMismatchError(DexOrderError, ValueError):
    """The relay writes another Iceberg warehouse than the one this client reads (another catalog,
    namespace, or a table created anew): the candles it stores would never be seen here. The
    message names both warehouses; give the client the relay's catalog URI and properties."""


class DataError(DexOrderError, ValueError):
    """Candle data that cannot be stored or read faithfully."""


class SourceFormatError(DataError):
    """A candle file a user brought is malformed; the message names the file and the line."""


class PrecisionError(DataError):
    """Values are finer than the decimals stored for their market; storing them would lose data."""


class InvalidCandleError(DataError):
    """A source gave a candle that cannot be real (high below open or close, low above them, a
    negative price or volume); it is refused with its source and time, nothing of its range is
    stored."""


class StoredCandleChangedError(DataError):
    """A source now gives other values for a candle already stored (a candle file edited after
    its candles were stored). Stored candles are never replaced silently; the message says how
    to take the new values (``forget … --candles``) or keep the stored ones."""


class FillRatioError(DataError):
    """An adapter's missing-data policy made up a larger share of the candles than the caller's
    ``max_fill_ratio``; ``ratio`` is that share and ``report`` the quality report."""

    def __init__(self, message: str, *, ratio: float | None = None, report: object = None) -> None:
        super().__init__(message)
        self.ratio = ratio
        self.report = report
class MissingAtSnapshotError(DataError):
    """Part of the asked range was never ingested by the snapshot ``as_of`` reads (which never
    fills gaps); the message names the ranges."""


class ProtocolError(DexOrderError, ValueError):
    """Bytes that are not a valid dexorder wire frame (bad version, type or payload)."""


class RelayUnavailableError(DexOrderError, ConnectionError):
    """The relay did not answer within the timeout: check that it runs and the endpoint is right."""


class RequestTimeoutError(DexOrderError, TimeoutError):
    """The completion notification did not arrive within the request timeout."""


class WarehouseError(DexOrderError, OSError):
    """The Iceberg catalog or its storage failed (unreachable, read-only, full, refused)."""


class ClientClosedError(DexOrderError, RuntimeError):
    """A client was used after ``close()``/``stop()``; create a new one."""


class MissingDependencyError(DexOrderError, ImportError):
    """An optional dependency is missing; the message gives the ``pip install`` command."""


class FetchManyError(DexOrderError):
    """Some series of a ``fetch_many`` failed. Raised once every series has finished, so nothing
    fetched is lost: ``errors`` maps each failed ``(ticker, period_seconds)`` to its exception,
    ``results`` each one that succeeded to its frame. The message lists every failure."""

    def __init__(self, message: str, *, errors: dict | None = None, results: dict | None = None) -> None:
        super().__init__(message)
        self.errors: dict = dict(errors or {})
        self.results: dict = dict(results or {})


def missing_dependency(package: str, extra: str) -> MissingDependencyError:
    """Build the error for a missing optional dependency, naming the extra that installs it."""
    return MissingDependencyError(
        f"{package} is not installed; install it with: pip install 'dexorder-feeds[{extra}]'"
    )
