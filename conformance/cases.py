"""Generate the kvm_fwspec.conformance cases of a profile from the spec, each with its expected outcomes.

A case is one program (a fresh VM with two vcpus, some steps) whose expected outcomes are
computed by simulating the spec: the oracle decides each access and the simulation keeps the
VM-wide values and whether the VM has run. Every case names the rule that decides its
checked step; its id starts with that rule's id, so ids are stable and sort by rule.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from kvm_fwspec.conformance.oracle import NOT_SUPPORTED, Access, Decision, Oracle
from kvm_fwspec.conformance.profile import Profile
from kvm_fwspec.spec.model import PsciFunction, Register, Spec

U64 = (1 << 64) - 1
REQUIRES_GUEST = "guest-calls"
REQUIRES_PSCI_01 = "psci-0.1-vcpus"


@dataclass(frozen=True)
class Scenario:
    """The VM a case starts from: vcpu features (None: not initialised) and whether it ran."""

    name: str
    features: tuple[str, ...] | None
    ran: bool

    @property
    def requires(self) -> tuple[str, ...]:
        return (REQUIRES_PSCI_01,) if self.features == () else ()


SCENARIOS = (
    Scenario("psci-0.2", ("psci-0.2",), False),
    Scenario("psci-0.2.after-run", ("psci-0.2",), True),
    Scenario("no-psci-0.2", (), False),
    Scenario("no-psci-0.2.after-run", (), True),
)
UNINITIALISED = Scenario("uninitialised", None, False)


@dataclass(frozen=True)
class Case:
    """One program, its expected outcomes and the rule its checked step exercises."""

    id: str
    rule: str
    scenario: str
    requires: tuple[str, ...]
    program: dict[str, Any] = field(compare=False)
    expected: tuple[dict[str, Any], ...] = field(compare=False)

    @property
    def group(self) -> str:
        """The pytest item that carries this case: one rule in one VM scenario."""
        return f"{self.rule.replace('/', '.')}[{self.scenario}]"


class _Simulation:
    """The spec's view of one VM while a program runs: stored values and has-run."""

    def __init__(self, oracle: Oracle, scenario: Scenario) -> None:
        self.oracle = oracle
        self.scenario = scenario
        self.stored = oracle.reset_values()
        self.has_run = False
        self.steps: list[dict[str, Any]] = []
        self.expected: list[dict[str, Any]] = []
        if scenario.ran:
            self.run()

    @property
    def psci_02(self) -> bool:
        return self.scenario.features is not None and "psci-0.2" in self.scenario.features

    def access(self, op: str, reg_id: int, value: int | None = None) -> Decision | None:
        initialized = self.scenario.features is not None
        return self.oracle.decide(
            Access(
                op=op,
                reg_id=reg_id,
                vcpu_initialized=initialized,
                psci_02=self.psci_02,
                has_run=self.has_run,
                stored=self.stored,
                value=value,
            )
        )

    def run(self) -> None:
        self.steps.append({"op": "run", "vcpu": 0})
        self.expected.append({"ok": True})
        self.has_run = True

    def get(self, reg_id: int, vcpu: int = 1) -> Decision | None:
        decision = self.access("get", reg_id)
        if decision is None or decision.undefined:
            return None
        self.steps.append({"op": "get", "vcpu": vcpu, "reg": reg_id})
        self.expected.append(
            {"errno": decision.errno} if decision.errno else {"value": decision.value}
        )
        return decision

    def set(self, reg_id: int, value: int, vcpu: int = 0) -> Decision | None:
        decision = self.access("set", reg_id, value)
        if decision is None or decision.undefined:
            return None
        self.steps.append({"op": "set", "vcpu": vcpu, "reg": reg_id, "value": value})
        self.expected.append({"errno": decision.errno} if decision.errno else {"ok": True})
        register = self.oracle.register_for(reg_id)
        if decision.store is not None and register is not None:
            self.stored[register.name] = decision.store
        return decision

    def call(self, function_id: int, x0: int | dict[str, Any], args: tuple[int, ...] = ()) -> None:
        self.steps.append({"op": "call", "vcpu": 1, "function": function_id, "args": list(args)})
        self.expected.append({"x0": x0} if isinstance(x0, int) else x0)
        self.has_run = True

    def case(self, case_id: str, decision: Decision, requires: tuple[str, ...] = ()) -> Case:
        program = {
            "vcpus": 2,
            "features": list(self.scenario.features)
            if self.scenario.features is not None
            else None,
            "steps": [dict(step) for step in self.steps],
        }
        needs = tuple(sorted(set(self.scenario.requires) | set(requires)))
        return Case(
            case_id, decision.rule.id, self.scenario.name, needs, program, tuple(self.expected)
        )


