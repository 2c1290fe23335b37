"""Evaluate C constants with the real compiler, so values are compared as C sees them.

Used by the tests that hold the generated headers against the kernel's own uapi headers.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.checkout import ROOT

GENERATED_C = ROOT / "codegen" / "generated" / "c"

# Function-like macros are compared at these arguments.
MACRO_ARGUMENTS = (0, 1, 3, 0xFFFF)


def defined_names(header: Path) -> tuple[list[str], list[str]]:
    """Object-like constants (#define and enum members) and function-like macro names."""
    text = header.read_text(encoding="utf-8")
    objects = re.findall(r"^#define\s+([A-Z][A-Z0-9_]*)\s+\S", text, re.MULTILINE)
    objects = [n for n in objects if not n.startswith("KVM_FWSPEC_")]
    objects += re.findall(r"^\s+([A-Z][A-Z0-9_]*)\s*=\s*\d+,?$", text, re.MULTILINE)
    macros = re.findall(r"^#define\s+([A-Z][A-Z0-9_]*)\(", text, re.MULTILINE)
    return objects, macros


def expressions(objects: list[str], macros: list[str]) -> list[str]:
    return objects + [f"{m}({a:#x})" for m in macros for a in MACRO_ARGUMENTS]


def evaluate(
    includes: list[str], flags: list[str], exprs: list[str], workdir: Path
) -> dict[str, int]:
    """Compile a program printing each expression's value; return expression -> value."""
    body = "".join(f'\tprintf("%s %lld\\n", "{e}", (long long)({e}));\n' for e in exprs)
    source = "#include <stdio.h>\n" + "".join(f"#include {i}\n" for i in includes)
    source += f"int main(void)\n{{\n{body}\treturn 0;\n}}\n"
    (workdir / "probe.c").write_text(source, encoding="utf-8")
    binary = workdir / "probe"
    compiled = subprocess.run(
        ["gcc", "-std=gnu11", "-w", *flags, "-o", str(binary), str(workdir / "probe.c")],
        capture_output=True,
        text=True,
    )
    if compiled.returncode != 0:
        raise AssertionError(f"probe did not compile:\n{compiled.stderr[-3000:]}")
    output = subprocess.run([str(binary)], capture_output=True, text=True, check=True).stdout
    return {line.rsplit(" ", 1)[0]: int(line.rsplit(" ", 1)[1]) for line in output.splitlines()}
