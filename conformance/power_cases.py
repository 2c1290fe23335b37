"""Cases of which vcpus are on: CPU_ON, CPU_OFF and AFFINITY_INFO over two vcpus, KVM_RUN of
a stopped vcpu, and a system event, each checked with KVM_GET_MP_STATE and the guest's answers.

Each program starts a VM with vcpu 0 on and vcpu 1 on or powered off (the vcpu feature
power-off), makes its calls from vcpu 0 unless the call is the one that stops its caller,
and reads back the states the spec says the calls leave. Its expected outcomes come from the
power tables (PowerOracle); its id starts with the id of the rule that decides its first
checked call, so that a release where another rule decides gets another id.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from kvm_fwspec.conformance.case import (
    REQUIRES_GUEST,
    REQUIRES_POWER,
    REQUIRES_PSCI_01,
    Case,
    dotted,
)
from kvm_fwspec.conformance.power_oracle import STOPPED, PowerCall, PowerOracle, VcpuStates
from kvm_fwspec.conformance.profile import Profile
from kvm_fwspec.spec.model import PowerRule, Spec

VCPUS = 2
AFF3_1 = 1 << 32  # Aff3 = 1: no vcpu of KVM's has it, and an SMC32 call cannot carry it
RESERVED_BIT = 1 << 31  # MPIDR bit 31 (RES1 in MPIDR_EL1), outside MPIDR_HWID_BITMASK


class _Program:
    """One VM's program and what the power tables expect of each step."""

    def __init__(
        self, oracle: PowerOracle, powered_off: tuple[int, ...] = (1,), psci_02: bool = True
    ) -> None:
        self.oracle = oracle
        self.psci_02 = psci_02
        self.powered_off = powered_off
        self.vm: VcpuStates = oracle.initial(VCPUS, powered_off)
        self.steps: list[dict[str, Any]] = []
        self.expected: list[dict[str, Any]] = []

    def mp_state(self, vcpu: int) -> None:
        self.steps.append({"op": "mp-state", "vcpu": vcpu})
        self.expected.append({"mp-state": self.vm.states[vcpu]})

    def run(self, vcpu: int) -> PowerRule:
        rule = self.oracle.run(self.vm, vcpu)
        self.steps.append({"op": "run", "vcpu": vcpu})
        self.expected.append(self._stopped(rule) or {"ok": True})
        return rule

    def call(self, vcpu: int, function_id: int, call: PowerCall) -> PowerRule:
        """A power call by `vcpu`; the rule that decides it (KVM_RUN's, if the vcpu is
        stopped and never makes it)."""
        self.steps.append(
            {"op": "call", "vcpu": vcpu, "function": function_id, "args": list(call.args)}
        )
        rule = self.oracle.run(self.vm, vcpu)
        stopped = self._stopped(rule)
        if stopped is None:
            rule = self.oracle.call(self.vm, vcpu, call, self.psci_02)
            stopped = self._stopped(rule)
        self.expected.append(stopped or {"x0": rule.x0})
        return rule

    def system_event(self, vcpu: int, function_id: int, outcome: dict[str, Any]) -> PowerRule:
        """A call that exits with a system event, `outcome`, from psci.yaml's call table."""
        self.steps.append({"op": "call", "vcpu": vcpu, "function": function_id, "args": []})
        self.expected.append(outcome)
        return self.oracle.system_event(self.vm, vcpu, outcome["exit"])

    def _stopped(self, rule: PowerRule) -> dict[str, Any] | None:
        if rule.caller is not None and rule.caller.name == STOPPED:
            return {"mp-state": STOPPED}
        return None

    def case(self, variant: str, rule: PowerRule) -> Case:
        program: dict[str, Any] = {
            "vcpus": VCPUS,
            "features": ["psci-0.2"] if self.psci_02 else [],
            "steps": [dict(step) for step in self.steps],
        }
        if self.powered_off:
            program["powered-off"] = list(self.powered_off)
        requires = {REQUIRES_GUEST, REQUIRES_POWER} | (
            set() if self.psci_02 else {REQUIRES_PSCI_01}
        )
        scenario = "psci-0.2" if self.psci_02 else "no-psci-0.2"
        return Case(
            f"{dotted(rule.id)}.{variant}",
            rule.id,
            scenario,
            tuple(sorted(requires)),
            program,
            tuple(self.expected),
        )


