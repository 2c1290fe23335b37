"""`kvm-fwspec sync-check`: is a copy of the uapi constants (a kernel tree's asm/kvm.h, QEMU's
linux-headers, a VMM's own header) in step with the spec for its kernel release?

Values are evaluated by the C compiler, never read off the text, so `KVM_REG_ARM_FW_REG(1)`
and `(1U << 4)` count as what they mean. `--fix` writes a patch that makes the copy agree,
taking each definition from the generated header.
"""

from __future__ import annotations

import ast
import difflib
import functools
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kvm_fwspec.codegen.generate import render_all
from kvm_fwspec.codegen.header_release import claimed_kernel
from kvm_fwspec.spec.errors import UsageError
from kvm_fwspec.spec.kernel_names import KernelName
from kvm_fwspec.spec.model import Lifetime, Spec

DOMAIN = re.compile(
    r"^(KVM_REG_ARM_(FW|PSCI|SMCCC|STD|VENDOR)|KVM_REG_ARM_FW_FEAT|PSCI_|KVM_PSCI_|KVM_ARM_PSCI_)"
)


@dataclass(frozen=True)
class Expected:
    value: int
    lifetime: Lifetime | None  # None: as old as the spec's first release
    errata: tuple[tuple[Lifetime, int], ...] = ()  # (releases fixed, value before the fix)

    def exists_in(self, kernel: KernelName) -> bool:
        return self.lifetime is None or self.lifetime.covers(kernel.release, kernel.stable)

    def value_in(self, kernel: KernelName) -> int:
        """What a true copy of `kernel`'s header holds: the wrong value where the spec records
        that the header itself had one."""
        for fixed, wrong in self.errata:
            if self.exists_in(kernel) and not fixed.covers(kernel.release, kernel.stable):
                return wrong
        return self.value


@dataclass(frozen=True)
class Finding:
    name: str
    status: str  # agrees, differs, ahead, missing, beyond-bindgen, unevaluated, unknown
    file_value: int | None = None
    spec_value: int | None = None
    file: Path | None = None
    lifetime: Lifetime | None = None

    @property
    def wrong(self) -> bool:
        """Whether the copy disagrees with the spec for its release (sync-check exits 1)."""
        return self.status in ("differs", "ahead", "missing")

    def __str__(self) -> str:
        if self.status == "differs":
            return f"{self.name}: differs: file {self.file_value:#x}, spec {self.spec_value:#x}"
        if self.status == "agrees":
            return f"{self.name}: agrees ({self.spec_value:#x})"
        if self.status == "ahead" and self.lifetime is not None:
            return f"{self.name}: defined, but the spec has it only from {self.lifetime.since}"
        if self.status == "beyond-bindgen":
            return (
                f"{self.name}: absent, as bindgen leaves out every constant the kernel defines "
                "through a function-like macro; the VMM must define it itself"
            )
        if self.status == "missing":
            return f"{self.name}: missing (the spec has it in this release)"
        if self.status == "unevaluated":
            return f"{self.name}: defined, but its definition does not compile on its own"
        return f"{self.name}: unknown to the spec"


def expected_constants(spec: Spec, arch: str) -> dict[str, Expected]:
    """Every uapi constant of the firmware-register ABI the spec defines, with its value on `arch`."""
    found: dict[str, Expected] = {}
    for register in spec.registers:
        if arch in register.ids:
            found[register.c_name] = Expected(register.ids[arch], register.lifetime)
        for value in register.values:
            found[value.c_name] = Expected(value.value, value.lifetime)
        for bit in register.bits:
            found[bit.c_name] = Expected(
                bit.bit if register.kind == "bitmap" else bit.mask, bit.lifetime
            )
    for c_class in spec.layout("reg-id").field("class").values:
        if c_class.c_name and c_class.firmware:
            found[c_class.c_name] = Expected(c_class.value << 16, c_class.lifetime)
    for function in spec.psci_functions:
        for convention, c_name in function.c_names.items():
            since = function.header_since
            errata = tuple((e.fixed, e.ids[convention]) for e in function.header_errata)
            found[c_name] = Expected(
                function.ids[convention], Lifetime(since) if since else None, errata
            )
    for code in spec.psci_return_codes:
        found[code.c_name] = Expected(
            code.value & 0xFFFFFFFFFFFFFFFF if code.value < 0 else code.value, None
        )
    for group in spec.psci_constant_groups:
        for constant in group.constants:
            group_lifetime = Lifetime(group.header_since) if group.header_since else None
            found[constant.c_name] = Expected(constant.value, group_lifetime)
    for function_01 in spec.kvm_psci_01_functions:
        found[function_01.c_name] = Expected(function_01.function_id, None)
    found[spec.kvm_psci_01_c_base] = Expected(spec.kvm_psci_01_base, None)
    for feature in spec.vcpu_features:
        if arch in feature.bits:
            found[feature.c_name] = Expected(feature.bits[arch], feature.lifetime)
    return found


