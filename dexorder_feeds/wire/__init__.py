"""The wire format shared by the relay server and the HistoryClient.

A payload frame is ``[version byte][message-type byte][protobuf bytes]``. Message shapes live
only in ``proto/*.proto``; the ``*_pb2`` modules here are generated from them. The candle
messages of ``ohlc.proto`` stay in ``ohlc_pb2`` (they never cross this relay's sockets), so the
names ``Candle`` and ``MarketInfo`` here mean only the library's own types.
"""

from __future__ import annotations

from typing import Union

from ..vocabulary.errors import ProtocolError
from ..vocabulary.identity import WarehouseIdentity
from . import ingestor_pb2 as _ingestor
from .ingestor_pb2 import (
    HistoryRequest,
    MessageType,
    Notification,
    RequestReply,
    SubscribeCheck,
)

__all__ = [
    "WIRE_VERSION",
    "SUBSCRIPTION_REFUSED",
    "MAX_FRAME_BYTES",
    "HistoryRequest",
    "SubscribeCheck",
    "RequestReply",
    "Notification",
    "Message",
    "encode_frame",
    "decode_frame",
    "notification_topic",
    "put_warehouse",
    "warehouse_of",
]

WIRE_VERSION = 1
MAX_FRAME_BYTES = 64 * 1024

Message = Union[HistoryRequest, RequestReply, Notification, SubscribeCheck]

_TYPE_OF = {
    HistoryRequest: MessageType.HISTORY_REQUEST,
    RequestReply: MessageType.REQUEST_REPLY,
    Notification: MessageType.NOTIFICATION,
    SubscribeCheck: MessageType.SUBSCRIBE_CHECK,
}
_CLASS_OF = {code: cls for cls, code in _TYPE_OF.items()}


SUBSCRIPTION_REFUSED = "the relay refused the subscription"
"""How a ``SubscribeCheck`` rejection begins when the relay will not apply the client's
subscription (a limit reached): the client stops waiting for it at once."""


def notification_topic(client_id: str) -> bytes:
    """The PUB/SUB topic a client's notifications are published on."""
    return f"RESPONSE:{client_id}".encode()


def encode_frame(message: Message) -> bytes:
    """Serialize a message into a versioned, typed frame."""
    code = _TYPE_OF.get(type(message))
    if code is None:
        raise ProtocolError(f"{type(message).__name__} is not a wire message")
    return bytes((WIRE_VERSION, code)) + message.SerializeToString()


def decode_frame(frame: bytes, *, expect: tuple[type, ...] | None = None) -> Message:
    """Parse a frame; raise :class:`ProtocolError` saying what is wrong with it."""
    if len(frame) < 2:
        raise ProtocolError(f"frame of {len(frame)} bytes is too short for a header")
    if len(frame) > MAX_FRAME_BYTES:
        raise ProtocolError(f"frame of {len(frame)} bytes exceeds the {MAX_FRAME_BYTES}-byte limit")
    version, code = frame[0], frame[1]
    if version != WIRE_VERSION:
        raise ProtocolError(
            f"unsupported wire version {version} (this side speaks {WIRE_VERSION}); upgrade dexorder-feeds"
        )
    cls = _CLASS_OF.get(code)
    if cls is None:
        raise ProtocolError(f"unknown message type {code}")
    if expect is not None and cls not in expect:
        raise ProtocolError(f"unexpected {cls.__name__} here")
    message = cls()
    try:
        message.ParseFromString(frame[2:])
    except Exception as exc:  # DecodeError and friends
        raise ProtocolError(f"malformed {cls.__name__} payload: {exc}") from None
    return message


def put_warehouse(message: RequestReply | Notification, identity: WarehouseIdentity | None) -> None:
    """Say in ``message`` which warehouse the relay writes (nothing for ``None``)."""
    if identity is None:
        return
    message.warehouse.CopyFrom(_ingestor.WarehouseIdentity(
        catalog=identity.catalog, namespace=identity.namespace, ohlc_table=identity.ohlc_table,
        ohlc_uuid=identity.ohlc_uuid, coverage_table=identity.coverage_table, coverage_uuid=identity.coverage_uuid,
        catalog_warehouse=identity.catalog_warehouse))


def warehouse_of(message: RequestReply | Notification) -> WarehouseIdentity | None:
    """The warehouse ``message`` says the relay writes; ``None`` if it does not say (an older relay)
    or names no table uuid."""
    if not message.HasField("warehouse"):
        return None
    w = message.warehouse
    if not (w.ohlc_uuid or w.coverage_uuid):
        return None
    return WarehouseIdentity(w.catalog, w.namespace, w.ohlc_table, w.ohlc_uuid, w.coverage_table, w.coverage_uuid,
                             w.catalog_warehouse)