def _dotted(rule_id: str) -> str:
    return rule_id.replace("/", ".")


def candidate_values(oracle: Oracle, register: Register) -> list[int]:
    """Values worth writing: every named value, its neighbours, the edges and every bit."""
    values = {0, 1, U64, 1 << 63, 0xFFFFFFFF}
    if register.kind == "psci-version":
        values |= {v.encoded for v in oracle.spec.psci_versions}
        values |= {0x3, 0x10004, 0x20000, 1 << 32 | 0x10000}
    if register.kind == "level":
        for value in register.values:
            values |= {value.value, value.value + 1}
            values |= {value.value | b.mask for b in register.bits}
        values |= {0xF, 0x10, 0x20}
    if register.kind == "bitmap":
        known = oracle.known_bits(register)
        values |= {known, known << 1 | known, 1 << known.bit_length()}
        values |= {b.mask for b in register.bits}
    return sorted(values)


class CaseBuilder:
    """Every case of one profile."""

    def __init__(self, spec: Spec, profile: Profile) -> None:
        self.spec = spec
        self.profile = profile
        self.oracle = Oracle(spec, profile)
        self.size_field = spec.layout("reg-id").field("size")
        self.class_field = spec.layout("reg-id").field("class")
        self.index_field = spec.layout("reg-id").field("index")
        self.function_ids = sorted(
            {fid for f in spec.psci_functions for fid in f.ids.values()}
            | {f.function_id for f in spec.smccc_functions if f.psci_features is not None}
        )

    def reg_id(self, register: Register) -> int:
        return register.ids[self.profile.arch]

    def build(self) -> list[Case]:
        cases = list(self._register_cases())
        cases += self._size_cases()
        cases += self._unknown_index_cases()
        cases += self._list_cases()
        cases += self._guest_default_cases()
        by_id = {c.id: c for c in cases}
        assert len(by_id) == len(cases), "case ids must be unique"
        return sorted(cases, key=lambda c: c.id)

    # -- GET and SET of each register ------------------------------------------------------

    def _register_cases(self) -> Iterator[Case]:
        for register in self.oracle.registers:
            reg_id = self.reg_id(register)
            for scenario in (*SCENARIOS, UNINITIALISED):
                sim = _Simulation(self.oracle, scenario)
                decision = sim.get(reg_id)
                if decision is not None:
                    yield sim.case(
                        f"{_dotted(decision.rule.id)}.{register.name}.{scenario.name}", decision
                    )
                for value in candidate_values(self.oracle, register):
                    yield from self._set_cases(register, scenario, value)

    def _set_cases(self, register: Register, scenario: Scenario, value: int) -> Iterator[Case]:
        reg_id = self.reg_id(register)
        sim = _Simulation(self.oracle, scenario)
        decision = sim.set(reg_id, value)
        if decision is None:
            return
        variant = f"{_dotted(decision.rule.id)}.{register.name}.{value:#x}.{scenario.name}"
        if scenario.features is not None:
            sim.get(reg_id)  # read back through the other vcpu: the value is VM-wide
        yield sim.case(variant, decision)
        if (
            decision.errno is None
            and scenario.features is not None
            and self._guest_view(sim, register)
        ):
            yield sim.case(f"{variant}.guest", decision, (REQUIRES_GUEST,))

    def _guest_view(self, sim: _Simulation, register: Register) -> bool:
        """Add the guest calls whose answers the register decides; False when there are none."""
        if register.kind == "psci-version" and sim.psci_02:
            version = sim.stored.get(register.name) or self.oracle.psci_latest
            self._psci_calls(sim, version)
            return True
        if register.kind == "bitmap":
            enabled = sim.stored[register.name]
            before = len(sim.steps)
            for bit in register.bits:
                if not self.profile.has(bit.lifetime) or bit.service is None:
                    continue
                for function in self.spec.smccc_functions:
                    if function.service != bit.service or not self.profile.has(function.lifetime):
                        continue
                    if not enabled & bit.mask:
                        sim.call(function.function_id, NOT_SUPPORTED)
                    elif function.returns_register in sim.stored:  # the VM's own value
                        sim.call(function.function_id, sim.stored[function.returns_register])
                    elif function.returns is not None:
                        sim.call(function.function_id, function.returns)
            return len(sim.steps) > before
        return False

    def _psci_calls(self, sim: _Simulation, version: int) -> None:
        """PSCI_VERSION, then PSCI_FEATURES for every function id the spec names."""
        features = self._psci_function("psci-features")
        sim.call(self._psci_function("psci-version").ids["smc32"], version)
        for fid in self.function_ids:
            sim.call(features.ids["smc32"], self.oracle.psci_features(fid, version), (fid,))

    def _psci_function(self, name: str) -> PsciFunction:
        return next(f for f in self.spec.psci_functions if f.name == name)

    # -- ids the spec gives no register: other sizes, other indices ------------------------

    def _size_cases(self) -> Iterator[Case]:
        u64 = self.size_field.value_named("u64").value
        for register in self.oracle.registers:
            for size in self.size_field.values:
                if size.value == u64:
                    continue
                reg_id = (
                    self.reg_id(register) & ~self.size_field.mask
                    | size.value << self.size_field.low
                )
                for op in ("get", "set"):
                    sim = _Simulation(self.oracle, SCENARIOS[0])
                    decision = sim.get(reg_id) if op == "get" else sim.set(reg_id, 0)
                    if decision is not None:
                        yield sim.case(
                            f"{_dotted(decision.rule.id)}.{register.name}.{size.name}", decision
                        )

    def _unknown_index_cases(self) -> Iterator[Case]:
        classes = {r.register_class for r in self.oracle.registers}
        arch = next(a for a in self.spec.architectures if a.name == self.profile.arch)
        for reg_class in sorted(classes, key=lambda c: c.value):
            used = [r.index for r in self.oracle.registers if r.register_class is reg_class]
            base = (
                arch.reg_arch.value << 56
                | self.size_field.value_named("u64").value << self.size_field.low
            )
            for index in sorted({max(used) + 1, 0x100, 0xFFFF}):
                reg_id = base | reg_class.value << self.class_field.low | index
                for scenario in (SCENARIOS[0], UNINITIALISED):
                    for op in ("get", "set"):
                        sim = _Simulation(self.oracle, scenario)
                        decision = sim.get(reg_id) if op == "get" else sim.set(reg_id, 0)
                        if decision is not None:
                            name = f"{reg_class.name}-index-{index:#x}.{scenario.name}"
                            yield sim.case(f"{_dotted(decision.rule.id)}.{name}", decision)

    def _list_cases(self) -> Iterator[Case]:
        classes = sorted({r.register_class for r in self.oracle.registers}, key=lambda c: c.value)
        for reg_class in classes:
            members = sorted(
                (r for r in self.oracle.registers if r.register_class is reg_class),
                key=lambda r: r.index,
            )
            for scenario in SCENARIOS:
                sim = _Simulation(self.oracle, scenario)
                listed = []
                decision = None
                for register in members:
                    decision = sim.access("list", self.reg_id(register))
                    if decision is not None and decision.listed:
                        listed.append(self.reg_id(register))
                if decision is None:
                    continue
                sim.steps.append(
                    {
                        "op": "list",
                        "vcpu": 0,
                        "mask": self.class_field.mask,
                        "match": reg_class.value << self.class_field.low,
                    }
                )
                sim.expected.append({"ids": listed})
                yield sim.case(f"{_dotted(decision.rule.id)}.{scenario.name}", decision)

    # -- the guest's view before any SET ---------------------------------------------------

    def _guest_default_cases(self) -> Iterator[Case]:
        psci = next((r for r in self.oracle.registers if r.kind == "psci-version"), None)
        for scenario in (SCENARIOS[0], SCENARIOS[1]):
            if psci is not None:
                sim = _Simulation(self.oracle, scenario)
                decision = sim.get(self.reg_id(psci))
                if decision is not None and decision.value is not None:
                    self._psci_calls(sim, decision.value)
                    yield sim.case(
                        f"{_dotted(decision.rule.id)}.{scenario.name}.guest",
                        decision,
                        (REQUIRES_GUEST,),
                    )
            for register in self.oracle.registers:
                if register.kind != "level" or register.arch_features_since is None:
                    continue
                if self.profile.release < register.arch_features_since:
                    continue
                answer = self.profile.host.levels[register.name].arch_features
                wa_function = next(
                    (f for f in self.spec.smccc_functions if f.name == register.name), None
                )
                if answer is None or wa_function is None:
                    continue
                sim = _Simulation(self.oracle, scenario)
                decision = sim.get(self.reg_id(register))
                if decision is None:
                    continue
                arch_features = next(
                    f for f in self.spec.smccc_functions if f.name == "smccc-arch-features"
                )
                sim.call(arch_features.function_id, answer, (wa_function.function_id,))
                yield sim.case(
                    f"{_dotted(decision.rule.id)}.{scenario.name}.guest",
                    decision,
                    (REQUIRES_GUEST,),
                )


def build_cases(spec: Spec, profile: Profile) -> list[Case]:
    return CaseBuilder(spec, profile).build()
