"""The names the stolen-time rules may use (spec/smccc.yaml's `stolen-time`), per operation.

Setting a vcpu's stolen-time address and the PV time calls over it are decided by tables of
their own: the attribute and address a KVM_SET_DEVICE_ATTR carries, whether the vcpu already
has an address, and the argument of the guest's PV_TIME_FEATURES. The conformance oracle and
the reference fill exactly these names; tests/test_rule_names.py holds both to it.
"""

from __future__ import annotations

from kvm_fwspec.spec.op_names import OpName, names_for, scope_for
from kvm_fwspec.spec.rule_language import Scope, Type

STOLEN_TIME_OPS = ("set", "get", "pv-time-features", "pv-time-st")


STOLEN_TIME_NAMES: tuple[OpName, ...] = (
    OpName(
        spelling="attr.attr",
        type=Type.INT,
        ops=("set", "get"),
        doc="The attribute of the stolen-time group the ioctl names.",
    ),
    OpName(
        spelling="pvtime-attr",
        type=Type.INT,
        ops=("set", "get"),
        doc="The address's attribute (KVM_ARM_VCPU_PVTIME_IPA).",
    ),
    OpName(
        spelling="ipa.aligned",
        type=Type.BOOL,
        ops=("set",),
        doc="The address is a multiple of the structure's size.",
    ),
    OpName(
        spelling="ipa.in-memory",
        type=Type.BOOL,
        ops=("set",),
        doc="The page holding the address is in one of the VM's memory slots.",
    ),
    OpName(
        spelling="vcpu.stolen-time-set",
        type=Type.BOOL,
        ops=("set", "pv-time-features", "pv-time-st"),
        doc="The vcpu has a stolen-time address: the VMM set one.",
    ),
    OpName(
        spelling="call.argument",
        type=Type.INT,
        ops=("pv-time-features",),
        doc="x1's low 32 bits, the function id asked about, as KVM reads it.",
    ),
    OpName(
        spelling="pv-time-functions",
        type=Type.SET,
        ops=("pv-time-features",),
        doc="The function ids of the PV time service, by smccc.yaml's functions.",
    ),
)


def stolen_time_names(op: str) -> dict[str, Type]:
    """Each name a stolen-time rule about `op` may use, with its type."""
    return names_for(STOLEN_TIME_NAMES, op, {})


def stolen_time_scope(op: str) -> Scope:
    return scope_for(STOLEN_TIME_NAMES, op, {})
