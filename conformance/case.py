"""A conformance case: one program, its expected outcomes, and what running it needs.

The case builders (cases.py, power_cases.py, stolen_time_cases.py) produce these; the plugin, the verifier and the
adapters read them. A case needs an implementation's capability for every kind of step its
program has beyond GET, SET and REG_LIST, by the names of docs/agent-protocol.md's features.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

REQUIRES_GUEST = "guest-calls"
REQUIRES_PSCI_01 = "psci-0.1-vcpus"
REQUIRES_FILTER = "smccc-filter"  # programs with smccc-filter and has-attr steps
REQUIRES_RESULTS = "call-results"  # calls whose answer is read in x0 to x3
REQUIRES_POWER = "vcpu-power"  # powered-off vcpus, mp-state steps, calls that stop a vcpu
REQUIRES_ENABLE_CAP = "enable-cap"  # programs with the VM step enable-cap
REQUIRES_VCPU_ATTR = "vcpu-attr"  # set-vcpu-attr and get-vcpu-attr steps, the data region
# Every capability a case may need, as the reference offers them (its hello lists them so).
CASE_REQUIREMENTS = (
    REQUIRES_GUEST,
    REQUIRES_PSCI_01,
    REQUIRES_FILTER,
    REQUIRES_RESULTS,
    REQUIRES_POWER,
    REQUIRES_ENABLE_CAP,
    REQUIRES_VCPU_ATTR,
)


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


def as_x0(word: int) -> int:
    """An expected x0 as the guest reads it, signed: a u64 (userspace's answer, an address)
    or a value already negative (NOT_SUPPORTED) alike."""
    return word - (1 << 64) if word >= 1 << 63 else word


def dotted(rule_id: str) -> str:
    """A rule id as the start of a case id: `psci-power/cpu-on/x` is `psci-power.cpu-on.x`."""
    return rule_id.replace("/", ".")
