"""The import graph of ptq/: no cycles, the graph helpers import no stage, no stage imports the CLI.

Read from the source with ``ast`` (every import, function-level ones too: a cycle hidden in a
function is still a cycle), except imports under ``if TYPE_CHECKING:``, which never run. The
package's ``__init__`` is the public facade (it re-exports ``convert``), so importing
``__version__`` from ``ptq`` is not an edge to it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import ptq

ROOT = Path(ptq.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for child in node.body for n in ast.walk(child)}
    return skipped


def import_graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        skipped = _type_checking_nodes(tree)
        edges = set()
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module for a in node.names]
            else:
                continue
            edges |= {t for t in targets if t in modules and t not in ("ptq", name)}
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path (first node repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_ptq_has_no_import_cycle():
    graph = import_graph()
    assert {"ptq.api", "ptq.graph", "ptq.runtime", "ptq.tuning.scoring"} <= set(graph)
    assert find_cycle(graph) is None


def test_graph_helpers_import_no_stage_and_no_stage_imports_the_cli():
    graph = import_graph()
    helpers = ("ptq.graph", "ptq.qmath", "ptq.errors", "ptq.config", "ptq.progress")
    for helper in helpers:
        assert graph[helper] <= set(helpers), helper
    assert [name for name, edges in graph.items() if "ptq.cli" in edges] == []