def _names_in(text: str) -> list[str]:
    objects = re.findall(r"^\s*#\s*define\s+([A-Z][A-Z0-9_]*)\s+\S", text, re.MULTILINE)
    objects += re.findall(r"^\s+([A-Z][A-Z0-9_]*)\s*=\s*[^,\n]+,?\s*$", text, re.MULTILINE)
    return sorted(set(objects))


_RUST_CONST = re.compile(
    r"^\s*pub\s+const\s+([A-Z][A-Z0-9_]*)\s*:\s*[A-Za-z0-9_]+\s*=\s*([^;]+);", re.MULTILINE
)
_RUST_OPERATORS: dict[type[ast.operator], Callable[[int, int], int]] = {
    ast.BitOr: lambda a, b: a | b, ast.BitAnd: lambda a, b: a & b, ast.LShift: lambda a, b: a << b,
    ast.RShift: lambda a, b: a >> b, ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
}  # fmt: skip


def rust_constants(text: str, arch: str) -> dict[str, str]:
    """`pub const` items and their expressions; in a file with per-architecture modules (the
    generated kvm_fw.rs, kvm-bindings' arm64/), those of other architectures' modules are left out."""
    found: dict[str, str] = {}
    modules: list[str] = []
    for line in text.splitlines():
        opened = re.match(r"^\s*pub\s+mod\s+(\w+)\s*\{", line)
        if opened:
            modules.append(opened.group(1))
            continue
        if line.strip() == "}" and modules:
            modules.pop()
            continue
        if any(m in ("arm", "arm64") and m != arch for m in modules):
            continue
        match = _RUST_CONST.match(line)
        if match:
            found.setdefault(match.group(1), match.group(2).strip())
    return found


def rust_values(text: str, arch: str) -> dict[str, int]:
    """Evaluate Rust constant expressions (literals, casts, names, | & << >> + - * ~) by parsing
    them, never by matching their text; names resolve to other constants of the file."""
    expressions = rust_constants(text, arch)
    values: dict[str, int] = {}
    progress = True
    while progress:
        progress = False
        for name, expression in expressions.items():
            if name in values:
                continue
            try:
                values[name] = _rust_eval(
                    ast.parse(_rust_to_python(expression), mode="eval").body, values
                )
                progress = True
            except (KeyError, SyntaxError, ValueError):
                continue
    return values


def _rust_to_python(expression: str) -> str:
    expression = re.sub(r"\bas\s+[iu](8|16|32|64|128|size)\b", "", expression)
    expression = re.sub(r"(?<=[0-9a-fA-F])_(?=[0-9a-fA-F])", "", expression)
    return re.sub(r"\b(0x[0-9a-fA-F]+|[0-9]+)(u8|u16|u32|u64|i32|i64|usize)\b", r"\1", expression)


def _rust_eval(node: ast.expr, values: dict[str, int]) -> int:
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return node.value
    if isinstance(node, ast.Name):
        return values[node.id]
    if isinstance(node, ast.BinOp) and type(node.op) in _RUST_OPERATORS:
        return int(
            _RUST_OPERATORS[type(node.op)](
                _rust_eval(node.left, values), _rust_eval(node.right, values)
            )
        )
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Invert):
        return ~_rust_eval(node.operand, values) & 0xFFFFFFFFFFFFFFFF
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_rust_eval(node.operand, values)
    raise ValueError(f"cannot evaluate {ast.dump(node)}")


def headers_install(text: str) -> str:
    """The parts of the kernel's scripts/headers_install.sh a uapi source file needs before a
    compiler outside the kernel tree can read it: no compiler.h, no sparse annotations.
    Already-installed headers come out unchanged."""
    text = re.sub(r"^#include <linux/compiler(_types)?\.h>\n", "", text, flags=re.MULTILINE)
    return re.sub(r"([\s(])(__user|__force|__iomem)\s", r"\1", text)


