"""The reproducibility promise end to end: a fetched month, pinned, reads back identically (frame
and content hash) after many gap fills, a compaction and an expiry, by pin and by snapshot id;
an expired unpinned snapshot says so; plain pyiceberg reads the same rows under the tag."""

from __future__ import annotations

import asyncio
import hashlib
import os
import struct
import subprocess
import sys

import pandas as pd
import pytest

from dexorder_feeds import IcebergClient, MissingAtSnapshotError, OHLCClient, UnknownSnapshotError
from dexorder_feeds.storage.catalog import open_catalog
from dexorder_feeds.storage.maintenance import MANUAL, run_maintenance
from dexorder_feeds.storage.warehouse import Warehouse
from dexorder_feeds.vocabulary.fingerprint import content_hash

TICKER = "SIM:BTC/USDT"
JAN = ("2025-01-01", "2025-01-31T23:59:59")


def maintain(catalog_uri: str) -> None:
    warehouse = Warehouse(open_catalog(catalog_uri), maintenance=MANUAL)
    try:
        compacted, expired = run_maintenance(warehouse, min_files=2, keep_snapshots=1, retention_seconds=0,
                                             reader_grace_seconds=0)
        assert compacted and expired
    finally:
        warehouse.close()


def test_a_pinned_month_reads_back_exactly(catalog_uri, tmp_path):
    async def scenario():
        async with OHLCClient(iceberg_catalog_uri=catalog_uri) as client:
            frame = await client.fetch_ohlc(TICKER, "1h", *JAN)
            snapshot, digest = frame.attrs["snapshot_id"], frame.attrs["content_hash"]
            iceberg = IcebergClient(catalog_uri)
            pin = iceberg.pin("jan")
            assert pin.snapshot_id == snapshot and pin.candles == 744

            later = []
            for i in range(40):  # gap fills of other ranges and tickers
                ticker = TICKER if i % 2 else ("SIM:ETH/USDT", "SIM:SOL/USDT")[i % 4 // 2]
                day = pd.Timestamp("2025-02-01") + pd.Timedelta(days=i)
                filled = await client.fetch_ohlc(ticker, "1h", day, day + pd.Timedelta(hours=23))
                later.append(filled.attrs["snapshot_id"])
            maintain(catalog_uri)

            for as_of in ("jan", snapshot):
                again = await client.fetch_ohlc(TICKER, "1h", *JAN, as_of=as_of)
                pd.testing.assert_frame_equal(again, frame)
                assert again.attrs["content_hash"] == digest and again.attrs["snapshot_id"] == snapshot
            queried = iceberg.query_ohlc(TICKER, 3600, *JAN, as_of="jan")
            pd.testing.assert_frame_equal(queried, frame)
            assert queried.attrs["content_hash"] == digest

            with pytest.raises(UnknownSnapshotError, match="expired"):
                await client.fetch_ohlc(TICKER, "1h", *JAN, as_of=later[10])
            with pytest.raises(MissingAtSnapshotError, match="never fills gaps"):
                await client.fetch_ohlc(TICKER, "1h", "2025-01-01", "2025-02-03", as_of="jan")
            return frame

    frame = asyncio.run(scenario())

    # Plain pyiceberg, by the tag's name, in another process.
    script = (
        "import sys, pyarrow.compute as pc\n"
        "from pyiceberg.catalog.sql import SqlCatalog\n"
        "uri, ticker = sys.argv[1:]\n"
        "path = uri.removeprefix('sqlite:///')\n"
        "catalog = SqlCatalog('dexorder', uri=uri, warehouse='file://' + path.rsplit('/', 1)[0] + '/warehouse')\n"
        "table = catalog.load_table('trading.ohlc')\n"
        "rows = table.scan(row_filter=f\"ticker == '{ticker}' and period_seconds == 3600\").use_ref('jan').to_arrow()\n"
        "rows = rows.sort_by('timestamp')\n"
        "print(len(rows), pc.sum(rows['close']).as_py(), rows['timestamp'][0].as_py(), rows['timestamp'][-1].as_py())\n"
    )
    out = subprocess.run([sys.executable, "-c", script, catalog_uri, TICKER], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "PYICEBERG_HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(len(frame)), str(int(frame["close"].sum())),
                                  str(frame["timestamp"].iloc[0]), str(frame["timestamp"].iloc[-1])]


def test_the_content_hash_names_the_candles_not_the_frame():
    base = pd.DataFrame({"timestamp": [3, 1, 2], "open": [10, 11, 12], "high": [13, 14, 15], "low": [7, 8, 9],
                         "close": [11, 12, 13], "volume": [5, 6, 7],
                         "buy_vol": pd.array([1, None, 3], dtype="Int64"),
                         "sell_vol": pd.array([None] * 3, dtype="Int64"),
                         "open_interest": pd.array([None] * 3, dtype="Int64")})
    digest = content_hash(base, TICKER, 3600, 2, 4)
    assert digest.startswith("sha256:") and len(digest) == 71
    # Row order and null representation do not matter; every value, the ticker, period and decimals do.
    assert content_hash(base.sort_values("timestamp"), TICKER, 3600, 2, 4) == digest
    assert content_hash(base.astype({"buy_vol": "float64"}), TICKER, 3600, 2, 4) == digest
    changed = base.copy()
    changed.loc[0, "close"] = 99
    zero_not_null = base.copy()
    zero_not_null["sell_vol"] = pd.array([0, 0, 0], dtype="Int64")
    others = {content_hash(changed, TICKER, 3600, 2, 4), content_hash(zero_not_null, TICKER, 3600, 2, 4),
              content_hash(base, "SIM:ETH/USDT", 3600, 2, 4), content_hash(base, TICKER, 60, 2, 4),
              content_hash(base, TICKER, 3600, 3, 4), content_hash(base, TICKER, 3600, 2, 5),
              content_hash(base.iloc[:2], TICKER, 3600, 2, 4)}
    assert digest not in others and len(others) == 7
    # The documented definition, written out independently (docs/reproducibility.md).
    rows = base.sort_values("timestamp")
    columns = []
    for name in ("timestamp", "open", "high", "low", "close", "volume", "buy_vol", "sell_vol", "open_interest"):
        present = bytes(0 if pd.isna(v) else 1 for v in rows[name])
        values = b"".join(struct.pack("<q", 0 if pd.isna(v) else int(v)) for v in rows[name])
        columns.append(hashlib.sha256(name.encode() + b"\0" + present + values).digest())
    header = b"dexorder-candles-v1\0" + TICKER.encode() + b"\0" + struct.pack("<qiiq", 3600, 2, 4, 3)
    assert digest == "sha256:" + hashlib.sha256(header + b"".join(columns)).hexdigest()
