"""The rule language parses with the documented precedence and refuses what it cannot type."""

from __future__ import annotations

import pytest

from kvm_fwspec.spec import rule_language as rl

SCOPE = rl.Scope(
    {
        "value": rl.Type.INT,
        "stored": rl.Type.INT,
        "vm.has-run": rl.Type.BOOL,
        "kernel.psci-versions": rl.Type.SET,
    },
    {"bit": rl.Function((rl.Type.INT,), rl.Type.INT, lambda args: None)},
)


def test_bit_operators_bind_tighter_than_comparisons() -> None:
    # Unlike C, `value & mask != 0` means `(value & mask) != 0`.
    assert rl.parse("value & 3 != 0") == rl.Binary(
        "!=", rl.Binary("&", rl.Name("value"), rl.Number(3)), rl.Number(0)
    )


def test_and_binds_tighter_than_or() -> None:
    tree = rl.parse("vm.has-run or vm.has-run and vm.has-run")
    assert isinstance(tree, rl.Binary) and tree.op == "or"


def test_membership_in_a_set_name_and_a_literal() -> None:
    assert rl.infer(rl.parse("value in kernel.psci-versions"), SCOPE) is rl.Type.BOOL
    assert rl.infer(rl.parse("value not in {1, 0x10000}"), SCOPE) is rl.Type.BOOL


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("valu == 1", "unknown name 'valu' (did you mean 'value'?)"),
        ("value and vm.has-run", "operand of 'and' must be bool, not int"),
        ("value in 3", "right of 'in' must be set, not int"),
        ("bit(1, 2) == 0", "bit() takes 1 arguments, 2 given"),
        ("nothing(1) == 0", "unknown function 'nothing'"),
        ("not value", "operand of 'not' must be bool, not int"),
    ],
)
def test_type_errors_are_explained(text: str, message: str) -> None:
    with pytest.raises(rl.ExpressionError) as error:
        rl.infer(rl.parse(text), SCOPE)
    assert str(error.value) == message


def test_check_wants_the_declared_result_type() -> None:
    with pytest.raises(rl.ExpressionError, match="is bool, expected int"):
        rl.check("vm.has-run", SCOPE, rl.Type.INT)


def test_syntax_error_names_the_column() -> None:
    with pytest.raises(rl.ExpressionError, match="column 8"):
        rl.parse("value >> 1")


def test_tree_as_json() -> None:
    assert rl.to_json(rl.parse("not vm.has-run")) == {"op": "not", "args": [{"name": "vm.has-run"}]}
