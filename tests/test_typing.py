"""The package type-checks: mypy, configured in pyproject.toml, reports nothing.

``adapters/`` is installed as ``dexorder_feeds.adapters`` (see ``[tool.setuptools]``), which
mypy cannot see from the source tree, so the check runs on a copy laid out as installed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def installed_layout(target: Path) -> Path:
    """Copy the sources into ``target`` the way the wheel installs them."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "dexorder_feeds", target / "dexorder_feeds", ignore=ignore)
    shutil.copytree(ROOT / "adapters", target / "dexorder_feeds" / "adapters", ignore=ignore)
    shutil.copytree(ROOT / "dexorder", target / "dexorder", ignore=ignore)
    return target


def run_mypy(tree: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
         "--cache-dir", str(cache), "dexorder_feeds", "dexorder"],
        cwd=tree, capture_output=True, text=True,
    )


def test_mypy_is_clean(tmp_path):
    result = run_mypy(installed_layout(tmp_path / "tree"), tmp_path / "mypy-cache")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found" in result.stdout


def test_mypy_catches_a_type_error(tmp_path):
    """The check is live: a wrong annotation in a copied module is reported."""
    tree = installed_layout(tmp_path / "tree")
    ranges = tree / "dexorder_feeds" / "vocabulary" / "ranges.py"
    ranges.write_text(ranges.read_text() + "\n\ndef _broken() -> int:\n    return 'not an int'\n")
    result = run_mypy(tree, tmp_path / "mypy-cache")
    assert result.returncode == 1
    assert "ranges.py" in result.stdout and "Incompatible return value type" in result.stdout
