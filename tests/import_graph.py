"""The project's import graph read from the checkout's source, without importing anything:
which kvm_fwspec module imports which, where each import sits, and the cycles among them."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

PACKAGES = ("spec", "codegen", "reference_impl", "conformance")  # folders -> kvm_fwspec.<folder>


@dataclass(frozen=True, kw_only=True)
class Import:
    source: str  # the importing module
    target: str  # the imported kvm_fwspec module (or the module holding the imported name)
    line: int
    in_function: bool  # inside a def: an edge a reader of the module's head does not see


def modules(root: Path) -> dict[str, Path]:
    """Every module of the namespace in a checkout, by name."""
    found = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join(("kvm_fwspec", *parts))
            found[name.removesuffix(".__init__")] = path
    return found


def _targets(node: ast.Import | ast.ImportFrom, known: dict[str, Path]) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name in known]
    if node.level or not node.module:
        return []
    names = [f"{node.module}.{a.name}" for a in node.names]
    submodules = [n for n in names if n in known]
    return submodules or ([node.module] if node.module in known else [])


def imports(root: Path) -> list[Import]:
    """Every import of one project module by another, with its place."""
    known = modules(root)
    found = []
    for name, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        functions = [
            n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
        ]
        inside = {id(n) for f in functions for n in ast.walk(f)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                found += [
                    Import(source=name, target=t, line=node.lineno, in_function=id(node) in inside)
                    for t in _targets(node, known)
                ]
    return found


def cycles(edges: list[Import]) -> list[list[str]]:
    """The strongly connected components of more than one module, or of one that imports itself
    (Tarjan's algorithm, iteratively), each sorted, the list sorted."""
    graph: dict[str, set[str]] = {}
    for edge in edges:
        graph.setdefault(edge.source, set()).add(edge.target)
        graph.setdefault(edge.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1 or node in graph[node]:
                        components.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return sorted(components)
