"""Parse and type-check the expressions that rules use for conditions and values.

Rules are data, but data that needs a little logic ("a PSCI 0.2 vcpu and a value of 0.1").
A restricted grammar keeps that logic checkable: every name must resolve to something the
spec defines, with a type, so a typo in a rule is a load error instead of a silent never-match.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import cast

from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import UnexpectedInput, VisitError

from kvm_fwspec.spec.operators import BINARY_OPERATORS


class Type(enum.Enum):
    """The three kinds of value an expression can have."""

    BOOL = "bool"
    INT = "int"
    SET = "set"


@dataclass(frozen=True)
class Number:
    value: int


@dataclass(frozen=True)
class Name:
    name: str


@dataclass(frozen=True)
class Call:
    function: str
    args: tuple[Expr, ...]


@dataclass(frozen=True)
class SetLiteral:
    items: tuple[Expr, ...]


@dataclass(frozen=True)
class Unary:
    op: str  # "not" or "~"
    operand: Expr


@dataclass(frozen=True)
class Binary:
    op: str  # "and", "or", "|", "&", a comparison, "in" or "not in"
    left: Expr
    right: Expr


Expr = Number | Name | Call | SetLiteral | Unary | Binary


class ExpressionError(Exception):
    """An expression that does not parse or does not type-check; the message says why."""


@v_args(inline=True)
class _ToAst(Transformer[Token, Expr]):
    def number(self, token: Token) -> Expr:
        try:
            return Number(int(str(token), 0))
        except ValueError:  # the grammar lets `08` through; Python's int() does not
            raise ExpressionError(f"'{token}' is not a number (no leading zeros)") from None

    def name(self, token: Token) -> Expr:
        return Name(str(token))

    def call(self, function: Token, *args: Expr | None) -> Expr:
        return Call(str(function), tuple(a for a in args if a is not None))

    def set_literal(self, *items: Expr | None) -> Expr:
        return SetLiteral(tuple(i for i in items if i is not None))

    def not_(self, operand: Expr) -> Expr:
        return Unary("not", operand)

    def invert(self, operand: Expr) -> Expr:
        return Unary("~", operand)

    def compare(self, left: Expr, op: Token, right: Expr) -> Expr:
        return Binary(str(op), left, right)

    def member(self, left: Expr, right: Expr) -> Expr:
        return Binary("in", left, right)

    def not_member(self, left: Expr, right: Expr) -> Expr:
        return Binary("not in", left, right)

    def _chain(self, op: str, items: tuple[Expr, ...]) -> Expr:
        result = items[0]
        for item in items[1:]:
            result = Binary(op, result, item)
        return result

    def or_(self, *items: Expr) -> Expr:
        return self._chain("or", items)

    def and_(self, *items: Expr) -> Expr:
        return self._chain("and", items)

    def bit_or(self, *items: Expr) -> Expr:
        return self._chain("|", items)

    def bit_and(self, *items: Expr) -> Expr:
        return self._chain("&", items)


_PARSER = Lark(
    (resources.files("kvm_fwspec.spec") / "rule_grammar.lark").read_text(encoding="utf-8"),
    parser="lalr",
    maybe_placeholders=True,
)


def parse(text: str) -> Expr:
    """Parse an expression; raise ExpressionError with the column of a syntax error."""
    try:
        tree: Tree[Token] = _PARSER.parse(text)
    except UnexpectedInput as exc:  # what the LALR parser raises for any text it refuses
        raise ExpressionError(f"syntax error at column {exc.column} of '{text}'") from exc
    try:
        return _ToAst().transform(tree)
    except VisitError as exc:  # lark wraps what the transformer raised
        if isinstance(exc.orig_exc, ExpressionError):
            raise exc.orig_exc from None
        raise


@dataclass(frozen=True)
class Function:
    """A function a rule may call: its argument types, result type, and a check on constants."""

    args: tuple[Type, ...]
    result: Type
    check: Callable[[tuple[Expr, ...]], str | None]


@dataclass(frozen=True)
class Scope:
    """What a rule's expressions may name: typed names and functions, fixed by its register."""

    names: Mapping[str, Type]
    functions: Mapping[str, Function]


_COMPARISONS = {"==", "!=", "<", "<=", ">", ">="}


