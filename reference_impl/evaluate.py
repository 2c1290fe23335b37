"""Evaluate rule expressions in the JSON tree form the generated tables carry.

The tables ship expressions already parsed, so the reference needs no parser; this walker is
the whole of the language's run-time semantics on the implementation side.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kvm_fwspec.reference_impl.operators import BINARY_OPERATORS

Value = int | bool | frozenset[int]
U64 = (1 << 64) - 1


def _int(value: Value) -> int:
    assert isinstance(value, int), value
    return int(value)


def evaluate_int(tree: Mapping[str, Any], names: Mapping[str, Value]) -> int:
    """evaluate() for an expression the spec types as int."""
    return _int(evaluate(tree, names))


def evaluate(tree: Mapping[str, Any], names: Mapping[str, Value]) -> Value:
    """The value of an expression tree: {"number"}, {"name"}, {"call"}, {"set"} or {"op"}."""
    if "number" in tree:
        return int(tree["number"])
    if "name" in tree:
        value: Value = names[tree["name"]]
        return value
    if "call" in tree:  # psci(major, minor), the one function the spec defines
        major, minor = (evaluate_int(a, names) for a in tree["args"])
        return major << 16 | minor
    if "set" in tree:
        return frozenset(evaluate_int(i, names) for i in tree["set"])
    op: str = tree["op"]
    args = tree["args"]
    if op == "not":
        return not evaluate(args[0], names)
    if op == "~":
        return ~evaluate_int(args[0], names) & U64
    if op == "and":
        return bool(evaluate(args[0], names)) and bool(evaluate(args[1], names))
    if op == "or":
        return bool(evaluate(args[0], names)) or bool(evaluate(args[1], names))
    left, right = evaluate(args[0], names), evaluate(args[1], names)
    if op in ("in", "not in"):
        assert isinstance(right, frozenset)
        found: bool = _int(left) in right
        return found == (op == "in")
    result: Value = BINARY_OPERATORS[op](_int(left), _int(right))
    return result
