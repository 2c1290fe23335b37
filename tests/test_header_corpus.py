"""sync-check against a corpus of real third-party copies of the uapi constants (QEMU's
linux-headers, kvmtool, rust-vmm kvm-bindings, crosvm's kvm_sys, bionic, Debian bookworm's cross
headers), each with a verdict found by hand against the kernel header of its release
(tests/fixtures/header-copies/manifest.yaml). A copy with one constant changed must fail naming it."""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.checkout import KVM_FWSPEC, ROOT

CORPUS = ROOT / "tests" / "fixtures" / "header-copies"
MANIFEST: list[dict[str, Any]] = yaml.safe_load((CORPUS / "manifest.yaml").read_text())["copies"]
CHECKS = [
    pytest.param(copy, check, id=f"{copy['name']}-{check['arch']}-{check['kernel']}")
    for copy in MANIFEST
    for check in copy["checks"]
]

# How sync-check names a wrong constant, one a line ("  NAME: differs: file 0x13, spec 0x14").
STATUS = {
    "differs": re.compile(r"^\s*([A-Z][A-Z0-9_]*): differs\b", re.M),
    "missing": re.compile(r"^\s*([A-Z][A-Z0-9_]*): missing\b", re.M),
    "ahead": re.compile(r"^\s*([A-Z][A-Z0-9_]*): defined, but the spec has it only from", re.M),
}
# The constants bindgen cannot carry, one a line ("  NAME: absent, as bindgen ...") or gathered
# on one line ("  48 constants absent as bindgen ...: NAME, NAME, ...").
BEYOND_ONE = re.compile(r"^\s*([A-Z][A-Z0-9_]*): absent,? as bindgen", re.M)
BEYOND_ALL = re.compile(r"^\s*\d+ constants? absent,? as bindgen.*: ([A-Z0-9_, ]+)$", re.M)


def sync_check(kernel: str, arch: str, files: list[Path]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KVM_FWSPEC, "sync-check", "--kernel", kernel, "--arch", arch, *map(str, files)],
        capture_output=True,
        text=True,
    )


def verdict(output: str, keys: list[str]) -> dict[str, list[str]]:
    found = {key: set(STATUS[key].findall(output)) for key in STATUS}
    found["beyond-bindgen"] = set(BEYOND_ONE.findall(output)) | {
        name for names in BEYOND_ALL.findall(output) for name in names.split(", ")
    }
    return {key: sorted(found[key]) for key in keys}


def test_the_corpus_is_large_and_its_files_are_the_fetched_bytes() -> None:
    assert len(MANIFEST) >= 25
    repositories = {copy["repository"] for copy in MANIFEST}
    assert {"qemu/qemu", "kvmtool/kvmtool", "rust-vmm/kvm-bindings", "rust-vmm/kvm"} <= repositories
    assert {"google/crosvm", "Debian bookworm main"} <= repositories
    on_disk = {p.relative_to(CORPUS) for p in CORPUS.rglob("*") if p.is_file()}
    listed = {Path(copy["name"]) / path for copy in MANIFEST for path in copy["paths"]}
    assert on_disk - {Path("manifest.yaml")} == listed
    for copy in MANIFEST:
        for path, digest in copy["sha256"].items():
            data = (CORPUS / copy["name"] / path).read_bytes()
            assert hashlib.sha256(data).hexdigest() == digest, f"{copy['name']}/{path}"


@pytest.mark.tools
@pytest.mark.parametrize(("copy", "check"), CHECKS)
def test_sync_check_gives_the_hand_checked_verdict(
    copy: dict[str, Any], check: dict[str, Any]
) -> None:
    files = [CORPUS / copy["name"] / path for path in check["files"]]
    result = sync_check(check["kernel"], check["arch"], files)
    expected = {key: sorted(names) for key, names in check["verdict"].items()}
    assert result.stderr == "", result.stderr
    assert verdict(result.stdout, list(expected)) == expected, result.stdout
    wrong = expected["differs"] or expected["missing"] or expected["ahead"]
    assert result.returncode == (1 if wrong else 0), result.stdout


def definition(text: str, name: str) -> re.Match[str] | None:
    """`name`'s definition line: a #define, an enum member or a Rust `pub const`."""
    return re.search(
        rf"^([ \t]*#[ \t]*define[ \t]+{name}[ \t]+.*|[ \t]+{name}[ \t]*=.*|[ \t]*pub const {name}\s*:.*)$",
        text,
        re.M,
    )


def mutated(text: str, name: str) -> str:
    """`text` with the last integer literal of `name`'s definition changed by one: the slip of a
    hand edit or a bad merge (FW_REG(2) -> FW_REG(3), -3 -> -4, = 0; -> = 1;)."""
    match = definition(text, name)
    assert match, f"{name} is not defined"
    line = match.group(1)
    literal = list(re.finditer(r"\b(0x[0-9a-fA-F]+|[0-9]+)(?=[uUlL]*\b)", line))[-1]
    value = int(literal.group(1), 0) + 1
    spelled = hex(value) if literal.group(1).startswith("0x") else str(value)
    changed = line[: literal.start()] + spelled + line[literal.end() :]
    return text[: match.start(1)] + changed + text[match.end(1) :]


@pytest.mark.tools
@pytest.mark.parametrize("copy", MANIFEST, ids=[copy["name"] for copy in MANIFEST])
def test_a_copy_with_one_constant_changed_fails_naming_it(
    copy: dict[str, Any], tmp_path: Path
) -> None:
    check = copy["checks"][0]
    name = copy["mutate"]
    files = []
    changed = False
    for path in check["files"]:
        target = tmp_path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        text = (CORPUS / copy["name"] / path).read_text(encoding="utf-8")
        if not changed and definition(text, name):
            text, changed = mutated(text, name), True
        target.write_text(text, encoding="utf-8")
        files.append(target)
    assert changed, f"{name} is in none of {check['files']}"
    result = sync_check(check["kernel"], check["arch"], files)
    assert result.returncode == 1, result.stdout
    assert name in verdict(result.stdout, ["differs"])["differs"], result.stdout


@pytest.mark.tools
def test_the_debian_bookworm_cross_headers_carry_the_6_1_erratum() -> None:
    """bookworm's linux-libc-dev-arm64-cross 6.1.4: MEM_PROTECT_CHECK_RANGE is FN(19), right
    against 6.1 as released, wrong against the 6.1.y stable series."""
    copy = next(c for c in MANIFEST if c["name"].startswith("debian-bookworm"))
    files = [CORPUS / copy["name"] / path for path in copy["paths"]]
    text = files[1].read_text()
    assert "MEM_PROTECT_CHECK_RANGE\tPSCI_0_2_FN(19)" in text
    released = sync_check("6.1", "arm64", files)
    stable = sync_check("6.1.y", "arm64", files)
    assert released.returncode == 0, released.stdout
    assert stable.returncode == 1, stable.stdout
    assert verdict(stable.stdout, ["differs"])["differs"] == [
        "PSCI_1_1_FN64_MEM_PROTECT_CHECK_RANGE",
        "PSCI_1_1_FN_MEM_PROTECT_CHECK_RANGE",
    ]
