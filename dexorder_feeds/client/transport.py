"""How gap fills reach a historian: the :class:`HistoryTransport` interface and result dicts.

Two transports implement it: :class:`dexorder_feeds.client.history_client.HistoryClient` (the relay,
over ZeroMQ) and :class:`dexorder_feeds.client.embedded.EmbeddedHistory` (the historian in-process).
Both return the seed's result dict and raise the same errors.
"""

from __future__ import annotations

import abc
from typing import Any

from ..vocabulary import errors
from ..vocabulary.identity import WarehouseIdentity
from ..wire import Notification, warehouse_of
from ..wire.errors import error_class

__all__ = ["HistoryTransport", "result_from_notification", "raise_for_error", "error_from_type"]

_STATUS_NAMES = {
    Notification.OK: "OK",
    Notification.NOT_FOUND: "NOT_FOUND",
    Notification.ERROR: "ERROR",
}


class HistoryTransport(abc.ABC):
    """Submits one history request and waits until it is complete."""

    @abc.abstractmethod
    async def request_historical_ohlc(
        self,
        ticker: str,
        period_seconds: int,
        start_time: int,
        end_time: int,
        timeout: float = 30.0,
        limit: int | None = None,
    ) -> dict[str, Any]:
        """Ask for the candles with timestamps in ``[start_time, end_time]``; return the seed's
        result dict once they are stored. Raises ``TimeoutError``, ``ConnectionError`` or
        ``ValueError`` (status ERROR) as the seed promises."""

    def revalidate(self, ticker: str, period_seconds: int | None = None) -> int:
        """Re-check ranges whose source data changed since they were ingested (a candle file
        added, edited or appended); blocking, called in a worker thread before a fetch reads.
        Returns the ranges re-checked. The in-process historian does it here; a relay's
        historian does it on its own (every few seconds), so the default does nothing."""
        return 0

    @property
    def warehouse_identity(self) -> WarehouseIdentity | None:
        """The warehouse the historian behind this transport writes, as it last said (a relay
        says so in every reply and notification); ``None`` when it did not say: nothing to check."""
        return None

    async def connect(self) -> None:
        """Get ready to send requests (subscribe to notifications first)."""

    async def close(self) -> None:
        """Release sockets and tasks."""


def error_from_type(error_type: str, message: str, *, default: type[errors.DexOrderError]) -> errors.DexOrderError:
    """Rebuild the error a server named by its wire name (:data:`~dexorder_feeds.wire.errors.WIRE_ERRORS`).

    A rejected or failed request raises ``ValueError`` as the seed promises: a named class that is
    not a ``ValueError``, an empty name or a name this version does not know gives ``default``.
    """
    cls = error_class(error_type)
    if cls is None or not issubclass(cls, ValueError):
        cls = default
    return cls(message)


def result_from_notification(notification: Notification) -> dict[str, Any]:
    """The seed's result dict for a completion notification."""
    result: dict[str, Any] = {
        "request_id": notification.request_id,
        "status": _STATUS_NAMES.get(notification.status, "ERROR"),
        "error_message": notification.error_message or None,
    }
    if result["status"] != "ERROR":
        result.update(
            iceberg_namespace=notification.iceberg_namespace,
            iceberg_table=notification.iceberg_table,
            row_count=notification.row_count,
        )
        warehouse = warehouse_of(notification)
        if warehouse is not None:  # which warehouse holds them: read it with IcebergClient
            result.update(iceberg_catalog=warehouse.catalog, iceberg_table_uuid=warehouse.ohlc_uuid)
    if notification.covered_end:
        result["covered_range"] = (notification.covered_start, notification.covered_end)
    if notification.error_type:
        result["error_type"] = notification.error_type
    return result


def raise_for_error(result: dict[str, Any]) -> dict[str, Any]:
    """Raise ``ValueError`` (a :class:`RequestFailedError` or the server's named class) for
    status ERROR; return ``result`` otherwise. NOT_FOUND is a status, not an exception."""
    if result["status"] == "ERROR":
        message = result.get("error_message") or "the historian reported an error without a message"
        exc = error_from_type(result.get("error_type", ""), message, default=errors.RequestFailedError)
        raise exc
    return result


def check_request_args(
    ticker: object, period_seconds: object, start_time: object, end_time: object, limit: object = None
) -> tuple[str, int, int, int]:
    """Validate a history request's arguments before anything is sent; return them normalised.

    Raises the same :class:`~dexorder_feeds.vocabulary.errors.InvalidRequestError` subclasses the relay does.
    """
    from ..vocabulary.tickers import parse_ticker
    from ..vocabulary.times import parse_period, to_micros

    name = str(parse_ticker(ticker))
    if isinstance(period_seconds, str):
        raise errors.InvalidPeriodError(f"period_seconds={period_seconds!r} must be an integer number of seconds")
    period = parse_period(period_seconds)
    start = to_micros(start_time, name="start_time", round_up=True)
    end = to_micros(end_time, name="end_time")
    if start > end:
        raise errors.InvalidTimeRangeError(f"start_time={start} is after end_time={end}; swap them")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit <= 0):
        raise errors.InvalidRequestError(f"limit={limit!r} must be a positive integer")
    return name, period, start, end
