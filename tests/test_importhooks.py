"""Post-import hooks: run after the module's own code, now if already imported, never break it."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def run(code: str, tmp_path) -> str:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                            cwd=tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_callback_runs_once_the_module_is_imported_in_either_order(tmp_path):
    (tmp_path / "fwk.py").write_text("VALUE = 1\n")
    code = """
        import sys; sys.path.insert(0, ".")
        from dexorder_feeds.importhooks import when_imported
        seen = []
        when_imported("fwk", lambda m: seen.append(m.VALUE))
        assert seen == []
        import fwk
        when_imported("fwk", lambda m: seen.append(m.VALUE + 1))
        print(seen)
    """
    assert run(code, tmp_path) == "[1, 2]"


def test_a_failing_callback_or_a_legacy_loader_never_breaks_the_import(tmp_path):
    (tmp_path / "fwk.py").write_text("VALUE = 1\n")
    code = """
        import sys, importlib.abc, importlib.util
        sys.path.insert(0, ".")
        from dexorder_feeds.importhooks import when_imported

        class Legacy(importlib.abc.MetaPathFinder):
            def find_module(self, name, path=None):
                return self if name == "legacy" else None
            def find_spec(self, name, path=None, target=None):
                if name != "legacy":
                    return None
                return importlib.util.spec_from_loader(name, self)
            def load_module(self, name):
                import types
                module = sys.modules[name] = types.ModuleType(name)
                module.VALUE = 7
                return module

        sys.meta_path.append(Legacy())
        when_imported("legacy", lambda m: None)
        when_imported("fwk", lambda m: 1 / 0)
        import legacy, fwk
        print(legacy.VALUE, fwk.VALUE)
    """
    assert run(code, tmp_path) == "7 1"
