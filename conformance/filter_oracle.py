"""Expected outcomes of the SMCCC filter, straight from spec/smccc-filter.yaml's tables.

The filter's three decision tables (KVM_HAS_DEVICE_ATTR, KVM_SET_DEVICE_ATTR of a range, and a
guest's call while the VM has a filter) are walked as the registers' are: the first rule of
the profile's release whose `when` holds decides. The VM's filter is the list of ranges
accepted so far; the reserved architecture ranges join it with the first.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kvm_fwspec.conformance.profile import Profile
from kvm_fwspec.spec import rule_language as rl
from kvm_fwspec.spec.model import FilterRule, SmcccFilter, Spec

U32 = (1 << 32) - 1


@dataclass(frozen=True)
class FilterRange:
    """Function ids first to last, inclusive, and the action the VM's filter gives them."""

    first: int
    last: int
    action: int

    def holds(self, function_id: int) -> bool:
        return self.first <= function_id <= self.last


@dataclass
class VmFilter:
    """The ranges one VM's filter holds; empty until a range is accepted."""

    ranges: list[FilterRange] = field(default_factory=list)

    def overlaps(self, first: int, last: int, reserved: list[FilterRange]) -> bool:
        held = self.ranges or reserved  # the reserved ranges come with the first range
        return any(r.first <= last and first <= r.last for r in held)

    def action_for(self, function_id: int, handle: int) -> int:
        return next((r.action for r in self.ranges if r.holds(function_id)), handle)


class FilterOracle:
    """The filter's tables for one profile."""

    def __init__(self, spec: Spec, profile: Profile) -> None:
        self.filter: SmcccFilter = spec.smccc_filter
        self.profile = profile
        self.handle = self.filter.action("handle").value
        self.reserved = [FilterRange(r.first, r.last, self.handle) for r in self.filter.reserved]

    @property
    def exists(self) -> bool:
        """Whether KVM of this profile has the filter at all."""
        return self.profile.has(self.filter.lifetime)

    def _decide(self, op: str, names: dict[str, rl.Value]) -> FilterRule:
        return self.profile.deciding(self.filter.table(op), names)

    def has_names(self, group: int, attr: int) -> dict[str, rl.Value]:
        """Exactly the names spec/filter_names.py gives `has` rules (tests/test_rule_names.py)."""
        return {
            "attr.group": group,
            "attr.attr": attr,
            "filter-group": self.filter.group.value,
            "filter-attr": self.filter.attr.value,
        }

    def set_names(
        self, vm: VmFilter, has_run: bool, base: int, nr_functions: int, action: int, pad: int
    ) -> dict[str, rl.Value]:
        """Exactly the names spec/filter_names.py gives `set` rules."""
        last = (base + nr_functions - 1) & U32  # KVM computes the end in a u32
        return {
            "filter.base": base,
            "filter.nr-functions": nr_functions,
            "filter.last": last,
            "filter.action": action,
            "filter.pad": pad,
            "filter.overlaps": last >= base and vm.overlaps(base, last, self.reserved),
            "filter-actions": frozenset(a.value for a in self.filter.actions),
            "vm.has-run": has_run,
        }

    def call_names(self, vm: VmFilter, function_id: int) -> dict[str, rl.Value]:
        """Exactly the names spec/filter_names.py gives `call` rules."""
        names: dict[str, rl.Value] = {"call.action": vm.action_for(function_id, self.handle)}
        names.update({f"action.{a.name}": a.value for a in self.filter.actions})
        return names

    def has(self, group: int, attr: int) -> FilterRule:
        return self._decide("has", self.has_names(group, attr))

    def set(
        self, vm: VmFilter, has_run: bool, base: int, nr_functions: int, action: int, pad: int
    ) -> FilterRule:
        """The deciding rule; an accepted range joins `vm`."""
        rule = self._decide("set", self.set_names(vm, has_run, base, nr_functions, action, pad))
        if rule.ok:
            if not vm.ranges:
                vm.ranges.extend(self.reserved)
            vm.ranges.append(FilterRange(base, (base + nr_functions - 1) & U32, action))
        return rule

    def call(self, vm: VmFilter, function_id: int) -> FilterRule | None:
        """The rule for a guest's call, or None when the VM has no filter (KVM answers)."""
        if not vm.ranges:
            return None
        return self._decide("call", self.call_names(vm, function_id))
