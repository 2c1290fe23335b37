"""KVM of a chosen release on a chosen host, as far as the firmware registers go.

Every GET, SET and REG_LIST is decided by walking the generated decision tables; guest calls
are answered from the PSCI and SMCCC tables. The SMCCC filter (KVM_HAS_DEVICE_ATTR and
KVM_SET_DEVICE_ATTR on the VM, and which of KVM, a denial or userspace answers a call) walks
the filter's tables the same way, and which vcpus are on (CPU_ON, CPU_OFF, AFFINITY_INFO,
KVM_RUN of a stopped vcpu, the system events) walks the power tables. No register has a
branch of its own here.
`Quirks` exist only to seed plausible kernel bugs for the suite to catch.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kvm_fwspec.reference_impl.evaluate import U64, Value, evaluate, evaluate_int
from kvm_fwspec.reference_impl.power import Mpidr, affinity_info_names, cpu_on_names, narrowed
from kvm_fwspec.reference_impl.tables import MODEL

NOT_SUPPORTED = -1
NOT_SUPPORTED_U64 = (1 << 64) - 1  # what userspace writes to x0 for -1
U32 = (1 << 32) - 1
# How the suite's guest makes a call, by the names of the hypercall exit's flags
# (KVM_HYPERCALL_EXIT_*): with HVC, from A64, so neither applies.
GUEST_CALL_FLAGS = {"smc": False, "16bit": False}


class SpecGap(Exception):
    """The tables have no rule for this access: the spec does not say what KVM does."""


@dataclass(frozen=True)
class Quirks:
    """Deliberate deviations from the tables (mutants), off in the real reference."""

    per_vcpu_storage: bool = False
    stores_validate_only_values: bool = False
    psci_version_call_ignores_selection: bool = False
    features_ignores_selected_version: bool = False
    bitmap_gate_ignored: bool = False
    run_does_not_count: bool = False
    filter_after_run_allowed: bool = False  # kvm_smccc_set_filter without its EBUSY check


def _release(text: str) -> tuple[int, int]:
    major, minor = text.split(".")
    return int(major), int(minor)


def _covers(entry: Mapping[str, Any], release: tuple[int, int], stable: bool = False) -> bool:
    """Whether a table entry exists in `release` (with `stable`: also if backported to it)."""
    if "until" in entry and release >= _release(entry["until"]):
        return False
    backported = stable and any(_release(b) == release for b in entry.get("backports", []))
    return _release(entry["since"]) <= release or backported


class _Field:
    def __init__(self, raw: Mapping[str, Any]) -> None:
        self.name: str = raw["name"]
        self.high, self.low = int(raw["bits"][0]), int(raw["bits"][1])
        self.mask = int(raw["mask"])
        self.values: list[dict[str, Any]] = raw["values"]

    def extract(self, word: int) -> int:
        return (word & self.mask) >> self.low


class ReferenceKvm:
    """A host: a release, an architecture and the mitigation levels its workaround registers report."""

    def __init__(
        self,
        release: str,
        host: str | Mapping[str, str],
        arch: str = "arm64",
        tables: Mapping[str, Any] = MODEL,
        quirks: Quirks = Quirks(),
        stable: bool = False,
        memory: tuple[tuple[int, int], ...] = (),
    ) -> None:
        self.tables = tables
        # The guest RAM every VM has, (guest-physical base, size) per slot: what a vcpu's
        # stolen-time address must fall in. The agent protocol gives programs one region.
        self.memory = memory
        self.stable = stable
        self.quirks = quirks
        self.release = _release(release)
        self.arch = arch
        # A named host profile of the tables, or the level each workaround register reports.
        self.host: Mapping[str, str] = (
            next(h for h in tables["host-profiles"] if h["name"] == host)["levels"]
            if isinstance(host, str)
            else host
        )
        layout = next(lay for lay in tables["layouts"] if lay["name"] == "reg-id")
        self.fields = {f["name"]: _Field(f) for f in layout["fields"]}
        self.registers = [
            r
            for r in tables["registers"]
            if arch in r["ids"] and self.covers(r) and self._arch_covers()
        ]
        self.rules = [r for r in tables["rules"] if arch in r["architectures"] and self.covers(r)]
        versions = [v for v in tables["psci"]["versions"] if self.covers(v)]
        self.psci_versions = frozenset(v["encoded"] for v in versions)
        latest = next(p for p in tables["psci"]["latest"] if _covers(p, self.release))["version"]
        self.psci_latest = int(next(v["encoded"] for v in versions if v["name"] == latest))
        self.smccc_filter: Mapping[str, Any] = tables["smccc-filter"]
        self.filter_rules = [r for r in self.smccc_filter["rules"] if self.covers(r)]
        self.filter_actions = {a["name"]: int(a["value"]) for a in self.smccc_filter["actions"]}
        self.power: Mapping[str, Any] = tables["vcpu-power"]
        self.power_rules = [r for r in self.power["rules"] if self.covers(r)]
        self.mpidr = Mpidr(self.power["mpidr"])
        self.stolen_time: Mapping[str, Any] = tables["stolen-time"]
        self.stolen_time_rules = [r for r in self.stolen_time["rules"] if self.covers(r)]

    def covers(self, entry: Mapping[str, Any]) -> bool:
        return _covers(entry, self.release, self.stable)

    def _arch_covers(self) -> bool:
        arch = next(a for a in self.tables["architectures"] if a["name"] == self.arch)
        return _covers(arch, self.release)

    def create_vm(self) -> ReferenceVm:
        return ReferenceVm(self)

    # -- decisions -------------------------------------------------------------------------

    def register_for(self, reg_id: int) -> dict[str, Any] | None:
        return next((r for r in self.registers if r["ids"][self.arch] == reg_id), None)

    def known_bits(self, register: Mapping[str, Any]) -> int:
        return sum(1 << b["bit"] for b in register["bits"] if self.covers(b))

    def names(
        self, register: Mapping[str, Any] | None, reg_id: int, state: Mapping[str, Value]
    ) -> dict[str, Value]:
        size = self.fields["size"]
        names: dict[str, Value] = {
            **state,
            "reg.known": register is not None,
            "reg.size": size.extract(reg_id),
            "kernel.psci-latest": self.psci_latest,
            "kernel.psci-versions": self.psci_versions,
        }
        names.update({f"size.{v['name']}": v["value"] for v in size.values})
        if register is None:
            return names
        value = state.get("value")
        if isinstance(value, int) and not isinstance(value, bool):
            for f in register["layout"]:
                names[f"value.{f['name']}"] = (value & f["mask"]) >> f["bits"][1]
        if register["kind"] == "level":
            level = self.host[register["name"]]
            names["host.level"] = next(v["value"] for v in register["values"] if v["name"] == level)
        if register["kind"] == "bitmap":
            names["known-bits"] = self.known_bits(register)
        names.update({v["name"]: v["value"] for v in register["values"]})
        names.update({f"bit.{b['name']}": 1 << b["bit"] for b in register["bits"]})
        return names

    def decide(self, op: str, reg_id: int, names: Mapping[str, Value]) -> dict[str, Any]:
        class_value = self.fields["class"].extract(reg_id)
        register = self.register_for(reg_id)
        classes = {v["name"]: v["value"] for v in self.fields["class"].values}

        def about(rule: Mapping[str, Any]) -> bool:
            if rule["class"] is not None:
                return bool(classes[rule["class"]] == class_value)
            return register is not None and rule["register"] == register["name"]

        table = [r for r in self.rules if r["op"] == op and about(r)]
        return _first_holding(
            table, names, f"no rule decides {op} of {reg_id:#018x} in {self.release}"
        )

    def decide_filter(self, op: str, names: Mapping[str, Value]) -> dict[str, Any]:
        """The SMCCC filter's rule for `op` (has, set or call)."""
        return self._decide_table(self.filter_rules, "SMCCC filter", op, names)

    def decide_stolen_time(self, op: str, names: Mapping[str, Value]) -> dict[str, Any]:
        """The stolen-time rule for `op` (set, get, pv-time-features, pv-time-st)."""
        return self._decide_table(self.stolen_time_rules, "stolen-time", op, names)

    def decide_power(self, op: str, names: Mapping[str, Value]) -> dict[str, Any]:
        """The vcpu power rule for `op` (run, cpu-on, cpu-off, affinity-info, system-event)."""
        return self._decide_table(self.power_rules, "vcpu power", op, names)

    def _decide_table(
        self, rules: list[dict[str, Any]], what: str, op: str, names: Mapping[str, Value]
    ) -> dict[str, Any]:
        """A decision table of its own: the first of this release's rules for `op` whose
        `when` holds, as for the registers."""
        table = [r for r in rules if r["op"] == op]
        return _first_holding(table, names, f"no {what} rule decides {op} in {self.release}")


