"""Wire error names: one table of name <-> class, checked both ways and end to end."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import uuid
from pathlib import Path

import pytest

import dexorder_feeds
from dexorder_feeds import hookimpl
from dexorder_feeds.client.transport import error_from_type, raise_for_error, result_from_notification
from dexorder_feeds.ingest.historian import Historian
from dexorder_feeds.ingest.sources import IngestSource, SourceCandles, SourceRegistry
from dexorder_feeds.plugins import get_plugin_manager
from dexorder_feeds.vocabulary import errors
from dexorder_feeds.vocabulary.tickers import Ticker
from dexorder_feeds.wire import HistoryRequest, Notification, RequestReply, decode_frame, encode_frame
from dexorder_feeds.wire.errors import WIRE_ERRORS, error_class, wire_name

from conftest import SEED_START

PACKAGE = Path(dexorder_feeds.__file__).parent


def _all_subclasses(cls: type) -> set[type]:
    found = set()
    for sub in cls.__subclasses__():
        found |= {sub, *_all_subclasses(sub)}
    return found


def test_every_class_in_the_table_round_trips():
    for name, cls in WIRE_ERRORS.items():
        assert wire_name(cls) == name
        assert wire_name(cls("boom")) == name
        assert error_class(name) is cls
    assert len(set(WIRE_ERRORS.values())) == len(WIRE_ERRORS), "two names for one class"


def test_every_error_of_the_package_has_a_wire_name():
    for module in pkgutil.walk_packages(dexorder_feeds.__path__, "dexorder_feeds."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)  # so that every error class defined anywhere is seen
    importlib.import_module("dexorder_feeds.adapters")
    ours = {cls for cls in _all_subclasses(errors.DexOrderError) if cls.__module__.startswith("dexorder_feeds.")}
    ours.add(errors.DexOrderError)
    missing = sorted(cls.__name__ for cls in ours if cls not in set(WIRE_ERRORS.values()))
    assert not missing, f"add these to dexorder_feeds/wire/errors.py WIRE_ERRORS: {missing}"
    assert set(errors.__all__) <= {cls.__name__ for cls in WIRE_ERRORS.values()}


@pytest.mark.parametrize("name", sorted(WIRE_ERRORS))
def test_a_named_error_crosses_a_real_frame(name):
    cls = WIRE_ERRORS[name]
    sent = Notification(request_id="r1", client_id="c1", status=Notification.ERROR, error_message="it broke",
                        error_type=wire_name(cls("it broke")))
    received = decode_frame(encode_frame(sent))
    assert isinstance(received, Notification)
    # the seed promises ValueError for status ERROR: other classes give the documented default
    expected = cls if issubclass(cls, ValueError) else errors.RequestFailedError
    with pytest.raises(expected, match="it broke") as caught:
        raise_for_error(result_from_notification(received))
    assert type(caught.value) is expected

    reply = decode_frame(encode_frame(RequestReply(request_id="r1", accepted=False, reason="no", error_type=name)))
    assert isinstance(reply, RequestReply)
    rebuilt = error_from_type(reply.error_type, reply.reason, default=errors.InvalidRequestError)
    assert type(rebuilt) is (cls if issubclass(cls, ValueError) else errors.InvalidRequestError)


@pytest.mark.parametrize("name", ["", "NoSuchError", "ValueError", "dexorder_feeds.vocabulary.errors.DataError"])
def test_an_empty_or_unknown_name_gives_the_documented_default(name):
    assert error_class(name) is None
    assert type(error_from_type(name, "x", default=errors.ProtocolError)) is errors.ProtocolError
    result = {"request_id": "r", "status": "ERROR", "error_message": "bad", "error_type": name}
    with pytest.raises(errors.RequestFailedError, match="bad"):
        raise_for_error(result)


def test_errors_that_are_not_listed_go_by_their_nearest_listed_ancestor():
    class PluginFormatError(errors.SourceFormatError):
        pass

    assert wire_name(PluginFormatError("x")) == "SourceFormatError"
    assert wire_name(KeyError("x")) == ""
    assert wire_name(RuntimeError) == ""


def _literal_wire_names() -> list[tuple[str, int, str]]:
    """Every string literal the package puts into or compares with an ``error_type`` field."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        if path.name.endswith("_pb2.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            values: list[ast.expr] = []
            if isinstance(node, ast.keyword) and node.arg == "error_type":
                values = [node.value]
            elif isinstance(node, ast.Compare) and isinstance(node.left, ast.Attribute) and node.left.attr == "error_type":
                for comparator in node.comparators:
                    values += comparator.elts if isinstance(comparator, (ast.Tuple, ast.List, ast.Set)) else [comparator]
            elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Attribute) and t.attr == "error_type"
                                                      for t in node.targets):
                values = [node.value]
            for value in values:
                if isinstance(value, ast.Constant) and isinstance(value.value, str) and value.value:
                    found.append((str(path.relative_to(PACKAGE)), value.lineno, value.value))
    return found


def test_every_literal_error_name_in_the_package_is_in_the_table():
    literals = _literal_wire_names()
    assert literals, "the scan found no literal at all: is it still looking at the right fields?"
    unknown = [item for item in literals if item[2] not in WIRE_ERRORS]
    assert not unknown, f"error_type literals the wire table does not know: {unknown}"


class _BrokenFiles(IngestSource):
    name = "broken"

    class Error(errors.SourceFormatError):
        """A plugin's own error class, unknown to the wire table."""

    def fetch_candles(self, ticker: Ticker, period_seconds: int, start: int, stop: int) -> SourceCandles:
        raise self.Error(f"{ticker}: line 3 of candles.csv has no close; fix the file")


class _BrokenSourcePlugin:
    @hookimpl
    def dexorder_register_sources(self, register):
        register("broken", lambda argument: _BrokenFiles())


def test_a_historian_names_a_plugin_error_by_its_listed_ancestor(warehouse):
    pm = get_plugin_manager()
    plugin = _BrokenSourcePlugin()
    pm.register(plugin, name=f"broken-source-{uuid.uuid4().hex}")
    try:
        historian = Historian(warehouse, SourceRegistry({"BRK": "broken"}))
        notification = historian.handle(HistoryRequest(
            request_id="r1", client_id="c1", ticker="BRK:ABC/USD", period_seconds=3600,
            start_time=SEED_START, end_time=SEED_START + 3 * 3_600_000_000))
    finally:
        pm.unregister(plugin)
    received = decode_frame(encode_frame(notification))
    assert isinstance(received, Notification)
    assert received.error_type == "SourceFormatError"
    with pytest.raises(errors.SourceFormatError, match="line 3"):
        raise_for_error(result_from_notification(received))
    assert warehouse.read_market("BRK:ABC/USD") is None  # nothing was stored
