"""The public surface: __all__, the seed's `dexorder` import, py.typed, the exception tree."""

from __future__ import annotations

import subprocess
import sys
from importlib import resources

import dexorder_feeds
from dexorder_feeds.vocabulary import errors

PUBLIC = {
    "OHLCClient", "IcebergClient", "HistoryClient", "fetch_ohlc", "fetch_many", "candles", "acandles", "Candle",
    "MarketInfo", "Settings", "hookimpl", "__version__",
    *errors.__all__,
}


def test_all_is_exactly_the_public_api():
    assert set(dexorder_feeds.__all__) == PUBLIC
    for name in dexorder_feeds.__all__:
        assert getattr(dexorder_feeds, name) is not None, name


def test_the_seed_import_works_unchanged():
    from dexorder import HistoryClient, IcebergClient, OHLCClient

    assert OHLCClient is dexorder_feeds.OHLCClient
    assert IcebergClient is dexorder_feeds.IcebergClient
    assert HistoryClient is dexorder_feeds.HistoryClient


def test_the_package_is_typed():
    assert resources.files("dexorder_feeds").joinpath("py.typed").is_file()


def test_every_error_subclasses_the_builtin_the_seed_promises():
    assert issubclass(errors.RequestTimeoutError, TimeoutError)
    assert issubclass(errors.RelayUnavailableError, ConnectionError)
    for name in ("InvalidRequestError", "InvalidTickerError", "InvalidPeriodError", "InvalidTimeRangeError",
                 "UnknownSourceError", "RequestFailedError", "DataError", "SourceFormatError", "PrecisionError",
                 "InvalidCandleError", "FillRatioError", "ProtocolError"):
        assert issubclass(getattr(errors, name), ValueError), name
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.DexOrderError)


def test_import_is_light():
    code = ("import sys, dexorder_feeds; heavy = [m for m in ('backtrader', 'vectorbt', 'pyiceberg', 'zmq', 'pandas') "
            "if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_the_version_comes_from_the_package_metadata():
    from importlib.metadata import version

    assert dexorder_feeds.__version__ == version("dexorder-feeds")
    out = subprocess.run([sys.executable, "-m", "dexorder_feeds.cli", "--version"], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == f"dexorder-feeds {version('dexorder-feeds')}"
