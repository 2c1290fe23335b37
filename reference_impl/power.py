"""The names the reference gives the vcpu power rules (spec/psci.yaml's `power`).

CPU_ON and AFFINITY_INFO are decided over every vcpu of the VM: these functions compute, from
the generated MPIDR layout and each vcpu's power state, exactly the names spec/power_names.py
declares (tests/test_rule_names.py checks), for the tables to decide on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kvm_fwspec.reference_impl.evaluate import Value

U32 = (1 << 32) - 1


class Mpidr:
    """How KVM names a vcpu in PSCI: the affinity of the MPIDR it composes from the vcpu id."""

    def __init__(self, raw: Mapping[str, Any]) -> None:
        self.hwid_mask = int(raw["hwid-mask"])
        self.level_bits = int(raw["level-bits"])
        self.levels = int(raw["levels"])
        self.fields = [
            (int(f["shift"]), int(f["id-shift"]), (1 << int(f["id-bits"])) - 1)
            for f in raw["affinity"]
        ]

    def affinity(self, vcpu_id: int) -> int:
        return sum(((vcpu_id >> id_shift) & mask) << shift for shift, id_shift, mask in self.fields)

    def level_mask(self, level: int) -> int:
        if level >= self.levels:
            return 0
        return self.hwid_mask & ~((1 << level * self.level_bits) - 1)


def narrowed(args: Sequence[int], smc32: bool) -> list[int]:
    """x1 to x3 as KVM reads them: cut to 32 bits for a standard function's SMC32 id."""
    words = [*args, 0, 0, 0][:3]
    return [w & U32 for w in words] if smc32 else list(words)


def cpu_on_names(
    mpidr: Mpidr, target: int, caller_psci_02: bool, vcpus_on: Mapping[int, bool]
) -> dict[str, Value]:
    """`vcpus_on`: each vcpu's MPIDR affinity and whether it is on."""
    wanted = target & mpidr.hwid_mask
    return {
        "call.target": target,
        "hwid-mask": mpidr.hwid_mask,
        "caller.psci-0.2": caller_psci_02,
        "target.exists": wanted in vcpus_on,
        "target.on": vcpus_on.get(wanted, False),
    }


def affinity_info_names(
    mpidr: Mpidr, target: int, level: int, vcpus_on: Mapping[int, bool]
) -> dict[str, Value]:
    mask = mpidr.level_mask(level)
    matching = [
        on for affinity, on in vcpus_on.items() if mask and affinity & mask == target & mask
    ]
    return {
        "call.target": target,
        "call.level": level,
        "hwid-mask": mpidr.hwid_mask,
        "matching": len(matching),
        "matching-on": sum(matching),
    }
