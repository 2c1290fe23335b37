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
