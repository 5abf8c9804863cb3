"""The historian and its ingest sources. Used in-process by the embedded default and by the
relay's workers alike."""
