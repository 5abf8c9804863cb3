"""Old import paths (0.1) still work for one release: same objects, and a DeprecationWarning."""

from __future__ import annotations

import importlib
import subprocess
import sys
import warnings

import pytest

from dexorder_feeds._compat import MOVED_MODULES


def test_every_old_path_warns_in_a_fresh_interpreter():
    code = (
        "import importlib, warnings\n"
        "from dexorder_feeds._compat import MOVED_MODULES\n"
        "for old in sorted(MOVED_MODULES):\n"
        "    with warnings.catch_warnings(record=True) as caught:\n"
        "        warnings.simplefilter('always')\n"
        "        importlib.import_module(old)\n"
        "    print(old, '|', ' '.join(str(w.message) for w in caught if w.category is DeprecationWarning))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    lines = dict(line.split(" | ", 1) for line in out.splitlines())
    assert set(lines) == set(MOVED_MODULES)
    for old, new in MOVED_MODULES.items():
        assert f"{old} moved to {new}" in lines[old] or old.startswith("dexorder_feeds.server"), (old, lines[old])
    # the first import of the old server package warns for it and for the submodule asked for
    assert "dexorder_feeds.server moved to dexorder_feeds.ingest" in lines["dexorder_feeds.server"]


@pytest.mark.parametrize("old", sorted(MOVED_MODULES))
def test_old_path_forwards_to_the_same_objects(old):
    new = MOVED_MODULES[old]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        moved = importlib.import_module(old)
    target = importlib.import_module(new)
    assert dir(moved) == dir(target)
    public = [name for name in getattr(target, "__all__", []) if not name.startswith("_")]
    for name in public:
        assert getattr(moved, name) is getattr(target, name)


def test_names_that_left_a_module_are_found_where_they_went():
    from dexorder_feeds.vocabulary.requests import CacheRead, FetchRequest

    with pytest.warns(DeprecationWarning):
        sys.modules.pop("dexorder_feeds.fetcher", None)
        from dexorder_feeds.fetcher import CacheRead as old_cache_read
        from dexorder_feeds.fetcher import FetchRequest as old_request
    assert old_request is FetchRequest and old_cache_read is CacheRead


def test_an_unknown_name_on_an_old_path_is_an_attribute_error():
    with pytest.warns(DeprecationWarning):
        sys.modules.pop("dexorder_feeds.tickers", None)
        old = importlib.import_module("dexorder_feeds.tickers")
    with pytest.raises(AttributeError):
        old.no_such_name  # noqa: B018
