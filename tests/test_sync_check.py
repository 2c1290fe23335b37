"""sync-check on Debian's real arm64 headers, on a corrupted copy, and after --fix."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from kvm_fwspec.codegen.sync_check import check, expected_constants
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
from kvm_fwspec.spec.model import Constant, Spec
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


def filter_constants(spec: Spec) -> list[Constant]:
    """The SMCCC filter's constants of arm64's asm/kvm.h, from the spec: what sync-check checks
    from the filter's first release (6.4)."""
    abi = spec.smccc_filter
    return [abi.group, abi.attr, *abi.actions, *abi.exit_flags]


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
    filter_names = {c.c_name for c in filter_constants(SPEC)}
    assert {f.name for f in findings if f.status == "agrees"} >= filter_names
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


# --- Issue 14, false pass 2: sync-check reads the copy it is given, never the machine's headers.

FIXTURES = ROOT / "tests" / "fixtures" / "sync-check"
QEMU_KVM_H = FIXTURES / "qemu-06bb749" / "linux-headers" / "asm-arm64" / "kvm.h"
DEBIAN_PSCI_H = FIXTURES / "debian-linux-libc-dev-6.1.192" / "linux" / "psci.h"
KERNEL_ARM_KVM_H = (
    FIXTURES / "linux-arm-010e85f" / "arch" / "arm" / "include" / "uapi" / "asm" / "kvm.h"
)
WORKAROUND_2 = "#define KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_2\tKVM_REG_ARM_FW_REG(2)"

# Where each real project keeps the two files (asm/kvm.h, linux/psci.h).
LAYOUTS = {
    "qemu": ("linux-headers/asm-arm64/kvm.h", "linux-headers/linux/psci.h"),
    "kernel-tree": ("arch/arm64/include/uapi/asm/kvm.h", "include/uapi/linux/psci.h"),
    "kvmtool": ("arm/aarch64/include/asm/kvm.h", "include/linux/psci.h"),
    "flat": ("kvm.h", "psci.h"),
}


def lay_out(root: Path, layout: str, kvm_h: str, psci_h: str) -> tuple[Path, Path]:
    paths = tuple(root / relative for relative in LAYOUTS[layout])
    for path, text in zip(paths, (kvm_h, psci_h), strict=True):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return paths[0], paths[1]


def edited_qemu_kvm_h() -> str:
    text = QEMU_KVM_H.read_text()
    assert text.count(WORKAROUND_2) == 1
    return text.replace(WORKAROUND_2, WORKAROUND_2.replace("FW_REG(2)", "FW_REG(9)"))


