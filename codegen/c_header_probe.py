"""Evaluate the constants of a copy of the uapi headers with the C compiler, from the copy alone.

The machine's installed headers must be unreachable, not merely searched later: the installed
asm/kvm.h and linux/psci.h use the same include guards as any copy (`__ARM_KVM_H__`,
`_LINUX_PSCI_H`), so whichever the compiler meets first wins and the other is silently skipped.
So the probe runs in two steps, neither of which can see /usr/include:

1. The preprocessor, with `-nostdinc`, a scrubbed environment (no CPATH, C_INCLUDE_PATH) and one
   include root laid out from the copy's files alone: each under the name the headers include it
   by (`asm/kvm.h`, `linux/psci.h`), and an empty file (or, for the few uapi helpers such as
   linux/const.h, this project's own minimal stand-in) for every other header they include.
   It expands each constant to its value's expression and keeps the copy's enum blocks.
2. The compiler, on a program of those expansions and enums only, with no #include at all.

A copy that does not bring linux/kvm.h lacks `KVM_REG_ARM64` and the `KVM_REG_SIZE_*` its
`KVM_REG_ARM_FW_REG()` uses: those few names alone are supplied from the spec's generated
header, after the copy's own definitions, and the caller is told which were used.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from kvm_fwspec.spec.errors import UsageError

# Environment variables through which gcc adds include directories that -nostdinc keeps.
_INCLUDE_ENVIRONMENT = ("CPATH", "C_INCLUDE_PATH", "CPLUS_INCLUDE_PATH", "OBJC_INCLUDE_PATH")

# What a uapi header may take from linux/const.h and linux/types.h when the copy does not carry
# them; written for this project from the kernel's documented meaning, never read off the machine.
_STAND_IN_HEADERS = {
    "linux/const.h": (
        "#define _AC(X, Y) (X##Y)\n#define _AT(T, X) ((T)(X))\n#define _UL(x) (_AC(x, UL))\n"
        "#define _ULL(x) (_AC(x, ULL))\n#define _BITUL(x) (_UL(1) << (x))\n"
        "#define _BITULL(x) (_ULL(1) << (x))\n"
    ),
}
_STAND_IN_TYPES = (
    "typedef unsigned char __u8; typedef signed char __s8; typedef unsigned short __u16;\n"
    "typedef signed short __s16; typedef unsigned int __u32; typedef signed int __s32;\n"
    "typedef unsigned long long __u64; typedef signed long long __s64;\n"
)
_INCLUDE = re.compile(r'^\s*#\s*include\s*[<"]([^>"]+)[>"]', re.MULTILINE)
_PROBE = "kvm_fwspec_probe_"
_STAND_IN = "kvm_fwspec_stand_in_"  # marks a stand-in's value, so the caller learns it was used
_ERRORS_SHOWN = 5  # a copy cut short can give hundreds; the first few say where


@dataclass(frozen=True)
class HeaderFile:
    """One file of a copy and the name its neighbours include it by."""

    path: Path
    include_name: str


@dataclass(frozen=True)
class Evaluation:
    values: dict[str, int]
    stand_ins: tuple[str, ...]  # names taken from the spec because the copy lacks linux/kvm.h


def include_name(path: Path, text: str) -> str:
    """`asm/kvm.h`, `linux/psci.h`, `linux/kvm.h`, or the file's own name for a header that is
    none of them (a VMM's own constants). The folder says which when it can (QEMU's
    `asm-arm64/`, a kernel tree's `uapi/asm/`, kvmtool's `include/asm/`); in a flat folder the
    file name and, for kvm.h, whether it includes <asm/kvm.h> (then it is linux/kvm.h)."""
    folder = path.parent.name
    if folder == "asm" or folder.startswith("asm-"):
        return f"asm/{path.name}"
    if folder == "linux":
        return f"linux/{path.name}"
    if path.name == "psci.h":
        return "linux/psci.h"
    if path.name == "kvm.h":
        return "linux/kvm.h" if "asm/kvm.h" in _INCLUDE.findall(text) else "asm/kvm.h"
    return path.name


def header_files(paths: Iterable[Path]) -> list[HeaderFile]:
    """The files with their include names; two files that would be the same header are refused."""
    files: list[HeaderFile] = []
    for path in paths:
        name = include_name(path, path.read_text(encoding="utf-8", errors="replace"))
        twin = next((f for f in files if f.include_name == name), None)
        if twin is not None:
            raise UsageError(f"{twin.path} and {path} are both {name}; give one of them")
        files.append(HeaderFile(path, name))
    return files


def evaluate_constants(
    files: list[HeaderFile], names: list[str], stand_ins: Mapping[str, str]
) -> Evaluation:
    """Each name's value as C sees it with the copy's files alone. A name whose expansion does
    not compile (uapi's `BIT(0)`, which only the kernel defines) is left out. `stand_ins`
    (name -> C expression) fill in what linux/kvm.h would have defined."""
    with tempfile.TemporaryDirectory(prefix="kvm-fwspec-probe-") as work:
        root = Path(work) / "include"
        _lay_out(root, files)
        expansions, enums = _preprocess(Path(work), root, files, names, stand_ins)
        used = set()
        for name, expansion in expansions.items():
            used.update(re.findall(rf"{_STAND_IN}(\w+)", expansion))
            expansions[name] = re.sub(rf"{_STAND_IN}\w+", "", expansion)
        values = _compile_and_run(Path(work), expansions, enums)
    return Evaluation(values, tuple(sorted(used)))


def _lay_out(root: Path, files: list[HeaderFile]) -> None:
    """The include root: the copy's files under their include names, and for every other header
    they include an empty file, or a stand-in for the few uapi helpers."""
    for each in files:
        target = root / each.include_name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(each.path.read_bytes())
    pending = list(files)
    while pending:
        text = pending.pop().path.read_text(encoding="utf-8", errors="replace")
        for included in _INCLUDE.findall(text):
            target = root / included
            if ".." in Path(included).parts or target.exists():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(_STAND_IN_HEADERS.get(included, ""), encoding="utf-8")


def _environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in _INCLUDE_ENVIRONMENT}


def _preprocess(
    work: Path,
    root: Path,
    files: list[HeaderFile],
    names: list[str],
    stand_ins: Mapping[str, str],
) -> tuple[dict[str, str], list[str]]:
    """Each name's full expansion, and the enum blocks of the copy (enumerators are not macros:
    the second step needs their declarations)."""
    source = "".join(f"#include <{f.include_name}>\n" for f in files)
    source += "".join(
        f"#ifndef {name}\n#define {name} ({_STAND_IN}{name} {value})\n#endif\n"
        for name, value in stand_ins.items()
    )
    source += "".join(f"{_PROBE}{n} = ({n});\n" for n in names)
    probe = work / "expand.c"
    probe.write_text(source, encoding="utf-8")
    expanded = subprocess.run(
        ["gcc", "-E", "-P", "-nostdinc", f"-I{root}", "-fno-diagnostics-show-caret",
         "-fdiagnostics-color=never", str(probe)],
        capture_output=True, text=True, env=_environment(),
    )  # fmt: skip
    if expanded.returncode != 0:
        raise UsageError(_compile_failure(expanded.stderr, root, files, probe))
    expansions = {}
    for line in expanded.stdout.splitlines():
        match = re.match(rf"^{_PROBE}(\w+) = (.*);$", line.strip())
        if match:
            expansions[match.group(1)] = match.group(2)
    enums = re.findall(r"\benum\b\s*\w*\s*\{[^{}]*\}", expanded.stdout)
    return expansions, enums


def _compile_and_run(work: Path, expansions: dict[str, str], enums: list[str]) -> dict[str, int]:
    """Compile the expansions (no #include: nothing of the machine's can enter) and run them.
    A line that does not compile drops its name, or its enum block, and the rest are retried."""
    pending = dict(expansions)
    blocks = [" ".join(block.split()) for block in enums]  # one line each, to map errors back
    while True:
        prelude = ["int printf(const char *, ...);", *_STAND_IN_TYPES.splitlines()]
        head = [*prelude, *(f"{block};" for block in blocks), "int main(void)", "{"]
        order = list(pending)
        body = [
            f'\tprintf("%s %llu\\n", "{n}", (unsigned long long)({pending[n]}));' for n in order
        ]
        program = work / "values.c"
        program.write_text("\n".join([*head, *body, "\treturn 0;", "}", ""]), encoding="utf-8")
        binary = work / "values"
        built = subprocess.run(
            ["gcc", "-nostdinc", "-std=gnu11", "-Werror=implicit-function-declaration",
             "-fno-diagnostics-show-caret", "-fdiagnostics-color=never", "-o", str(binary),
             str(program)],
            capture_output=True, text=True, env=_environment(),
        )  # fmt: skip
        if built.returncode == 0:
            output = subprocess.run(
                [str(binary)], capture_output=True, text=True, check=True
            ).stdout
            return {n: int(v) for n, v in (line.split() for line in output.splitlines())}
        failing = {int(m) for m in re.findall(r"values\.c:(\d+):\d+: error", built.stderr)}
        first_block, first_body = len(prelude) + 1, len(head) + 1  # lines count from 1
        bad_names = {order[i - first_body] for i in failing if 0 <= i - first_body < len(order)}
        bad_blocks = {i - first_block for i in failing if 0 <= i - first_block < len(blocks)}
        if not bad_names and not bad_blocks:
            raise UsageError(f"the copy's values do not compile: {_errors(built.stderr)[0]}")
        pending = {n: e for n, e in pending.items() if n not in bad_names}
        blocks = [b for i, b in enumerate(blocks) if i not in bad_blocks]


def _compile_failure(stderr: str, root: Path, files: list[HeaderFile], probe: Path) -> str:
    """How many errors the compiler gave, then the first few, one line each, at the user's own
    files and lines."""
    errors = _errors(stderr)
    for each in files:
        errors = [e.replace(f"{root / each.include_name}:", f"{each.path}:") for e in errors]
    errors = [e.replace(f"{root}/", "") for e in errors]
    errors = [e.replace(f"{probe}:", "(the probe that includes the copy):") for e in errors]
    count = f"{len(errors)} compiler error{'' if len(errors) == 1 else 's'}"
    if len(errors) > _ERRORS_SHOWN:
        count += f", the first {_ERRORS_SHOWN} below"
    listed = [f"  {e}" for e in errors[:_ERRORS_SHOWN]]
    if len(errors) > _ERRORS_SHOWN:
        listed.append(f"  ... and {len(errors) - _ERRORS_SHOWN} more")
    head = f"{', '.join(str(f.path) for f in files)}: does not compile alone ({count}):"
    return "\n".join([head, *listed])


def _errors(stderr: str) -> list[str]:
    """One line per error, without gcc's caret and source lines, notes and include chains."""
    lines = stderr.splitlines()
    errors = [line for line in lines if re.search(r":\d+:(\d+:)? (fatal )?error:", line)]
    errors = list(dict.fromkeys(errors))  # a header included twice reports its errors twice
    return errors or [stderr.strip().splitlines()[-1] if stderr.strip() else "unknown error"]
