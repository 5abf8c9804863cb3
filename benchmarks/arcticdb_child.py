"""The ArcticDB side of the B1/B2 anchor, run in ArcticDB's own venv (see anchor_arcticdb.py).

    python arcticdb_child.py LMDB_DIR

Reads JSON requests, one a line, on stdin and answers each with one JSON line on stdout:

- ``{"op": "write", "symbol": S, "npz": PATH}``: store the candles of an ``.npz`` file (an int64
  ``timestamp`` in µs, which becomes the DatetimeIndex, and int64 columns) as symbol ``S``.
- ``{"op": "read", "symbol": S, "start": µs, "stop": µs}`` (either may be null: unbounded):
  ``lib.read(S, date_range=...)`` of ``start <= t < stop``, timed here, around the read alone;
  answers ``{"seconds": s, "rows": n, "first": µs, "last": µs}``.

Imports nothing of dexorder-feeds: ArcticDB needs pandas < 3 and protobuf < 7.
"""

from __future__ import annotations

import json
import sys
import time


def main(lmdb_dir: str) -> None:
    import arcticdb
    import numpy as np
    import pandas as pd

    library = arcticdb.Arctic(f"lmdb://{lmdb_dir}?map_size=4GB").get_library("candles", create_if_missing=True)
    print(json.dumps({"ready": True, "arcticdb": arcticdb.__version__, "pandas": pd.__version__}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        try:
            if request["op"] == "write":
                with np.load(request["npz"]) as data:
                    columns = {name: data[name] for name in data.files if name != "timestamp"}
                    index = pd.to_datetime(data["timestamp"], unit="us")
                library.write(request["symbol"], pd.DataFrame(columns, index=index))
                answer: dict = {"rows": len(index)}
            elif request["op"] == "read":
                start, stop = request.get("start"), request.get("stop")
                date_range = (None if start is None else pd.Timestamp(start, unit="us"),
                              None if stop is None else pd.Timestamp(stop - 1, unit="us"))
                began = time.perf_counter()
                frame = library.read(request["symbol"], date_range=date_range).data
                seconds = time.perf_counter() - began
                stamps = frame.index.asi8 // 1000 if len(frame) else []
                answer = {"seconds": seconds, "rows": len(frame),
                          "first": int(stamps[0]) if len(frame) else None,
                          "last": int(stamps[-1]) if len(frame) else None}
            else:
                answer = {"error": f"unknown op {request['op']!r}"}
        except Exception as exc:  # report, keep serving
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
