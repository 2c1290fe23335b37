"""The generated C headers are C90-clean under gcc and clang, and compile as C++."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.c_probe import GENERATED_C

pytestmark = pytest.mark.tools  # gcc, g++, clang and clang++

HEADERS = sorted(p.name for p in GENERATED_C.glob("*.h"))
# The kernel's uapi header test (usr/include/Makefile) builds with -std=c90; -Wextra and
# -Werror make any warning a failure.
C_FLAGS = ["-std=c90", "-Wall", "-Wextra", "-Werror", "-fsyntax-only"]
CXX_FLAGS = ["-x", "c++", "-std=c++98", "-Wall", "-Wextra", "-Werror", "-fsyntax-only"]
COMPILERS = [("gcc", C_FLAGS), ("clang", C_FLAGS), ("g++", CXX_FLAGS), ("clang++", CXX_FLAGS)]


def test_every_generated_header_is_covered() -> None:
    assert HEADERS == ["kvm_fw_arm.h", "kvm_fw_arm64.h", "kvm_fw_psci.h", "kvm_fw_smccc.h"]


@pytest.mark.parametrize("header", HEADERS)
@pytest.mark.parametrize(("compiler", "flags"), COMPILERS, ids=[c for c, _ in COMPILERS])
def test_header_compiles_cleanly(
    compiler: str, flags: list[str], header: str, tmp_path: Path
) -> None:

    assert shutil.which(compiler), f"{compiler} is not installed; .ci/run installs it with apt-get"
    unit = tmp_path / "unit.c"
    # Include twice to prove the include guard, and use a constant so it is not just parsed.
    unit.write_text(
        f'#include "{header}"\n#include "{header}"\nint kvm_fwspec_probe(void);\n'
        "int kvm_fwspec_probe(void) { return 0; }\n",
        encoding="utf-8",
    )
    result = subprocess.run(
        [compiler, *flags, f"-I{GENERATED_C}", str(unit)], capture_output=True, text=True
    )
    assert result.returncode == 0, f"{compiler} {' '.join(flags)} {header}:\n{result.stderr}"


def test_a_warning_fails_the_build(tmp_path: Path) -> None:
    """The flags really turn warnings into failures (an unused variable, under -Wall)."""
    unit = tmp_path / "warn.c"
    unit.write_text("int f(void);\nint f(void) { int unused; return 0; }\n", encoding="utf-8")
    result = subprocess.run(["gcc", *C_FLAGS, str(unit)], capture_output=True, text=True)
    assert result.returncode != 0