def evaluate(path: Path, names: list[str]) -> dict[str, int]:
    """Compile a program that includes `path` and prints each name's value as C sees it.
    A name whose definition does not compile on its own (BIT() in uapi) is left out."""
    with tempfile.TemporaryDirectory() as work:
        overlay = Path(work) / "include" / path.parent.name
        overlay.mkdir(parents=True)
        (overlay / path.name).write_text(
            headers_install(path.read_text(encoding="utf-8")), encoding="utf-8"
        )
        flags = [
            f"-I{Path(work) / 'include'}",
            "-I/usr/include/aarch64-linux-gnu",
            "-I/usr/include",
        ]
        values: dict[str, int] = {}
        pending = list(names)
        while pending:
            program = Path(work) / "probe.c"
            body = "".join(
                f'\tprintf("{n} %llu\\n", (unsigned long long)({n}));\n' for n in pending
            )
            # linux/kvm.h first, for KVM_REG_ARM64 and the sizes; the copy last, so its own
            # definitions are the ones evaluated.
            include = f'#include <stdio.h>\n#include <linux/kvm.h>\n#include "{path.parent.name}/{path.name}"\n'
            program.write_text(f"{include}int main(void)\n{{\n{body}\treturn 0;\n}}\n")
            binary = Path(work) / "probe"
            built = subprocess.run(
                # An undefined helper macro (BIT() in uapi) must fail at its probe line, not at
                # link time; the copy may reach us through a system header (asm/kvm.h includes
                # linux/psci.h), where gcc would otherwise keep the diagnostic to itself.
                [
                    "gcc",
                    "-Wsystem-headers",
                    "-Werror=implicit-function-declaration",
                    *flags,
                    "-o",
                    str(binary),
                    str(program),
                ],
                capture_output=True,
                text=True,
            )
            if built.returncode == 0:
                output = subprocess.run(
                    [str(binary)], capture_output=True, text=True, check=True
                ).stdout
                values.update(
                    {n: int(v) for n, v in (line.split() for line in output.splitlines())}
                )
                break
            failing = {
                int(m)
                for m in re.findall(
                    r"probe\.c:(\d+):\d+: (?:error|note: in expansion of macro)", built.stderr
                )
            }
            bad = {pending[line - 6] for line in failing if 0 <= line - 6 < len(pending)}
            if not bad:
                raise UsageError(
                    f"{path}: does not compile: {built.stderr.strip().splitlines()[-1]}"
                )
            pending = [n for n in pending if n not in bad]
    return values


@dataclass(frozen=True)
class CopyContents:
    """What a set of files defines and the values the compiler gives them, whatever release
    they are then checked against."""

    present: dict[str, Path]
    values: dict[str, int]
    bindgen: bool = False  # written by rust-bindgen, which drops function-like macros


def read_copy(spec: Spec, paths: list[Path], arch: str = "arm64") -> CopyContents:
    """Files taken together (asm/kvm.h and linux/psci.h split the constants between them); the
    first file that defines a name is the one that counts."""
    if shutil.which("gcc") is None:
        raise UsageError("sync-check evaluates C with gcc, which is not installed")
    expected = expected_constants(spec, arch)
    present: dict[str, Path] = {}
    values: dict[str, int] = {}
    bindgen = False
    for path in paths:
        if not path.is_file():
            raise UsageError(f"{path}: no such file")
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".rs":
            bindgen |= "automatically generated by rust-bindgen" in text[:200]
            evaluated = {n: v & 0xFFFFFFFFFFFFFFFF for n, v in rust_values(text, arch).items()}
            names = sorted(rust_constants(text, arch))
            present.update({n: path for n in names if n not in present})
            values.update({n: v for n, v in evaluated.items() if n in expected and n not in values})
            continue
        names = _names_in(text)
        present.update({n: path for n in names if n not in present})
        values.update(evaluate(path, [n for n in names if n in expected and n not in values]))
    return CopyContents(present, values, bindgen)


def classify(
    spec: Spec, contents: CopyContents, kernel: KernelName, arch: str = "arm64"
) -> list[Finding]:
    """A copy's constants against `kernel`: missing only if no file defines one, ahead if a
    file defines one before the release the spec says it came in."""
    expected = expected_constants(spec, arch)
    present, values = contents.present, contents.values
    generated = _generated_names(spec, arch)
    findings = []
    for name in sorted(set(present) | set(expected)):
        if name in expected:
            spec_value = expected[name].value_in(kernel) & 0xFFFFFFFFFFFFFFFF
            lifetime = expected[name].lifetime
            exists = expected[name].exists_in(kernel)
            if name in values:
                status = "agrees" if values[name] == spec_value else "differs"
                if status == "agrees" and not exists and _uapi(spec, name):
                    status = "ahead"
                findings.append(
                    Finding(name, status, values[name], spec_value, present[name], lifetime)
                )
            elif name in present:
                findings.append(Finding(name, "unevaluated", None, spec_value, present[name]))
            elif name in generated and _uapi(spec, name) and exists:
                beyond = contents.bindgen and name in _through_function_macros(spec, arch)
                status = "beyond-bindgen" if beyond else "missing"
                findings.append(Finding(name, status, None, spec_value))
        elif DOMAIN.match(name):
            findings.append(Finding(name, "unknown", file=present[name]))
    return findings


