"""The guests' own answers on real KVM held to the spec: each recorded VM built again on the
reference (same kernel, host levels, creation SETs) and asked the same calls. An answer the spec
defines must be real KVM's; one it leaves undefined is counted by call, for issue 16's ledger.
fleet-proof records the answers (PSCI_VERSION, PSCI_FEATURES of every id, SMCCC_VERSION,
ARCH_FEATURES of every call, TRNG_VERSION, the vendor KVM_FEATURES) on every CI run."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from kvm_fwspec.conformance.guest.program import execute
from kvm_fwspec.reference_impl.kvm import ReferenceKvm
from kvm_fwspec.spec.kernel_names import parse_kernel_name
from kvm_fwspec.spec.model import Spec


@dataclass
class AnswerCheck:
    answers: int = 0
    undefined: set[str] = field(default_factory=set)  # calls the spec gives no answer for
    wrong: list[str] = field(default_factory=list)  # answers the spec gives otherwise


def set_steps(writes: Iterable[tuple[int, int]]) -> list[dict[str, Any]]:
    """KVM_SET_ONE_REG of each (register id, value) on vcpu 0, in order."""
    return [{"op": "set", "vcpu": 0, "reg": reg, "value": value} for reg, value in writes]


def call_steps(calls: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The guest's own call of each recorded function, with its arguments, on vcpu 0 (and
    the registers it answers in, for a call that answers in more than x0)."""
    return [
        {"op": "call", "vcpu": 0, "function": c["function"], "args": c["args"]}
        | ({"results": c["results"]} if "results" in c else {})
        for c in calls
    ]


def reference_answers(
    spec: Spec,
    fingerprint: dict[str, Any],
    save: dict[str, Any],
    calls: list[dict[str, Any]],
    tables: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The save's VM on the reference for the kernel and levels its fingerprint reports
    (`tables`: other reference tables, for a test that shows the check failing)."""
    kernel = parse_kernel_name(spec, fingerprint["kernel"]["reported"])
    names = {
        r.name: {v.value: v.name for v in r.values} for r in spec.registers if r.kind == "level"
    }
    host = {name: names[name][value] for name, value in fingerprint["host-levels"].items()}
    release, arch = str(kernel.release), fingerprint["arch"]
    kvm = (
        ReferenceKvm(release, host, arch, stable=kernel.stable)
        if tables is None
        else ReferenceKvm(release, host, arch, tables=tables, stable=kernel.stable)
    )  # the tables are read whole at construction
    steps = set_steps((c["reg"], c["value"]) for c in save["created"]) + call_steps(calls)
    observed = execute(kvm, {"vcpus": 1, "features": ["psci-0.2"], "steps": steps})
    return observed[len(save["created"]) :]


def check_guest_answers(
    spec: Spec, evidence: dict[str, Any], tables: dict[str, Any] | None = None
) -> AnswerCheck:
    """Every recorded save's answers against the reference's, call by call."""
    fingerprints = {f["host"]: f for f in evidence["fingerprints"]}
    calls = evidence["calls"]
    check = AnswerCheck()
    for save in evidence["saves"]:
        ours = reference_answers(spec, fingerprints[save["host"]], save, calls, tables)
        for call, answer, real in zip(calls, ours, save["answers"], strict=True):
            check.answers += 1
            if "error" in answer:
                check.undefined.add(call["name"])
            elif answer != real:
                check.wrong.append(
                    f"{save['label']} {call['name']}: spec {answer}, real KVM {real}"
                )
    return check
