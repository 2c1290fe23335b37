"""The binary operators of the rule language on integers: one definition for every evaluator."""

from __future__ import annotations

from collections.abc import Callable

BINARY_OPERATORS: dict[str, Callable[[int, int], int | bool]] = {
    "|": lambda a, b: a | b,
    "&": lambda a, b: a & b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}
