"""The reference's SMCCC filter (Linux 6.4), driven through the executor as an agent drives it.

Each program below is a fact of arch/arm64/kvm/hypercalls.c (kvm_smccc_set_filter and
kvm_smccc_get_action) or arch/arm64/kvm/arm.c (the VM's attribute ioctls), with, for each of
its steps, the spec rule of spec/smccc-filter.yaml that decides it. The reference must give the
outcomes; the spec's own tables, walked by the conformance FilterOracle, must pick the rules;
and every rule of the filter is some step's. The suite's own filter cases pass on the
reference too. A seeded bug (the EBUSY check left out) fails exactly the facts, and the suite's
cases, about a filter set after the VM has run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from kvm_fwspec.conformance.cases import REQUIRES_FILTER, Case, build_cases
from kvm_fwspec.conformance.filter_oracle import FilterOracle, VmFilter
from kvm_fwspec.conformance.guest.program import execute
from kvm_fwspec.conformance.profile import resolve_profile
from kvm_fwspec.reference_impl.kvm import Quirks, ReferenceKvm
from kvm_fwspec.spec.loader import load_spec

SPEC = load_spec()
FILTER = SPEC.smccc_filter
HOST = "mitigated"
ACTIONS = {a.name: a.value for a in FILTER.actions}
GROUP, ATTR = FILTER.group.value, FILTER.attr.value
PSCI_VERSION = next(f for f in SPEC.psci_functions if f.name == "psci-version").ids["smc32"]
SMCCC_VERSION = next(f for f in SPEC.smccc_functions if f.name == "smccc-version").function_id
TRNG_VERSION = next(f for f in SPEC.smccc_functions if f.name == "trng-version").function_id
STD_BMAP = next(r for r in SPEC.registers if r.name == "std-bmap").ids["arm64"]
PSCI_RANGE = (0x8400_0000, 0x20)  # the PSCI 0.2+ SMC32 ids, as kvmtool hands them to userspace
ARCH_SMC32, ARCH_SMC64 = 0x8000_0000, 0xC000_0000  # first ids of the reserved ranges
NR_ACTIONS = 3  # NR_SMCCC_FILTER_ACTIONS: the first action value KVM refuses

OK: dict[str, Any] = {"ok": True}


def errno(name: str) -> dict[str, Any]:
    return {"errno": name}


def x0(value: int) -> dict[str, Any]:
    return {"x0": value}


def forwarded(function_id: int, answer: int) -> dict[str, Any]:
    """A forwarded call: the hypercall exit (HVC from A64: no flag) and userspace's x0."""
    return {"x0": answer, "hypercall": function_id, "hypercall-flags": 0}


def filter_range(base: int, nr: int, action: int | str = "handle", pad: int = 0) -> dict[str, Any]:
    value = ACTIONS[action] if isinstance(action, str) else action
    return {"op": "smccc-filter", "base": base, "nr-functions": nr, "action": value, "pad": pad}


def has_attr(group: int = GROUP, attr: int = ATTR) -> dict[str, Any]:
    return {"op": "has-attr", "group": group, "attr": attr}


def call(function_id: int, answer: int | None = None) -> dict[str, Any]:
    step: dict[str, Any] = {"op": "call", "vcpu": 0, "function": function_id}
    if answer is not None:
        step["answer"] = answer
    return step


RUN: dict[str, Any] = {"op": "run", "vcpu": 0}
CLEAR_STD_BMAP: dict[str, Any] = {"op": "set", "vcpu": 0, "reg": STD_BMAP, "value": 0}


@dataclass(frozen=True)
class Fact:
    """A program on a VM of `kernel` with one initialised PSCI 0.2 vcpu, what real KVM answers
    each step, and the filter rule deciding each (None: no filter rule, as for a run, a
    register's SET or a call while the VM has no filter)."""

    name: str
    kernel: str
    steps: tuple[tuple[dict[str, Any], dict[str, Any], str | None], ...]

    def program(self) -> dict[str, Any]:
        return {"vcpus": 1, "features": ["psci-0.2"], "steps": [s for s, _, _ in self.steps]}

    @property
    def outcomes(self) -> list[dict[str, Any]]:
        return [o for _, o, _ in self.steps]

    @property
    def rules(self) -> list[str | None]:
        return [r for _, _, r in self.steps]


