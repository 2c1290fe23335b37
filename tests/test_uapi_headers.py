"""The generated arm64 constants agree by value with real kernel uapi headers, per the compiler.

Every constant both define is evaluated by gcc on each side and compared. A name the
kernel's header lacks must be explained by the spec (introduced after that release, or
kernel-internal rather than uapi); the test fails on an unexplained gap and on a name the
spec dates later than a header that already has it.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from kvm_fwspec.codegen.sync_check import expected_constants, headers_install
from kvm_fwspec.spec.loader import load_spec
from kvm_fwspec.spec.model import Release, Spec
from tests.c_probe import GENERATED_C, defined_names, evaluate, expressions

pytestmark = pytest.mark.tools  # Debian's arm64 uapi headers, installed by apt

INTERNAL_HEADER = "include/kvm/arm_psci.h"


@dataclass(frozen=True)
class KernelHeaders:
    """A kernel release's uapi headers for arm64 and how to compile against them."""

    label: str
    release: Release
    files: dict[str, Path]  # include name ("asm/kvm.h") -> the file that provides it


def _libc_dev_arm64() -> KernelHeaders:
    version = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", "linux-libc-dev:arm64"],
        capture_output=True,
        text=True,
    ).stdout
    assert version, "linux-libc-dev:arm64 is not installed; .ci/run installs it with apt-get"
    major, minor = re.match(r"(\d+)\.(\d+)", version).groups()  # type: ignore[union-attr]
    return KernelHeaders(
        f"linux-libc-dev:arm64 {version}",
        Release(int(major), int(minor)),
        {
            "asm/kvm.h": Path("/usr/include/aarch64-linux-gnu/asm/kvm.h"),
            "linux/kvm.h": Path("/usr/include/linux/kvm.h"),
            "linux/psci.h": Path("/usr/include/linux/psci.h"),
        },
    )


def _headers_612() -> KernelHeaders:
    found = sorted(
        Path("/usr/src").glob("linux-headers-6.12.*-common"),
        key=lambda p: [int(x) for x in re.findall(r"\d+", p.name)],
    )
    assert found, "linux-headers-6.12.*-common is not installed; .ci/run installs it with apt-get"
    root = found[-1]
    return KernelHeaders(
        root.name,
        Release(6, 12),
        {
            "asm/kvm.h": root / "arch/arm64/include/uapi/asm/kvm.h",
            "linux/kvm.h": root / "include/uapi/linux/kvm.h",
            "linux/psci.h": root / "include/uapi/linux/psci.h",
        },
    )


def install_overlay(kernel: KernelHeaders, workdir: Path) -> list[str]:
    """Compiler flags that see the kernel's three headers first, everything else from libc.

    A -common package holds the uapi sources before `make headers_install`, which include
    kernel-only headers (linux/compiler_types.h); only the three files that define the
    constants are taken from it, their own includes resolve to the installed arm64 headers.
    """
    overlay = workdir / "include"
    for name, source in kernel.files.items():
        target = overlay / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(headers_install(source.read_text(encoding="utf-8")), encoding="utf-8")
    return [f"-I{overlay}", "-I/usr/include/aarch64-linux-gnu"]


def spec_dates(spec: Spec) -> dict[str, tuple[Release | None, bool]]:
    """C name -> (release it entered the uapi headers, whether it is uapi at all), as
    sync-check expects them, plus the register-id macros (KVM_REG_ARM_FW_REG())."""
    dates: dict[str, tuple[Release | None, bool]] = {
        name: (expected.lifetime.since if expected.lifetime else None, True)
        for name, expected in expected_constants(spec, "arm64").items()
    }
    for version in spec.psci_versions:
        if version.c_name:
            dates[version.c_name] = (None, False)
    for c_class in spec.layout("reg-id").field("class").values:
        if c_class.c_name and c_class.c_reg_macro:
            dates[c_class.c_reg_macro] = (c_class.lifetime.since, True)
    return dates


