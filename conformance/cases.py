"""Generate the kvm_fwspec.conformance cases of a profile from the spec, each with its expected outcomes.

A case is one program (a fresh VM with two vcpus, some steps) whose expected outcomes are
computed by simulating the spec: the oracle decides each access and the simulation keeps the
VM-wide values and whether the VM has run. Every case names the rule that decides its
checked step; its id starts with that rule's id, so ids are stable and sort by rule.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from kvm_fwspec.conformance.case import (
    REQUIRES_ENABLE_CAP,
    REQUIRES_FILTER,
    REQUIRES_GUEST,
    REQUIRES_POWER,
    REQUIRES_PSCI_01,
    REQUIRES_RESULTS,
    Case,
    as_x0,
    dotted,
)
from kvm_fwspec.conformance.filter_oracle import FilterOracle, VmFilter
from kvm_fwspec.conformance.oracle import NOT_SUPPORTED, Access, Decision, Oracle
from kvm_fwspec.conformance.power_cases import power_cases
from kvm_fwspec.conformance.power_oracle import PowerOracle
from kvm_fwspec.conformance.profile import Profile
from kvm_fwspec.conformance.stolen_time_cases import stolen_time_cases
from kvm_fwspec.spec.model import (
    AnyBits,
    Capability,
    FilterRule,
    PsciFunction,
    Register,
    SmcccFunction,
    Spec,
)

__all__ = [
    "REQUIRES_ENABLE_CAP",
    "REQUIRES_FILTER",
    "REQUIRES_GUEST",
    "REQUIRES_POWER",
    "REQUIRES_PSCI_01",
    "REQUIRES_RESULTS",
    "SCENARIOS",
    "Case",
    "CaseBuilder",
    "Scenario",
    "build_cases",
]

U64 = (1 << 64) - 1
U32 = (1 << 32) - 1


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


class _Simulation:
    """The spec's view of one VM while a program runs: stored values and has-run."""

    def __init__(
        self, oracle: Oracle, scenario: Scenario, filters: FilterOracle | None = None
    ) -> None:
        self.oracle = oracle
        self.filters = filters
        self.vm_filter = VmFilter()
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

    def call(
        self,
        function_id: int,
        x0: int | dict[str, Any],
        args: tuple[int, ...] = (),
        results: int = 1,
    ) -> None:
        step = {"op": "call", "vcpu": 1, "function": function_id, "args": list(args)}
        if results > 1:
            step["results"] = results
        self.steps.append(step)
        self.expected.append({"x0": x0} if isinstance(x0, int) else x0)
        self.has_run = True

    def smccc_filter(self, base: int, nr_functions: int, action: int, pad: int = 0) -> FilterRule:
        assert self.filters is not None
        rule = self.filters.set(self.vm_filter, self.has_run, base, nr_functions, action, pad)
        self.steps.append(
            {
                "op": "smccc-filter",
                "base": base,
                "nr-functions": nr_functions,
                "action": action,
                "pad": pad,
            }
        )
        self.expected.append({"errno": rule.errno.name} if rule.errno else {"ok": True})
        return rule

    def enable_cap(self, capability: Capability, profile: Profile) -> bool:
        """KVM_ENABLE_CAP of `capability` on the VM: whether this release turns it on."""
        enabled = capability.vm_enable and profile.has(capability.lifetime)
        self.steps.append({"op": "enable-cap", "cap": capability.value})
        self.expected.append({"ok": True} if enabled else {"errno": "EINVAL"})
        return enabled

    def mp_state(self, vcpu: int, state: str) -> None:
        self.steps.append({"op": "mp-state", "vcpu": vcpu})
        self.expected.append({"mp-state": state})

    def has_attr(self, group: int, attr: int) -> FilterRule:
        assert self.filters is not None
        rule = self.filters.has(group, attr)
        self.steps.append({"op": "has-attr", "group": group, "attr": attr})
        self.expected.append({"errno": rule.errno.name} if rule.errno else {"ok": True})
        return rule

    def filtered_call(
        self, function_id: int, plain: int | dict[str, Any], answer: int = U64
    ) -> FilterRule | None:
        """A guest call as the VM's filter routes it: denied, forwarded to this side (which
        answers `answer`), or answered by KVM as without a filter (`plain`)."""
        assert self.filters is not None
        rule = self.filters.call(self.vm_filter, function_id)
        step = {"op": "call", "vcpu": 1, "function": function_id, "args": []}
        if rule is not None and rule.exit is not None:
            step["answer"] = answer
            # HVC from A64, as every guest call of the harness is: neither exit flag applies.
            expected: int | dict[str, Any] = {
                "x0": as_x0(answer),
                "hypercall": function_id,
                "hypercall-flags": 0,
            }
        elif rule is not None and rule.x0 is not None:
            expected = rule.x0
        else:
            expected = plain
        self.steps.append(step)
        self.expected.append({"x0": expected} if isinstance(expected, int) else expected)
        self.has_run = True
        return rule

    def case(self, case_id: str, decision: Decision, requires: tuple[str, ...] = ()) -> Case:
        return self._case(case_id, decision.rule.id, requires)

    def _case(self, case_id: str, rule_id: str, requires: tuple[str, ...]) -> Case:
        program = {
            "vcpus": 2,
            "features": list(self.scenario.features)
            if self.scenario.features is not None
            else None,
            "steps": [dict(step) for step in self.steps],
        }
        reads = any(step.get("results", 1) > 1 for step in self.steps)  # x1 to x3 too
        needed = (
            set(self.scenario.requires) | set(requires) | ({REQUIRES_RESULTS} if reads else set())
        )
        needs = tuple(sorted(needed))
        return Case(case_id, rule_id, self.scenario.name, needs, program, tuple(self.expected))

    def filter_case(self, variant: str, rule: FilterRule) -> Case:
        """A case of the SMCCC filter, checking `rule` with the program so far."""
        requires = {REQUIRES_FILTER}
        if any(step["op"] in ("call", "run") for step in self.steps):
            requires.add(REQUIRES_GUEST)
        return self._case(f"{dotted(rule.id)}.{variant}", rule.id, tuple(requires))


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
        self.filters = FilterOracle(spec, profile)
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
        # The filter is arm64's, and so are stolen time and the MPIDR layout the power cases
        # address vcpus by (32-bit hosts, which went in 5.7, put 4 vcpus in a cluster, not 16).
        if self.profile.arch == "arm64":
            cases += self._filter_cases()
            cases += power_cases(self.spec, self.profile)
            cases += stolen_time_cases(self.spec, self.profile)
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
                        f"{dotted(decision.rule.id)}.{register.name}.{scenario.name}", decision
                    )
                for value in candidate_values(self.oracle, register):
                    yield from self._set_cases(register, scenario, value)

    def _set_cases(self, register: Register, scenario: Scenario, value: int) -> Iterator[Case]:
        reg_id = self.reg_id(register)
        sim = _Simulation(self.oracle, scenario)
        decision = sim.set(reg_id, value)
        if decision is None:
            return
        variant = f"{dotted(decision.rule.id)}.{register.name}.{value:#x}.{scenario.name}"
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
            self._register_result_calls(sim, register)
            return len(sim.steps) > before
        return False

    def _register_result_calls(self, sim: _Simulation, register: Register) -> None:
        """Each call whose later registers hold this bitmap's value (KVM_FEATURES' x2 holds
        VENDOR_HYP_BMAP_2), asked for x0 to x3 where its own service is offered."""
        for function in self.spec.smccc_functions:
            held = dict(function.register_results)
            if register.name not in held.values() or not self._offered(function, sim.stored):
                continue
            x0 = sim.stored.get(function.returns_register or "", function.returns)
            assert x0 is not None  # a call answering in x0 to x3 fixes its x0
            words = [sim.stored.get(held.get(i, ""), 0) for i in (1, 2, 3)]
            expected = {"x0": x0} | {f"x{i}": w & U64 for i, w in enumerate(words, start=1)}
            sim.call(function.function_id, expected, results=4)

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
                            f"{dotted(decision.rule.id)}.{register.name}.{size.name}", decision
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
                            yield sim.case(f"{dotted(decision.rule.id)}.{name}", decision)

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
                yield sim.case(f"{dotted(decision.rule.id)}.{scenario.name}", decision)

    # -- the guest's view before any SET ---------------------------------------------------

    def _guest_default_cases(self) -> Iterator[Case]:
        psci = next((r for r in self.oracle.registers if r.kind == "psci-version"), None)
        for scenario in (SCENARIOS[0], SCENARIOS[1]):
            yield from self._four_register_cases(scenario)
            if psci is not None:
                sim = _Simulation(self.oracle, scenario)
                decision = sim.get(self.reg_id(psci))
                if decision is not None and decision.value is not None:
                    self._psci_calls(sim, decision.value)
                    yield sim.case(
                        f"{dotted(decision.rule.id)}.{scenario.name}.guest",
                        decision,
                        (REQUIRES_GUEST,),
                    )
                    yield from self._psci_exit_cases(scenario, psci)
            if psci is not None and self.profile.arch == "arm64" and scenario == SCENARIOS[0]:
                yield from self._capability_call_cases(scenario, psci)
                yield from self._by_argument_cases(scenario, psci)
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
                    f"{dotted(decision.rule.id)}.{scenario.name}.guest",
                    decision,
                    (REQUIRES_GUEST,),
                )

    # -- the SMCCC filter: the attribute, each range's checks, and how calls are routed -----

    def _filter_sim(self) -> _Simulation:
        return _Simulation(self.oracle, SCENARIOS[0], self.filters)

    def _filter_cases(self) -> Iterator[Case]:
        filters = self.filters
        group, attr = filters.filter.group.value, filters.filter.attr.value
        for name, (g, a) in {
            "filter-attribute": (group, attr),
            "next-attribute": (group, attr + 1),
            "next-group": (group + 1, attr),
        }.items():
            sim = self._filter_sim()
            yield sim.filter_case(name, sim.has_attr(g, a))
        yield from self._filter_range_cases()
        if filters.exists:
            yield from self._filter_order_cases()
            yield from self._filter_call_cases()

    def _function(self, name: str) -> SmcccFunction:
        return next(f for f in self.spec.smccc_functions if f.name == name)

    def _filter_range_cases(self) -> Iterator[Case]:
        """One range alone in a new VM, for every kind of range the checks tell apart."""
        action = self.filters.filter.action
        deny, forward = action("deny").value, action("fwd-to-user").value
        psci = self._psci_function("psci-version").ids["smc32"]
        arch = {r.name: r for r in self.filters.filter.reserved}
        trng = self._function("trng-version").function_id
        ranges = {
            "psci-deny": (psci, 0x20, deny, 0),
            "psci-forward": (psci, 0x20, forward, 0),
            "trng-forward": (trng, 4, forward, 0),
            "pad-first-byte": (psci, 0x20, deny, 1),
            "pad-eighth-byte": (psci, 0x20, deny, 1 << 56),
            "empty": (psci, 0, deny, 0),
            "past-the-end": (U32, 2, deny, 0),
            "empty-at-zero": (0, 0, deny, 0),
            "all-but-the-last": (0, U32, deny, 0),
            "zero-to-the-arch-range": (0, 0x80000001, deny, 0),
            "action-after-forward": (psci, 0x20, forward + 1, 0),
            "action-0xff": (psci, 0x20, 0xFF, 0),
            **{f"{name}-first": (r.first, 1, deny, 0) for name, r in arch.items()},
            **{f"{name}-last": (r.last, 1, forward, 0) for name, r in arch.items()},
            **{f"after-{name}": (r.last + 1, 1, deny, 0) for name, r in arch.items()},
        }
        for name, (base, count, act, pad) in ranges.items():
            sim = self._filter_sim()
            yield sim.filter_case(name, sim.smccc_filter(base, count, act, pad))

    def _filter_order_cases(self) -> Iterator[Case]:
        """What depends on the VM: a run before the range, and ranges added before it."""
        action = self.filters.filter.action
        deny, forward = action("deny").value, action("fwd-to-user").value
        psci = self._psci_function("psci-version").ids["smc32"]
        for name, (count, act, pad) in {
            "after-run": (0x20, deny, 0),
            "after-run-unknown-action": (0x20, forward + 1, 0),
            "after-run-pad": (0x20, deny, 1),
        }.items():
            sim = self._filter_sim()
            sim.run()
            yield sim.filter_case(name, sim.smccc_filter(psci, count, act, pad))
        for name, (base, count) in {
            "second-overlapping": (psci + 0x10, 0x20),
            "second-inside": (psci + 1, 1),
            "second-adjacent": (psci + 0x20, 0x20),
            "second-before": (psci - 0x10, 0x10),
        }.items():
            sim = self._filter_sim()
            sim.smccc_filter(psci, 0x20, deny)
            yield sim.filter_case(name, sim.smccc_filter(base, count, forward))

    def _filter_call_cases(self) -> Iterator[Case]:
        """Calls in a denied, forwarded or handled range, and outside every range."""
        action = self.filters.filter.action
        psci_version = self._psci_function("psci-version").ids["smc32"]
        system_off = self._psci_function("system-off").ids["smc32"]
        smccc_version = self._function("smccc-version")
        trng = self._function("trng-version")
        latest = self.oracle.psci_latest
        calls: dict[str, tuple[str, int, int, int, int | dict[str, Any], int]] = {
            # variant: (action, base, count, function called, KVM's own answer, userspace's)
            "psci-version-denied": ("deny", psci_version, 0x20, psci_version, latest, U64),
            "psci-version-forwarded": (
                "fwd-to-user",
                psci_version,
                0x20,
                psci_version,
                latest,
                0x10002,
            ),
            "system-off-forwarded": (
                "fwd-to-user",
                psci_version,
                0x20,
                system_off,
                {"exit": "shutdown"},
                0,
            ),
            "psci-version-handled": ("handle", psci_version, 0x20, psci_version, latest, U64),
            "outside-the-ranges": (
                "fwd-to-user",
                psci_version,
                0x20,
                smccc_version.function_id,
                smccc_version.returns or 0,
                U64,
            ),
            "trng-version-denied": (
                "deny",
                trng.function_id,
                1,
                trng.function_id,
                trng.returns or 0,
                U64,
            ),
        }
        for name, (act, base, count, function_id, plain, answer) in calls.items():
            sim = self._filter_sim()
            sim.smccc_filter(base, count, action(act).value)
            rule = sim.filtered_call(function_id, plain, answer)
            assert rule is not None  # the VM has a filter: its call table decides
            yield sim.filter_case(name, rule)
        yield from self._filter_before_bitmap_case()

    def _filter_before_bitmap_case(self) -> Iterator[Case]:
        """A call the bitmaps withhold is still forwarded: the filter is consulted first."""
        std = next((r for r in self.oracle.registers if r.name == "std-bmap"), None)
        trng = self._function("trng-version")
        if std is None:
            return
        sim = self._filter_sim()
        sim.set(self.reg_id(std), 0)
        sim.smccc_filter(trng.function_id, 4, self.filters.filter.action("fwd-to-user").value)
        rule = sim.filtered_call(trng.function_id, NOT_SUPPORTED, 0x10000)
        assert rule is not None
        yield sim.filter_case("trng-version-withheld-by-std-bmap", rule)

    def _psci_exit_cases(self, scenario: Scenario, psci: Register) -> Iterator[Case]:
        """Each PSCI call whose outcome the spec gives (SYSTEM_OFF, SYSTEM_RESET and their
        PSCI 1.1 and 1.3 successors, by argument) at the default PSCI version, one program
        each: a system event ends what the guest can do."""
        for function in self.spec.psci_functions:
            kvm = function.kvm
            for index, call in enumerate(kvm.calls if kvm else ()):
                sim = _Simulation(self.oracle, scenario)
                decision = sim.get(self.reg_id(psci))
                if decision is None or decision.value is None:
                    return
                if not self.oracle.psci_handled(function, decision.value):
                    break
                outcome: int | dict[str, Any]
                if call.exit is not None:
                    flags = {"flags": call.flags} if call.flags else {}
                    outcome = {"exit": call.exit.name} | flags
                else:
                    assert call.x0 is not None
                    outcome = call.x0
                sim.call(function.ids["smc32"], outcome, call.args)
                yield sim.case(
                    f"{dotted(decision.rule.id)}.{scenario.name}.guest-{function.name}-{index}",
                    decision,
                    (REQUIRES_GUEST,),
                )

    def _capability_call_cases(self, scenario: Scenario, psci: Register) -> Iterator[Case]:
        """Each PSCI call KVM answers only on a VM with a capability enabled (SYSTEM_SUSPEND,
        with KVM_CAP_ARM_SYSTEM_SUSPEND), on a VM without it and on one that asked for it:
        PSCI_FEATURES of the call, the call by argument, and what its exit leaves of the VM's
        two vcpus (KVM_GET_MP_STATE). Before the capability's release the asking is EINVAL."""
        power = PowerOracle(self.spec, self.profile)
        features = self._psci_function("psci-features").ids["smc32"]
        for function in self.spec.psci_functions:
            kvm = function.kvm
            if kvm is None or kvm.needs_capability is None:
                continue
            for variant, ask in (("not-enabled", False), ("enabled", True)):
                sim = _Simulation(self.oracle, scenario)
                decision = sim.get(self.reg_id(psci))
                if decision is None or decision.value is None:
                    return
                on = ask and sim.enable_cap(kvm.needs_capability, self.profile)
                enabled = frozenset({kvm.needs_capability.name} if on else ())
                fid = function.ids["smc32"]
                sim.call(features, self.oracle.psci_features(fid, decision.value, enabled), (fid,))
                states = power.initial(2, ())
                event = None  # the power rule of the exit, which decides the states read after
                for call in kvm.calls:
                    if not self.oracle.psci_handled(function, decision.value, enabled):
                        sim.call(fid, NOT_SUPPORTED, call.args)
                        continue
                    assert call.exit is not None  # such calls exit to the VMM that asked
                    sim.call(fid, {"exit": call.exit.name}, call.args)
                    event = power.system_event(states, 1, call.exit.name)
                sim.mp_state(1, states.states[1])
                sim.mp_state(0, states.states[0])
                requires = (REQUIRES_GUEST, REQUIRES_POWER) + (
                    (REQUIRES_ENABLE_CAP,) if ask else ()
                )
                variant_id = f"{scenario.name}.guest-{function.name}-{variant}"
                if event is not None:
                    yield sim._case(f"{dotted(event.id)}.{variant_id}", event.id, requires)
                else:
                    yield sim.case(f"{dotted(decision.rule.id)}.{variant_id}", decision, requires)

    def _by_argument_cases(self, scenario: Scenario, psci: Register) -> Iterator[Case]:
        """The SMCCC calls the spec answers by argument, some by shape (TRNG_RND32/64's
        entropy, PTP's clock), each row asked for x0 to x3 on a VM with every bitmap at its
        default: the row's answer where the call's service is offered, the zeros of a
        refusal where it is not (a release without the call, or no bit offering it). Each
        case starts by reading the bitmap that gates the call's service, whose default
        decides it, or PSCI_VERSION in a release before the bitmaps."""
        for function in self.spec.smccc_functions:
            if not function.calls:
                continue
            gate = next(
                (
                    register
                    for register in self.oracle.registers
                    for bit in register.bits
                    if bit.service == function.service and self.profile.has(bit.lifetime)
                ),
                psci,
            )
            sim = _Simulation(self.oracle, scenario)
            decision = sim.get(self.reg_id(gate))
            if decision is None:
                continue
            offered = self._offered(function, sim.stored)
            for call in function.calls:
                words = (
                    call.answers
                    if offered and self.profile.has(call.lifetime)
                    else self.spec.smccc_not_supported
                )
                expected = {f"x{i}": _expected_word(word, i) for i, word in enumerate(words)}
                sim.call(function.function_id, expected, call.args, results=len(words))
            yield sim.case(
                f"{dotted(decision.rule.id)}.{scenario.name}.guest-{function.name}",
                decision,
                (REQUIRES_GUEST, REQUIRES_RESULTS),
            )

    def _offered(self, function: SmcccFunction, stored: dict[str, int]) -> bool:
        """Whether a VM with `stored` values has `function`'s service: the release has the
        call, and no bitmap bit of this release gates its service, or the VM's bit is set."""
        return self.profile.has(function.lifetime) and self.oracle.bitmap_allows(
            function.service.name, stored
        )

    def _four_register_cases(self, scenario: Scenario) -> Iterator[Case]:
        """The calls that answer in x0 to x3 (CALL_UID, TRNG_GET_UUID), asked for all four,
        in a VM with each bitmap at its default: the spec's answer where the bit that gates
        the call's service is set, the zeros of a refusal where it is not."""
        for register in self.oracle.registers:
            if register.kind != "bitmap":
                continue
            gated = [
                (bit, function)
                for bit in register.bits
                if bit.service is not None and self.profile.has(bit.lifetime)
                for function in self.spec.smccc_functions
                if function.service == bit.service
                and function.answers is not None
                and self.profile.has(function.lifetime)
            ]
            if not gated:
                continue
            sim = _Simulation(self.oracle, scenario)
            decision = sim.get(self.reg_id(register))
            if decision is None or decision.value is None:
                continue
            for bit, function in gated:
                words = (
                    function.answers if decision.value & bit.mask else self.spec.smccc_not_supported
                )
                assert words is not None
                expected = {"x0": words[0]} | {f"x{i}": w & U64 for i, w in enumerate(words) if i}
                sim.call(function.function_id, expected, results=len(words))
            yield sim.case(
                f"{dotted(decision.rule.id)}.{scenario.name}.guest-answers",
                decision,
                (REQUIRES_GUEST, REQUIRES_RESULTS),
            )


def build_cases(spec: Spec, profile: Profile) -> list[Case]:
    return CaseBuilder(spec, profile).build()


def _expected_word(word: int | AnyBits, register: int) -> int | dict[str, int]:
    """A register of an expected answer: x0 signed, x1 to x3 unsigned, or a shape."""
    if isinstance(word, AnyBits):
        return {"bits": word.bits}
    return word if register == 0 else word & U64
