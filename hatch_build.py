"""Editable installs of kvm-fwspec: the `kvm_fwspec` namespace over the checkout's folders.

The wheel maps spec/, codegen/, reference_impl/ and conformance/ under kvm_fwspec/ with
force-include. Hatchling cannot do the same for an editable install (its editables backend
only maps top-level names, and it refuses a `sources` rewrite that adds a prefix), so this hook
installs a one-line `kvm_fwspec/__init__.py` whose `__path__` is the checkout: each folder is
then imported in place as `kvm_fwspec.<folder>`, and no top-level `codegen` or `conformance`
module exists in site-packages.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class EditableNamespace(BuildHookInterface):  # type: ignore[type-arg]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if version != "editable":
            return
        self._directory = tempfile.TemporaryDirectory()
        init = Path(self._directory.name) / "__init__.py"
        init.write_text(
            '"""kvm-fwspec, installed in editable mode: its packages are the checkout\'s folders."""\n'
            f"__path__ = [{str(Path(self.root).resolve())!r}]\n",
            encoding="utf-8",
        )
        build_data["force_include_editable"][str(init)] = "kvm_fwspec/__init__.py"

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        if version == "editable":
            self._directory.cleanup()