def run_sync_check(
    *args: str | Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(sync_check_command(*args), capture_output=True, text=True, env=env)


def test_a_qemu_copy_is_read_not_the_installed_headers(tmp_path: Path) -> None:
    """Issue 14: the edited QEMU copy got "69 agree, 0 do not" from the installed headers."""
    kvm_h, psci_h = lay_out(tmp_path, "qemu", edited_qemu_kvm_h(), DEBIAN_PSCI_H.read_text())
    result = run_sync_check(kvm_h, psci_h, "--kernel", "6.1.y")
    assert result.returncode == 1, result.stdout
    assert (
        "KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_2: differs: file 0x6030000000140009, "
        "spec 0x6030000000140002" in result.stdout
    )
    assert "91 constants agree with the spec for 6.1.y, 1 does not" in result.stdout
    kvm_h.write_text(QEMU_KVM_H.read_text())
    unedited = run_sync_check(kvm_h, psci_h, "--kernel", "6.1.y")
    assert unedited.returncode == 0, unedited.stdout
    assert "92 constants agree with the spec for 6.1.y, 0 do not" in unedited.stdout


def write_decoy(folder: Path) -> Path:
    """Headers with the copy's include guards and other values, where gcc looks on its own."""
    (folder / "asm").mkdir(parents=True)
    (folder / "linux").mkdir()
    (folder / "asm" / "kvm.h").write_text(
        "#ifndef __ARM_KVM_H__\n#define __ARM_KVM_H__\n#include <linux/psci.h>\n"
        "#define KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_2\t0x6030000000140002ULL\n#endif\n"
    )
    (folder / "linux" / "kvm.h").write_text(
        "#ifndef __LINUX_KVM_H\n#define __LINUX_KVM_H\n#include <asm/kvm.h>\n"
        "#define KVM_REG_ARM64\t0x7000000000000000ULL\n"
        "#define KVM_REG_SIZE_U64\t0x0030000000000000ULL\n#endif\n"
    )
    (folder / "linux" / "psci.h").write_text(
        "#ifndef _LINUX_PSCI_H\n#define _LINUX_PSCI_H\n#define PSCI_0_2_FN_CPU_ON\t0x12345678\n"
        "#define PSCI_RET_DENIED\t7\n#endif\n"
    )
    return folder


def test_results_do_not_depend_on_the_machines_headers(tmp_path: Path) -> None:
    """The same findings with the installed arm64 uapi headers and with conflicting ones put
    where gcc looks by itself (CPATH, C_INCLUDE_PATH); the copy's own value in both. Before,
    the installed headers' values were reported (WORKAROUND_2 agreed) and the decoy's
    linux/kvm.h turned every firmware id into 0x7030...."""
    kvm_h, psci_h = lay_out(
        tmp_path / "copy", "qemu", edited_qemu_kvm_h(), DEBIAN_PSCI_H.read_text()
    )
    decoy = str(write_decoy(tmp_path / "decoy"))
    normal = run_sync_check(kvm_h, psci_h, "--kernel", "6.1.y")
    fooled_env = {**os.environ, "CPATH": decoy, "C_INCLUDE_PATH": decoy}
    decoyed = run_sync_check(kvm_h, psci_h, "--kernel", "6.1.y", env=fooled_env)
    assert (decoyed.returncode, decoyed.stdout) == (normal.returncode, normal.stdout)
    findings = {f.name: f for f in check(SPEC, [kvm_h, psci_h], kernel("6.1.y"))}
    assert findings["KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_2"].file_value == 0x6030000000140009
    assert findings["PSCI_0_2_FN_CPU_ON"].status == "agrees"
    assert [f.name for f in findings.values() if f.wrong] == ["KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_2"]


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_every_layout_gives_the_copys_own_values(tmp_path: Path, layout: str) -> None:
    kvm_h, psci_h = lay_out(tmp_path, layout, edited_qemu_kvm_h(), DEBIAN_PSCI_H.read_text())
    findings = check(SPEC, [kvm_h, psci_h], kernel("6.1.y"))
    assert [str(f) for f in findings if f.wrong] == [
        "KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_2: differs: file 0x6030000000140009, spec 0x6030000000140002"
    ]
    assert sum(f.status == "agrees" for f in findings) == 91


@pytest.mark.parametrize("layout", ["kernel-tree", "qemu-asm-arm"])
def test_32_bit_arm_copies_are_read_the_same_way(tmp_path: Path, layout: str) -> None:
    """The kernel's arch/arm/include/uapi/asm/kvm.h as 5.6 left it, and the same file where
    QEMU kept it (linux-headers/asm-arm/): arm ids (0x4030...), arm's vcpu feature bit 1."""
    relative = {
        "kernel-tree": "arch/arm/include/uapi/asm/kvm.h",
        "qemu-asm-arm": "linux-headers/asm-arm/kvm.h",
    }
    copy = tmp_path / relative[layout]
    copy.parent.mkdir(parents=True)
    copy.write_text(KERNEL_ARM_KVM_H.read_text())
    findings = {f.name: f for f in check(SPEC, [copy], kernel("5.6"), "arm", defined_only=True)}
    assert findings["KVM_REG_ARM_PSCI_VERSION"].file_value == 0x4030000000140000
    assert findings["KVM_ARM_VCPU_PSCI_0_2"].status == "agrees"
    assert not [str(f) for f in findings.values() if f.wrong]
    assert sum(f.status == "agrees" for f in findings.values()) == 19
    line = "#define KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_1\tKVM_REG_ARM_FW_REG(1)"
    copy.write_text(KERNEL_ARM_KVM_H.read_text().replace(line, line.replace("(1)", "(5)")))
    result = run_sync_check(copy, "--kernel", "5.6", "--arch", "arm", "--defined-only")
    assert result.returncode == 1
    assert (
        "KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_1: differs: file 0x4030000000140005, "
        "spec 0x4030000000140001" in result.stdout
    )
    assert "arm)" in result.stdout.splitlines()[0]


def test_a_compile_failure_names_file_and_line_once_per_error(tmp_path: Path) -> None:
    kvm_h, psci_h = lay_out(tmp_path, "qemu", QEMU_KVM_H.read_text(), DEBIAN_PSCI_H.read_text())
    text = kvm_h.read_text()
    assert text.count("#define KVM_NR_SPSR\t5\n") == 1
    kvm_h.write_text(text.replace("#define KVM_NR_SPSR\t5\n", "#if KVM_NR_SPSR(\n#endif\n"))
    psci_h.write_text(psci_h.read_text() + "#error this copy is cut short\n")
    line = text[: text.index("#define KVM_NR_SPSR\t5")].count("\n") + 1
    result = run_sync_check(kvm_h, psci_h, "--kernel", "6.1.y")
    assert result.returncode == 2 and result.stdout == ""
    errors = result.stderr.splitlines()
    assert (
        errors[0] == f"kvm-fwspec: {kvm_h}, {psci_h}: does not compile alone (2 compiler errors):"
    )
    assert errors[1].startswith(f"kvm-fwspec:   {kvm_h}:{line}:")
    assert "error: missing binary operator" in errors[1]
    psci_lines = len(psci_h.read_text().splitlines())
    assert errors[2:] == [
        f"kvm-fwspec:   {psci_h}:{psci_lines}:2: error: #error this copy is cut short"
    ]


def test_a_path_that_is_not_a_file_is_one_line(tmp_path: Path) -> None:
    missing = run_sync_check(tmp_path / "kvm.h")
    assert (missing.returncode, missing.stderr) == (
        2,
        f"kvm-fwspec: {tmp_path / 'kvm.h'}: no such file\n",
    )
    folder = run_sync_check(tmp_path)
    assert folder.returncode == 2
    assert folder.stderr.startswith(
        f"kvm-fwspec: {tmp_path}: is a folder; give the header files in it"
    )
    (tmp_path / "kvm.h").write_text(QEMU_KVM_H.read_text())
    under_a_file = run_sync_check(tmp_path / "kvm.h" / "psci.h", "--kernel", "6.1")
    assert (under_a_file.returncode, under_a_file.stderr) == (
        2, f"kvm-fwspec: {tmp_path / 'kvm.h' / 'psci.h'}: {tmp_path / 'kvm.h'} is a file, not a folder\n"
    )  # fmt: skip
    assert len(folder.stderr.splitlines()) == 1


def test_a_reader_that_stops_early_gets_no_traceback(tmp_path: Path) -> None:
    """`sync-check ... | head`: the pipe's reader is gone before the first line is written."""
    reader, writer = os.pipe()
    os.close(reader)
    try:
        done = subprocess.run(
            sync_check_command(QEMU_KVM_H, "--kernel", "6.1"),
            stdout=writer, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
    finally:
        os.close(writer)
    assert done.stderr == ""
    assert done.returncode == 1  # the verdict (PSCI names missing), not a crash


def test_kvm_h_alone_hints_where_the_psci_names_live(tmp_path: Path) -> None:
    kvm_h, _ = lay_out(tmp_path, "qemu", QEMU_KVM_H.read_text(), "")
    result = run_sync_check(kvm_h, "--kernel", "6.1", "--fix")
    assert result.returncode == 1
    assert "of the missing constants live in linux/psci.h" in result.stdout
    assert "patch written to" not in result.stdout
    assert "no patch written" in result.stdout
    assert not list(tmp_path.rglob("*.kvm-fwspec.patch"))


def test_fix_puts_each_constant_in_its_own_header(tmp_path: Path) -> None:
    """A KVM value wrong in kvm.h and a PSCI function missing from psci.h: two patches, each
    for its file; applied, the copy agrees."""
    psci_text = DEBIAN_PSCI_H.read_text()
    cpu_freeze = "#define PSCI_1_0_FN_CPU_FREEZE\t\t\tPSCI_0_2_FN(11)\n"
    assert psci_text.count(cpu_freeze) == 1
    kvm_h, psci_h = lay_out(
        tmp_path, "qemu", edited_qemu_kvm_h(), psci_text.replace(cpu_freeze, "")
    )
    command = ["--kernel", "6.1.y", kvm_h, psci_h]
    result = run_sync_check(*command, "--fix")
    assert result.returncode == 1
    assert "PSCI_1_0_FN_CPU_FREEZE: missing" in result.stdout
    patches = sorted(tmp_path.rglob("*.kvm-fwspec.patch"))
    assert patches == [
        kvm_h.with_name("kvm.h.kvm-fwspec.patch"),
        psci_h.with_name("psci.h.kvm-fwspec.patch"),
    ]
    assert "PSCI_1_0_FN_CPU_FREEZE" in patches[1].read_text()
    assert "PSCI_1_0_FN_CPU_FREEZE" not in patches[0].read_text()
    assert "WORKAROUND_2" in patches[0].read_text()
    assert result.stdout.count("patch written to") == 2
    for target, patch in ((kvm_h, patches[0]), (psci_h, patches[1])):
        subprocess.run(["patch", "-s", str(target), str(patch)], check=True)
    again = run_sync_check(*command)
    assert again.returncode == 0, again.stdout


VMM_OWN_HEADER = """\
/* A VMM's own ids: it defines only what it uses. */
#define KVM_REG_ARM_FW_REG(r) (0x6030000000000000ULL | (0x14 << 16) | ((r) & 0xffff))
#define KVM_REG_ARM_PSCI_VERSION KVM_REG_ARM_FW_REG(0)
#define KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_1 KVM_REG_ARM_FW_REG(1)
#define PSCI_0_2_FN_CPU_ON 0x84000003
"""


def test_defined_only_checks_what_a_vmm_file_defines(tmp_path: Path) -> None:
    own = tmp_path / "vmm_fw_ids.h"
    own.write_text(VMM_OWN_HEADER)
    full = run_sync_check(own, "--kernel", "6.12")
    assert full.returncode == 1 and "missing" in full.stdout
    assert "checked: every constant the spec has in 6.12" in full.stdout
    defined = run_sync_check(own, "--kernel", "6.12", "--defined-only")
    assert defined.returncode == 0, defined.stdout
    assert defined.stdout.splitlines()[0].endswith(
        "3 constants agree with the spec for 6.12, 0 do not "
        "(checked: only the constants the files define, arm64)"
    )
    own.write_text(VMM_OWN_HEADER.replace("0x84000003", "0x84000004"))
    wrong = run_sync_check(own, "--kernel", "6.12", "--defined-only", "--fix")
    assert wrong.returncode == 1
    assert "PSCI_0_2_FN_CPU_ON: differs: file 0x84000004, spec 0x84000003" in wrong.stdout
    subprocess.run(
        ["patch", "-s", str(own), str(own.with_name("vmm_fw_ids.h.kvm-fwspec.patch"))], check=True
    )
    assert run_sync_check(own, "--kernel", "6.12", "--defined-only").returncode == 0


# Where Debian's linux-libc-dev (native and :arm64) installs the uapi headers a probe could
# otherwise find by itself.
INSTALLED_UAPI = (
    "/usr/include/aarch64-linux-gnu",
    "/usr/include/linux",
    "/usr/include/asm-generic",
)


@pytest.mark.tools  # a mount namespace (root, as CI runs, or unprivileged user namespaces)
def test_the_same_findings_on_a_machine_without_the_installed_headers(tmp_path: Path) -> None:
    """Issue 14 asks for the same result with and without linux-libc-dev:arm64: the second run
    hides every installed uapi header under an empty tmpfs in its own mount namespace, as a
    machine without the packages has them."""
    kvm_h, psci_h = lay_out(tmp_path, "qemu", edited_qemu_kvm_h(), DEBIAN_PSCI_H.read_text())
    command = sync_check_command(kvm_h, psci_h, "--kernel", "6.1.y")
    hide = " && ".join(f"mount -t tmpfs none {folder}" for folder in INSTALLED_UAPI)
    hidden = subprocess.run(
        ["unshare", "--mount", *([] if os.geteuid() == 0 else ["--map-root-user"]),
         "sh", "-c", f'{hide} && test ! -e /usr/include/linux/kvm.h && exec "$@"', "sh", *command],
        capture_output=True, text=True,
    )  # fmt: skip
    assert "Permission denied" not in hidden.stderr, hidden.stderr
    with_headers = subprocess.run(command, capture_output=True, text=True)
    assert Path("/usr/include/aarch64-linux-gnu/asm/kvm.h").is_file(), "run .ci/run's apt first"
    assert (hidden.returncode, hidden.stdout) == (with_headers.returncode, with_headers.stdout)
    assert hidden.returncode == 1
    assert "KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_2: differs" in hidden.stdout


def test_error_boom_in_a_copy_is_one_counted_line(tmp_path: Path) -> None:
    """A copy with `#error boom`: the first line says one error follows, and the error names the
    copy's own file and line."""
    kvm_h, psci_h = lay_out(
        tmp_path, "qemu", QEMU_KVM_H.read_text(), DEBIAN_PSCI_H.read_text() + "#error boom\n"
    )
    line = len(psci_h.read_text().splitlines())
    result = run_sync_check(kvm_h, psci_h, "--kernel", "6.1.y")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.splitlines() == [
        f"kvm-fwspec: {kvm_h}, {psci_h}: does not compile alone (1 compiler error):",
        f"kvm-fwspec:   {psci_h}:{line}:2: error: #error boom",
    ]


def test_many_compile_errors_are_capped_at_five(tmp_path: Path) -> None:
    """A copy cut short or mangled gives an error a line: the count, the first five, the rest
    as a number. Before, every one of them was printed."""
    booms = "".join(f"#error boom {i}\n" for i in range(1, 9))
    kvm_h, _ = lay_out(tmp_path, "flat", QEMU_KVM_H.read_text() + booms, "")
    first = len(QEMU_KVM_H.read_text().splitlines()) + 1
    result = run_sync_check(kvm_h, "--kernel", "6.1.y")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.splitlines() == [
        f"kvm-fwspec: {kvm_h}: does not compile alone (8 compiler errors, the first 5 below):",
        *(f"kvm-fwspec:   {kvm_h}:{first + i}:2: error: #error boom {i + 1}" for i in range(5)),
        "kvm-fwspec:   ... and 3 more",
    ]


NOT_HEADERS = {
    # /etc/passwd's shape: before, "0 constants agree ... 89 do not", exit 1
    "passwd": "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n",
    # a README: before, gcc's "invalid preprocessing directive #kvm" and more
    "README.md": (ROOT / "README.md").read_text(),
    # a C header of other things: a VMM's capabilities and virtio feature bits
    "vmm_caps.h": "#ifndef VMM_CAPS_H\n#define VMM_CAPS_H\n#define KVM_CAP_ARM_PSCI 87\n"
    "#define VIRTIO_F_VERSION_1 (1ULL << 32)\n#endif\n",
    # Rust with constants, none of them the firmware registers'
    "virtio.rs": "pub const VIRTIO_F_VERSION_1: u32 = 32;\nconst QUEUE_SIZE: u16 = 256;\n",
}


@pytest.mark.parametrize("name", sorted(NOT_HEADERS))
def test_a_file_that_is_not_the_header_is_refused(tmp_path: Path, name: str) -> None:
    copy = tmp_path / name
    copy.write_text(NOT_HEADERS[name])
    refused = f"kvm-fwspec: {copy} defines no constant of the firmware-register ABI: is it the header you meant?\n"
    alone = run_sync_check(copy, "--kernel", "6.1")
    assert (alone.returncode, alone.stdout, alone.stderr) == (2, "", refused)
    beside = run_sync_check(QEMU_KVM_H, copy, "--kernel", "6.1", "--fix")
    assert (beside.returncode, beside.stdout, beside.stderr) == (2, "", refused)
    assert not list(tmp_path.rglob("*.kvm-fwspec.patch"))


def test_linux_kvm_h_beside_the_copy_is_not_refused() -> None:
    """linux/kvm.h defines none of the constants but brings KVM_REG_ARM64 and the sizes that
    asm/kvm.h's KVM_REG_ARM_FW_REG() uses: given with the copy it is read, alone it is refused."""
    linux_kvm_h = Path("/usr/include/linux/kvm.h")
    findings = check(SPEC, [LIBC[0], linux_kvm_h, LIBC[1]], kernel("6.1.y"))
    assert [str(f) for f in findings if f.wrong] == []
    alone = run_sync_check(linux_kvm_h, "--kernel", "6.1.y")
    assert alone.returncode == 2
    assert alone.stderr.endswith(
        "defines no constant of the firmware-register ABI: is it the header you meant?\n"
    )


SUMMARY = re.compile(
    r"^.*: (?P<agrees>\d+) constants agree with the spec for \S+, (?P<wrong>\d+) do(?:es)? not"
    r"(?:, (?P<unevaluated>\d+) do(?:es)? not compile on (?:its|their) own)?"
    r"(?:, (?P<unknown>\d+) unknown to the spec)?(?:, (?P<beyond>\d+) beyond bindgen)? \(checked"
)
LISTED = {
    "wrong": re.compile(r"^  [A-Z][A-Z0-9_]*: (differs|missing|defined, but the spec has it only)"),
    "unevaluated": re.compile(r"^  [A-Z][A-Z0-9_]*: defined, but its definition does not compile"),
    "unknown": re.compile(r"^  [A-Z][A-Z0-9_]*: unknown to the spec$"),
}


def test_the_summary_counts_every_listed_finding(tmp_path: Path) -> None:
    """One macro left unclosed: before, "86 agree, 2 do not" above three non-agreeing lines
    (and 21 lines unknown to the spec counted nowhere)."""
    unclosed = WORKAROUND_2.replace("\tKVM_REG_ARM_FW_REG(2)", "\t(KVM_REG_ARM_FW_REG(2)")
    kvm_h, psci_h = lay_out(
        tmp_path, "qemu", QEMU_KVM_H.read_text().replace(WORKAROUND_2, unclosed),
        DEBIAN_PSCI_H.read_text(),
    )  # fmt: skip
    result = run_sync_check(kvm_h, psci_h, "--kernel", "6.1")  # 6.1's MEM_PROTECT erratum: 2 differ
    assert result.returncode == 1, result.stdout
    lines = result.stdout.splitlines()
    summary = SUMMARY.match(lines[0])
    assert summary, lines[0]
    counted = {key: int(summary.group(key) or 0) for key in (*LISTED, "beyond")}
    listed = {key: sum(bool(p.match(line)) for line in lines[1:]) for key, p in LISTED.items()}
    assert counted == {**listed, "beyond": 0}
    assert listed == {"wrong": 2, "unevaluated": 1, "unknown": 21}
    findings = [line for line in lines[1:] if re.match(r"^  [A-Z][A-Z0-9_]*: ", line)]
    assert len(findings) == sum(listed.values())
    assert "KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_2: defined, but its definition" in result.stdout


def test_a_fix_run_removes_the_patch_a_file_no_longer_needs(tmp_path: Path) -> None:
    """--fix against 6.13 patches psci.h (SYSTEM_OFF2 missing) and kvm.h (the SMCCC filter's
    constants of 6.4 missing); --fix against 6.1.y, which the files agree with, must not leave
    those patches beside them. Before: exit 0, not a word, and psci.h.kvm-fwspec.patch still
    there."""
    kvm_h, psci_h = lay_out(tmp_path, "qemu", QEMU_KVM_H.read_text(), DEBIAN_PSCI_H.read_text())
    kvm_patch = kvm_h.with_name("kvm.h.kvm-fwspec.patch")
    psci_patch = psci_h.with_name("psci.h.kvm-fwspec.patch")
    newer = run_sync_check("--kernel", "6.13", "--fix", kvm_h, psci_h)
    assert newer.returncode == 1 and psci_patch.is_file(), newer.stdout
    assert "KVM_SMCCC_FILTER_DENY" in kvm_patch.read_text()
    assert "KVM_SMCCC_FILTER_DENY" not in psci_patch.read_text()
    unfixed = run_sync_check("--kernel", "6.1.y", kvm_h, psci_h)
    assert unfixed.returncode == 0 and psci_patch.is_file()  # without --fix, no file touched
    again = run_sync_check("--kernel", "6.1.y", "--fix", kvm_h, psci_h)
    assert again.returncode == 0, again.stdout
    assert not psci_patch.exists() and not kvm_patch.exists()
    removed = [line for line in again.stdout.splitlines() if "removed" in line]
    assert removed == [
        f"  removed {kvm_patch}: {kvm_h} agrees now",
        f"  removed {psci_patch}: {psci_h} agrees now",
    ]


def test_a_fix_run_replaces_one_patch_and_removes_the_other(tmp_path: Path) -> None:
    """Old patches beside both files; now only kvm.h differs: its patch is rewritten for this
    run, psci.h's is removed."""
    kvm_h, psci_h = lay_out(tmp_path, "qemu", edited_qemu_kvm_h(), DEBIAN_PSCI_H.read_text())
    kvm_patch = kvm_h.with_name("kvm.h.kvm-fwspec.patch")
    psci_patch = psci_h.with_name("psci.h.kvm-fwspec.patch")
    kvm_patch.write_text("an old patch\n")
    psci_patch.write_text("an old patch\n")
    result = run_sync_check("--kernel", "6.1.y", "--fix", kvm_h, psci_h)
    assert result.returncode == 1, result.stdout
    assert "WORKAROUND_2" in kvm_patch.read_text() and not psci_patch.exists()
    assert f"  patch written to {kvm_patch}" in result.stdout.splitlines()
    assert f"  removed {psci_patch}: {psci_h} agrees now" in result.stdout.splitlines()


# --- Issue 16: the SMCCC filter's constants (arm64 asm/kvm.h, since 6.4).

CORPUS = ROOT / "tests" / "fixtures" / "header-copies"
KVMTOOL_6_4_KVM_H = CORPUS / "kvmtool-6.4" / "arm" / "aarch64" / "include" / "asm" / "kvm.h"
QEMU_6_3 = [
    CORPUS / "qemu-6.3-rc5" / "linux-headers" / "asm-arm64" / "kvm.h",
    CORPUS / "qemu-6.3-rc5" / "linux-headers" / "linux" / "psci.h",
]
KVM_BINDINGS_6_2 = CORPUS / "kvm-bindings-v0.7.0" / "src" / "arm64" / "bindings.rs"
# The kernel's enum kvm_smccc_filter_action as kvmtool copied it: DENY and FWD_TO_USER take
# their values by position.
ACTIONS = "\tKVM_SMCCC_FILTER_DENY,\n\tKVM_SMCCC_FILTER_FWD_TO_USER,\n"


def test_the_filter_is_expected_on_arm64_from_its_release_only() -> None:
    expected = expected_constants(SPEC, "arm64")
    names = {c.c_name for c in filter_constants(SPEC)}
    assert {expected[n].lifetime for n in names} == {SPEC.smccc_filter.lifetime}
    assert {expected[n].value for n in names} == {c.value for c in filter_constants(SPEC)}
    # 32-bit arm hosts ended with 5.7: neither sync-check nor the arm header has the filter
    assert not names & set(expected_constants(SPEC, "arm"))
    arm_h = (ROOT / "codegen" / "generated" / "c" / "kvm_fw_arm.h").read_text()
    assert not [n for n in names if n in arm_h]


def test_a_real_6_4_copy_agrees_on_the_filter_and_is_ahead_of_6_3() -> None:
    """kvmtool's sync with 6.4 added the filter's lines; against 6.3 they are ahead of it."""
    at_6_4 = {f.name: f for f in check(SPEC, [KVMTOOL_6_4_KVM_H], kernel("6.4"))}
    at_6_3 = {f.name: f for f in check(SPEC, [KVMTOOL_6_4_KVM_H], kernel("6.3"))}
    for constant in filter_constants(SPEC):
        found = at_6_4[constant.c_name]
        assert (found.status, found.file_value) == ("agrees", constant.value), str(found)
        assert at_6_3[constant.c_name].status == "ahead"
    # kvmtool copies the raw uapi source: the enumerators of its #ifdef __KERNEL__ blocks are
    # no constants of the copy (before, three were "unknown to the spec")
    assert "\tKVM_REG_ARM_STD_BMAP_BIT_COUNT,\n" in KVMTOOL_6_4_KVM_H.read_text()
    assert [name for name in at_6_4 if name.endswith("_BIT_COUNT")] == []


def test_a_pre_6_4_copy_is_not_blamed_for_lacking_the_filter() -> None:
    """QEMU's last sync before 6.4 and kvm-bindings' 6.2 bindings: right for their releases;
    the same C copy checked against 6.4 lacks exactly the filter's constants."""
    names = sorted(c.c_name for c in filter_constants(SPEC))
    for files, release in ((QEMU_6_3, "6.3"), ([KVM_BINDINGS_6_2], "6.2")):
        findings = check(SPEC, files, kernel(release))
        assert [str(f) for f in findings if f.wrong] == [], files[0]
        assert not [f.name for f in findings if f.name in names], files[0]
    against_6_4 = check(SPEC, QEMU_6_3, kernel("6.4"))
    assert sorted(f.name for f in against_6_4 if f.wrong) == names
    assert {f.status for f in against_6_4 if f.wrong} == {"missing"}


def test_a_filter_action_with_the_wrong_value_is_named_and_fixed(tmp_path: Path) -> None:
    """The actions' enumerators swapped (DENY would then be 2, FWD_TO_USER 1): both named,
    --fix pins each to its value, and the patched copy agrees."""
    text = KVMTOOL_6_4_KVM_H.read_text()
    assert text.count(ACTIONS) == 1
    swapped = "\tKVM_SMCCC_FILTER_FWD_TO_USER,\n\tKVM_SMCCC_FILTER_DENY,\n"
    kvm_h, psci_h = lay_out(
        tmp_path, "qemu", text.replace(ACTIONS, swapped), DEBIAN_PSCI_H.read_text()
    )
    command = ["--kernel", "6.4", kvm_h, psci_h]
    result = run_sync_check(*command, "--fix")
    assert result.returncode == 1, result.stdout
    wrong = [line.strip() for line in result.stdout.splitlines() if ": differs:" in line]
    assert wrong == [
        "KVM_SMCCC_FILTER_DENY: differs: file 0x2, spec 0x1",
        "KVM_SMCCC_FILTER_FWD_TO_USER: differs: file 0x1, spec 0x2",
    ]
    assert "0 do not" in run_sync_check("--kernel", "6.4", KVMTOOL_6_4_KVM_H, psci_h).stdout
    subprocess.run(
        ["patch", "-s", str(kvm_h), str(kvm_h.with_name("kvm.h.kvm-fwspec.patch"))], check=True
    )
    assert "\tKVM_SMCCC_FILTER_DENY = 1,\n" in kvm_h.read_text()
    again = run_sync_check(*command)
    assert again.returncode == 0, again.stdout


@pytest.mark.tools  # Debian's linux-headers-6.12.*-common, installed by apt
def test_debians_6_12_uapi_source_agrees_on_the_filter() -> None:
    found = sorted(Path("/usr/src").glob("linux-headers-6.12.*-common"))
    assert found, "linux-headers-6.12.*-common is not installed; .ci/run installs it with apt-get"
    uapi = [
        found[-1] / "arch" / "arm64" / "include" / "uapi" / "asm" / "kvm.h",
        found[-1] / "include" / "uapi" / "linux" / "psci.h",
    ]
    findings = {f.name: f for f in check(SPEC, uapi, kernel("6.12.y"))}
    assert [str(f) for f in findings.values() if f.wrong] == []
    for constant in filter_constants(SPEC):
        assert findings[constant.c_name].file_value == constant.value
        assert findings[constant.c_name].status == "agrees"
