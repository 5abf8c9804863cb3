"""The client side: ``OHLCClient``, the fetcher, ``IcebergClient``, the blocking face and the two
history transports (embedded and relay)."""
