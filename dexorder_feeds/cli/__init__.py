"""The ``dexorder-feeds`` command line: commands only, no storage logic."""

from .main import main

__all__ = ["main"]
