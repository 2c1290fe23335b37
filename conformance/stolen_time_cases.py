"""Cases of a vcpu's stolen-time address: setting and reading it with the vcpu device
attribute, and the guest's PV_TIME_FEATURES and PV_TIME_ST before and after.

Each program starts a VM with two vcpus of PSCI 0.2 (or, once, uninitialised), sets vcpu 1's
address in the agent protocol's data region or outside it, reads it back, and has vcpu 1 make
the PV time calls. Expected outcomes come from the stolen-time tables (StolenTimeOracle);
a case's id starts with the id of the rule that decides its checked step.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from kvm_fwspec.conformance.case import (
    REQUIRES_GUEST,
    REQUIRES_VCPU_ATTR,
    Case,
    as_x0,
    dotted,
)
from kvm_fwspec.conformance.guest.program import DATA_BASE, DATA_SIZE
from kvm_fwspec.conformance.oracle import NOT_SUPPORTED, Access, Oracle
from kvm_fwspec.conformance.profile import Profile
from kvm_fwspec.conformance.stolen_time_oracle import StolenTimeOracle
from kvm_fwspec.spec.model import Spec, StolenTimeRule

VCPUS = 2
CALLER = 1  # the vcpu whose address the programs set and which makes the calls
U64 = (1 << 64) - 1


class _Program:
    """One VM's program and what the stolen-time tables expect of each step."""

    def __init__(
        self, oracle: StolenTimeOracle, offered: bool = True, initialised: bool = True
    ) -> None:
        self.oracle = oracle
        self.offered = offered  # the VM's bitmaps let the guest call PV time
        self.initialised = initialised
        self.addresses: list[int | None] = [None] * VCPUS
        self.steps: list[dict[str, Any]] = []
        self.expected: list[dict[str, Any]] = []

    @property
    def group(self) -> int:
        return self.oracle.table.group.value

    def step(self, step: dict[str, Any], outcome: dict[str, Any]) -> None:
        self.steps.append(step)
        self.expected.append(outcome)

    def set(self, ipa: int, vcpu: int = CALLER, attr: int | None = None) -> StolenTimeRule:
        attr = self.oracle.table.attr.value if attr is None else attr
        rule = self.oracle.set(self.addresses[vcpu], attr, ipa)
        if rule.ok:
            self.addresses[vcpu] = ipa
        step = {"op": "set-vcpu-attr", "vcpu": vcpu, "group": self.group, "attr": attr}
        self.step(
            {**step, "value": ipa}, {"errno": rule.errno.name} if rule.errno else {"ok": True}
        )
        return rule

    def get(self, vcpu: int = CALLER, attr: int | None = None) -> StolenTimeRule:
        attr = self.oracle.table.attr.value if attr is None else attr
        answer = self.oracle.get(self.addresses[vcpu], attr)
        step = {"op": "get-vcpu-attr", "vcpu": vcpu, "group": self.group, "attr": attr}
        errno = answer.rule.errno
        self.step(step, {"errno": errno.name} if errno else {"value": answer.value})
        return answer.rule

    def call(self, op: str, function_id: int, argument: int | None = None) -> StolenTimeRule:
        answer = self.oracle.call(op, self.addresses[CALLER], argument or 0)
        x0 = answer.value if self.offered else NOT_SUPPORTED
        assert x0 is not None  # every call rule answers
        args = [] if argument is None else [argument]
        step = {"op": "call", "vcpu": CALLER, "function": function_id, "args": args}
        self.step(step, {"x0": as_x0(x0)})
        return answer.rule

    def case(self, variant: str, rule_id: str, scenario: str = "psci-0.2") -> Case:
        program = {
            "vcpus": VCPUS,
            "features": ["psci-0.2"] if self.initialised else None,
            "steps": [dict(step) for step in self.steps],
        }
        calls = any(step["op"] in ("call", "run") for step in self.steps)
        requires = {REQUIRES_VCPU_ATTR} | ({REQUIRES_GUEST} if calls else set())
        return Case(
            f"{dotted(rule_id)}.{variant}",
            rule_id,
            scenario,
            tuple(sorted(requires)),
            program,
            tuple(self.expected),
        )


