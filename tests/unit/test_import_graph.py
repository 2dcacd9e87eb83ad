"""No import cycle anywhere in escp/: the layers stay layers (protocol and engine never
reach up into net, two modules never need each other). Imports are read from the
source (function-level ones included, `if TYPE_CHECKING:` blocks excluded), so a cycle
hidden inside a function is caught too."""

from __future__ import annotations

import ast
from pathlib import Path

import escp

ROOT = Path(escp.__file__).parent
SKIP = ("fb",)  # generated FlatBuffers code


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        if not any(part in SKIP for part in path.relative_to(ROOT).parts):
            found[module_name(path)] = path
    return found


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node except what sits under `if TYPE_CHECKING:`."""
    out: list[ast.AST] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        out.append(node)
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and getattr(child.test, "id", None) == "TYPE_CHECKING":
                stack.extend(child.orelse)
                continue
            stack.append(child)
    return out


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    deps: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            deps.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            if not base.startswith("escp"):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                deps.add(sub if sub in known else base)
    deps.discard(name)
    return {d for d in deps if d in known}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def test_the_graph_is_read() -> None:
    graph = import_graph()
    assert "escp.protocol.receiver_core" in graph["escp.net.receive"]
    assert "escp.protocol.messages" in graph["escp.net.receive"]  # `from ..protocol import messages as m`
    assert "escp.trace.recorder" in graph["escp.api"]  # a function-level import
    assert "escp.net.send" not in graph["escp.api"]  # under TYPE_CHECKING only


def test_no_import_cycle() -> None:
    assert cycles(import_graph()) == []


def test_lower_layers_do_not_reach_up() -> None:
    """protocol/ imports nothing of engine/ or net/; engine/ nothing of net/."""
    graph = import_graph()
    for name, deps in graph.items():
        if name.startswith("escp.protocol"):
            assert not {d for d in deps if d.startswith(("escp.engine", "escp.net"))}, name
        if name.startswith("escp.engine"):
            assert not {d for d in deps if d.startswith("escp.net")}, name
