"""A VM whose VMM takes SMCCC calls away from KVM (the SMCCC filter of 6.4) in a migration.

The VMM sets the same filter ranges on the target before the guest first runs, so each range
must be accepted there as it was on the source; and what the guest sees of a call in a range
is decided by the filter's `call` table: KVM's answer, NOT_SUPPORTED when denied, or the VMM's
own answer when forwarded, which no kernel change touches. Both come from
spec/smccc-filter.yaml through the conformance oracle.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kvm_fwspec.conformance.filter_oracle import FilterOracle, VmFilter
from kvm_fwspec.conformance.profile import Profile
from kvm_fwspec.spec.errors import UsageError
from kvm_fwspec.spec.model import FilterRule, Spec

FORWARDED = "answered by the VMM"
SYNTAX = "FIRST[-LAST]=ACTION,..., e.g. 0x84000000-0x8400001f=fwd-to-user"
_RANGE = re.compile(r"(0x[0-9a-fA-F]+|[0-9]+)(?:-(0x[0-9a-fA-F]+|[0-9]+))?=([a-z-]+)")
U32 = (1 << 32) - 1


@dataclass(frozen=True)
class VmmRange:
    """Function ids first to last, inclusive, and the action the VMM asks for them."""

    first: int
    last: int
    action: str

    @property
    def label(self) -> str:
        return f"smccc-filter {self.first:#x}-{self.last:#x}={self.action}"


def parse_filter(spec: Spec, text: str) -> tuple[VmmRange, ...]:
    """`--filter`'s ranges, each checked to be a range of 32-bit function ids with an action
    the spec defines; one line naming the part that is not."""
    actions = [a.name for a in spec.smccc_filter.actions]
    ranges = []
    for part in text.split(","):
        match = _RANGE.fullmatch(part.strip())
        if match is None:
            raise UsageError(f"--filter {part.strip() or '(empty)'}: write {SYNTAX}")
        first = int(match[1], 0)
        last = int(match[2], 0) if match[2] else first
        if last < first:
            raise UsageError(f"--filter {part.strip()}: its last id is below its first")
        if last > U32:
            raise UsageError(f"--filter {part.strip()}: function ids are 32-bit, up to 0xffffffff")
        if match[3] not in actions:
            raise UsageError(
                f"--filter {part.strip()}: no action '{match[3]}'; actions are {', '.join(actions)}"
            )
        ranges.append(VmmRange(first, last, match[3]))
    return tuple(ranges)


def recreate(
    spec: Spec, profile: Profile, ranges: tuple[VmmRange, ...]
) -> tuple[VmFilter, list[tuple[VmmRange, FilterRule]]]:
    """The VMM setting each range on a fresh VM of `profile`, in order: the VM's filter after
    it, and the rule that decided each range."""
    oracle = FilterOracle(spec, profile)
    vm = VmFilter()
    decided = []
    for r in ranges:
        action = spec.smccc_filter.action(r.action).value
        decided.append((r, oracle.set(vm, False, r.first, r.last - r.first + 1, action, 0)))
    return vm, decided


def routed(spec: Spec, profile: Profile, vm: VmFilter, view: Mapping[str, Any]) -> dict[str, Any]:
    """The guest view as the guest sees it through the VM's filter: each answer of a call the
    filter forwards is the VMM's, of one it denies NOT_SUPPORTED; the rest stay KVM's."""
    if not vm.ranges:
        return dict(view)
    oracle = FilterOracle(spec, profile)
    psci = {f.name: f.ids["smc32"] for f in spec.psci_functions if "smc32" in f.ids}
    smccc = {f.name: f.function_id for f in spec.smccc_functions}
    seen = dict(view)
    for key in view:
        fid = _called(key, psci, smccc)
        rule = oracle.call(vm, fid) if fid is not None else None
        if rule is None or rule.kvm:
            continue
        seen[key] = FORWARDED if rule.exit is not None else rule.x0
    return seen


def _called(key: str, psci: Mapping[str, int], smccc: Mapping[str, int]) -> int | None:
    """The function id the guest calls to learn the view's `key` (None: not one call)."""
    if key == "PSCI_VERSION":
        return psci["psci-version"]
    if key.startswith("PSCI_FEATURES("):
        return psci["psci-features"]
    if key.startswith("ARCH_FEATURES("):
        return smccc["smccc-arch-features"]
    if key.startswith("PV_TIME_FEATURES("):
        return smccc["pv-time-features"]
    called = re.fullmatch(r"CALL\((.+)\)", key)
    return smccc[called[1]] if called is not None else None
