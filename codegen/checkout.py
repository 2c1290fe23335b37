"""Where a kvm-fwspec source checkout is, for the two jobs that mean one: `generate` writes
its committed outputs there, and results record its commit as provenance. Package data is read
through importlib.resources instead, so an installed wheel needs no checkout."""

from __future__ import annotations

import tomllib
from pathlib import Path

import kvm_fwspec.codegen


def checkout_root() -> Path | None:
    """The checkout this package is imported from (an editable install or the tree itself),
    or None for an installed wheel."""
    root = Path(kvm_fwspec.codegen.__file__).resolve().parent.parent
    try:
        with (root / "pyproject.toml").open("rb") as handle:
            name = tomllib.load(handle).get("project", {}).get("name")
    except (OSError, tomllib.TOMLDecodeError):
        return None
    return root if name == "kvm-fwspec" else None