def expected_absent(
    name: str, dates: dict[str, tuple[Release | None, bool]], release: Release
) -> bool:
    since, uapi = dates.get(name, (None, True))
    return not uapi or (since is not None and since > release)


@pytest.mark.parametrize(
    "headers", [_libc_dev_arm64, _headers_612], ids=["libc-dev-arm64", "headers-6.12"]
)
def test_generated_arm64_constants_match_kernel_headers(headers, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    kernel = headers()
    kernel_text = "\n".join(f.read_text(encoding="utf-8") for f in kernel.files.values())
    kernel_names = set(re.findall(r"\b[A-Z][A-Z0-9_]+\b", kernel_text))
    objects, macros = [], []
    for header in ("kvm_fw_arm64.h", "kvm_fw_psci.h"):
        o, m = defined_names(GENERATED_C / header)
        objects += o
        macros += m
    ours = evaluate(
        ['"kvm_fw_arm64.h"'], [f"-I{GENERATED_C}"], expressions(objects, macros), tmp_path
    )

    shared_objects = [n for n in objects if n in kernel_names]
    shared_macros = [n for n in macros if n in kernel_names]
    (tmp_path / "kernel").mkdir()
    theirs = evaluate(
        ["<linux/kvm.h>", "<asm/kvm.h>", "<linux/psci.h>"],
        install_overlay(kernel, tmp_path),
        expressions(shared_objects, shared_macros),
        tmp_path / "kernel",
    )

    mismatches = {e: (ours[e], v) for e, v in theirs.items() if ours[e] != v}
    assert not mismatches, f"{kernel.label}: generated vs kernel values differ: {mismatches}"
    assert len(theirs) > 60, f"only {len(theirs)} constants compared"

    dates = spec_dates(load_spec())
    lacking = sorted(set(objects + macros) - kernel_names)
    unexplained = [n for n in lacking if not expected_absent(n, dates, kernel.release)]
    contradicted = sorted(
        n for n in set(objects + macros) & kernel_names if expected_absent(n, dates, kernel.release)
    )
    print(
        f"{kernel.label}: {len(theirs)} values equal; names the kernel lacks: {', '.join(lacking) or 'none'}"
    )
    assert not unexplained, (
        f"{kernel.label} lacks names the spec says it should have: {unexplained}"
    )
    assert not contradicted, (
        f"{kernel.label} has names the spec dates later or calls internal: {contradicted}"
    )


def test_the_smccc_filter_constants_match_the_6_12_headers(tmp_path: Path) -> None:
    """The SMCCC filter's constants (6.4) as the spec, the generated arm64 header and Debian's
    6.12 uapi source give them, each evaluated by gcc; all but the exit reason live in
    asm/kvm.h, KVM_EXIT_HYPERCALL in linux/kvm.h (which sync-check does not check)."""
    spec = load_spec()
    abi = spec.smccc_filter
    constants = [abi.group, abi.attr, *abi.actions, abi.exit_reason, *abi.exit_flags]
    names = [c.c_name for c in constants]
    kernel = _headers_612()
    theirs = evaluate(
        ["<linux/kvm.h>", "<asm/kvm.h>"], install_overlay(kernel, tmp_path), names, tmp_path
    )
    (tmp_path / "generated").mkdir()
    ours = evaluate(['"kvm_fw_arm64.h"'], [f"-I{GENERATED_C}"], names, tmp_path / "generated")
    assert theirs == ours == {c.c_name: c.value for c in constants}
    defines = r"^\s*(?:#\s*define\s+)?([A-Z][A-Z0-9_]*)\b(?:\s*=|\s*,|\s+\S)"
    asm_kvm_h = set(re.findall(defines, kernel.files["asm/kvm.h"].read_text(), re.M))
    linux_kvm_h = set(re.findall(defines, kernel.files["linux/kvm.h"].read_text(), re.M))
    assert sorted(set(names) - asm_kvm_h) == [abi.exit_reason.c_name]
    assert abi.exit_reason.c_name in linux_kvm_h
