"""Which release a header copy claims: a kernel tree's Makefile, an installed linux/version.h."""

from __future__ import annotations

from pathlib import Path

from kvm_fwspec.codegen.header_release import claimed_kernel


def tree(root: Path, makefile: str) -> Path:
    header = root / "arch/arm64/include/uapi/asm/kvm.h"
    header.parent.mkdir(parents=True)
    header.write_text("/* kvm.h */\n")
    (root / "Makefile").write_text(makefile)
    return header


def test_a_kernel_tree_claims_its_makefile_release(tmp_path: Path) -> None:
    stable = tree(tmp_path / "a", "VERSION = 6\nPATCHLEVEL = 12\nSUBLEVEL = 117\nEXTRAVERSION =\n")
    released = tree(
        tmp_path / "b", "VERSION = 5\nPATCHLEVEL = 10\nSUBLEVEL = 0\nEXTRAVERSION = -rc3\n"
    )
    assert (claimed_kernel(stable), claimed_kernel(released)) == ("6.12.y", "5.10")


def test_another_projects_makefile_claims_nothing(tmp_path: Path) -> None:
    assert claimed_kernel(tree(tmp_path, "VERSION = 2\nall:\n\tcc -o vmm vmm.c\n")) is None


def test_installed_headers_claim_linux_version_code(tmp_path: Path) -> None:
    include = tmp_path / "usr/include"
    (include / "linux").mkdir(parents=True)
    (include / "aarch64-linux-gnu/asm").mkdir(parents=True)
    header = include / "aarch64-linux-gnu/asm/kvm.h"
    header.write_text("/* kvm.h */\n")
    # 5.10.223 clamps its sublevel to 255 in LINUX_VERSION_CODE
    (include / "linux/version.h").write_text(
        f"#define LINUX_VERSION_CODE {(5 << 16) + (10 << 8) + 255}\n"
    )
    assert claimed_kernel(header) == "5.10.y"
    (include / "linux/version.h").write_text(f"#define LINUX_VERSION_CODE {(7 << 16) + (2 << 8)}\n")
    assert claimed_kernel(header) == "7.2"