def _signed(word: int) -> int:
    """x0 as the guest reads it, signed: a u64 (userspace's answer, an address) or a value
    already negative (NOT_SUPPORTED)."""
    return word - (1 << 64) if word >= 1 << 63 else word


def _first_holding(
    table: list[dict[str, Any]], names: Mapping[str, Value], gap: str
) -> dict[str, Any]:
    """The first rule of a decision table whose `when` holds for `names`; none is a SpecGap."""
    for rule in table:
        if rule["when"] is None or evaluate(rule["when"]["tree"], names):
            return rule
    raise SpecGap(gap)


@dataclass(frozen=True)
class FilterRange:
    """Function ids first to last, inclusive, and the action the VM's filter gives them."""

    first: int
    last: int
    action: int

    def holds(self, function_id: int) -> bool:
        return self.first <= function_id <= self.last

    def meets(self, first: int, last: int) -> bool:
        return self.first <= last and first <= self.last


@dataclass
class ReferenceVm:
    """A VM: the VM-wide register values, its SMCCC filter and whether any vcpu has run."""

    kvm: ReferenceKvm
    has_run: bool = False
    vcpus: list[ReferenceVcpu] = field(default_factory=list)
    stored: dict[str, int] = field(default_factory=dict)
    # The ranges the VM's SMCCC filter holds: empty until one is accepted, and then with the
    # reserved architecture ranges too.
    filter_ranges: list[FilterRange] = field(default_factory=list)
    enabled: set[str] = field(default_factory=set)  # capabilities KVM_ENABLE_CAP turned on

    def __post_init__(self) -> None:
        for register in self.kvm.registers:
            if register["reset"] is not None:
                names = self.kvm.names(register, register["ids"][self.kvm.arch], {})
                self.stored[register["name"]] = evaluate_int(register["reset"]["tree"], names)

    def create_vcpu(self) -> ReferenceVcpu:
        vcpu = ReferenceVcpu(
            self,
            copy.deepcopy(self.stored) if self.kvm.quirks.per_vcpu_storage else self.stored,
            index=len(self.vcpus),
        )
        self.vcpus.append(vcpu)
        return vcpu

    def vcpus_on(self) -> dict[int, bool]:
        """Each vcpu's MPIDR affinity, and whether it is on: what PSCI addresses."""
        return {self.kvm.mpidr.affinity(v.index): v.mp_state_name != "stopped" for v in self.vcpus}

    def enable_capability(self, cap: int) -> str | None:
        """KVM_ENABLE_CAP on the VM: None once the capability is on, EINVAL for one this
        release cannot enable on a VM (or does not know)."""
        kvm = self.kvm
        found = next(
            (
                c
                for c in kvm.tables["capabilities"]
                if c["value"] == cap and c["vm-enable"] and kvm.covers(c)
            ),
            None,
        )
        if found is None:
            return "EINVAL"
        self.enabled.add(str(found["name"]))
        return None

    def system_event_names(self, event: str) -> dict[str, Value]:
        """A value for each name a `system-event` power rule may use, for `event`: exactly
        those spec/power_names.py declares (tests/test_rule_names.py checks)."""
        events = self.kvm.tables["kvm-interface"]["system-events"]
        values = {str(e["name"]): int(e["value"]) for e in events}
        names: dict[str, Value] = {"event.type": values[event]}
        names.update({f"system-event.{name}": value for name, value in values.items()})
        return names

    def system_event(self, event: str, caller: ReferenceVcpu) -> None:
        """What the power tables make of the vcpus when `caller`'s call exits with `event`."""
        result = self.kvm.decide_power("system-event", self.system_event_names(event))["result"]
        if result["every-vcpu"] is not None:
            for vcpu in self.vcpus:
                vcpu.mp_state_name = str(result["every-vcpu"])
        if result["caller"] is not None:
            caller.mp_state_name = str(result["caller"])

    # -- the SMCCC filter ------------------------------------------------------------------

    def _reserved(self) -> list[FilterRange]:
        handle = self.kvm.filter_actions["handle"]
        return [
            FilterRange(int(r["first"]), int(r["last"]), handle)
            for r in self.kvm.smccc_filter["reserved"]
        ]

    def has_names(self, group: int, attr: int) -> dict[str, Value]:
        """A value for each name a `has` rule of the filter may use: exactly those
        spec/filter_names.py declares (tests/test_rule_names.py checks)."""
        return {
            "attr.group": group,
            "attr.attr": attr,
            "filter-group": int(self.kvm.smccc_filter["group"]["value"]),
            "filter-attr": int(self.kvm.smccc_filter["attr"]["value"]),
        }

    def set_names(self, base: int, nr_functions: int, action: int, pad: int) -> dict[str, Value]:
        """A value for each name a `set` rule of the filter may use."""
        last = (base + nr_functions - 1) & U32  # KVM computes the range's end in a u32
        held = self.filter_ranges or self._reserved()  # the reserved come with the first range
        return {
            "filter.base": base,
            "filter.nr-functions": nr_functions,
            "filter.last": last,
            "filter.action": action,
            "filter.pad": pad,
            # a range that wraps holds no ids in order; range-wraps refuses it before this
            "filter.overlaps": last >= base and any(r.meets(base, last) for r in held),
            "filter-actions": frozenset(self.kvm.filter_actions.values()),
            "vm.has-run": self.has_run and not self.kvm.quirks.filter_after_run_allowed,
        }

    def call_names(self, function_id: int) -> dict[str, Value]:
        """A value for each name a `call` rule of the filter may use."""
        action = next(
            (r.action for r in self.filter_ranges if r.holds(function_id)),
            self.kvm.filter_actions["handle"],  # an id in no range is handled
        )
        names: dict[str, Value] = {"call.action": action}
        names.update({f"action.{name}": value for name, value in self.kvm.filter_actions.items()})
        return names

    def has_attribute(self, group: int, attr: int) -> str | None:
        """KVM_HAS_DEVICE_ATTR on the VM: None if the VM has the attribute, else the errno."""
        return _errno_or_ok(self.kvm.decide_filter("has", self.has_names(group, attr)))

    def set_smccc_filter(self, base: int, nr_functions: int, action: int, pad: int) -> str | None:
        """KVM_SET_DEVICE_ATTR of one filter range: None once the range is added, else the
        errno."""
        rule = self.kvm.decide_filter("set", self.set_names(base, nr_functions, action, pad))
        errno = _errno_or_ok(rule)
        if errno is None:
            if not self.filter_ranges:
                self.filter_ranges.extend(self._reserved())
            self.filter_ranges.append(FilterRange(base, (base + nr_functions - 1) & U32, action))
        return errno

    def filter_call(self, function_id: int, answer: int) -> dict[str, int | str] | None:
        """What the VM's filter makes of a guest's call: NOT_SUPPORTED, the userspace exit
        answered with `answer`, or None when KVM answers as without a filter."""
        if not self.filter_ranges:
            return None
        rule = self.kvm.decide_filter("call", self.call_names(function_id))
        result = rule["result"]
        if result["x0"] is not None:
            return {"x0": int(result["x0"])}
        if result["exit"] is not None:
            exit_ = self.kvm.smccc_filter["exit"]
            if result["exit"] != exit_["reason"]["name"]:
                raise SpecGap(f"{rule['id']}: the reference knows no {result['exit']} exit")
            return {
                "x0": _signed(answer),
                "hypercall": function_id,
                "hypercall-flags": _exit_flags(exit_["flags"]),
            }
        if result["kvm"]:
            return None
        raise SpecGap(f"{rule['id']}: the rule gives a call no outcome")


