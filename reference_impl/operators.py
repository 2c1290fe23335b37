"""The rule language's binary operators on integers, as the reference implementation runs them.

The spec library has its own table (kvm_fwspec.spec.operators), which the oracle uses. The two
are kept apart on purpose: a bug in a shared table would make the oracle and the reference
agree on the wrong answer, and no mutant or conformance case could catch it.
"""

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
