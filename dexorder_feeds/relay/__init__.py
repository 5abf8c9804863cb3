"""The relay: a ZeroMQ server that takes history requests, runs the historian and publishes
completion notifications."""

from .server import RelayServer, serve

__all__ = ["RelayServer", "serve"]
