"""Read the integer constants of a Rust file: written by rust-bindgen, or by hand in a VMM.

Rust is parsed, never compiled: a copy's file may need crates or a target that this machine
lacks. Items are found wherever they stand (several on a line, an expression over several
lines, `const` as well as `pub const` and `pub(crate) const`), per-architecture modules are
respected, and expressions are evaluated by parsing them: literals with suffixes and `_`, casts,
names of other constants, `| & ^ << >> + - * ! ~`, and calls of the file's own one-expression
`const fn`s such as `kvm_reg_arm_fw_reg(0)`.

A file is bindgen output when it has bindgen's shape, not a banner: bindgen writes every macro
and enumerator it can carry as `pub const NAME: TYPE = <decimal literal>;`, with TYPE a
primitive, a `::std::os::raw`/`::core::ffi` C type or a `_bindgen_ty_N` enum, and emits
`#[repr(C)]` structs. crosvm's kvm_sys bindings carry another tool's banner and hand-written
raw lines, and are still bindgen output.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from dataclasses import dataclass

_ITEM = re.compile(
    r"(?:\bpub\s*(?:\([^)]*\)\s*)?)?\bconst\s+([A-Za-z_]\w*)\s*:\s*([^=;{}]+?)\s*=\s*([^;]+);"
)
_CONST_FN = re.compile(r"\bconst\s+fn\s+([A-Za-z_]\w*)\s*\(([^)]*)\)\s*->\s*[\w:]+\s*\{([^{}]*)\}")
_MODULE = re.compile(r"\bmod\s+(\w+)\s*\{")
_BINDGEN_TYPE = (
    r"(?:[ui](?:8|16|32|64|128|size)|::(?:std::os::raw|core::ffi)::c_\w+|\w*_bindgen_ty_\d+|\w+)"
)
_BINDGEN_ITEM = re.compile(rf"^pub const [A-Za-z_]\w*: {_BINDGEN_TYPE} = -?\d+;$", re.MULTILINE)
_UNSIGNED_BITS = {"u8": 8, "u16": 16, "u32": 32, "u64": 64, "u128": 128, "usize": 64}
_OPERATORS: dict[type[ast.operator], Callable[[int, int], int]] = {
    ast.BitOr: lambda a, b: a | b, ast.BitAnd: lambda a, b: a & b, ast.BitXor: lambda a, b: a ^ b,
    ast.LShift: lambda a, b: a << b, ast.RShift: lambda a, b: a >> b,
    ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
    ast.FloorDiv: lambda a, b: a // b, ast.Mod: lambda a, b: a % b,
}  # fmt: skip


@dataclass(frozen=True)
class RustConstant:
    name: str
    type: str
    expression: str


@dataclass(frozen=True)
class _ConstFn:
    parameters: tuple[str, ...]
    body: str


def strip_comments(text: str) -> str:
    """Comments out and string literals emptied, line structure kept: a `// pub const X` is no
    definition, and a `{` in a doc string opens no module."""

    def blank(match: re.Match[str]) -> str:
        found = match.group(0)
        if found.startswith('"'):
            return '""' + "\n" * found.count("\n")
        return re.sub(r"[^\n]", " ", found) if found.startswith("/*") else ""

    return re.sub(r'"(?:\\.|[^"\\])*"|/\*.*?\*/|//[^\n]*', blank, text, flags=re.DOTALL)


def rust_items(text: str, arch: str) -> dict[str, RustConstant]:
    """Every `const` item outside other architectures' modules (`mod arm`, `mod aarch64`...);
    the first definition of a name is the one that counts."""
    code = strip_comments(text)
    found: dict[str, RustConstant] = {}
    modules: list[str | None] = []
    position = 0
    scanner = re.compile(rf"{_MODULE.pattern}|\{{|\}}|{_ITEM.pattern}")
    for match in scanner.finditer(code, position):
        token = match.group(0)
        if match.group(1) is not None:  # mod NAME {
            modules.append(match.group(1))
        elif token == "{":
            modules.append(None)
        elif token == "}":
            if modules:
                modules.pop()
        elif not any(_other_architecture(m, arch) for m in modules):
            name, type_, expression = match.group(2), match.group(3), match.group(4)
            found.setdefault(name, RustConstant(name, " ".join(type_.split()), expression))
    return found


def _other_architecture(module: str | None, arch: str) -> bool:
    aliases = {"arm64": {"arm64", "aarch64"}, "arm": {"arm", "aarch32"}}
    return any(module in names for a, names in aliases.items() if a != arch)


def is_bindgen_output(text: str) -> bool:
    """bindgen's shape: many constants, nearly all as bindgen writes them, beside repr(C)
    structs. A VMM's hand-written file has a handful, often in hex or as expressions."""
    items = len(re.findall(r"^\s*pub\s+const\s+[A-Za-z_]\w*\s*:", text, re.MULTILINE))
    bindgen = len(_BINDGEN_ITEM.findall(text))
    return bindgen >= 20 and bindgen >= 0.9 * items and "#[repr(C)]" in text