R = "smccc-filter/"
FACTS = [
    Fact("absent-before-6.4", "6.1", (
        (has_attr(), errno("EINVAL"), R + "has/absent"),
        (filter_range(*PSCI_RANGE, "deny"), errno("EINVAL"), R + "set/absent"),
        (call(PSCI_VERSION), x0(0x10001), None),  # no filter: KVM's PSCI 1.1
    )),
    Fact("present-from-6.4", "6.12", (
        (has_attr(), OK, R + "has/present"),
        (filter_range(*PSCI_RANGE, "deny"), OK, R + "set/accepted"),
    )),
    Fact("unknown-attribute", "6.12", (
        (has_attr(GROUP, ATTR + 1), errno("ENXIO"), R + "has/unknown-attribute"),
        (has_attr(GROUP + 1, ATTR), errno("ENXIO"), R + "has/unknown-attribute"),
    )),
    Fact("pad-not-zero", "6.12", (
        (filter_range(*PSCI_RANGE, "deny", pad=1), errno("EINVAL"), R + "set/pad-not-zero"),
    )),
    Fact("empty-range", "6.12", (
        (filter_range(PSCI_RANGE[0], 0), errno("EINVAL"), R + "set/range-wraps"),
    )),
    # By kvm_smccc_set_filter's code this overlaps the reserved ranges (EEXIST); real KVM
    # 6.12 and 7.2 answer EINVAL for exactly this range, and the spec records it.
    Fact("empty-range-at-0-is-every-id", "6.12", (
        (filter_range(0, 0), errno("EINVAL"), R + "set/whole-id-space"),
    )),
    Fact("empty-range-at-0-before-6.12", "6.4", (
        (filter_range(0, 0), errno("EEXIST"), R + "set/overlap"),
    )),
    Fact("range-past-the-last-id", "6.12", (
        (filter_range(0xFFFF_FFFF, 2), errno("EINVAL"), R + "set/range-wraps"),
    )),
    Fact("unknown-action", "6.12", (
        (filter_range(*PSCI_RANGE, NR_ACTIONS), errno("EINVAL"), R + "set/unknown-action"),
    )),
    Fact("reserved-architecture-ranges", "6.12", (
        (filter_range(ARCH_SMC32, 1, "deny"), errno("EEXIST"), R + "set/overlap"),
        (filter_range(ARCH_SMC64 + 0xFFFF, 1, "fwd-to-user"), errno("EEXIST"), R + "set/overlap"),
        (filter_range(ARCH_SMC32 - 1, 2), errno("EEXIST"), R + "set/overlap"),
        (filter_range(ARCH_SMC32 + 0x1_0000, 1, "deny"), OK, R + "set/accepted"),
    )),
    Fact("overlapping-ranges", "6.12", (
        (filter_range(*PSCI_RANGE, "deny"), OK, R + "set/accepted"),
        (filter_range(PSCI_RANGE[0] + 0x1F, 1, "fwd-to-user"), errno("EEXIST"), R + "set/overlap"),
        (filter_range(*PSCI_RANGE, "deny"), errno("EEXIST"), R + "set/overlap"),
    )),
    Fact("adjacent-ranges", "6.12", (
        (filter_range(PSCI_RANGE[0], 0x10, "deny"), OK, R + "set/accepted"),
        (filter_range(PSCI_RANGE[0] + 0x10, 0x10, "fwd-to-user"), OK, R + "set/accepted"),
    )),
    Fact("after-a-run", "6.12", (
        (RUN, OK, None),
        (filter_range(*PSCI_RANGE, "deny"), errno("EBUSY"), R + "set/after-run"),
    )),
    Fact("after-a-call", "6.12", (
        (filter_range(*PSCI_RANGE, "handle"), OK, R + "set/accepted"),
        (call(PSCI_VERSION), x0(0x10001), R + "call/handle"),
        (filter_range(TRNG_VERSION, 1, "deny"), errno("EBUSY"), R + "set/after-run"),
    )),
    Fact("deny-psci", "6.12", (
        (filter_range(*PSCI_RANGE, "deny"), OK, R + "set/accepted"),
        (call(PSCI_VERSION), x0(-1), R + "call/deny"),
    )),
    Fact("forward-psci", "6.12", (
        (filter_range(*PSCI_RANGE, "fwd-to-user"), OK, R + "set/accepted"),
        (call(PSCI_VERSION, 0x10000), forwarded(PSCI_VERSION, 0x10000), R + "call/forward"),
        (call(PSCI_VERSION, (1 << 64) - 1), forwarded(PSCI_VERSION, -1), R + "call/forward"),
    )),
    Fact("bitmap-off-without-filter", "6.12", (
        (CLEAR_STD_BMAP, OK, None),
        (call(TRNG_VERSION), x0(-1), None),
    )),
    Fact("forward-before-the-bitmaps", "6.12", (
        (CLEAR_STD_BMAP, OK, None),
        (filter_range(TRNG_VERSION, 1, "fwd-to-user"), OK, R + "set/accepted"),
        (call(TRNG_VERSION, 0x10000), forwarded(TRNG_VERSION, 0x10000), R + "call/forward"),
    )),
    Fact("deny-before-the-bitmaps", "6.12", (
        (filter_range(TRNG_VERSION, 1, "deny"), OK, R + "set/accepted"),
        (call(TRNG_VERSION), x0(-1), R + "call/deny"),
    )),
    Fact("bitmap-on-without-filter", "6.12", (
        (call(TRNG_VERSION), x0(0x10000), None),
    )),
    Fact("outside-every-range", "6.12", (
        (filter_range(*PSCI_RANGE, "deny"), OK, R + "set/accepted"),
        (call(SMCCC_VERSION), x0(0x10001), R + "call/handle"),  # a reserved range: handled
        (call(TRNG_VERSION), x0(0x10000), R + "call/handle"),  # in no range
    )),
]  # fmt: skip
AFTER_RUN = {"after-a-run", "after-a-call"}


