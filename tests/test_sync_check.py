"""sync-check on Debian's real arm64 headers, on a corrupted copy, and after --fix."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from kvm_fwspec.codegen.sync_check import check
from kvm_fwspec.conformance.campaigns.sync_proof import (
    CopyCheck,
    check_copies,
    cross_check,
    differences,
    fetch_copies,
)
from kvm_fwspec.conformance.lab.qemu_adapter import default_cache
from kvm_fwspec.spec.kernel_names import KernelName, parse_kernel_name
from kvm_fwspec.spec.loader import load_spec
from tests.checkout import KVM_FWSPEC, ROOT

LIBC = [Path("/usr/include/aarch64-linux-gnu/asm/kvm.h"), Path("/usr/include/linux/psci.h")]
SPEC = load_spec()


def sync_check_command(*args: str | Path) -> list[str]:
    return [
        *KVM_FWSPEC,
        "sync-check",
        *map(str, args),
    ]


def kernel(name: str) -> KernelName:
    return parse_kernel_name(SPEC, name)


@pytest.fixture(scope="module")
def debian_copies() -> list[CopyCheck]:
    """Debian's real arm64 uapi headers of the four lines, each checked for the release it claims
    (downloaded once into the harness cache)."""
    return check_copies(SPEC, fetch_copies(default_cache()))


@pytest.mark.lab
def test_each_debian_header_agrees_with_its_own_release(debian_copies: list[CopyCheck]) -> None:
    claims = {c.copy.line: str(c.kernel) for c in debian_copies}
    assert claims == {"5.10": "5.10.y", "6.1": "6.1.y", "6.12": "6.12.y", "7.2": "7.2.y"}
    for each in debian_copies:
        assert [str(f) for f in each.wrong] == [], each.copy.label
        assert sum(f.status == "agrees" for f in each.findings) >= 60, each.copy.label


@pytest.mark.lab
def test_the_cross_check_shows_what_each_line_added(debian_copies: list[CopyCheck]) -> None:
    rows = {(r["copy"], r["against"]): r for r in cross_check(SPEC, debian_copies)}
    assert {"KVM_REG_ARM_STD_BMAP", "KVM_REG_ARM_FW_FEAT_BMAP", "PSCI_1_0_FN_CPU_FREEZE"} <= set(
        rows[("5.10", "6.1.y")]["missing"]
    )
    assert "KVM_REG_ARM_STD_BMAP" in rows[("6.1", "5.10.y")]["ahead"]
    assert set(rows[("7.2", "6.12.y")]["ahead"]) == {
        "KVM_REG_ARM_VENDOR_HYP_BMAP_2",
        "KVM_REG_ARM_VENDOR_HYP_BIT_DISCOVER_IMPL_VER",
        "KVM_REG_ARM_VENDOR_HYP_BIT_DISCOVER_IMPL_CPUS",
        "PSCI_1_3_FN_SYSTEM_OFF2",
        "PSCI_1_3_FN64_SYSTEM_OFF2",
    }
    assert rows[("6.12", "7.2.y")]["missing"] == sorted(
        [*rows[("7.2", "6.12.y")]["ahead"], "PSCI_1_3_OFF_TYPE_HIBERNATE_OFF"]
    )
    assert all(not r["differs"] for r in rows.values())
    named = {row["name"]: row for row in differences(debian_copies)}
    assert named["KVM_REG_ARM_STD_BMAP"]["defined-in"] == ["6.1", "6.12", "7.2"]
    # uapi spells it BIT(0), which a compiler outside the kernel cannot evaluate
    assert named["PSCI_1_3_OFF_TYPE_HIBERNATE_OFF"]["values"] == {"7.2": "unevaluated"}


@pytest.mark.lab
def test_a_header_of_6_1_as_released_carries_its_mem_protect_erratum(
    debian_copies: list[CopyCheck], tmp_path: Path
) -> None:
    """6.1 as released gave MEM_PROTECT_CHECK_RANGE number 19; 6.1.y and 6.2 have 20."""
    psci = next(c for c in debian_copies if c.copy.line == "6.1").copy.files[1]
    as_released = tmp_path / "linux" / "psci.h"
    as_released.parent.mkdir()
    text = (
        psci.read_text()
        .replace(
            "MEM_PROTECT_CHECK_RANGE\tPSCI_0_2_FN(20)", "MEM_PROTECT_CHECK_RANGE\tPSCI_0_2_FN(19)"
        )
        .replace(
            "MEM_PROTECT_CHECK_RANGE\tPSCI_0_2_FN64(20)",
            "MEM_PROTECT_CHECK_RANGE\tPSCI_0_2_FN64(19)",
        )
    )
    assert text.count("(19)") == 3
    as_released.write_text(text)
    released = {f.name: f for f in check(SPEC, [as_released], kernel("6.1"))}
    stable = {f.name: f for f in check(SPEC, [as_released], kernel("6.1.y"))}
    for name in ("PSCI_1_1_FN_MEM_PROTECT_CHECK_RANGE", "PSCI_1_1_FN64_MEM_PROTECT_CHECK_RANGE"):
        assert released[name].status == "agrees"
        assert stable[name].status == "differs"
    assert {f.name: f for f in check(SPEC, [psci], kernel("6.1"))}[
        "PSCI_1_1_FN_MEM_PROTECT_CHECK_RANGE"
    ].status == "differs"


def test_sync_check_takes_the_release_the_files_claim(tmp_path: Path) -> None:
    result = subprocess.run(
        sync_check_command(*LIBC),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout
    assert "agree with the spec for 6.1.y (the release the files claim)" in result.stdout
    alone = tmp_path / "kvm.h"
    alone.write_text(LIBC[0].read_text())
    refused = subprocess.run(
        sync_check_command(alone),
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 2
    assert refused.stderr == f"kvm-fwspec: {alone}: claim no kernel release; give --kernel\n"


def test_a_corrupted_copy_is_named_and_fixed(tmp_path: Path) -> None:
    copy = tmp_path / "asm" / "kvm.h"
    copy.parent.mkdir()
    text = LIBC[0].read_text()
    corrupted = text.replace("#define KVM_REG_ARM_PSCI_VERSION\tKVM_REG_ARM_FW_REG(0)",
                             "#define KVM_REG_ARM_PSCI_VERSION\tKVM_REG_ARM_FW_REG(7)")  # fmt: skip
    corrupted = corrupted.replace(
        "KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_1_AVAIL\t\t1",
        "KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_1_AVAIL\t\t4",
    )
    assert corrupted.count("FW_REG(7)") == 1 and corrupted != text
    copy.write_text(corrupted)
    command = sync_check_command("--kernel", "6.1.y", copy, LIBC[1])
    result = subprocess.run([*command, "--fix"], capture_output=True, text=True)
    assert result.returncode == 1
    assert (
        "KVM_REG_ARM_PSCI_VERSION: differs: file 0x6030000000140007, spec 0x6030000000140000"
        in result.stdout
    )
    assert "KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_1_AVAIL: differs: file 0x4, spec 0x1" in result.stdout
    assert shutil.which("patch"), "patch is not installed"
    patch = copy.with_name("kvm.h.kvm-fwspec.patch")
    subprocess.run(["patch", "-s", str(copy), str(patch)], check=True)
    again = subprocess.run(command, capture_output=True, text=True)
    assert again.returncode == 0, again.stdout


GENERATED_RUST = ROOT / "codegen" / "generated" / "rust" / "kvm_fw.rs"

HAND_WRITTEN_RUST = """\
// A VMM's own constants, written the way Rust VMMs write them by hand.
pub const KVM_REG_ARM64: u64 = 0x6000_0000_0000_0000;
pub const KVM_REG_SIZE_U64: u64 = 0x0030_0000_0000_0000;
pub const KVM_REG_ARM_FW: u64 = 0x0014 << 16;
pub const KVM_REG_ARM_PSCI_VERSION: u64 = KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_FW;
pub const KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_1: u64 = KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_FW | 1;
pub const KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_2: u64 = KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_FW | 3;
pub const KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_2_ENABLED: u64 = 1 << 4;
pub const PSCI_0_2_FN_PSCI_VERSION: u32 = 0x8400_0000u32;
"""


def test_generated_rust_constants_agree_with_the_spec() -> None:
    findings = check(SPEC, [GENERATED_RUST], kernel("7.2"))
    assert [str(f) for f in findings if f.status in ("differs", "missing")] == []
    assert sum(f.status == "agrees" for f in findings) >= 85


def test_hand_written_rust_is_evaluated_and_fixed(tmp_path: Path) -> None:
    copy = tmp_path / "consts.rs"
    copy.write_text(HAND_WRITTEN_RUST)
    findings = {f.name: f for f in check(SPEC, [copy], kernel("6.1"))}
    assert findings["KVM_REG_ARM_PSCI_VERSION"].status == "agrees"
    assert findings["KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_2_ENABLED"].status == "agrees"
    wrong = findings["KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_2"]
    assert (wrong.status, wrong.file_value, wrong.spec_value) == (
        "differs",
        0x6030000000140003,
        0x6030000000140002,
    )
    command = sync_check_command("--kernel", "6.1", copy)
    assert subprocess.run([*command, "--fix"], capture_output=True, text=True).returncode == 1
    subprocess.run(
        ["patch", "-s", str(copy), str(copy.with_name("consts.rs.kvm-fwspec.patch"))], check=True
    )
    fixed = {f.name: f for f in check(SPEC, [copy], kernel("6.1"))}
    assert fixed["KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_2"].status == "agrees"


def bindgen_arm64(out: Path) -> Path:
    """Rust bindings of Debian's arm64 uapi headers, made the way kvm-bindings makes its own:
    bindgen over linux/kvm.h for an aarch64 target."""
    assert shutil.which("bindgen"), "bindgen is not installed; .ci/run installs it with apt-get"
    wrapper = out / "wrapper.h"
    wrapper.write_text("#include <linux/kvm.h>\n#include <linux/psci.h>\n")
    bindings = out / "bindings.rs"
    subprocess.run(
        ["bindgen", str(wrapper), "-o", str(bindings), "--", "--target=aarch64-linux-gnu",
         "-I/usr/include/aarch64-linux-gnu", "-I/usr/include"],
        check=True, capture_output=True,
    )  # fmt: skip
    return bindings


@pytest.mark.tools
def test_bindgen_output_is_checked_and_fixed(tmp_path: Path) -> None:
    bindings = bindgen_arm64(tmp_path)
    findings = {f.name: f for f in check(SPEC, [bindings], kernel("6.1.y"))}
    assert not [str(f) for f in findings.values() if f.wrong]
    assert findings["KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_2_AVAIL"].status == "agrees"
    assert findings["KVM_REG_ARM_STD_BIT_TRNG_V1_0"].status == "agrees"
    # bindgen drops what the kernel defines through KVM_REG_ARM_FW_REG() and PSCI_0_2_FN()
    assert findings["KVM_REG_ARM_PSCI_VERSION"].status == "beyond-bindgen"
    assert findings["PSCI_0_2_FN_CPU_ON"].status == "beyond-bindgen"
    text = bindings.read_text()
    line = "pub const KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_2_NOT_AVAIL: u32 = 0;"
    assert text.count(line) == 1
    bindings.write_text(text.replace(line, line.replace("= 0;", "= 3;")))
    command = sync_check_command("--kernel", "6.1.y", bindings)
    result = subprocess.run([*command, "--fix"], capture_output=True, text=True)
    assert result.returncode == 1
    assert (
        "KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_2_NOT_AVAIL: differs: file 0x3, spec 0x0"
        in result.stdout
    )
    patch = bindings.with_name("bindings.rs.kvm-fwspec.patch")
    subprocess.run(["patch", "-s", str(bindings), str(patch)], check=True)
    assert subprocess.run(command, capture_output=True, text=True).returncode == 0