def _word(answer: int | Mapping[str, int]) -> int:
    """A register of the spec's answer: its number, or for a shape ({"bits": N}, entropy or a
    clock) the largest value of that shape, so that the reference answers deterministically."""
    if isinstance(answer, Mapping):
        return (1 << int(answer["bits"])) - 1
    return int(answer)


def _errno_or_ok(rule: Mapping[str, Any]) -> str | None:
    result = rule["result"]
    if result["errno"]:
        return str(result["errno"])
    if not result["ok"]:
        raise SpecGap(f"{rule['id']}: the rule gives neither an errno nor success")
    return None


def _exit_flags(flags: list[Mapping[str, Any]]) -> int:
    """The hypercall exit's flags for the suite's guest (GUEST_CALL_FLAGS)."""
    unknown = [f["name"] for f in flags if f["name"] not in GUEST_CALL_FLAGS]
    if unknown:
        raise SpecGap(f"the reference cannot tell whether exit flags {unknown} apply")
    return sum(int(f["value"]) for f in flags if GUEST_CALL_FLAGS[f["name"]])


@dataclass
class ReferenceVcpu:
    """A vcpu: initialised or not, with or without the psci-0.2 feature."""

    vm: ReferenceVm
    stored: dict[str, int]
    index: int = 0  # KVM_CREATE_VCPU's id, from which KVM composes the vcpu's MPIDR
    initialized: bool = False
    features: frozenset[str] = frozenset()
    mp_state_name: str = "runnable"
    # A CPU_ON started this vcpu: KVM resets it to the call's entry point when it next enters
    # the guest, where the agent's code is not.
    reset_pending: bool = False
    stolen_time: int | None = None  # the stolen-time address the VMM set, if it did

    def init(self, features: list[str]) -> str | None:
        self.initialized = True
        self.features = frozenset(features)
        off = self.vm.kvm.power["off-feature"]
        if off["name"] in self.features:
            self.mp_state_name = str(off["state"])
        return None

    def mp_state(self) -> tuple[str | None, str | None]:
        return None, self.mp_state_name

    # -- the stolen-time attribute ---------------------------------------------------------

    def _stolen_time_group(self, group: int) -> None:
        if group != int(self.vm.kvm.stolen_time["group"]["value"]):
            raise SpecGap(f"the spec has no vcpu attribute group {group} but stolen time's")

    def stolen_time_names(
        self, op: str, attr: int = 0, ipa: int = 0, argument: int = 0
    ) -> dict[str, Value]:
        """A value for each name a stolen-time rule about `op` may use: exactly those
        spec/stolen_time_names.py declares (tests/test_rule_names.py checks)."""
        kvm = self.vm.kvm
        table = kvm.stolen_time
        attribute: dict[str, Value] = {
            "attr.attr": attr,
            "pvtime-attr": int(table["attr"]["value"]),
        }
        has_address: dict[str, Value] = {"vcpu.stolen-time-set": self.stolen_time is not None}
        if op == "get":
            return attribute
        if op == "set":
            page = ipa & ~0xFFF  # KVM looks up the page that holds the address
            return {
                **attribute,
                **has_address,
                "ipa.aligned": ipa % int(table["struct"]["size"]) == 0,
                "ipa.in-memory": any(b <= page < b + size for b, size in kvm.memory),
            }
        if op == "pv-time-features":
            functions = kvm.tables["smccc"]["functions"]
            service = frozenset(
                int(f["function-id"]) for f in functions if f["service"] == table["service"]
            )
            # KVM reads the function id asked about as a u32 (kvm_hypercall_pv_features)
            argument_names: dict[str, Value] = {
                "call.argument": argument & 0xFFFFFFFF,
                "pv-time-functions": service,
            }
            return {**has_address, **argument_names}
        return has_address

    def set_attribute(self, group: int, attr: int, value: int) -> str | None:
        """KVM_SET_DEVICE_ATTR on the vcpu: the stolen-time address, by the spec's table."""
        self._stolen_time_group(group)
        rule = self.vm.kvm.decide_stolen_time("set", self.stolen_time_names("set", attr, value))
        failed = _errno_or_ok(rule)
        if failed is None:
            self.stolen_time = value
        return failed

    def get_attribute(self, group: int, attr: int) -> tuple[str | None, int | None]:
        """KVM_GET_DEVICE_ATTR on the vcpu: its stolen-time address, or the unset value."""
        self._stolen_time_group(group)
        result = self.vm.kvm.decide_stolen_time("get", self.stolen_time_names("get", attr))
        if result["result"]["errno"]:
            return str(result["result"]["errno"]), None
        return None, self._stolen_time_answer(result)

    def _stolen_time_answer(self, rule: Mapping[str, Any]) -> int:
        result = rule["result"]
        if result["address"]:
            unset = int(self.vm.kvm.stolen_time["unset"])
            return self.stolen_time if self.stolen_time is not None else unset
        if result["x0"] is None:
            raise SpecGap(f"{rule['id']}: the rule gives the call no answer")
        return int(result["x0"])

    def _state(self, value: int | None = None) -> dict[str, Value]:
        state: dict[str, Value] = {
            "vcpu.initialized": self.initialized,
            "vcpu.psci-0.2": "psci-0.2" in self.features,
            "vm.has-run": self.vm.has_run,
        }
        if value is not None:
            state["value"] = value
        return state

    def names(self, reg_id: int, value: int | None = None) -> dict[str, Value]:
        """A value for each name a rule about an access of `reg_id` (a SET's with `value`) by
        this vcpu may use: exactly the names spec/rule_names.py gives the register and op.
        The reference may not import the spec library, so tests/test_rule_names.py checks."""
        kvm = self.vm.kvm
        register = kvm.register_for(reg_id)
        names = kvm.names(register, reg_id, self._state(value))
        if register is not None and register["name"] in self.stored:
            names["stored"] = self.stored[register["name"]]
        return names

    def get_one_reg(self, reg_id: int) -> tuple[str | None, int | None]:
        kvm = self.vm.kvm
        rule = kvm.decide("get", reg_id, self.names(reg_id))
        result = rule["result"]
        if result["undefined"]:
            raise SpecGap(f"{rule['id']}: {result['undefined']}")
        if result["errno"]:
            return result["errno"], None
        register = kvm.register_for(reg_id)
        if (
            kvm.quirks.stores_validate_only_values
            and register
            and f"~{register['name']}" in self.stored
        ):
            return None, self.stored[f"~{register['name']}"]
        return None, evaluate_int(result["value"]["tree"], self.names(reg_id)) & U64

    def set_one_reg(self, reg_id: int, value: int) -> str | None:
        kvm = self.vm.kvm
        names = self.names(reg_id, value)
        rule = kvm.decide("set", reg_id, names)
        result = rule["result"]
        if result["undefined"]:
            raise SpecGap(f"{rule['id']}: {result['undefined']}")
        if result["errno"]:
            return str(result["errno"])
        register = kvm.register_for(reg_id)
        assert register is not None
        if result["store"] is not None:
            self.stored[register["name"]] = evaluate_int(result["store"]["tree"], names)
        elif kvm.quirks.stores_validate_only_values:
            self.stored[f"~{register['name']}"] = value
        return None

    def reg_list(self) -> tuple[str | None, list[int]]:
        if not self.initialized:
            return "ENOEXEC", []
        kvm = self.vm.kvm
        ids = []
        for register in sorted(kvm.registers, key=lambda r: (r["class"] != "fw", r["index"])):
            reg_id = register["ids"][kvm.arch]
            if kvm.decide("list", reg_id, self.names(reg_id))["result"]["listed"]:
                ids.append(reg_id)
        return None, ids

    def run(self) -> dict[str, Any]:
        if not self.initialized:
            return {"errno": "ENOEXEC"}
        self.vm.has_run = not self.vm.kvm.quirks.run_does_not_count
        return self._stopped() or {"ok": True}

    def _stopped(self) -> dict[str, Any] | None:
        """The outcome of KVM_RUN when the power tables keep this vcpu out of the guest."""
        rule = self.vm.kvm.decide_power("run", self.power_names("run", []))
        caller = rule["result"]["caller"]
        return {"mp-state": caller} if caller != "runnable" else None

    # -- the guest's view ------------------------------------------------------------------

    def psci_version(self) -> int:
        if "psci-0.2" not in self.features:
            return 0x1
        selected: int = self.stored.get("psci-version", 0)
        if self.vm.kvm.quirks.psci_version_call_ignores_selection:
            return self.vm.kvm.psci_latest
        return selected or self.vm.kvm.psci_latest

    def call(
        self,
        function_id: int,
        args: list[int],
        answer: int = NOT_SUPPORTED_U64,
        results: int = 1,
    ) -> dict[str, int | str]:
        """The guest's HVC: x0 as a signed value (with `results` > 1, x1 onwards too), a
        system event exit, or, when the VM's SMCCC filter forwards the call to userspace, the
        hypercall exit with userspace's `answer` in x0. The filter comes before the feature
        bitmaps, as in KVM."""
        outcome = self._answer(function_id, args, answer)
        if results > 1 and "x0" in outcome:
            outcome.update(self._more_results(function_id, args, outcome, results))
        return outcome

    def _answer(self, function_id: int, args: list[int], answer: int) -> dict[str, int | str]:
        if not self.initialized:
            return {"errno": "ENOEXEC"}
        self.vm.has_run = True
        stopped = self._stopped()
        if stopped:
            return stopped
        if self.reset_pending:
            raise SpecGap(
                "a vcpu CPU_ON started runs from the call's entry point, not the agent's code"
            )
        outcome = self._guest_call(function_id, args, answer)
        if "exit" in outcome:  # a system event: the power tables say what becomes of every vcpu
            self.vm.system_event(str(outcome["exit"]), self)
        return outcome

    def _guest_call(self, function_id: int, args: list[int], answer: int) -> dict[str, Any]:
        filtered = self.vm.filter_call(function_id, answer)
        if filtered is not None:
            return filtered
        tables, kvm = self.vm.kvm.tables, self.vm.kvm
        psci = tables["psci"]
        for function in tables["smccc"]["functions"]:
            if function["function-id"] == function_id and kvm.covers(function):
                return {"x0": self._smccc(function, args)}
        version = self.psci_version()
        if version == 0x1:  # a PSCI 0.1 vcpu knows only KVM's own ids
            for function in psci["kvm-psci-0.1"]:
                if function["function-id"] == function_id and function["handled"]:
                    return self._power(function["name"], args, smc32=False)
            return {"x0": NOT_SUPPORTED}
        for function in psci["functions"]:
            if function_id in function["ids"].values():
                return self._psci(function, version, args, function_id)
        return {"x0": NOT_SUPPORTED}

    def power_names(self, op: str, words: list[int]) -> dict[str, Value]:
        """A value for each name a power rule about `op` may use, for this vcpu's call with
        x1 to x3 = `words` as KVM reads them: exactly those spec/power_names.py declares
        (tests/test_rule_names.py checks)."""
        kvm, vm = self.vm.kvm, self.vm
        if op == "run":
            return {"vcpu.on": self.mp_state_name != "stopped"}
        if op == "cpu-on":
            psci_02 = "psci-0.2" in self.features
            return cpu_on_names(kvm.mpidr, words[0], psci_02, vm.vcpus_on())
        if op == "affinity-info":
            return affinity_info_names(kvm.mpidr, words[0], words[1], vm.vcpus_on())
        return {}

    def _power(self, op: str, args: list[int], smc32: bool) -> dict[str, Any]:
        """CPU_ON, CPU_OFF or AFFINITY_INFO, decided by the power tables over the VM's vcpus."""
        kvm, vm = self.vm.kvm, self.vm
        words = narrowed(args, smc32)
        result = kvm.decide_power(op, self.power_names(op, words))["result"]
        if result["target"] is not None:
            wanted = words[0] & kvm.mpidr.hwid_mask
            target = next(v for v in vm.vcpus if kvm.mpidr.affinity(v.index) == wanted)
            target.mp_state_name = str(result["target"])
            target.reset_pending = True
        if result["caller"] is not None:
            self.mp_state_name = str(result["caller"])
            if result["caller"] == "stopped":  # the call does not return to the guest
                return {"mp-state": self.mp_state_name}
        return {"x0": int(result["x0"])}

    def _more_results(
        self, function_id: int, args: list[int], outcome: Mapping[str, Any], results: int
    ) -> dict[str, int]:
        """x1 onwards: the spec's four-register answer of the call, the zeros of a refusal, or,
        for a call forwarded to userspace (which writes only x0), the arguments the guest
        left in x1 up."""
        tables = self.vm.kvm.tables
        if "hypercall" in outcome:
            words = [*args, 0, 0, 0]
        elif outcome["x0"] == tables["smccc"]["not-supported"][0]:
            words = [int(w) for w in tables["smccc"]["not-supported"][1:]]
        else:
            function = next(
                (f for f in tables["smccc"]["functions"] if f["function-id"] == function_id), None
            )
            row = self._call_row(function, args) if function is not None else None
            if row is not None:
                return {f"x{i}": _word(row["answers"][i]) & U64 for i in range(1, results)}
            if function is not None and function["register-results"]:
                return self._register_results(function, results)
            if function is None or function["answers"] is None:
                raise SpecGap(f"the spec fixes no x1-x3 for the call {function_id:#x}")
            words = [int(w) for w in function["answers"][1:]]
        return {f"x{i}": words[i - 1] & U64 for i in range(1, results)}

    def _handled(self, function: Mapping[str, Any], version: int) -> bool:
        kvm_side = function["kvm"]
        needs = None if kvm_side is None else kvm_side["needs-capability"]
        if kvm_side is None or (needs is not None and needs not in self.vm.enabled):
            return False
        from_version = next(
            v["encoded"]
            for v in self.vm.kvm.tables["psci"]["versions"]
            if v["name"] == kvm_side["from"]
        )
        return version >= from_version and self.vm.kvm.covers(kvm_side)

    def _psci(
        self, function: Mapping[str, Any], version: int, args: list[int], function_id: int
    ) -> dict[str, Any]:
        if not self._handled(function, version):
            return {"x0": NOT_SUPPORTED}
        if any(r["op"] == function["name"] for r in self.vm.kvm.power_rules):
            return self._power(function["name"], args, function_id == function["ids"]["smc32"])
        if function["name"] == "psci-version":
            return {"x0": version}
        if function["name"] == "psci-features":
            return {"x0": self._features(args[0] if args else 0, version)}
        for call in function["kvm"]["calls"]:
            if list(call["args"]) == list(args[: len(call["args"])]):
                if call["x0"] is not None:
                    return {"x0": int(call["x0"])}
                outcome: dict[str, int | str] = {"exit": str(call["exit"])}
                if call["flags"]:  # a system event's flags are reported only when set
                    outcome["flags"] = int(call["flags"])
                return outcome
        raise SpecGap(f"the spec does not say what KVM does with {function['name']}{args}")

    def _features(self, queried: int, version: int) -> int:
        tables = self.vm.kvm.tables
        for function in tables["psci"]["functions"]:
            if queried in function["ids"].values():
                check = 0x10003 if self.vm.kvm.quirks.features_ignores_selected_version else version
                return (
                    int(function["kvm"]["features"])
                    if self._handled(function, check)
                    else NOT_SUPPORTED
                )
        for function in tables["smccc"]["functions"]:
            if function["function-id"] == queried and function["psci-features"] is not None:
                return int(function["psci-features"])
        return NOT_SUPPORTED

    def _smccc(self, function: Mapping[str, Any], args: list[int]) -> int:
        if function["name"] == "smccc-arch-features":
            return self._arch_features(args[0] if args else 0)
        if not self._service_enabled(function["service"]):
            return NOT_SUPPORTED
        kvm = self.vm.kvm
        if any(r["op"] == function["name"] for r in kvm.stolen_time_rules):
            names = self.stolen_time_names(function["name"], argument=args[0] if args else 0)
            return _signed(
                self._stolen_time_answer(kvm.decide_stolen_time(function["name"], names))
            )
        row = self._call_row(function, args)
        if row is not None:
            return _word(row["answers"][0])
        register = function["returns-register"]
        if register is not None and any(r["name"] == register for r in self.vm.kvm.registers):
            return int(self.stored[register])  # the VM's value, as KVM reads it for the guest
        if function["returns"] is None:
            raise SpecGap(f"the spec fixes no result for {function['name']}")
        return int(function["returns"])

    def _register_results(self, function: Mapping[str, Any], results: int) -> dict[str, int]:
        """x1 onwards of a call whose later registers hold the VM's value of a register
        (KVM_FEATURES' x2: VENDOR_HYP_BMAP_2): 0 where the release lacks it, and elsewhere."""
        words = [0, 0, 0]
        present = {r["name"] for r in self.vm.kvm.registers}
        for held in function["register-results"]:
            if held["name"] in present:
                words[int(held["register"]) - 1] = self.stored[str(held["name"])]
        return {f"x{i}": words[i - 1] & U64 for i in range(1, results)}

    def _call_row(self, function: Mapping[str, Any], args: list[int]) -> Mapping[str, Any] | None:
        """The spec's x0 to x3 for a call with `args`, for a function answered by arguments;
        None for one that is not."""
        rows = [c for c in function["calls"] if self.vm.kvm.covers(c)]
        if not rows:
            return None
        for row in rows:
            if list(row["args"]) == [*args, 0, 0, 0][: len(row["args"])]:
                found: Mapping[str, Any] = row
                return found
        raise SpecGap(f"the spec does not say what KVM answers {function['name']}{args}")

    def _service_enabled(self, service: str) -> bool:
        kvm = self.vm.kvm
        for register in kvm.registers:
            for bit in register["bits"]:
                if bit["service"] == service and kvm.covers(bit):
                    return kvm.quirks.bitmap_gate_ignored or bool(
                        self.stored[register["name"]] >> bit["bit"] & 1
                    )
        return True  # not gated by any bitmap in this release

    def _arch_features(self, queried: int) -> int:
        kvm = self.vm.kvm
        for function in kvm.tables["smccc"]["functions"]:
            if function["function-id"] != queried:
                continue
            register = next((r for r in kvm.registers if r["name"] == function["name"]), None)
            if register is None:  # not a workaround: the function's own answer, if offered
                offered = function["arch-features"] is not None and kvm.covers(function)
                if offered and self._service_enabled(function["service"]):
                    return int(function["arch-features"])
                break
            level = kvm.host[register["name"]]
            answer = next(v["arch-features"] for v in register["values"] if v["name"] == level)
            if answer is None:
                raise SpecGap(f"no ARCH_FEATURES answer for {register['name']} at {level}")
            return int(answer)
        return NOT_SUPPORTED
