"""Packaging: adapters/ installs as dexorder_feeds.adapters (never a top-level `adapters`), the
generated protobuf modules and py.typed ship, and the console script is declared."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_wheel_maps_adapters_into_the_package(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path), str(REPO)], check=True, capture_output=True, timeout=300)
    wheel = next(tmp_path.glob("dexorder_feeds-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "dexorder_feeds/adapters/__init__.py" in names
    assert "dexorder_feeds/adapters/backtrader.py" in names and "dexorder_feeds/adapters/vectorbt.py" in names
    assert not any(name.startswith("adapters/") for name in names), "no top-level 'adapters' package"
    assert "dexorder/__init__.py" in names, "the seed's import name ships"
    assert "dexorder_feeds/wire/ingestor_pb2.py" in names and "dexorder_feeds/py.typed" in names
    assert not any(name.startswith(("tests/", "examples/", "proto/")) for name in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "dexorder-feeds = dexorder_feeds.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()

    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    code = "import dexorder_feeds.adapters.iterator as m, dexorder_feeds; print(m.__file__)"
    out = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(site)!r}); {code}"],
                         capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    assert out.strip().startswith(str(site))


def test_the_editable_install_imports_the_adapters_from_the_source_tree():
    import dexorder_feeds.adapters.backtrader as module

    assert Path(module.__file__).resolve() == REPO / "adapters" / "backtrader.py"
