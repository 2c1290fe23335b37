"""The Rust constants compile with rustc (warnings denied) and hold the model's values."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from kvm_fwspec.spec.loader import load_spec
from tests.checkout import ROOT

GENERATED = ROOT / "codegen" / "generated"
RUST_FILE = GENERATED / "rust" / "kvm_fw.rs"


def rust_constants() -> list[tuple[str, str]]:
    """(module, name) of every `pub const` in the generated file."""
    found, module = [], ""
    for line in RUST_FILE.read_text(encoding="utf-8").splitlines():
        if m := re.match(r"pub mod (\w+)", line):
            module = m.group(1)
        elif m := re.match(r"\s+pub const (\w+):", line):
            found.append((module, m.group(1)))
    return found


def expected_values() -> dict[tuple[str, str], int]:
    spec = load_spec()
    expected: dict[tuple[str, str], int] = {}
    for r in spec.registers:
        for arch, reg_id in r.ids.items():
            expected[(arch, r.c_name)] = reg_id
        for v in r.values:
            expected[("arm64", v.c_name)] = v.value
    for f in spec.psci_functions:
        for conv, c_name in f.c_names.items():
            expected[("psci", c_name)] = f.ids[conv]
    for f in spec.smccc_functions:
        expected[("smccc", f.c_name)] = f.function_id
    for c in spec.psci_return_codes:
        expected[("psci", c.c_name)] = c.value
    for c in spec.capabilities:
        expected[("caps", c.c_name)] = c.value
    return expected


@pytest.mark.tools
def test_rust_constants_compile_and_match(tmp_path: Path) -> None:
    rustc = shutil.which("rustc")
    if rustc is None:
        pytest.skip(
            "rustc is not installed on this machine, so the Rust output cannot be compiled here"
        )
    constants = rust_constants()
    prints = "".join(f'    println!("{m}::{n} {{}}", kvm_fw::{m}::{n});\n' for m, n in constants)
    main = tmp_path / "main.rs"
    main.write_text(
        f'#![deny(warnings)]\n#[path = "{RUST_FILE}"]\nmod kvm_fw;\nfn main() {{\n{prints}}}\n',
        encoding="utf-8",
    )
    built = subprocess.run(
        [rustc, "--edition", "2021", "-o", str(tmp_path / "probe"), str(main)],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr
    output = subprocess.run(
        [str(tmp_path / "probe")], capture_output=True, text=True, check=True
    ).stdout
    values = {
        tuple(line.split(" ")[0].split("::")): int(line.split(" ")[1])
        for line in output.splitlines()
    }
    expected = expected_values()
    checked = {key: values[key] for key in expected if key in values}
    assert checked == {key: expected[key] for key in checked}
    assert set(expected) <= set(values), f"missing from Rust: {sorted(set(expected) - set(values))}"
    assert len(checked) > 70


def test_json_model_and_python_constants_agree() -> None:
    from kvm_fwspec.codegen.generated import kvm_fw_constants as constants

    model = json.loads((GENERATED / "json" / "kvm-fwspec.json").read_text(encoding="utf-8"))
    for register in model["registers"]:
        assert getattr(constants, register["c-name"]) == register["ids"]["arm64"]
        assert (
            constants.FwRegister[register["name"].replace("-", "_").upper()]
            == register["ids"]["arm64"]
        )
    assert constants.PsciVersion.V1_3 == 0x10003
