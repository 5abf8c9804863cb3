"""``python -m dexorder_feeds.cli``."""

from .main import main

raise SystemExit(main())