def infer(expr: Expr, scope: Scope) -> Type:
    """The type of `expr` in `scope`; raise ExpressionError on an unknown name or a type clash."""
    match expr:
        case Number():
            return Type.INT
        case Name(name):
            if name not in scope.names:
                raise ExpressionError(f"unknown name '{name}'{_suggest(name, scope.names)}")
            return scope.names[name]
        case Call(function, args):
            return _infer_call(function, args, scope)
        case SetLiteral(items):
            for item in items:
                _expect(item, Type.INT, scope, "set element")
            return Type.SET
        case Unary("not", operand):
            _expect(operand, Type.BOOL, scope, "operand of 'not'")
            return Type.BOOL
        case Unary(_, operand):
            _expect(operand, Type.INT, scope, "operand of '~'")
            return Type.INT
        case Binary(("and" | "or") as op, left, right):
            _expect(left, Type.BOOL, scope, f"operand of '{op}'")
            _expect(right, Type.BOOL, scope, f"operand of '{op}'")
            return Type.BOOL
        case Binary(("in" | "not in") as op, left, right):
            _expect(left, Type.INT, scope, f"left of '{op}'")
            _expect(right, Type.SET, scope, f"right of '{op}'")
            return Type.BOOL
        case Binary(op, left, right):
            _expect(left, Type.INT, scope, f"operand of '{op}'")
            _expect(right, Type.INT, scope, f"operand of '{op}'")
            return Type.BOOL if op in _COMPARISONS else Type.INT
    raise AssertionError(f"unhandled expression {expr!r}")


def _infer_call(function: str, args: tuple[Expr, ...], scope: Scope) -> Type:
    signature = scope.functions.get(function)
    if signature is None:
        raise ExpressionError(f"unknown function '{function}'{_suggest(function, scope.functions)}")
    if len(args) != len(signature.args):
        raise ExpressionError(
            f"{function}() takes {len(signature.args)} arguments, {len(args)} given"
        )
    for arg, wanted in zip(args, signature.args, strict=True):
        _expect(arg, wanted, scope, f"argument of {function}()")
    problem = signature.check(args)
    if problem:
        raise ExpressionError(problem)
    return signature.result


def _expect(expr: Expr, wanted: Type, scope: Scope, role: str) -> None:
    found = infer(expr, scope)
    if found is not wanted:
        raise ExpressionError(f"{role} must be {wanted.value}, not {found.value}")


def _suggest(name: str, known: Mapping[str, object]) -> str:
    import difflib

    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def check(text: str, scope: Scope, wanted: Type) -> Expr:
    """Parse `text` and require it to have type `wanted` in `scope`."""
    expr = parse(text)
    found = infer(expr, scope)
    if found is not wanted:
        raise ExpressionError(f"'{text}' is {found.value}, expected {wanted.value}")
    return expr


def to_json(expr: Expr) -> object:
    """The expression tree as plain JSON, so other languages need no parser of their own."""
    match expr:
        case Number(value):
            return {"number": value}
        case Name(name):
            return {"name": name}
        case Call(function, args):
            return {"call": function, "args": [to_json(a) for a in args]}
        case SetLiteral(items):
            return {"set": [to_json(i) for i in items]}
        case Unary(op, operand):
            return {"op": op, "args": [to_json(operand)]}
        case Binary(op, left, right):
            return {"op": op, "args": [to_json(left), to_json(right)]}
    raise AssertionError(f"unhandled expression {expr!r}")


Value = int | bool | frozenset[int]


def evaluate(expr: Expr, names: Mapping[str, Value]) -> Value:
    """The value of a type-checked expression, given a value for every name it uses.

    The only function the spec defines is psci(major, minor); arithmetic is on unsigned
    64-bit values, so `~` complements within 64 bits.
    """
    match expr:
        case Number(value):
            return value
        case Name(name):
            return names[name]
        case Call("psci", (major, minor)):
            return _int(evaluate(major, names)) << 16 | _int(evaluate(minor, names))
        case SetLiteral(items):
            return frozenset(_int(evaluate(i, names)) for i in items)
        case Unary("not", operand):
            return not evaluate(operand, names)
        case Unary(_, operand):
            return ~_int(evaluate(operand, names)) & (1 << 64) - 1
        case Binary("and", left, right):
            return bool(evaluate(left, names)) and bool(evaluate(right, names))
        case Binary("or", left, right):
            return bool(evaluate(left, names)) or bool(evaluate(right, names))
        case Binary(("in" | "not in") as op, left, right):
            found = _int(evaluate(left, names)) in cast(frozenset[int], evaluate(right, names))
            return found if op == "in" else not found
        case Binary(op, left, right):
            return BINARY_OPERATORS[op](_int(evaluate(left, names)), _int(evaluate(right, names)))
    raise AssertionError(f"cannot evaluate {expr!r}")


def evaluate_int(expr: Expr, names: Mapping[str, Value]) -> int:
    """evaluate() for an expression the loader typed as int."""
    return _int(evaluate(expr, names))


def _int(value: Value) -> int:
    assert isinstance(value, int) and not isinstance(value, bool), value
    return value
