"""The files of this project a guest host runs: the guest package and what it imports of
kvm_fwspec, found by reading the imports, so the initramfs never lags the code.

The same reading lists every import from outside kvm_fwspec; tests/test_layers.py requires
those to be the standard library's, since the guest has Debian's bare python3.11 and nothing
else.
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

GUEST_PACKAGE = "kvm_fwspec.conformance.guest"
NAMESPACE = "kvm_fwspec"  # a namespace package in the guest: it has no file of its own


@dataclass(frozen=True, kw_only=True)
class Payload:
    files: dict[str, Path]  # the path inside the initramfs's PYTHONPATH -> the source file
    foreign: frozenset[str]  # top-level names imported from outside kvm_fwspec


def _source(module: str, bases: Sequence[Path]) -> Path | None:
    """The file of a kvm_fwspec module, found by path without importing it (the guest's
    modules are not meant to run here), or None for a name that is not a module."""
    inside = module.split(".")[1:]
    for base in bases:
        folder = Path(base).joinpath(*inside)
        for candidate in (folder / "__init__.py", folder.with_suffix(".py")):
            if candidate.is_file():
                return candidate
    return None


def _imports(path: Path) -> set[str]:
    """The absolute module names a file imports, `from a import b` giving a.b and a."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _with_parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(2, len(parts) + 1)]


def guest_payload(bases: Sequence[Path] | None = None) -> Payload:
    """The guest package's modules and, transitively, every kvm_fwspec module they import;
    `bases` are the folders holding the namespace's packages (default: where it is imported
    from)."""
    if bases is None:
        bases = [Path(p) for p in importlib.import_module(NAMESPACE).__path__]
    guest_init = _source(GUEST_PACKAGE, bases)
    assert guest_init is not None, GUEST_PACKAGE
    pending = [GUEST_PACKAGE] + [
        f"{GUEST_PACKAGE}.{p.stem}"
        for p in sorted(guest_init.parent.glob("*.py"))
        if p.stem != "__init__"
    ]
    files: dict[str, Path] = {}
    foreign: set[str] = set()
    seen: set[str] = set()
    while pending:
        module = pending.pop()
        if module in seen:
            continue
        seen.add(module)
        path = _source(module, bases)
        if path is None:  # an attribute imported with `from`, not a module
            continue
        relative = module.replace(".", "/") + (
            "/__init__.py" if path.name == "__init__.py" else ".py"
        )
        files[relative] = path
        for name in _imports(path):
            if name.split(".")[0] == NAMESPACE:
                pending += [m for m in _with_parents(name) if m not in seen]
            else:
                foreign.add(name.split(".")[0])
    return Payload(files=dict(sorted(files.items())), foreign=frozenset(foreign - {"__future__"}))