class _PowerCases:
    def __init__(self, spec: Spec, profile: Profile) -> None:
        self.spec = spec
        self.oracle = PowerOracle(spec, profile)
        functions = {f.name: f for f in spec.psci_functions}
        self.ids = {name: functions[name].ids for name in ("cpu-on", "cpu-off", "affinity-info")}
        self.psci_01 = {f.name: f.function_id for f in spec.kvm_psci_01_functions}
        self.system_off = functions["system-off"]

    def _call(self, op: str, args: tuple[int, ...], smc64: bool = False) -> tuple[int, PowerCall]:
        convention = "smc64" if smc64 else "smc32"
        return self.ids[op][convention], PowerCall(op, args, smc32=not smc64)

    def build(self) -> Iterator[Case]:
        yield from self._cpu_on_cases()
        yield from self._affinity_info_cases()
        yield from self._cpu_off_cases()
        yield from self._run_cases()
        yield from self._system_event_case()

    def _cpu_on_cases(self) -> Iterator[Case]:
        """CPU_ON of each kind of target from vcpu 0, then vcpu 1's state as KVM_GET_MP_STATE
        and AFFINITY_INFO report it."""
        targets: dict[str, tuple[int, bool, tuple[int, ...]]] = {
            # variant: (target, by its SMC64 id, powered-off vcpus)
            "vcpu-1": (1, False, (1,)),
            "vcpu-1-smc64": (1, True, (1,)),
            "vcpu-1-on": (1, False, ()),
            "itself": (0, False, (1,)),
            "no-vcpu-2": (2, False, (1,)),
            "reserved-bit-31": (RESERVED_BIT | 1, False, (1,)),
            "aff3-narrowed-by-smc32": (AFF3_1 | 1, False, (1,)),
            "aff3-smc64": (AFF3_1 | 1, True, (1,)),
        }
        for variant, (target, smc64, powered_off) in targets.items():
            program = _Program(self.oracle, powered_off)
            rule = program.call(0, *self._call("cpu-on", (target, 0, 0), smc64))
            program.mp_state(1)
            program.call(0, *self._call("affinity-info", (1, 0)))
            yield program.case(variant, rule)
        program = _Program(self.oracle)
        program.call(0, *self._call("cpu-on", (1, 0, 0)))
        yield program.case("twice", program.call(0, *self._call("cpu-on", (1, 0, 0))))
        cpu_on_01 = self.psci_01["cpu-on"], PowerCall("cpu-on", (1, 0, 0), smc32=False)
        program = _Program(self.oracle, psci_02=False)
        rule = program.call(0, *cpu_on_01)
        program.mp_state(1)
        yield program.case("psci-0.1", rule)
        program = _Program(self.oracle, psci_02=False)
        program.call(0, *cpu_on_01)
        yield program.case("psci-0.1-twice", program.call(0, *cpu_on_01))

    def _affinity_info_cases(self) -> Iterator[Case]:
        """AFFINITY_INFO from vcpu 0 of each kind of target and level, vcpu 1 on or off."""
        queries: dict[str, tuple[int, int, bool, tuple[int, ...]]] = {
            # variant: (target, lowest level, by its SMC64 id, powered-off vcpus)
            "vcpu-1-off": (1, 0, False, (1,)),
            "vcpu-1-on": (1, 0, False, ()),
            "vcpu-0": (0, 0, False, (1,)),
            "level-1-cluster": (1, 1, False, (1,)),
            "level-3": (0, 3, False, (1,)),
            "level-4": (1, 4, False, (1,)),
            "no-vcpu-2": (2, 0, False, (1,)),
            "reserved-bit-31": (RESERVED_BIT | 1, 0, False, (1,)),
            "aff3-narrowed-by-smc32": (AFF3_1 | 1, 0, False, (1,)),
            "aff3-smc64": (AFF3_1 | 1, 0, True, (1,)),
            "level-narrowed-by-smc32": (1, AFF3_1, False, (1,)),
        }
        for variant, (target, level, smc64, powered_off) in queries.items():
            program = _Program(self.oracle, powered_off)
            rule = program.call(0, *self._call("affinity-info", (target, level), smc64))
            yield program.case(variant, rule)

    def _cpu_off_cases(self) -> Iterator[Case]:
        """CPU_OFF stops its caller: it is seen stopped, stays out of the guest, and another
        vcpu's CPU_ON starts it again."""
        program = _Program(self.oracle, powered_off=())
        rule = program.call(1, *self._call("cpu-off", ()))
        program.mp_state(1)
        program.call(0, *self._call("affinity-info", (1, 0)))
        program.run(1)
        program.call(0, *self._call("cpu-on", (1, 0, 0), smc64=True))
        program.mp_state(1)
        program.call(0, *self._call("affinity-info", (1, 0)))
        yield program.case("vcpu-1-then-cpu-on", rule)
        program = _Program(self.oracle, powered_off=())
        rule = program.call(0, *self._call("cpu-off", ()))
        program.call(1, *self._call("affinity-info", (0, 0)))
        program.call(1, *self._call("affinity-info", (0, 1)))
        program.mp_state(0)
        yield program.case("vcpu-0", rule)
        program = _Program(self.oracle, powered_off=(), psci_02=False)
        rule = program.call(0, self.psci_01["cpu-off"], PowerCall("cpu-off", (), smc32=False))
        program.mp_state(0)
        yield program.case("psci-0.1", rule)

    def _run_cases(self) -> Iterator[Case]:
        """KVM_RUN of a vcpu that is powered off does not enter the guest, whatever it was to
        call; one that is on does."""
        program = _Program(self.oracle)
        rule = program.run(1)
        program.call(1, *self._call("cpu-on", (0, 0, 0)))  # never made: vcpu 1 is stopped
        program.mp_state(1)
        yield program.case("powered-off", rule)
        program = _Program(self.oracle)
        yield program.case("vcpu-0", program.run(0))

    def _system_event_case(self) -> Iterator[Case]:
        """SYSTEM_OFF from vcpu 0 stops vcpu 1 as well."""
        kvm = self.system_off.kvm
        assert kvm is not None and kvm.calls and kvm.calls[0].exit is not None
        program = _Program(self.oracle, powered_off=())
        rule = program.system_event(
            0, self.system_off.ids["smc32"], {"exit": kvm.calls[0].exit.name}
        )
        program.mp_state(0)
        program.mp_state(1)
        yield program.case("system-off", rule)


def power_cases(spec: Spec, profile: Profile) -> list[Case]:
    """Every power case of an arm64 profile."""
    return list(_PowerCases(spec, profile).build())
