"""dexorder-feeds."""
