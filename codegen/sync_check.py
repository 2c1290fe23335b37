"""`kvm-fwspec sync-check`: is a copy of the uapi constants (a kernel tree's asm/kvm.h, QEMU's
linux-headers, kvmtool's, a VMM's own header or Rust file) in step with the spec for its release?

C values are evaluated by the compiler from the copy's files alone (`c_header_probe`), never
read off the text and never from the machine's installed headers, so `KVM_REG_ARM_FW_REG(1)`
and `(1U << 4)` count as what they mean. Rust is parsed (`rust_constants`). `--fix` writes one
patch per file that needs one, each definition taken from the generated headers and each
missing constant put in the header it belongs to.
"""

from __future__ import annotations

import difflib
import functools
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from kvm_fwspec.codegen.c_header_probe import evaluate_constants, header_files
from kvm_fwspec.codegen.generate import render_all
from kvm_fwspec.codegen.header_release import claimed_kernel
from kvm_fwspec.codegen.rust_constants import (
    RustConstant,
    is_bindgen_output,
    rust_items,
    rust_values,
)
from kvm_fwspec.spec.errors import UsageError
from kvm_fwspec.spec.kernel_names import KernelName
from kvm_fwspec.spec.model import Lifetime, Spec

DOMAIN = re.compile(
    r"^(KVM_REG_ARM_(FW|PSCI|SMCCC|STD|VENDOR)|KVM_REG_ARM_FW_FEAT|PSCI_|KVM_PSCI_|KVM_ARM_PSCI_"
    r"|KVM_ARM_VM_SMCCC_|KVM_SMCCC_FILTER_|KVM_HYPERCALL_EXIT_)"
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
                "through a function-like macro (BIT() included); the VMM must define it itself"
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
    found.update(_smccc_filter_constants(spec, arch))
    found.update(_stolen_time_constants(spec, arch))
    return found


def _stolen_time_constants(spec: Spec, arch: str) -> dict[str, Expected]:
    """The stolen-time attribute's group and id, with PV time's lifetime (5.5), on the
    architectures whose uapi defines them (arm64's; 32-bit arm's never did)."""
    stolen_time = spec.stolen_time
    if arch not in stolen_time.architectures:
        return {}
    lifetime = stolen_time.service.lifetime
    return {c.c_name: Expected(c.value, lifetime) for c in (stolen_time.group, stolen_time.attr)}


def _smccc_filter_constants(spec: Spec, arch: str) -> dict[str, Expected]:
    """The SMCCC filter's constants of the architecture's asm/kvm.h: the attribute's group and
    id, the actions and KVM_EXIT_HYPERCALL's flags, all with the filter's lifetime, so a copy
    synced before it is not blamed. KVM_EXIT_HYPERCALL itself (and the KVM_MP_STATE_* a
    powered-off vcpu is restored with) live in linux/kvm.h, which sync-check reads only for
    the names asm/kvm.h takes from it, so they are not expected here."""
    filter_abi = spec.smccc_filter
    host = next(a for a in spec.architectures if a.name == arch)
    if not host.lifetime.covers(filter_abi.lifetime.since):
        return {}  # 32-bit arm hosts ended (5.7) before the filter came
    constants = [filter_abi.group, filter_abi.attr, *filter_abi.actions, *filter_abi.exit_flags]
    return {c.c_name: Expected(c.value, filter_abi.lifetime) for c in constants}


# Constants the kernel's uapi header spells with the kernel-only BIT() macro, which the generated
# header (and so _through_function_macros) writes as a number: neither a compiler outside the
# kernel nor bindgen can evaluate them. include/uapi/linux/psci.h, 6.13 (PSCI 1.3 SYSTEM_OFF2).
UAPI_SPELLED_WITH_BIT = frozenset({"PSCI_1_3_OFF_TYPE_HIBERNATE_OFF"})

# The headers a constant of the spec belongs in, by the generated header that defines it.
PSCI_HEADER = "linux/psci.h"
KVM_HEADER = "asm/kvm.h"


def headers_install(text: str) -> str:
    """The parts of the kernel's scripts/headers_install.sh a uapi source file needs before a
    compiler outside the kernel tree can read it: no compiler.h, no sparse annotations.
    Already-installed headers come out unchanged."""
    text = re.sub(r"^#include <linux/compiler(_types)?\.h>\n", "", text, flags=re.MULTILINE)
    return re.sub(r"([\s(])(__user|__force|__iomem)\s", r"\1", text)


_CONDITIONAL = re.compile(r"^\s*#\s*(if|ifdef|ifndef|else|elif|endif)\b(.*)$")
_KERNEL_ONLY = re.compile(r"^(?:ifdef\s+__KERNEL__|if\s+defined\s*\(?\s*__KERNEL__\s*\)?)\s*$")


def without_kernel_only(text: str) -> str:
    """The text as userspace sees it: the `#ifdef __KERNEL__` blocks out (up to their `#else`),
    as the kernel's headers_install does; a raw uapi source (a kernel tree, kvmtool's copies)
    keeps them, and a name there (`KVM_REG_ARM_STD_BMAP_BIT_COUNT,`) is no constant of the
    copy."""
    kept = []
    blocks: list[str] = []  # each open conditional: "kernel", "user" (its #else) or "other"
    for line in text.splitlines(keepends=True):
        directive = _CONDITIONAL.match(line)
        keyword, rest = directive.groups() if directive else ("", "")
        if keyword.startswith("if"):
            kernel_only = bool(_KERNEL_ONLY.match(f"{keyword}{rest}"))
            blocks.append("kernel" if kernel_only else "other")
            if kernel_only:
                continue
        elif keyword in ("else", "elif") and blocks and blocks[-1] == "kernel":
            blocks[-1] = "user"
            continue
        elif keyword == "endif" and blocks:
            closed = blocks.pop()
            if closed != "other":
                continue
        if "kernel" not in blocks:
            kept.append(line)
    return "".join(kept)


def _names_in(text: str) -> list[str]:
    """Object-like macros and enumerators, those with a value (`NAME = 1,`) and those that take
    the one after the previous (`KVM_SMCCC_FILTER_DENY,`)."""
    objects = re.findall(r"^\s*#\s*define\s+([A-Z][A-Z0-9_]*)\s+\S", text, re.MULTILINE)
    objects += re.findall(
        r"^\s+([A-Z][A-Z0-9_]*)\s*(?:=\s*[^,\n]+)?,?\s*(?:/\*.*\*/)?\s*$", text, re.MULTILINE
    )
    return sorted(set(objects))


def check_inputs(paths: list[Path]) -> None:
    """Every path a readable file, or one line saying what it is instead."""
    for path in paths:
        if path.is_dir():
            raise UsageError(
                f"{path}: is a folder; give the header files in it (such as {path}/asm/kvm.h "
                f"and {path}/linux/psci.h), or a Rust file"
            )
        if not path.exists():
            above = next((p for p in path.parents if p.exists()), None)
            if above is not None and not above.is_dir():
                raise UsageError(f"{path}: {above} is a file, not a folder")
            raise UsageError(f"{path}: no such file")
        if not path.is_file():
            raise UsageError(f"{path}: not a regular file")
        try:
            path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise UsageError(f"{path}: not a text file (a C header or a Rust file)") from None
        except OSError as error:
            raise UsageError(f"{path}: cannot be read: {error.strerror}") from None


@dataclass(frozen=True)
class CopyContents:
    """What a set of files defines and the values the compiler gives them, whatever release
    they are then checked against."""

    present: dict[str, Path]
    values: dict[str, int]
    bindgen: bool = False  # rust-bindgen's shape, which drops function-like macros
    headers: dict[Path, str] = field(default_factory=dict)  # C file -> include name
    stand_ins: tuple[str, ...] = ()  # linux/kvm.h names the spec supplied


def read_copy(spec: Spec, paths: list[Path], arch: str = "arm64") -> CopyContents:
    """Files taken together (asm/kvm.h and linux/psci.h split the constants between them); the
    first file that defines a name is the one that counts."""
    check_inputs(paths)
    expected = expected_constants(spec, arch)
    present: dict[str, Path] = {}
    values: dict[str, int] = {}
    bindgen = False
    c_files = [p for p in paths if p.suffix != ".rs"]
    defined: dict[Path, set[str]] = {}
    for path in paths:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".rs":
            bindgen |= is_bindgen_output(text)
            items = rust_items(text, arch)
            spelled = bindgen_enumerators(items, set(expected))
            evaluated = {
                spelled.get(n, n): v & 0xFFFFFFFFFFFFFFFF
                for n, v in rust_values(text, arch).items()
            }
            defined[path] = {spelled.get(n, n) for n in items}
            values.update({n: v for n, v in evaluated.items() if n in expected and n not in values})
        else:
            defined[path] = set(_names_in(without_kernel_only(text)))
        present.update({n: path for n in sorted(defined[path]) if n not in present})
    _refuse_unrelated(defined, set(expected), set(_linux_kvm_h_stand_ins(spec, arch)))
    if not c_files:
        return CopyContents(present, values, bindgen)
    if shutil.which("gcc") is None:
        raise UsageError("sync-check evaluates C with gcc, which is not installed")
    files = header_files(c_files)
    wanted = sorted(n for n, p in present.items() if p in c_files and n in expected)
    evaluation = evaluate_constants(files, wanted, _linux_kvm_h_stand_ins(spec, arch))
    values.update({n: v for n, v in evaluation.values.items() if n not in values})
    headers = {f.path: f.include_name for f in files}
    return CopyContents(present, values, bindgen, headers, evaluation.stand_ins)


def bindgen_enumerators(items: Mapping[str, RustConstant], names: set[str]) -> dict[str, str]:
    """bindgen's name for an enumerator of a named C enum -> the C name: bindgen prefixes it
    with the enum's name, which is also its type (`pub const
    kvm_smccc_filter_action_KVM_SMCCC_FILTER_DENY: kvm_smccc_filter_action = 1;`); an anonymous
    enum's (`_bindgen_ty_N`) keep their C names."""
    found = {}
    for name, item in items.items():
        enum = item.type.strip()
        if re.fullmatch(r"[A-Za-z_]\w*", enum) and name.startswith(f"{enum}_"):
            c_name = name.removeprefix(f"{enum}_")
            if c_name in names:
                found[name] = c_name
    return found


def _refuse_unrelated(defined: dict[Path, set[str]], abi: set[str], kvm_h: set[str]) -> None:
    """Each file defines a constant of the firmware-register ABI, or is the linux/kvm.h beside
    one that does (it brings KVM_REG_ARM64 and the sizes): /etc/passwd or a README given by
    mistake would otherwise come out as 89 constants missing, or as compiler errors."""
    anything = any(names & abi for names in defined.values())
    for path, names in defined.items():
        if not names & abi and not (anything and path.suffix != ".rs" and names & kvm_h):
            raise UsageError(
                f"{path} defines no constant of the firmware-register ABI: "
                "is it the header you meant?"
            )


def _linux_kvm_h_stand_ins(spec: Spec, arch: str) -> dict[str, str]:
    """What asm/kvm.h takes from linux/kvm.h (the architecture's id base, the size field), from
    the generated header; used only where the copy defines none of them."""
    header = _generated_headers(spec, arch)[f"codegen/generated/c/kvm_fw_{arch}.h"]
    pattern = (
        r"^#define\s+(KVM_REG_(?:ARCH_MASK|ARM64|ARM|SIZE_SHIFT|SIZE_MASK|SIZE_U\d+))\s+(\S+)$"
    )
    return dict(re.findall(pattern, header, re.MULTILINE))


def classify(
    spec: Spec,
    contents: CopyContents,
    kernel: KernelName,
    arch: str = "arm64",
    defined_only: bool = False,
) -> list[Finding]:
    """A copy's constants against `kernel`: missing only if no file defines one (and never with
    `defined_only`, for a VMM's own file that defines just the ids it uses), ahead if a file
    defines one before the release the spec says it came in."""
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
            elif not defined_only and name in generated and _uapi(spec, name) and exists:
                beyond = contents.bindgen and name in _beyond_bindgen(spec, arch)
                status = "beyond-bindgen" if beyond else "missing"
                findings.append(Finding(name, status, None, spec_value))
        elif DOMAIN.match(name):
            findings.append(Finding(name, "unknown", file=present[name]))
    return findings


def check(
    spec: Spec,
    paths: list[Path],
    kernel: KernelName,
    arch: str = "arm64",
    defined_only: bool = False,
) -> list[Finding]:
    """sync-check on files: read once, classified against one release."""
    return classify(spec, read_copy(spec, paths, arch), kernel, arch, defined_only)


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


def _beyond_bindgen(spec: Spec, arch: str) -> set[str]:
    return _through_function_macros(spec, arch) | UAPI_SPELLED_WITH_BIT


@functools.cache
def _generated_names(spec: Spec, arch: str) -> set[str]:
    names = set()
    for text in _generated_headers(spec, arch).values():
        names.update(_names_in(text))
    return names


@functools.cache
def _generated_headers(spec: Spec, arch: str) -> dict[str, str]:
    return render_all(spec, lambda path: path.endswith((f"kvm_fw_{arch}.h", "kvm_fw_psci.h")))


def home_header(spec: Spec, name: str, arch: str = "arm64") -> str:
    """The uapi header a constant belongs in: linux/psci.h for what the generated PSCI header
    defines, asm/kvm.h for the rest."""
    return PSCI_HEADER if name in _psci_names(spec, arch) else KVM_HEADER


@functools.cache
def _psci_names(spec: Spec, arch: str) -> frozenset[str]:
    return frozenset(_names_in(_generated_headers(spec, arch)["codegen/generated/c/kvm_fw_psci.h"]))


def hints(spec: Spec, contents: CopyContents, findings: list[Finding], arch: str) -> list[str]:
    """What the user may not know: which missing constants live in a header not given (or that
    a VMM's own file is better checked with --defined-only), and which names the spec
    supplied because the copy has no linux/kvm.h."""
    said = []
    given = set(contents.headers.values())
    missing = [f.name for f in findings if f.status == "missing"]
    if missing and given and not given & {PSCI_HEADER, KVM_HEADER, "linux/kvm.h"}:
        said.append("these files are not uapi headers: --defined-only checks just what they define")
    elif missing and given:
        where = {
            PSCI_HEADER: "include/uapi/linux/psci.h; QEMU: linux-headers/linux/psci.h",
            KVM_HEADER: f"arch/{arch}/include/uapi/asm/kvm.h; QEMU: linux-headers/asm-{arch}/kvm.h",
        }
        for header, found_in in where.items():
            away = [n for n in missing if home_header(spec, n, arch) == header]
            if away and header not in given:
                said.append(
                    f"{len(away)} of the missing constants live in {header} ({found_in}), "
                    "which was not given: check it together with the other files"
                )
    if contents.stand_ins:
        said.append(
            f"{', '.join(contents.stand_ins)}: defined in linux/kvm.h, which was not given; "
            "the spec's values stood in for them"
        )
    return said


@dataclass(frozen=True)
class FixPlan:
    patches: dict[Path, str]  # only files whose patch changes something
    unplaced: tuple[str, ...]  # missing constants whose header was not among the files


def fix_patches(
    spec: Spec, contents: CopyContents, findings: list[Finding], arch: str = "arm64"
) -> FixPlan:
    """One unified diff per file that needs one: each differing definition replaced where it
    stands, each missing constant added to the file of the header it belongs in."""
    targets: dict[Path, list[Finding]] = {}
    unplaced = []
    for finding in findings:
        if finding.status == "differs" and finding.file is not None:
            targets.setdefault(finding.file, []).append(finding)
        elif finding.status == "missing":
            home = _file_for(spec, contents, finding.name, arch)
            if home is None:
                unplaced.append(finding.name)
            else:
                targets.setdefault(home, []).append(finding)
    patches = {}
    for path, own in targets.items():
        patch = fix_patch(spec, path, own, arch)
        if patch:
            patches[path] = patch
    return FixPlan(patches, tuple(unplaced))


def _file_for(spec: Spec, contents: CopyContents, name: str, arch: str) -> Path | None:
    """The given C file that is `name`'s header; else the one file that is no uapi header at
    all (a VMM's own), which holds everything; else none."""
    home = home_header(spec, name, arch)
    for path, header in contents.headers.items():
        if header == home:
            return path
    own = [
        p for p, h in contents.headers.items() if h not in (PSCI_HEADER, KVM_HEADER, "linux/kvm.h")
    ]
    return own[0] if len(own) == 1 else None


def _definitions(spec: Spec, arch: str) -> dict[str, str]:
    definitions: dict[str, str] = {}
    for text in _generated_headers(spec, arch).values():
        for line in text.splitlines():
            match = re.match(r"^#define\s+([A-Z][A-Z0-9_]*)\s+(.*)$", line) or re.match(
                r"^\s+([A-Z][A-Z0-9_]*)\s*=\s*(\d+),?$", line
            )
            if match:
                definitions[match.group(1)] = match.group(2).strip()
    return definitions


def fix_patch(spec: Spec, path: Path, findings: list[Finding], arch: str = "arm64") -> str:
    """A unified diff that makes `path` agree: its differing definitions replaced, and the
    missing constants among `findings` added; empty when nothing changes."""
    definitions = _definitions(spec, arch)
    current = {n: e.value & 0xFFFFFFFFFFFFFFFF for n, e in expected_constants(spec, arch).items()}
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    fixed = list(lines)
    if path.suffix == ".rs":
        for finding in findings:
            if finding.status == "differs" and finding.file == path:
                fixed = _fix_rust(fixed, finding)
        return "".join(difflib.unified_diff(lines, fixed, f"a/{path.name}", f"b/{path.name}"))
    for finding in findings:
        if finding.status != "differs" or finding.file != path:
            continue
        value = (
            definitions.get(finding.name, f"{finding.spec_value:#x}")
            if finding.spec_value == current.get(finding.name)
            else f"{finding.spec_value:#x}"  # the release's own (erratum) value
        )
        fixed = _fix_c(fixed, finding.name, value)
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


def _fix_c(lines: list[str], name: str, value: str) -> list[str]:
    """`#define NAME value` (continuation lines dropped) or the enumerator `NAME = value,`, also
    where it took its value from the one before (`KVM_SMCCC_FILTER_DENY,`)."""
    define = re.compile(rf"^(\s*#\s*define\s+{name}\s+)")
    enumerator = re.compile(rf"^(\s+{name}\s*=\s*)[^,\n]+(,?.*)$")
    implicit = re.compile(rf"^(\s+{name})(\s*,?\s*(?:/\*.*\*/)?\s*)$")
    for i, line in enumerate(lines):
        text = line.rstrip("\n")
        match = define.match(text)
        if match:
            end = i
            while lines[end].rstrip("\n").endswith("\\") and end + 1 < len(lines):
                end += 1
            comment = re.search(r"\s*/\*.*\*/\s*$", text) if end == i else None
            kept = comment.group(0).rstrip() if comment else ""
            return [*lines[:i], f"{match.group(1)}{value}{kept}\n", *lines[end + 1 :]]
        match = enumerator.match(text)
        if match:
            return [*lines[:i], f"{match.group(1)}{value}{match.group(2)}\n", *lines[i + 1 :]]
        match = implicit.match(text)
        if match:
            return [*lines[:i], f"{match.group(1)} = {value}{match.group(2)}\n", *lines[i + 1 :]]
    return lines


def _fix_rust(lines: list[str], finding: Finding) -> list[str]:
    """The item's value replaced, under its C name or bindgen's name for an enumerator of a
    named enum (the enum's name, `_`, the C name; typed as the enum)."""
    item = re.compile(
        r"^(?P<head>\s*(?:pub\s*(?:\([^)]*\)\s*)?)?const\s+"
        rf"(?:(?P<enum>[A-Za-z_]\w*)_)?{finding.name}\s*:\s*(?(enum)(?P=enum)\s*|[^=]+)=\s*)"
        r"[^;]+(?P<tail>;.*)$"
    )
    return [
        item.sub(rf"\g<head>{finding.spec_value:#x}\g<tail>", line.rstrip("\n")) + "\n"
        if item.match(line.rstrip("\n"))
        else line
        for line in lines
    ]
