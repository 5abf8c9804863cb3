"""The wire format: frame round trips, decode errors, and generated modules kept in step with proto/."""

from __future__ import annotations

import importlib.util
import pickle
from pathlib import Path

import pytest

from dexorder_feeds import wire
from dexorder_feeds.wire import ohlc_pb2
from dexorder_feeds.vocabulary.errors import ProtocolError
from dexorder_feeds.wire import (
    MAX_FRAME_BYTES,
    WIRE_VERSION,
    HistoryRequest,
    Notification,
    RequestReply,
    SubscribeCheck,
    decode_frame,
    encode_frame,
    notification_topic,
)

REPO = Path(__file__).resolve().parent.parent

MESSAGES = [
    HistoryRequest(request_id="r1", client_id="c1", ticker="SIM:BTC/USDT", period_seconds=3600,
                   start_time=1735689600000000, end_time=1736294399000000, limit=10),
    HistoryRequest(request_id="r2", client_id="c1", ticker="SIM:ETH/USDT", period_seconds=60,
                   start_time=1735689600000000, end_time=1735689600000000),
    SubscribeCheck(client_id="c1", request_id="chk"),
    RequestReply(request_id="r1", accepted=False, reason="ticker is malformed", error_type="InvalidTickerError"),
    RequestReply(request_id="r1", accepted=True),
    Notification(request_id="r1", client_id="c1", status=Notification.OK, iceberg_namespace="trading",
                 iceberg_table="ohlc", row_count=168, covered_start=1735689600000000, covered_end=1736294400000000),
    Notification(request_id="r3", client_id="c1", status=Notification.ERROR, error_message="boom",
                 error_type="DataError"),
]

TYPE_CODES = {HistoryRequest: 1, RequestReply: 2, Notification: 3, SubscribeCheck: 4}


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_round_trip(message):
    frame = encode_frame(message)
    assert frame[0] == WIRE_VERSION
    assert frame[1] == TYPE_CODES[type(message)]
    decoded = decode_frame(frame)
    assert type(decoded) is type(message)
    assert decoded == message
    assert decode_frame(frame, expect=(type(message),)) == message


def test_limit_presence_survives_the_wire():
    with_limit, without = (decode_frame(encode_frame(m)) for m in MESSAGES[:2])
    assert with_limit.HasField("limit") and with_limit.limit == 10
    assert not without.HasField("limit")


def test_notification_topic():
    assert notification_topic("abc") == b"RESPONSE:abc"


def test_encode_refuses_a_non_wire_message():
    with pytest.raises(ProtocolError, match="is not a wire message"):
        encode_frame(ohlc_pb2.Candle(timestamp=1))  # type: ignore[arg-type]


@pytest.mark.parametrize("frame", [b"", b"\x01"], ids=["empty", "one-byte"])
def test_decode_short(frame):
    with pytest.raises(ProtocolError, match="too short"):
        decode_frame(frame)


def test_decode_unknown_version():
    frame = bytes((WIRE_VERSION + 1,)) + encode_frame(MESSAGES[0])[1:]
    with pytest.raises(ProtocolError, match=r"unsupported wire version 2 .*upgrade"):
        decode_frame(frame)


@pytest.mark.parametrize("code", [0, 5, 255])
def test_decode_unknown_type(code):
    with pytest.raises(ProtocolError, match=f"unknown message type {code}"):
        decode_frame(bytes((WIRE_VERSION, code)) + b"")


def test_decode_malformed_payload():
    # Field 1 (string) claims 100 bytes but only 3 follow.
    with pytest.raises(ProtocolError, match="malformed HistoryRequest payload"):
        decode_frame(bytes((WIRE_VERSION, 1)) + b"\x0a\x64abc")


def test_decode_oversized():
    frame = encode_frame(HistoryRequest(request_id="x" * (MAX_FRAME_BYTES + 10)))
    assert len(frame) > MAX_FRAME_BYTES
    with pytest.raises(ProtocolError, match="exceeds the"):
        decode_frame(frame)
    # exactly at the limit is fine
    # header (2) + field tag (1) + 3-byte varint length + the string
    at_limit = encode_frame(HistoryRequest(request_id="x" * (MAX_FRAME_BYTES - 6)))
    assert len(at_limit) == MAX_FRAME_BYTES
    assert decode_frame(at_limit).request_id.startswith("x")


def test_decode_unexpected_type():
    with pytest.raises(ProtocolError, match="unexpected Notification here"):
        decode_frame(encode_frame(MESSAGES[5]), expect=(HistoryRequest, SubscribeCheck))


def test_protocol_error_is_a_value_error():
    with pytest.raises(ValueError):
        decode_frame(b"garbage-bytes")


def _load_generate():
    spec = importlib.util.spec_from_file_location("proto_generate", REPO / "proto" / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_modules_are_up_to_date(tmp_path):
    """Regenerate from proto/*.proto and compare byte for byte with the committed modules."""
    generate = _load_generate()
    generate.generate(tmp_path)
    names = sorted(p.name for p in tmp_path.glob("*_pb2.py"))
    assert names == ["ingestor_pb2.py", "ohlc_pb2.py"]
    for name in names:
        fresh = (tmp_path / name).read_bytes()
        committed = (REPO / "dexorder_feeds" / "wire" / name).read_bytes()
        assert fresh == committed, f"dexorder_feeds/wire/{name} is stale: run python proto/generate.py"


def test_generated_modules_carry_no_runtime_version_gate():
    """protoc gencode pins the protobuf runtime (ValidateProtobufRuntimeVersion); ours must not."""
    for name in ("ingestor_pb2.py", "ohlc_pb2.py"):
        text = (REPO / "dexorder_feeds" / "wire" / name).read_text()
        assert "runtime_version" not in text and "internal import builder" not in text, name


def test_generated_modules_expose_what_gencode_exposes():
    from dexorder_feeds.wire import ingestor_pb2, ohlc_pb2

    assert ingestor_pb2.DESCRIPTOR.name == "ingestor.proto" and ohlc_pb2.DESCRIPTOR.package == "dexorder.ohlc"
    # top-level enum: a wrapper plus one module constant per value
    for value in ingestor_pb2.DESCRIPTOR.enum_types_by_name["MessageType"].values:
        assert getattr(ingestor_pb2, value.name) == value.number == ingestor_pb2.MessageType.Value(value.name)
    assert ingestor_pb2.MessageType.Name(ingestor_pb2.NOTIFICATION) == "NOTIFICATION"
    # nested enum: on its message class
    assert Notification.Status.Name(Notification.NOT_FOUND) == "NOT_FOUND"
    assert Notification.Status.keys() == ["STATUS_UNSPECIFIED", "OK", "NOT_FOUND", "ERROR"]
    for module, names in ((ingestor_pb2, ["HistoryRequest", "SubscribeCheck", "RequestReply", "Notification"]),
                          (ohlc_pb2, ["Candle", "MarketInfo", "CandleBatch"])):
        for name in names:
            cls = getattr(module, name)
            assert cls.DESCRIPTOR.file is module.DESCRIPTOR
            assert (cls.__module__, cls.__qualname__) == (module.__name__, name)


@pytest.mark.parametrize("message", MESSAGES + [ohlc_pb2.CandleBatch(ticker="SIM:BTC/USDT", period_seconds=60,
                                                                 market=ohlc_pb2.MarketInfo(price_decimals=2),
                                                                 candles=[ohlc_pb2.Candle(timestamp=1, close=7)])],
                         ids=lambda m: type(m).__name__)
def test_messages_pickle(message):
    assert pickle.loads(pickle.dumps(message)) == message