def rust_values(text: str, arch: str) -> dict[str, int]:
    """Each constant's value, as its declared type holds it (an unsigned type wraps, so
    `!0u32` is 0xffffffff); what cannot be evaluated is left out."""
    items = rust_items(text, arch)
    functions = _const_fns(strip_comments(text))
    values: dict[str, int] = {}
    progress = True
    while progress:
        progress = False
        for name, item in items.items():
            if name in values:
                continue
            try:
                tree = ast.parse(_to_python(item.expression), mode="eval").body
                value = _evaluate(tree, values, functions, {})
            except (KeyError, SyntaxError, ValueError, ZeroDivisionError, RecursionError):
                continue
            bits = _UNSIGNED_BITS.get(item.type)
            values[name] = value & ((1 << bits) - 1) if bits else value
            progress = True
    return values


def _const_fns(code: str) -> dict[str, _ConstFn]:
    """One-expression `const fn`s: their parameters and the expression they return."""
    found = {}
    for match in _CONST_FN.finditer(code):
        body = match.group(3).strip()
        body = re.sub(r"^return\s+", "", body).removesuffix(";").strip()
        if ";" in body or re.search(r"\b(let|if|match|loop|while)\b", body):
            continue
        parameters = tuple(p.split(":")[0].strip() for p in match.group(2).split(",") if p.strip())
        found[match.group(1)] = _ConstFn(parameters, body)
    return found


def _to_python(expression: str) -> str:
    expression = " ".join(expression.split())
    expression = re.sub(r"\bas\s+(?:::)?[A-Za-z_][\w:]*", "", expression)  # casts
    expression = re.sub(r"(?<=[0-9a-fA-F])_(?=[0-9a-fA-F])", "", expression)
    expression = re.sub(r"\b(0x[0-9a-fA-F]+|0b[01]+|0o[0-7]+|[0-9]+)_?([ui](8|16|32|64|128|size))\b",
                        r"\1", expression)  # fmt: skip
    expression = re.sub(
        r"\b[A-Za-z_]\w*::", "", expression
    )  # paths: self::X, u64::MAX is refused later
    return re.sub(r"!(?!=)", "~", expression)


def _evaluate(
    node: ast.expr, values: dict[str, int], functions: dict[str, _ConstFn], local: dict[str, int]
) -> int:
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return node.value
    if isinstance(node, ast.Name):
        return local[node.id] if node.id in local else values[node.id]
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        left = _evaluate(node.left, values, functions, local)
        right = _evaluate(node.right, values, functions, local)
        return int(_OPERATORS[type(node.op)](left, right))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Invert):
        return ~_evaluate(node.operand, values, functions, local) & 0xFFFFFFFFFFFFFFFF
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_evaluate(node.operand, values, functions, local)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
        function = functions[node.func.id]
        if len(node.args) != len(function.parameters):
            raise ValueError(f"{node.func.id} takes {len(function.parameters)} arguments")
        arguments = [_evaluate(a, values, functions, local) for a in node.args]
        body = ast.parse(_to_python(function.body), mode="eval").body
        return _evaluate(
            body, values, functions, dict(zip(function.parameters, arguments, strict=True))
        )
    raise ValueError(f"cannot evaluate {ast.dump(node)}")