def check(spec: Spec, paths: list[Path], kernel: KernelName, arch: str = "arm64") -> list[Finding]:
    """sync-check on files: read once, classified against one release."""
    return classify(spec, read_copy(spec, paths, arch), kernel, arch)


def claimed_by(paths: list[Path]) -> str:
    """The one release the files claim; an error when they claim none or several."""
    claims = {c for c in map(claimed_kernel, paths) if c}
    if len(claims) != 1:
        said = f"claim {', '.join(sorted(claims))}" if claims else "claim no kernel release"
        raise UsageError(f"{', '.join(map(str, paths))}: {said}; give --kernel")
    return claims.pop()


def _uapi(spec: Spec, name: str) -> bool:
    """Kernel-internal names (KVM_ARM_PSCI_*) are not expected in a uapi copy."""
    return not any(v.c_name == name for v in spec.psci_versions)


@functools.cache
def _through_function_macros(spec: Spec, arch: str) -> set[str]:
    """Names the kernel (and the generated header, which spells them alike) defines by calling a
    function-like macro: KVM_REG_ARM_FW_REG(0), PSCI_0_2_FN(3)."""
    names = set()
    for text in _generated_headers(spec, arch).values():
        names.update(re.findall(r"^#define\s+([A-Z][A-Z0-9_]*)\s+[A-Z][A-Z0-9_]*\(", text, re.M))
    return names


@functools.cache
def _generated_names(spec: Spec, arch: str) -> set[str]:
    names = set()
    for text in _generated_headers(spec, arch).values():
        names.update(_names_in(text))
    return names


def _generated_headers(spec: Spec, arch: str) -> dict[str, str]:

    return render_all(spec, lambda path: path.endswith((f"kvm_fw_{arch}.h", "kvm_fw_psci.h")))


def fix_patch(spec: Spec, path: Path, findings: list[Finding], arch: str = "arm64") -> str:
    """A unified diff that makes `path` agree: its differing definitions replaced, and the
    missing constants added (to this file, the first of those checked)."""
    definitions: dict[str, str] = {}
    for text in _generated_headers(spec, arch).values():
        for line in text.splitlines():
            match = re.match(r"^#define\s+([A-Z][A-Z0-9_]*)\s+(.*)$", line) or re.match(
                r"^\s+([A-Z][A-Z0-9_]*)\s*=\s*(\d+),?$", line
            )
            if match:
                definitions[match.group(1)] = match.group(2).strip()
    current = {n: e.value & 0xFFFFFFFFFFFFFFFF for n, e in expected_constants(spec, arch).items()}
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    fixed = list(lines)
    if path.suffix == ".rs":
        for finding in findings:
            if finding.status == "differs" and finding.file == path:
                rust = re.compile(
                    rf"^(\s*pub\s+const\s+{finding.name}\s*:\s*[A-Za-z0-9_]+\s*=\s*)[^;]+(;.*)$"
                )
                fixed = [
                    rust.sub(rf"\g<1>{finding.spec_value:#x}\g<2>", line.rstrip("\n")) + "\n"
                    for line in fixed
                ]
        return "".join(difflib.unified_diff(lines, fixed, f"a/{path.name}", f"b/{path.name}"))
    for finding in findings:
        if finding.status != "differs" or finding.file != path:
            continue
        pattern = re.compile(
            rf"^(\s*#\s*define\s+{finding.name}\s+).*?(\s*(/\*.*)?)$|^(\s+{finding.name}\s*=\s*)[^,\n]+(,?.*)$"
        )
        for i, line in enumerate(fixed):
            match = pattern.match(line.rstrip("\n"))
            if match:
                value = (
                    definitions.get(finding.name, f"{finding.spec_value:#x}")
                    if finding.spec_value == current.get(finding.name)
                    else f"{finding.spec_value:#x}"  # the release's own (erratum) value
                )
                if match.group(1):
                    fixed[i] = f"{match.group(1)}{value}\n"
                else:
                    fixed[i] = f"{match.group(4)}{value}{match.group(5)}\n"
                break
    missing = [f for f in findings if f.status == "missing"]
    if missing:
        block = ["/* Added by kvm-fwspec sync-check --fix from the spec. */\n"]
        block += [
            f"#define {f.name}\t{definitions.get(f.name, hex(f.spec_value or 0))}\n"
            for f in missing
        ]
        endif = max(
            (i for i, line in enumerate(fixed) if line.startswith("#endif")), default=len(fixed)
        )
        fixed[endif:endif] = block
    return "".join(difflib.unified_diff(lines, fixed, f"a/{path.name}", f"b/{path.name}"))
