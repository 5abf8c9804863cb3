"""The import rules of docs/architecture.md, checked over every import statement.

Every ``import``/``from … import`` in ``dexorder_feeds/`` and ``adapters/`` counts, at module
level or inside a function; only imports under ``if TYPE_CHECKING:`` are exempt (they never run).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "dexorder_feeds"

# Each layer and the layers it may import (itself included). Every arrow points down.
LAYERS: dict[str, set[str]] = {
    "vocabulary": {"vocabulary"},
    "plumbing": {"vocabulary", "plumbing"},
    "storage": {"vocabulary", "storage"},
    "wire": {"vocabulary", "wire"},
    "ingest": {"vocabulary", "plumbing", "storage", "wire", "ingest"},
    "config": {"vocabulary", "storage", "ingest", "config"},
    "client": {"vocabulary", "plumbing", "storage", "ingest", "wire", "config", "client"},
    "relay": {"vocabulary", "plumbing", "storage", "ingest", "wire", "config", "relay"},
    "surface": {"vocabulary", "plumbing", "storage", "ingest", "wire", "config", "client", "relay", "surface"},
    "adapters": {"vocabulary", "plumbing", "config", "client", "adapters"},
    "cli": {"vocabulary", "plumbing", "storage", "ingest", "wire", "config", "client", "relay", "surface", "cli"},
    "package": {"vocabulary", "plumbing", "client", "config", "surface", "adapters", "package"},
}
# Third-party packages only some layers may import.
RESTRICTED = {
    "pyiceberg": {"storage"},
    "backtrader": {"adapters"},
    "vectorbt": {"adapters"},
    "zmq": {"wire", "client", "relay"},
    "ccxt": {"ingest"},
}


def layer_of(module: str) -> str:
    parts = module.split(".")
    if parts[0] == "dexorder":
        return "package"
    assert parts[0] == PACKAGE, module
    if len(parts) == 1:
        return "package"
    head = parts[1]
    if head in ("vocabulary", "storage", "ingest", "wire", "client", "relay", "cli", "adapters"):
        return head
    if head == "auth":
        return "wire"
    if head == "config":
        return "config"
    if head in ("hookspecs", "plugins", "importhooks", "events", "_compat"):
        return "plumbing"
    if head in ("_builtin", "plugin"):
        return "surface"
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS in tests/test_layers.py and the docs")


def module_files(root: Path) -> dict[str, Path]:
    """Module name -> file, with ``adapters/`` installed as ``dexorder_feeds.adapters``."""
    found: dict[str, Path] = {}
    for base, prefix in ((root / PACKAGE, [PACKAGE]), (root / "adapters", [PACKAGE, "adapters"]), (root / "dexorder", ["dexorder"])):
        for path in base.rglob("*.py"):
            rel = list(path.relative_to(base).with_suffix("").parts)
            if rel[-1] == "__init__":
                rel = rel[:-1]
            found[".".join(prefix + rel)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _runtime_imports(tree: ast.AST) -> Iterable[ast.Import | ast.ImportFrom]:
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from (n for child in node.orelse for n in _runtime_imports(ast.Module([child], [])))
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        yield from _runtime_imports(node)


def imports_of(module: str, path: Path, modules: Mapping[str, Path]) -> set[str]:
    """Every module ``module`` imports at run time (ours fully resolved, others by top name)."""
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in _runtime_imports(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
            continue
        if node.level:
            base = module.split(".") if is_package else module.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module or ""
        submodules = [f"{target}.{alias.name}" for alias in node.names if f"{target}.{alias.name}" in modules]
        found.update(submodules)
        if len(submodules) < len(node.names):
            found.add(target)
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    modules = module_files(root)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def layer_violations(graph: Mapping[str, set[str]]) -> list[str]:
    problems = []
    for module, targets in sorted(graph.items()):
        layer = layer_of(module)
        for target in sorted(targets):
            top = target.split(".")[0]
            if top in (PACKAGE, "dexorder"):
                if target == PACKAGE and layer != "package":
                    problems.append(f"{module} imports the package root {PACKAGE}: import the module that defines the name")
                elif target != PACKAGE and layer_of(target) not in LAYERS[layer]:
                    problems.append(f"{module} ({layer}) imports {target} ({layer_of(target)}): an arrow pointing up or across")
            elif top in RESTRICTED and layer not in RESTRICTED[top]:
                problems.append(f"{module} ({layer}) imports {top}, which only {sorted(RESTRICTED[top])} may import")
    return problems


def import_cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), among our modules."""
    ours = {m: {t for t in ts if t in graph and t != m} for m, ts in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(ours[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(ours):
        if module not in index:
            visit(module)
    return cycles


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(ROOT)


def test_every_module_belongs_to_a_layer(graph):
    for module in graph:
        layer_of(module)


def test_every_arrow_points_down(graph):
    assert layer_violations(graph) == []


def test_no_import_cycles(graph):
    assert import_cycles(graph) == []


def test_client_and_relay_share_only_wire_and_auth(graph):
    for module, targets in graph.items():
        layer = layer_of(module)
        for target in targets:
            if target.startswith(PACKAGE + ".") and layer in ("client", "relay"):
                assert layer_of(target) != ({"client": "relay", "relay": "client"}[layer]), (module, target)


def test_the_checker_catches_violations(tmp_path):
    """The rules bite: a storage module importing the client, a cycle, a function-level import
    of pyiceberg in the client, and a TYPE_CHECKING import that must not count."""
    pkg = tmp_path / PACKAGE
    for sub in ("storage", "client", "vocabulary"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (tmp_path / "adapters").mkdir()
    (tmp_path / "dexorder").mkdir()
    (pkg / "storage" / "tables.py").write_text("def f():\n    from ..client import reader\n")
    (pkg / "client" / "reader.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..cli import main\n"
        "from ..storage import tables\n\ndef g():\n    import pyiceberg.table\n")
    (pkg / "vocabulary" / "a.py").write_text("from . import b\n")
    (pkg / "vocabulary" / "b.py").write_text("from .a import x\n")
    fake = import_graph(tmp_path)
    problems = layer_violations(fake)
    assert any("storage.tables (storage) imports dexorder_feeds.client.reader" in p for p in problems)
    assert any("client.reader (client) imports pyiceberg" in p for p in problems)
    assert not any("dexorder_feeds.cli." in p or "(cli)" in p for p in problems)
    cycles = import_cycles(fake)
    assert ["dexorder_feeds.client.reader", "dexorder_feeds.storage.tables"] in cycles
    assert ["dexorder_feeds.vocabulary.a", "dexorder_feeds.vocabulary.b"] in cycles
