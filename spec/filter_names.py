"""The names the SMCCC filter's rules may use (spec/smccc-filter.yaml), per operation.

The filter's decision tables are written in the rule language, like the registers', over a
vocabulary of their own: the attribute a KVM_HAS_DEVICE_ATTR asks about, the range a
KVM_SET_DEVICE_ATTR adds, and the action the VM's filter gives a guest's call. The conformance
oracle and the reference fill exactly these names; tests/test_rule_names.py holds both to it.
"""

from __future__ import annotations

from kvm_fwspec.spec.op_names import OpName, names_for, scope_for
from kvm_fwspec.spec.rule_language import Scope, Type

FILTER_OPS = ("has", "set", "call")


FILTER_NAMES: tuple[OpName, ...] = (
    OpName(
        spelling="attr.group",
        type=Type.INT,
        ops=("has",),
        doc="The attribute group KVM_HAS_DEVICE_ATTR asks about.",
    ),
    OpName(
        spelling="attr.attr",
        type=Type.INT,
        ops=("has",),
        doc="The attribute KVM_HAS_DEVICE_ATTR asks about.",
    ),
    OpName(
        spelling="filter-group",
        type=Type.INT,
        ops=("has",),
        doc="The filter's attribute group (KVM_ARM_VM_SMCCC_CTRL).",
    ),
    OpName(
        spelling="filter-attr",
        type=Type.INT,
        ops=("has",),
        doc="The filter's attribute (KVM_ARM_VM_SMCCC_FILTER).",
    ),
    OpName(
        spelling="filter.base",
        type=Type.INT,
        ops=("set",),
        doc="The range's first function id, as written in the struct.",
    ),
    OpName(
        spelling="filter.nr-functions",
        type=Type.INT,
        ops=("set",),
        doc="The range's number of function ids, as written in the struct.",
    ),
    OpName(
        spelling="filter.last",
        type=Type.INT,
        ops=("set",),
        doc="base + nr-functions - 1 computed in 32 bits, as KVM computes the range's end.",
    ),
    OpName(
        spelling="filter.action",
        type=Type.INT,
        ops=("set",),
        doc="The range's action, as written in the struct.",
    ),
    OpName(
        spelling="filter.pad",
        type=Type.INT,
        ops=("set",),
        doc="The struct's padding bytes read as one little-endian number: 0 when all are zero.",
    ),
    OpName(
        spelling="filter.overlaps",
        type=Type.BOOL,
        ops=("set",),
        doc="The range shares a function id with one the VM's filter holds: a range added "
        "before, or one of the reserved ranges.",
    ),
    OpName(
        spelling="filter-actions",
        type=Type.SET,
        ops=("set",),
        doc="The values of every action the spec defines.",
    ),
    OpName(
        spelling="vm.has-run",
        type=Type.BOOL,
        ops=("set",),
        doc="Some vcpu of the VM has entered KVM_RUN (api.yaml's state).",
    ),
    OpName(
        spelling="call.action",
        type=Type.INT,
        ops=("call",),
        doc="The action of the VM filter's range that holds the called function id; handle "
        "when none does.",
    ),
    OpName(
        spelling="action.ACTION",
        type=Type.INT,
        ops=("call",),
        doc="Each action's value, by its name (`action.deny`).",
    ),
)


def filter_names(op: str, actions: tuple[str, ...]) -> dict[str, Type]:
    """Each name a filter rule about `op` may use, with its type; `actions` are the names the
    ACTION family spells out."""
    return names_for(FILTER_NAMES, op, {"ACTION": actions})


def filter_scope(op: str, actions: tuple[str, ...]) -> Scope:
    return scope_for(FILTER_NAMES, op, {"ACTION": actions})
