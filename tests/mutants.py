"""Seeded bugs in the reference implementation, each a plausible KVM mistake.

A mutant is a reference KVM built from edited tables or with a quirk switched on, plus the
rule whose cases must catch it and a profile in which the bug is visible.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kvm_fwspec.conformance.guest.program import PROGRAM_MEMORY
from kvm_fwspec.reference_impl.kvm import Quirks, ReferenceKvm
from kvm_fwspec.reference_impl.tables import MODEL


@dataclass(frozen=True)
class Mutant:
    name: str
    doc: str
    kernel: str
    host: str
    caught_by: str
    build: Callable[[str, str], ReferenceKvm]


def _edited(edit: Callable[[dict[str, Any]], None]) -> Callable[[str, str], ReferenceKvm]:
    def build(kernel: str, host: str) -> ReferenceKvm:
        tables = copy.deepcopy(MODEL)
        edit(tables)
        return ReferenceKvm(kernel, host, tables=tables, memory=PROGRAM_MEMORY)

    return build


def _quirk(**quirks: bool) -> Callable[[str, str], ReferenceKvm]:
    return lambda kernel, host: ReferenceKvm(
        kernel, host, quirks=Quirks(**quirks), memory=PROGRAM_MEMORY
    )


def _rule(tables: dict[str, Any], rule_id: str) -> dict[str, Any]:
    return next(r for r in tables["rules"] if r["id"] == rule_id)


def _drop(rule_id: str) -> Callable[[str, str], ReferenceKvm]:
    return _edited(lambda t: t["rules"].remove(_rule(t, rule_id)))


def _set_errno(rule_id: str, errno: str) -> Callable[[str, str], ReferenceKvm]:
    return _edited(lambda t: _rule(t, rule_id)["result"].update(errno=errno))


def _set_when(rule_id: str, tree: dict[str, Any]) -> Callable[[str, str], ReferenceKvm]:
    return _edited(lambda t: _rule(t, rule_id).update(when={"text": "mutated", "tree": tree}))


def _reset(register: str, value: int) -> Callable[[str, str], ReferenceKvm]:
    def edit(tables: dict[str, Any]) -> None:
        entry = next(r for r in tables["registers"] if r["name"] == register)
        entry["reset"] = {"text": str(value), "tree": {"number": value}}

    return _edited(edit)


def _power_rule(tables: dict[str, Any], rule_id: str) -> dict[str, Any]:
    return next(r for r in tables["vcpu-power"]["rules"] if r["id"] == rule_id)


def _drop_power(rule_id: str) -> Callable[[str, str], ReferenceKvm]:
    return _edited(lambda t: t["vcpu-power"]["rules"].remove(_power_rule(t, rule_id)))


def _power_result(rule_id: str, **result: Any) -> Callable[[str, str], ReferenceKvm]:
    return _edited(lambda t: _power_rule(t, rule_id)["result"].update(result))


def _drop_stolen_time(rule_id: str) -> Callable[[str, str], ReferenceKvm]:
    def edit(tables: dict[str, Any]) -> None:
        rules = tables["stolen-time"]["rules"]
        rules.remove(next(r for r in rules if r["id"] == rule_id))

    return _edited(edit)


def _call_row(tables: dict[str, Any], function: str, args: list[int]) -> dict[str, Any]:
    rows = next(f for f in tables["smccc"]["functions"] if f["name"] == function)["calls"]
    row: dict[str, Any] = next(r for r in rows if r["args"] == args)
    return row


def _answers(
    function: str, args: list[int], answers: list[Any]
) -> Callable[[str, str], ReferenceKvm]:
    return _edited(lambda t: _call_row(t, function, args).update(answers=answers))


def _features_x2_from_the_first_bitmap(tables: dict[str, Any]) -> None:
    features = next(
        f for f in tables["smccc"]["functions"] if f["name"] == "vendor-hyp-kvm-features"
    )
    features["register-results"] = [{"register": 2, "name": "vendor-hyp-bmap"}]


def _suspend_without_capability(tables: dict[str, Any]) -> None:
    suspend = next(f for f in tables["psci"]["functions"] if f["name"] == "system-suspend")
    suspend["kvm"]["needs-capability"] = None


HAS_RUN = {"name": "vm.has-run"}

MUTANTS = [
    Mutant(
        "accept-0.1-on-psci-0.2-vcpu",
        "PSCI 0.1 accepted through a PSCI 0.2 vcpu",
        "6.12",
        "mitigated",
        "psci-version/set/reject-0.1-with-psci-0.2",
        _drop("psci-version/set/reject-0.1-with-psci-0.2"),
    ),
    Mutant(
        "per-vcpu-psci-version",
        "the PSCI version stored per vcpu instead of VM-wide",
        "6.12",
        "mitigated",
        "psci-version/set/accept-implemented",
        _quirk(per_vcpu_storage=True),
    ),
    Mutant(
        "einval-for-unknown-register",
        "EINVAL instead of ENOENT for an unknown firmware id",
        "6.12",
        "mitigated",
        "fw/get/unknown-register",
        _set_errno("fw/get/unknown-register", "EINVAL"),
    ),
    Mutant(
        "stores-workaround-level",
        "a workaround level stored and read back instead of the host's",
        "6.12",
        "mitigated",
        "smccc-arch-workaround-1/set/accept-at-most-host",
        _quirk(stores_validate_only_values=True),
    ),
    Mutant(
        "ebusy-on-identical-write",
        "EBUSY for writing back the same bitmap after the VM ran",
        "6.12",
        "mitigated",
        "std-bmap/set/store",
        _set_when("std-bmap/set/reject-change-after-run", HAS_RUN),
    ),
    Mutant(
        "psci-version-frozen-after-run",
        "PSCI_VERSION refused once the VM has run",
        "6.12",
        "mitigated",
        "psci-version/set/accept-implemented",
        _set_when(
            "psci-version/set/accept-implemented",
            {
                "op": "and",
                "args": [
                    {"op": "in", "args": [{"name": "value"}, {"name": "kernel.psci-versions"}]},
                    {"op": "not", "args": [HAS_RUN]},
                ],
            },
        ),
    ),
    Mutant(
        "stale-default-psci-version",
        "a 6.13 KVM still defaulting to PSCI 1.1",
        "6.13",
        "mitigated",
        "psci-version/get/default-latest",
        _edited(
            lambda t: _rule(t, "psci-version/get/default-latest")["result"].update(
                value={"text": "psci(1, 1)", "tree": {"number": 0x10001}}
            )
        ),
    ),
    Mutant(
        "workaround-above-host-accepted",
        "a saved AVAIL accepted on a vulnerable host",
        "6.12",
        "vulnerable",
        "smccc-arch-workaround-1/set/reject-above-host",
        _drop("smccc-arch-workaround-1/set/reject-above-host"),
    ),
    Mutant(
        "wa2-enabled-without-avail",
        "WORKAROUND_2's ENABLED bit accepted with a level other than AVAIL",
        "6.12",
        "mitigated",
        "smccc-arch-workaround-2/set/reject-enabled-without-avail",
        _drop("smccc-arch-workaround-2/set/reject-enabled-without-avail"),
    ),
    Mutant(
        "wa2-not-narrowed",
        "WORKAROUND_2 AVAIL accepted on a host that reports NOT_AVAIL",
        "6.12",
        "mitigated-ssbs",
        "smccc-arch-workaround-2/set/reject-narrowed-above-host",
        _drop("smccc-arch-workaround-2/set/reject-narrowed-above-host"),
    ),
    Mutant(
        "bitmap-unknown-bits-accepted",
        "bits the release does not define accepted in a bitmap",
        "6.12",
        "mitigated",
        "std-bmap/set/reject-unknown-bits",
        _drop("std-bmap/set/reject-unknown-bits"),
    ),
    Mutant(
        "uninitialised-vcpu-served",
        "GET served before KVM_ARM_VCPU_INIT",
        "6.12",
        "mitigated",
        "fw/get/vcpu-not-initialized",
        _drop("fw/get/vcpu-not-initialized"),
    ),
    Mutant(
        "bitmap-reset-to-zero",
        "STD_BMAP reset to 0 instead of every known service",
        "6.12",
        "mitigated",
        "std-bmap/get/stored",
        _reset("std-bmap", 0),
    ),
    Mutant(
        "psci-0.1-vcpu-reads-latest",
        "a vcpu without PSCI 0.2 reading the VM's version",
        "6.12",
        "mitigated",
        "psci-version/get/psci-0.1-vcpu",
        _drop("psci-version/get/psci-0.1-vcpu"),
    ),
    Mutant(
        "guest-sees-latest-psci",
        "the guest's PSCI_VERSION ignoring the version userspace selected",
        "6.12",
        "mitigated",
        "psci-version/set/accept-implemented",
        _quirk(psci_version_call_ignores_selection=True),
    ),
    Mutant(
        "features-ignore-selected-version",
        "PSCI_FEATURES answering for 1.3 whatever version was selected",
        "6.13",
        "mitigated",
        "psci-version/set/accept-implemented",
        _quirk(features_ignores_selected_version=True),
    ),
    Mutant(
        "disabled-service-still-answers",
        "a service answering the guest after its bitmap bit was cleared",
        "6.12",
        "mitigated",
        "std-bmap/set/store",
        _quirk(bitmap_gate_ignored=True),
    ),
    Mutant(
        "first-run-not-recorded",
        "KVM_RUN not marking the VM as having run, so bitmaps stay writable",
        "6.12",
        "mitigated",
        "std-bmap/set/reject-change-after-run",
        _quirk(run_does_not_count=True),
    ),
    Mutant(
        "filter-after-run-allowed",
        "an SMCCC filter range accepted after the VM has run",
        "6.12",
        "mitigated",
        "smccc-filter/set/after-run",
        _quirk(filter_after_run_allowed=True),
    ),
    Mutant(
        "stolen-time-address-replaced",
        "a second stolen-time address replacing the vcpu's first instead of EEXIST",
        "6.12",
        "mitigated",
        "stolen-time/set/already-set",
        _drop_stolen_time("stolen-time/set/already-set"),
    ),
    Mutant(
        "pv-time-features-before-an-address",
        "PV_TIME_FEATURES offering PV_TIME_ST to a vcpu whose VMM never set its address",
        "5.10",
        "mitigated",
        "stolen-time/pv-time-features/no-address",
        _drop_stolen_time("stolen-time/pv-time-features/no-address"),
    ),
    Mutant(
        "psci-0.1-cpu-on-already-on",
        "a PSCI 0.1 guest's CPU_ON of a running vcpu answered ALREADY_ON, which 0.1 lacks",
        "6.12",
        "mitigated",
        "psci-power/cpu-on/already-on-psci-0.1",
        _drop_power("psci-power/cpu-on/already-on-psci-0.1"),
    ),
    Mutant(
        "cpu-off-returns",
        "CPU_OFF answered SUCCESS with the caller left running",
        "6.12",
        "mitigated",
        "psci-power/cpu-off/stops-caller",
        _power_result("psci-power/cpu-off/stops-caller", x0=0, caller=None),
    ),
    Mutant(
        "affinity-info-ignores-reserved-bits",
        "AFFINITY_INFO masking a target's reserved bits away, as before 5.15",
        "6.12",
        "mitigated",
        "psci-power/affinity-info/reserved-affinity-bits",
        _drop_power("psci-power/affinity-info/reserved-affinity-bits"),
    ),
    Mutant(
        "system-suspend-without-its-capability",
        "SYSTEM_SUSPEND answered on a VM that never enabled KVM_CAP_ARM_SYSTEM_SUSPEND",
        "6.12",
        "mitigated",
        "psci-version/get/default-latest",
        _edited(_suspend_without_capability),
    ),
    Mutant(
        "system-suspend-stops-every-vcpu",
        "a SUSPEND event stopping every vcpu, as a shutdown does",
        "6.12",
        "mitigated",
        "psci-power/system-event/suspend-leaves-every-vcpu",
        _drop_power("psci-power/system-event/suspend-leaves-every-vcpu"),
    ),
    Mutant(
        "trng-leaks-bits-above-the-count",
        "TRNG_RND32 of 33 bits answering 2 bits in x2: the bits above the count not cleared",
        "6.12",
        "mitigated",
        "std-bmap/get/stored",
        _answers("trng-rnd32", [33], [0, 0, {"bits": 2}, {"bits": 32}]),
    ),
    Mutant(
        "trng-takes-too-many-bits",
        "TRNG_RND64 of 193 bits answered as 192, where the count is INVALID_PARAMETERS",
        "6.12",
        "mitigated",
        "std-bmap/get/stored",
        _answers("trng-rnd64", [193], [0, {"bits": 64}, {"bits": 64}, {"bits": 64}]),
    ),
    Mutant(
        "kvm-features-x2-from-the-wrong-bitmap",
        "KVM_FEATURES answering VENDOR_HYP_BMAP in x2, where functions 64-127's bitmap belongs",
        "7.2",
        "mitigated",
        "vendor-hyp-bmap-2/set/store",
        _edited(_features_x2_from_the_first_bitmap),
    ),
    Mutant(
        "system-off-stops-only-its-caller",
        "a system event leaving the other vcpus running",
        "6.12",
        "mitigated",
        "psci-power/system-event/stops-every-vcpu",
        _power_result("psci-power/system-event/stops-every-vcpu", **{"every-vcpu": None}),
    ),
]
