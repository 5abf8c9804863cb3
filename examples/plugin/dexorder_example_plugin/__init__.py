"""Example plugins for dexorder-feeds."""