def reference(kernel: str, quirks: Quirks | None = None) -> ReferenceKvm:
    return ReferenceKvm(kernel, HOST, quirks=quirks or Quirks())


@pytest.mark.parametrize("fact", FACTS, ids=[f.name for f in FACTS])
def test_the_reference_answers_as_kvm_does(fact: Fact) -> None:
    assert execute(reference(fact.kernel), fact.program()) == fact.outcomes


def spec_rules(fact: Fact) -> list[str | None]:
    """The filter rule the spec's tables pick for each step of `fact`, walked by the oracle."""
    oracle = FilterOracle(SPEC, resolve_profile(SPEC, fact.kernel, HOST))
    vm, has_run, picked = VmFilter(), False, []
    for step, _, _ in fact.steps:
        rule = None
        if step["op"] == "has-attr":
            rule = oracle.has(step["group"], step["attr"])
        elif step["op"] == "smccc-filter":
            fields = (step["base"], step["nr-functions"], step["action"], step["pad"])
            rule = oracle.set(vm, has_run, *fields)
        elif step["op"] == "call":
            rule = oracle.call(vm, step["function"])
        has_run = has_run or step["op"] in ("run", "call")
        picked.append(rule.id if rule else None)
    return picked


@pytest.mark.parametrize("fact", FACTS, ids=[f.name for f in FACTS])
def test_the_spec_s_rules_decide_each_step(fact: Fact) -> None:
    assert spec_rules(fact) == fact.rules


def test_every_filter_rule_decides_some_step() -> None:
    named = {rule for fact in FACTS for rule in fact.rules}
    assert {r.id for r in FILTER.rules} - named == set()


def test_a_filter_set_after_the_vm_ran_is_accepted_by_the_seeded_bug() -> None:
    """kvm_smccc_set_filter without its kvm_vm_has_ran_once check: the EBUSY facts fail (the
    range is accepted) and only they."""
    buggy = Quirks(filter_after_run_allowed=True)
    failing = set()
    for fact in FACTS:
        observed = execute(reference(fact.kernel, buggy), fact.program())
        if observed != fact.outcomes:
            failing.add(fact.name)
            accepted = [OK if o == errno("EBUSY") else o for o in fact.outcomes]
            assert observed == accepted, fact.name
    assert failing == AFTER_RUN


def filter_cases(kernel: str) -> list[Case]:
    cases = build_cases(SPEC, resolve_profile(SPEC, kernel, HOST))
    return [case for case in cases if REQUIRES_FILTER in case.requires]


def failing_cases(kernel: str, quirks: Quirks | None = None) -> set[str]:
    kvm = reference(kernel, quirks)
    return {c.id for c in filter_cases(kernel) if execute(kvm, c.program) != list(c.expected)}


@pytest.mark.parametrize("kernel", ["6.1", "6.4", "6.12", "7.2"])
def test_the_suite_s_filter_cases_pass_on_the_reference(kernel: str) -> None:
    assert filter_cases(kernel) and failing_cases(kernel) == set()


def test_the_seeded_bug_fails_the_suite_s_ebusy_case() -> None:
    ebusy = {
        c.id
        for c in filter_cases("6.12")
        if c.rule == R + "set/after-run" and c.expected[-1] == errno("EBUSY")
    }
    assert ebusy and failing_cases("6.12", Quirks(filter_after_run_allowed=True)) == ebusy


def test_a_range_the_filter_refused_is_not_held() -> None:
    """A refused range neither joins the filter nor brings the reserved ranges: the VM still
    has no filter, and its calls are KVM's."""
    fact = Fact("refused-then-call", "6.12", (
        (filter_range(*PSCI_RANGE, "deny", pad=1), errno("EINVAL"), R + "set/pad-not-zero"),
        (call(PSCI_VERSION), x0(0x10001), None),
    ))  # fmt: skip
    assert execute(reference(fact.kernel), fact.program()) == fact.outcomes
    assert spec_rules(fact) == fact.rules


def test_the_filter_is_the_vm_s_not_the_vcpu_s() -> None:
    """A range set on the VM holds for every vcpu's calls."""
    program = {
        "vcpus": 2,
        "features": ["psci-0.2"],
        "steps": [
            filter_range(*PSCI_RANGE, "deny"),
            {**call(PSCI_VERSION), "vcpu": 1},
            call(PSCI_VERSION),
        ],
    }
    assert execute(reference("6.12"), program) == [OK, x0(-1), x0(-1)]