class _StolenTimeCases:
    def __init__(self, spec: Spec, profile: Profile) -> None:
        self.spec = spec
        self.profile = profile
        self.oracle = StolenTimeOracle(spec, profile)
        self.registers = Oracle(spec, profile)
        functions = {f.name: f.function_id for f in spec.smccc_functions}
        self.features_id = functions["pv-time-features"]
        self.st_id = functions["pv-time-st"]
        self.address = DATA_BASE + self.oracle.table.struct_size

    def program(self, **kwargs: Any) -> _Program:
        return _Program(self.oracle, **kwargs)

    def absent_cases(self) -> Iterator[Case]:
        """Before PV time: setting an address in guest memory, and reading it, are refused."""
        p = self.program()
        yield p.case("in-memory", p.set(self.address).id)
        p = self.program()
        yield p.case("unset", p.get().id)

    def cases(self) -> Iterator[Case]:
        yield from self._attribute_cases()
        yield from self._address_cases()
        yield from self._call_cases()
        yield from self._withheld_case()

    def _attribute_cases(self) -> Iterator[Case]:
        """Attributes of the group other than the address, and the unset address."""
        other = self.oracle.table.attr.value + 1
        p = self.program()
        rule = p.set(self.address, attr=other)
        p.get()
        yield p.case("attribute-1", rule.id)
        p = self.program()
        yield p.case("attribute-1", p.get(attr=other).id)
        p = self.program()
        yield p.case("unset", p.get().id)

    def _address_cases(self) -> Iterator[Case]:
        """Addresses KVM refuses and accepts, each read back after."""
        size = self.oracle.table.struct_size
        refused = {
            "unaligned-8": DATA_BASE + 8,
            "unaligned-half": DATA_BASE + size // 2,
            "below-memory": 0x1000,
            "past-memory": DATA_BASE + DATA_SIZE,
            "top-of-address-space": U64 - size + 1,
        }
        for variant, ipa in refused.items():
            p = self.program()
            rule = p.set(ipa)
            p.get()
            yield p.case(variant, rule.id)
        accepted = {"in-memory": self.address, "last-in-memory": DATA_BASE + DATA_SIZE - size}
        for variant, ipa in accepted.items():
            p = self.program()
            rule = p.set(ipa)
            p.get()
            yield p.case(variant, rule.id)
        p = self.program()
        p.step({"op": "run", "vcpu": 0}, {"ok": True})
        rule = p.set(self.address)
        p.get()
        yield p.case("after-run", rule.id, "psci-0.2.after-run")
        p = self.program(initialised=False)
        rule = p.set(self.address)
        p.get()
        yield p.case("uninitialised", rule.id, "uninitialised")
        p = self.program()
        p.set(self.address, vcpu=0)
        rule = p.set(self.address)
        p.get(vcpu=0)
        p.get()
        yield p.case("shared-with-vcpu-0", rule.id)
        p = self.program()
        p.set(self.address)
        rule = p.set(self.address + size)
        p.set(self.address)
        p.get()
        yield p.case("twice", rule.id)

    def _call_cases(self) -> Iterator[Case]:
        """PV_TIME_FEATURES of the service's functions and others, and PV_TIME_ST, without
        an address and with one."""
        for address in (None, self.address):
            p = self.program()
            if address is not None:
                p.set(address)
            features = p.call("pv-time-features", self.features_id, self.features_id)
            p.call("pv-time-features", self.features_id, self.st_id)
            # KVM reads the id asked about in 32 bits: bit 32 set is still PV_TIME_ST
            p.call("pv-time-features", self.features_id, self.st_id | 1 << 32)
            yield p.case("service-functions", features.id)
            p = self.program()
            if address is not None:
                p.set(address)
            other = p.call("pv-time-features", self.features_id, 0x80000000)
            p.call("pv-time-features", self.features_id, self.st_id + 1)
            yield p.case("other-functions", other.id)
            p = self.program()
            if address is not None:
                p.set(address)
            yield p.case("call", p.call("pv-time-st", self.st_id).id)

    def _withheld_case(self) -> Iterator[Case]:
        """A VM whose bitmap withholds PV time: the address is set and read back as ever, and
        both calls are NOT_SUPPORTED. Named by the bitmap's SET rule, which decides it."""
        service = self.oracle.table.service
        for register in self.registers.registers:
            gating = [
                b for b in register.bits if b.service == service and self.profile.has(b.lifetime)
            ]
            if not gating:
                continue
            stored = self.registers.reset_values()
            reg_id = register.ids[self.profile.arch]
            value = stored[register.name] & ~gating[0].mask
            decision = self.registers.decide(
                Access.before_first_run("set", reg_id, True, stored, value)
            )
            if decision is None or decision.errno is not None:
                continue
            p = self.program(offered=False)
            p.step({"op": "set", "vcpu": 0, "reg": reg_id, "value": value}, {"ok": True})
            p.set(self.address)
            p.get()
            p.call("pv-time-features", self.features_id, self.st_id)
            p.call("pv-time-st", self.st_id)
            yield p.case("stolen-time-withheld", decision.rule.id)


def stolen_time_cases(spec: Spec, profile: Profile) -> list[Case]:
    """Every stolen-time case of `profile`; where KVM has no PV time, a set and a get of the
    address, which the group's absence decides."""
    builder = _StolenTimeCases(spec, profile)
    return list(builder.cases() if builder.oracle.exists else builder.absent_cases())
