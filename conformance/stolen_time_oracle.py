"""Expected outcomes of a vcpu's stolen-time address, straight from spec/smccc.yaml's
`stolen-time` tables: KVM_SET_DEVICE_ATTR and KVM_GET_DEVICE_ATTR of the address, and the
guest's PV_TIME_FEATURES and PV_TIME_ST once the VM's bitmaps let the call through.

The VM's memory is the agent protocol's: the one region every program may point KVM at.
"""

from __future__ import annotations

from dataclasses import dataclass

from kvm_fwspec.conformance.guest.program import PROGRAM_MEMORY
from kvm_fwspec.conformance.profile import Profile
from kvm_fwspec.spec import rule_language as rl
from kvm_fwspec.spec.model import Spec, StolenTimeRule

PAGE = 0x1000  # KVM looks up the 4 KiB page that holds the address (gfn_to_hva)
U32 = (1 << 32) - 1


@dataclass(frozen=True)
class Answer:
    """The deciding rule and the number it gives (an address, or x0), if any."""

    rule: StolenTimeRule
    value: int | None = None


class StolenTimeOracle:
    """The stolen-time tables for one profile; a vcpu's address is None until set."""

    def __init__(self, spec: Spec, profile: Profile) -> None:
        self.table = spec.stolen_time
        self.profile = profile
        self.service_functions = frozenset(
            f.function_id for f in spec.smccc_functions if f.service == self.table.service
        )

    @property
    def exists(self) -> bool:
        """Whether KVM of this profile has PV time, and so the attribute (before it, every
        set and get of the group is refused)."""
        return self.profile.has(self.table.service.lifetime)

    def set_names(self, address: int | None, attr: int, ipa: int) -> dict[str, rl.Value]:
        """Exactly the names spec/stolen_time_names.py gives `set` rules."""
        page = ipa - ipa % PAGE
        return {
            "attr.attr": attr,
            "pvtime-attr": self.table.attr.value,
            "ipa.aligned": ipa % self.table.struct_size == 0,
            "ipa.in-memory": any(base <= page < base + size for base, size in PROGRAM_MEMORY),
            "vcpu.stolen-time-set": address is not None,
        }

    def get_names(self, attr: int) -> dict[str, rl.Value]:
        return {"attr.attr": attr, "pvtime-attr": self.table.attr.value}

    def call_names(self, op: str, address: int | None, argument: int) -> dict[str, rl.Value]:
        names: dict[str, rl.Value] = {"vcpu.stolen-time-set": address is not None}
        if op == "pv-time-features":
            names["call.argument"] = argument & U32
            names["pv-time-functions"] = self.service_functions
        return names

    def set(self, address: int | None, attr: int, ipa: int) -> StolenTimeRule:
        return self.profile.deciding(self.table.table("set"), self.set_names(address, attr, ipa))

    def get(self, address: int | None, attr: int) -> Answer:
        rule = self.profile.deciding(self.table.table("get"), self.get_names(attr))
        return Answer(rule, self._number(rule, address))

    def call(self, op: str, address: int | None, argument: int = 0) -> Answer:
        """PV_TIME_FEATURES(argument) or PV_TIME_ST, by a vcpu with `address`."""
        rule = self.profile.deciding(self.table.table(op), self.call_names(op, address, argument))
        return Answer(rule, self._number(rule, address))

    def _number(self, rule: StolenTimeRule, address: int | None) -> int | None:
        if rule.address:
            return self.table.unset if address is None else address
        return rule.x0
