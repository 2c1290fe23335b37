"""Run case programs against an implementation: the one executor both sides of the agent use.

A program creates a fresh VM with some vcpus, initialises them (or not) and performs steps;
each step's outcome is a small JSON object. Stdlib only, so it can run inside a guest.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

Outcome = dict[str, Any]
MAX_VCPUS = 8  # the suite's programs use two
NOT_SUPPORTED_U64 = (1 << 64) - 1  # SMCCC's NOT_SUPPORTED (-1) as a register holds it
# Guest RAM every VM has for the program to point KVM at (a vcpu's stolen-time structure),
# beside the agent's own code: DATA_SIZE bytes from guest-physical DATA_BASE.
DATA_BASE = 0x9000_0000
DATA_SIZE = 0x10000
PROGRAM_MEMORY = ((DATA_BASE, DATA_SIZE),)  # the memory slots a program may rely on


class Vcpu(Protocol):
    def init(self, features: list[str]) -> str | None: ...
    def get_one_reg(self, reg_id: int) -> tuple[str | None, int | None]: ...
    def set_one_reg(self, reg_id: int, value: int) -> str | None: ...
    def reg_list(self) -> tuple[str | None, list[int]]: ...
    def run(self) -> Outcome:
        """KVM_RUN once: {"ok": true}, {"errno": ...}, or {"mp-state": "stopped"} for a vcpu
        that is powered off (KVM_RUN sleeps instead of entering the guest)."""
        ...

    def mp_state(self) -> tuple[str | None, str | None]:
        """KVM_GET_MP_STATE: (None, the state's name in the spec), or (the errno, None)."""
        ...

    def set_attribute(self, group: int, attr: int, value: int) -> str | None:
        """KVM_SET_DEVICE_ATTR on the vcpu, `addr` pointing at `value` as a little-endian
        u64: None, or the errno."""
        ...

    def get_attribute(self, group: int, attr: int) -> tuple[str | None, int | None]:
        """KVM_GET_DEVICE_ATTR on the vcpu into a u64: (None, the value), or (the errno, None)."""
        ...

    def call(
        self, function_id: int, args: list[int], answer: int, results: int = 1
    ) -> dict[str, Any]:
        """The guest's call; if KVM forwards it to userspace (KVM_EXIT_HYPERCALL), this
        side answers `answer` in x0 and runs the vcpu on to see what the guest got. A call
        that returns to the guest reports x0 and, for `results` above 1, also "x1" up to
        "x{results - 1}" as unsigned numbers (CALL_UID and TRNG_GET_UUID answer in x0-x3).
        A call that powers the vcpu off (PSCI CPU_OFF) reports {"mp-state": "stopped"}."""
        ...


class Vm(Protocol):
    def create_vcpu(self) -> Vcpu: ...
    def set_smccc_filter(self, base: int, nr_functions: int, action: int, pad: int) -> str | None:
        """KVM_SET_DEVICE_ATTR of one SMCCC filter range on the VM: None, or the errno."""
        ...

    def has_attribute(self, group: int, attr: int) -> str | None:
        """KVM_HAS_DEVICE_ATTR on the VM: None if it has the attribute, or the errno."""
        ...

    def enable_capability(self, cap: int) -> str | None:
        """KVM_ENABLE_CAP on the VM (flags and args 0): None, or the errno."""
        ...


class Implementation(Protocol):
    """What an implementation offers the executor: fresh VMs."""

    def create_vm(self) -> Vm: ...


# The fields each step needs besides `op` and `vcpu` (docs/agent-protocol.md, "Steps").
STEP_FIELDS = {
    "get": ("reg",),
    "set": ("reg", "value"),
    "list": ("mask", "match"),
    "run": (),
    "mp-state": (),
    "call": ("function",),
    "smccc-filter": ("base", "nr-functions", "action", "pad"),
    "has-attr": ("group", "attr"),
    "enable-cap": ("cap",),
    "set-vcpu-attr": ("group", "attr", "value"),
    "get-vcpu-attr": ("group", "attr"),
}
VM_STEPS = ("smccc-filter", "has-attr", "enable-cap")  # made on the VM: they name no vcpu
MAX_ARGS = 3  # a call's arguments go in x1 to x3
U32 = (1 << 32) - 1
U64 = (1 << 64) - 1
# The largest value of each bounded field of a step; pad is the struct's first 8 pad bytes.
STEP_BOUNDS = {
    "reg": U64,
    "value": U64,
    "mask": U64,
    "match": U64,
    "function": U32,
    "base": U32,
    "nr-functions": U32,
    "action": 0xFF,
    "pad": U64,
    "group": U32,
    "attr": U64,
    "answer": U64,
    "cap": U32,
}
MAX_RESULTS = 4  # SMCCC returns in x0-x3 (SMC32/HVC32 and SMC64/HVC64 alike)
POWER_OFF = "power-off"  # the vcpu feature a program's `powered-off` vcpus are initialised with


class ProgramError(ValueError):
    """A program the agent cannot carry out as written (a step without its fields, a vcpu the
    program lacks): the step's error, in words an implementer of the protocol can act on."""


def _checked(step: Mapping[str, Any], vcpus: int) -> None:
    op = step.get("op")
    if op not in STEP_FIELDS:
        raise ProgramError(f"unknown step op {op!r}; steps are {', '.join(STEP_FIELDS)}")
    vcpu = step.get("vcpu")
    if op in VM_STEPS and "vcpu" in step:
        raise ProgramError(f"{_a(op)} {op} step is made on the VM and names no vcpu")
    if op not in VM_STEPS and "vcpu" not in step:
        raise ProgramError(f"{_a(op)} {op} step needs vcpu, one of 0 to {vcpus - 1}")
    if op not in VM_STEPS and (
        not isinstance(vcpu, int) or isinstance(vcpu, bool) or not 0 <= vcpu < vcpus
    ):
        raise ProgramError(
            f"{_a(op)} {op} step names vcpu {json.dumps(vcpu)}; the program has vcpus 0 to {vcpus - 1}"
        )
    missing = [name for name in STEP_FIELDS[op] if name not in step]
    if missing:
        raise ProgramError(f"{_a(op)} {op} step needs {' and '.join(missing)}")
    for name, bound in STEP_BOUNDS.items():
        number = step.get(name, 0)
        if not isinstance(number, int) or isinstance(number, bool) or not 0 <= number <= bound:
            raise ProgramError(f"{name} {_shown(number)} is not a number from 0 to {bound:#x}")
    args = step.get("args", [])
    if not isinstance(args, list) or len(args) > MAX_ARGS:
        raise ProgramError(
            f"args {_shown(args)} is not a list of at most {MAX_ARGS} numbers (x1 to x3)"
        )
    results = step.get("results", 1)  # a plain JSON integer in both protocol versions
    if not isinstance(results, int) or isinstance(results, bool) or not 1 <= results <= MAX_RESULTS:
        raise ProgramError(f"results {json.dumps(results)} is not a number from 1 to {MAX_RESULTS}")


def _a(op: str) -> str:
    """The article before a step's op in an error: "an enable-cap step", "a get step"."""
    return "an" if op[0] in "aeiou" else "a"


def _shown(value: Any) -> str:
    """A step's number field as the program wrote it, for errors read by implementers of the
    protocol in any language: a number in hex, as version 2 writes it; anything else in JSON
    (`true`, `null`, `"0x4"`)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return hex(value)
    return json.dumps(value)


def _errno_or(errno: str | None, success: Outcome) -> Outcome:
    return {"errno": errno} if errno else success


def _step(vm: Vm, vcpus: Sequence[Vcpu], step: Mapping[str, Any]) -> Outcome:
    _checked(step, len(vcpus))
    op = step["op"]
    if op == "smccc-filter":
        errno = vm.set_smccc_filter(step["base"], step["nr-functions"], step["action"], step["pad"])
        return _errno_or(errno, {"ok": True})
    if op == "has-attr":
        return _errno_or(vm.has_attribute(step["group"], step["attr"]), {"ok": True})
    if op == "enable-cap":
        return _errno_or(vm.enable_capability(step["cap"]), {"ok": True})
    vcpu = vcpus[step["vcpu"]]
    if op == "get":
        errno, value = vcpu.get_one_reg(step["reg"])
        return _errno_or(errno, {"value": value})
    if op == "set":
        return _errno_or(vcpu.set_one_reg(step["reg"], step["value"]), {"ok": True})
    if op == "list":
        errno, ids = vcpu.reg_list()
        return _errno_or(errno, {"ids": [i for i in ids if i & step["mask"] == step["match"]]})
    if op == "run":
        return dict(vcpu.run())
    if op == "mp-state":
        errno, state = vcpu.mp_state()
        return _errno_or(errno, {"mp-state": state})
    if op == "set-vcpu-attr":
        errno = vcpu.set_attribute(step["group"], step["attr"], step["value"])
        return _errno_or(errno, {"ok": True})
    if op == "get-vcpu-attr":
        errno, value = vcpu.get_attribute(step["group"], step["attr"])
        return _errno_or(errno, {"value": value})
    answer = step.get("answer", NOT_SUPPORTED_U64)
    results = step.get("results", 1)
    return dict(vcpu.call(step["function"], list(step.get("args", [])), answer, results))


def _powered_off(program: Mapping[str, Any], vcpus: int) -> set[int]:
    """The vcpus the program starts powered off (its optional `powered-off`), checked."""
    indexes = program.get("powered-off", [])
    if not isinstance(indexes, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) and 0 <= i < vcpus for i in indexes
    ):
        raise ProgramError(
            f"powered-off {json.dumps(indexes)} is not a list of the program's vcpus, 0 to {vcpus - 1}"
        )
    if indexes and program["features"] is None:
        raise ProgramError("powered-off needs features: an uninitialised vcpu has no power state")
    return set(indexes)


def execute(implementation: Implementation, program: Mapping[str, Any]) -> list[Outcome]:
    """Outcomes of every step; after an exception the rest are reported as not run."""
    steps = program["steps"]
    observed: list[Outcome] = []
    try:
        count = program["vcpus"]
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_VCPUS:
            # A program is work an agent does for anyone who can reach it: bound it (the
            # million-input fuzz run once asked the reference for 10**20 vcpus and ran out
            # of memory).
            raise ValueError(f"a program has 1 to {MAX_VCPUS} vcpus, not {count!r}")
        powered_off = _powered_off(program, count)
        vm = implementation.create_vm()
        try:
            vcpus = [vm.create_vcpu() for _ in range(count)]
            if program["features"] is not None:
                for index, vcpu in enumerate(vcpus):
                    off = [POWER_OFF] if index in powered_off else []
                    errno = vcpu.init([*program["features"], *off])
                    if errno:
                        raise RuntimeError(f"KVM_ARM_VCPU_INIT failed with {errno}")
            for step in steps:
                observed.append(_step(vm, vcpus, step))
        finally:
            close = getattr(vm, "close", None)
            if close is not None:
                close()
    except ProgramError as exc:
        observed.append({"error": str(exc)})
    except Exception as exc:  # the implementation's failure is the case's error verdict
        observed.append({"error": f"{type(exc).__name__}: {exc}"})
    observed += [{"error": "not run"}] * (len(steps) - len(observed))
    return observed
