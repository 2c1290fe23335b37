"""sync-check on Debian's real arm64 headers, on a corrupted copy, and after --fix."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from codegen.loader import load_spec
from codegen.model import Release
from codegen.sync_check import check

LIBC = [Path("/usr/include/aarch64-linux-gnu/asm/kvm.h"), Path("/usr/include/linux/psci.h")]
COMMON = sorted(Path("/usr/src").glob("linux-headers-6.12.*-common"))
SPEC = load_spec()


def headers_612() -> list[Path]:
    assert COMMON, "linux-headers-6.12.*-common is not installed; .ci/run installs it"
    root = COMMON[-1]
    return [root / "arch/arm64/include/uapi/asm/kvm.h", root / "include/uapi/linux/psci.h"]


@pytest.mark.parametrize(
    ("files", "release"), [(LIBC, "6.1"), (None, "6.12")], ids=["libc-dev-6.1", "common-6.12"]
)
def test_real_headers_agree_for_their_own_release(files: list[Path] | None, release: str) -> None:
    findings = check(SPEC, files or headers_612(), Release.parse(release))
    assert [str(f) for f in findings if f.status in ("differs", "missing")] == []
    assert sum(f.status == "agrees" for f in findings) >= 75


def test_headers_show_what_later_releases_added() -> None:
    findings = check(SPEC, headers_612(), Release.parse("7.2"))
    missing = {f.name for f in findings if f.status == "missing"}
    assert {"KVM_REG_ARM_VENDOR_HYP_BMAP_2", "PSCI_1_3_FN_SYSTEM_OFF2"} <= missing
    assert not [f for f in findings if f.status == "differs"]


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
    command = [
        sys.executable,
        "-m",
        "codegen.cli",
        "sync-check",
        "--kernel",
        "6.1",
        str(copy),
        str(LIBC[1]),
    ]
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


GENERATED_RUST = (
    Path(__file__).resolve().parent.parent / "codegen" / "generated" / "rust" / "kvm_fw.rs"
)

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
    findings = check(SPEC, [GENERATED_RUST], Release.parse("7.2"))
    assert [str(f) for f in findings if f.status in ("differs", "missing")] == []
    assert sum(f.status == "agrees" for f in findings) >= 85


def test_hand_written_rust_is_evaluated_and_fixed(tmp_path: Path) -> None:
    copy = tmp_path / "consts.rs"
    copy.write_text(HAND_WRITTEN_RUST)
    findings = {f.name: f for f in check(SPEC, [copy], Release.parse("6.1"))}
    assert findings["KVM_REG_ARM_PSCI_VERSION"].status == "agrees"
    assert findings["KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_2_ENABLED"].status == "agrees"
    wrong = findings["KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_2"]
    assert (wrong.status, wrong.file_value, wrong.spec_value) == (
        "differs",
        0x6030000000140003,
        0x6030000000140002,
    )
    command = [sys.executable, "-m", "codegen.cli", "sync-check", "--kernel", "6.1", str(copy)]
    assert subprocess.run([*command, "--fix"], capture_output=True, text=True).returncode == 1
    subprocess.run(
        ["patch", "-s", str(copy), str(copy.with_name("consts.rs.kvm-fwspec.patch"))], check=True
    )
    fixed = {f.name: f for f in check(SPEC, [copy], Release.parse("6.1"))}
    assert fixed["KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_2"].status == "agrees"
