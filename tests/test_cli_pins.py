"""``dexorder-feeds pin``, ``pins`` and ``unpin`` as a user runs them."""

from __future__ import annotations

import re

from test_cli import cli


def test_pin_list_and_unpin(tmp_path):
    assert "no pins" in cli("pins", cache=tmp_path).stdout
    empty = cli("pin", "jan", cache=tmp_path)
    assert empty.returncode == 2 and "nothing to pin" in empty.stderr

    fetched = cli("fetch", "SIM:BTC/USDT", "--start", "2025-01-01", "--end", "2025-01-07T23:59:59", "--no-progress",
                  cache=tmp_path)
    assert fetched.returncode == 0, fetched.stderr
    snapshot = re.search(r"Iceberg snapshot (\d+)", fetched.stdout)
    pinned = cli("pin", "jan", cache=tmp_path)
    assert pinned.returncode == 0, pinned.stderr
    assert f"snapshot {snapshot.group(1)}" in pinned.stdout and "168 candles" in pinned.stdout

    again = cli("pin", "jan", cache=tmp_path)
    assert again.returncode == 2 and "exists" in again.stderr and "Traceback" not in again.stderr
    bad = cli("pin", "two words", cache=tmp_path)
    assert bad.returncode == 2 and "invalid pin name" in bad.stderr

    listed = cli("pins", cache=tmp_path).stdout.splitlines()
    assert listed[0].split()[:2] == ["name", "snapshot"]
    assert listed[1].split()[:2] == ["jan", snapshot.group(1)] and "168" in listed[1]

    assert cli("unpin", "jan", cache=tmp_path).returncode == 0
    gone = cli("unpin", "jan", cache=tmp_path)
    assert gone.returncode == 2 and "no pin named 'jan'" in gone.stderr
    assert "no pins" in cli("pins", cache=tmp_path).stdout
