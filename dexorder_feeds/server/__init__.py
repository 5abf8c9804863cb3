"""The platform side: the historian, the relay server and the ingest sources."""
