"""The names the vcpu power rules may use (spec/psci.yaml's `power`), per operation.

CPU_ON, CPU_OFF and AFFINITY_INFO are decided over several vcpus of one VM, so their tables
have a vocabulary of their own: the call's target and level as KVM reads them, and what the
VM's vcpus are. The conformance oracle and the reference fill exactly these names;
tests/test_rule_names.py holds both to it.
"""

from __future__ import annotations

from kvm_fwspec.spec.op_names import OpName, names_for, scope_for
from kvm_fwspec.spec.rule_language import Scope, Type

POWER_OPS = ("run", "cpu-on", "cpu-off", "affinity-info", "system-event")


POWER_NAMES: tuple[OpName, ...] = (
    OpName(
        spelling="vcpu.on",
        type=Type.BOOL,
        ops=("run",),
        doc="The vcpu about to enter the guest is not stopped.",
    ),
    OpName(
        spelling="call.target",
        type=Type.INT,
        ops=("cpu-on", "affinity-info"),
        doc="x1, the target affinity; its low 32 bits when the call is a standard PSCI "
        "function's SMC32 id (KVM narrows x1 to x3 of those: kvm_psci_narrow_to_32bit).",
    ),
    OpName(
        spelling="call.level",
        type=Type.INT,
        ops=("affinity-info",),
        doc="x2, AFFINITY_INFO's lowest affinity level, narrowed as call.target is.",
    ),
    OpName(
        spelling="hwid-mask",
        type=Type.INT,
        ops=("cpu-on", "affinity-info"),
        doc="MPIDR_HWID_BITMASK: the affinity fields of an MPIDR.",
    ),
    OpName(
        spelling="caller.psci-0.2",
        type=Type.BOOL,
        ops=("cpu-on",),
        doc="The calling vcpu has the psci-0.2 feature (any PSCI from 0.2 on).",
    ),
    OpName(
        spelling="target.exists",
        type=Type.BOOL,
        ops=("cpu-on",),
        doc="Some vcpu's MPIDR affinity equals call.target under hwid-mask.",
    ),
    OpName(
        spelling="target.on",
        type=Type.BOOL,
        ops=("cpu-on",),
        doc="That vcpu is not stopped (false where there is none).",
    ),
    OpName(
        spelling="matching",
        type=Type.INT,
        ops=("affinity-info",),
        doc="How many vcpus match call.target at call.level: their MPIDR affinity equals the "
        "target in the bits of hwid-mask from call.level times level-bits up (0 for a level "
        "of 4 or more, which names no affinity field).",
    ),
    OpName(
        spelling="event.type",
        type=Type.INT,
        ops=("system-event",),
        doc="The type of the system event the call exits with (run->system_event.type).",
    ),
    OpName(
        spelling="system-event.EVENT",
        type=Type.INT,
        ops=("system-event",),
        doc="Each system event type's value, by its name (system-event.suspend is "
        "KVM_SYSTEM_EVENT_SUSPEND's).",
    ),
    OpName(
        spelling="matching-on",
        type=Type.INT,
        ops=("affinity-info",),
        doc="How many of the vcpus that match are not stopped.",
    ),
)


def power_names(op: str, events: tuple[str, ...]) -> dict[str, Type]:
    """Each name a power rule about `op` may use, with its type; `events` are the names the
    EVENT family spells out."""
    return names_for(POWER_NAMES, op, {"EVENT": events})


def power_scope(op: str, events: tuple[str, ...]) -> Scope:
    return scope_for(POWER_NAMES, op, {"EVENT": events})
