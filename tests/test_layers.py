"""The layers hold: import-linter's contracts, no import cycle, no project import hidden in a
function, a guest payload of standard-library-only modules, and a `generate --check` that never
loads the suite. Each check is also shown failing on a realistic mistake."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kvm_fwspec.conformance.lab.guest_payload import guest_payload
from tests.checkout import KVM_FWSPEC, ROOT
from tests.import_graph import PACKAGES, cycles, imports

GUEST_ALLOWED = re.compile(
    r"kvm_fwspec/(conformance/guest/[a-z_]+\.py|conformance/__init__\.py|"
    r"codegen/__init__\.py|codegen/generated/(__init__|kvm_fw_constants)\.py)"
)


def checkout_copy(tmp_path: Path) -> Path:
    """The namespace's folders and pyproject.toml, to mutate without touching the checkout."""
    copy = tmp_path / "checkout"
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, copy / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(ROOT / "pyproject.toml", copy)
    return copy


def append(path: Path, line: str) -> None:
    path.write_text(path.read_text(encoding="utf-8") + f"\n{line}\n", encoding="utf-8")


def lint_imports(checkout: Path) -> subprocess.CompletedProcess[str]:
    """import-linter over a checkout, through the same symlinked namespace CI uses."""
    namespace = checkout / ".namespace" / "kvm_fwspec"
    namespace.mkdir(parents=True, exist_ok=True)
    (namespace / "__init__.py").touch()
    for package in PACKAGES:
        link = namespace / package
        if not link.exists():
            link.symlink_to(checkout / package)
    return subprocess.run(
        [sys.executable, "-c", "from importlinter.cli import lint_imports_command; lint_imports_command()"],
        cwd=checkout, capture_output=True, text=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(checkout / ".namespace")},
    )  # fmt: skip


def test_the_checkout_keeps_every_contract(tmp_path: Path) -> None:
    result = lint_imports(checkout_copy(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:]
    assert "0 broken" in result.stdout


def test_an_upward_import_breaks_a_contract(tmp_path: Path) -> None:
    """The generator library reaching for the suite, as codegen/docs.py once did."""
    copy = checkout_copy(tmp_path)
    append(copy / "codegen" / "pages.py", "from kvm_fwspec.conformance.cases import build_cases")
    result = lint_imports(copy)
    assert result.returncode == 1
    assert "Packages point down" in result.stdout and "BROKEN" in result.stdout
    assert "kvm_fwspec.codegen.pages -> kvm_fwspec.conformance.cases" in result.stdout


def test_a_guest_module_reaching_for_the_reference_breaks_a_contract(tmp_path: Path) -> None:
    copy = checkout_copy(tmp_path)
    append(copy / "conformance" / "guest" / "agent.py", "from kvm_fwspec.reference_impl import kvm")
    result = lint_imports(copy)
    assert result.returncode == 1
    assert "The guest runs on Debian's bare python3.11" in result.stdout


def test_no_import_cycle() -> None:
    assert cycles(imports(ROOT)) == []


def test_a_cycle_is_found(tmp_path: Path) -> None:
    """The CLI once lived in codegen and imported the suite, which imported codegen back."""
    copy = checkout_copy(tmp_path)
    append(copy / "spec" / "errors.py", "from kvm_fwspec.conformance.commands import cli")
    found = cycles(imports(copy))
    assert found and all("kvm_fwspec.spec.errors" in c for c in found)
    assert "kvm_fwspec.conformance.commands.cli" in found[0]


def hidden(root: Path) -> list[str]:
    return [f"{i.source}:{i.line} -> {i.target}" for i in imports(root) if i.in_function]


def test_no_project_import_hides_in_a_function() -> None:
    assert hidden(ROOT) == []


def test_a_function_local_import_is_named(tmp_path: Path) -> None:
    copy = checkout_copy(tmp_path)
    append(copy / "codegen" / "pages.py", "def late():\n    from kvm_fwspec.spec import loader\n")
    assert [h.split(":")[0] for h in hidden(copy)] == ["kvm_fwspec.codegen.pages"]


def test_the_guest_payload_is_the_guest_package_and_the_standard_library() -> None:
    payload = guest_payload()
    assert "kvm_fwspec/conformance/guest/kvm_ioctl.py" in payload.files
    assert "kvm_fwspec/conformance/guest/agent.py" in payload.files
    assert [f for f in payload.files if not GUEST_ALLOWED.fullmatch(f)] == []
    assert sorted(payload.foreign - sys.stdlib_module_names) == []


def test_a_guest_import_of_a_third_party_or_the_spec_shows(tmp_path: Path) -> None:
    copy = checkout_copy(tmp_path)
    append(copy / "conformance" / "guest" / "program.py", "import yaml")
    append(
        copy / "conformance" / "guest" / "vmm_agent.py", "from kvm_fwspec.spec.model import Spec"
    )
    payload = guest_payload([copy])
    # yaml directly; lark through the spec library's rule language
    assert sorted(payload.foreign - sys.stdlib_module_names) == ["lark", "yaml"]
    outside = [f for f in payload.files if not GUEST_ALLOWED.fullmatch(f)]
    assert "kvm_fwspec/spec/model.py" in outside and "kvm_fwspec/spec/__init__.py" in outside


def imported_by_generate_check(extra_path: Path | None = None) -> set[str]:
    """Every module `kvm-fwspec generate --check` imports, from Python's own -X importtime."""
    env = None
    if extra_path is not None:
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(extra_path)}
    result = subprocess.run([sys.executable, "-X", "importtime", *KVM_FWSPEC[1:], "generate", "--check"],
                            capture_output=True, text=True, cwd=ROOT, env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    return {
        line.rsplit("|", 1)[1].strip()
        for line in result.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }


# The dispatcher's own path is all of kvm_fwspec.conformance that generate --check may load
# (with the arguments every command shares, which need only argparse and pathlib).
DISPATCH = {
    "kvm_fwspec.conformance",
    "kvm_fwspec.conformance.commands",
    "kvm_fwspec.conformance.commands._arguments",
    "kvm_fwspec.conformance.commands.cli",
    "kvm_fwspec.conformance.commands.generate",
}
HEAVY = re.compile(r"(pytest|_pytest|xdist|kvm_fwspec\.reference_impl|kvm_fwspec\.conformance)\b")


def heavy(names: set[str]) -> list[str]:
    """What generate --check must not load: pytest, the reference, and any conformance
    module beyond the dispatcher's path (the suite, adapters, analyses, lab, campaigns)."""
    return sorted(n for n in names if HEAVY.match(n) and n not in DISPATCH)


def test_generate_check_loads_no_suite_harness_or_reference() -> None:
    names = imported_by_generate_check()
    assert {"kvm_fwspec.conformance.commands.generate", "kvm_fwspec.codegen.generate"} <= names
    assert heavy(names) == []


@pytest.mark.parametrize("module", ["pytest", "kvm_fwspec.conformance.cases"])
def test_a_heavy_import_in_generate_check_shows(module: str, tmp_path: Path) -> None:
    """A sitecustomize that imports `module` stands in for a generator that did."""
    (tmp_path / "sitecustomize.py").write_text(f"import {module}\n", encoding="utf-8")
    assert module in heavy(imported_by_generate_check(tmp_path))
