"""Regenerate dexorder_feeds/wire/*_pb2.py from the .proto files in this directory.

Usage (from the repository root, with the test extra installed)::

    python proto/generate.py

It runs the protoc bundled in grpcio-tools (pinned in pyproject's ``test`` extra), so no system
``protoc`` is needed. ``tests/test_wire.py`` fails when the committed modules are stale.
"""

from __future__ import annotations

import sys
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent
OUT_DIR = PROTO_DIR.parent / "dexorder_feeds" / "wire"
PROTO_FILES = ("ingestor.proto", "ohlc.proto")


def generate(out_dir: Path = OUT_DIR) -> None:
    from grpc_tools import protoc

    out_dir.mkdir(parents=True, exist_ok=True)
    args = ["protoc", f"-I{PROTO_DIR}", f"--python_out={out_dir}", *PROTO_FILES]
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed: {' '.join(args)}")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT_DIR)
