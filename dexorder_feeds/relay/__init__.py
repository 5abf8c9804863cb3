"""The relay: a ZeroMQ server that takes history requests, runs the historian and publishes
completion notifications."""

from .entry import serve
from .server import RelayServer

__all__ = ["RelayServer", "serve"]
