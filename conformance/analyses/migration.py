"""Will a VM's firmware registers restore on another KVM, and what would its guest notice?

The answer to the review thread of the PSCI version selection API: restoring each saved
firmware register on the target is decided by the target's rules (an errno and the rule that
gives it), and the guest's view of its firmware (PSCI version, PSCI_FEATURES answers, the
hypercall services it can call, SMCCC_ARCH_FEATURES of the workarounds and of PV time, and
the answers of SMCCC_VERSION, TRNG_VERSION and KVM_FEATURES) is compared before and after.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

# FEATURES and parse_features moved to the dump module (which both writes and reads the
# features) and stay importable from here, where the VMM judge and older callers find them.
from kvm_fwspec.conformance.analyses.dump import FEATURES as FEATURES
from kvm_fwspec.conformance.analyses.dump import parse_features as parse_features
from kvm_fwspec.conformance.analyses.dump import parse_psci_value
from kvm_fwspec.conformance.analyses.dump_file import read_dump
from kvm_fwspec.conformance.analyses.migration_filter import VmmRange, recreate, routed
from kvm_fwspec.conformance.guest.program import DATA_BASE
from kvm_fwspec.conformance.oracle import NOT_SUPPORTED, Access, Oracle
from kvm_fwspec.conformance.power_oracle import PowerCall, PowerOracle
from kvm_fwspec.conformance.profile import LEVELS_PREFIX, Profile, resolve_profile
from kvm_fwspec.conformance.stolen_time_oracle import StolenTimeOracle
from kvm_fwspec.spec.errors import UsageError
from kvm_fwspec.spec.model import Capability, Register, Spec

Verdict = Literal["safe", "changes", "fails"]
SIDE_SYNTAX = "KERNEL[:HOST[:FEATURES[:PSCI]]]"


@dataclass(frozen=True)
class Side:
    """One VM's saved firmware registers, in KVM_GET_REG_LIST order, and where it ran."""

    profile: Profile
    features: tuple[str, ...]
    registers: dict[int, int]
    origin: str


@dataclass(frozen=True)
class RegisterVerdict:
    name: str
    reg_id: int
    value: int
    restored: bool
    errno: str | None
    rule: str
    why: str


@dataclass(frozen=True)
class FilterVerdict:
    """One range of the VMM's SMCCC filter, set again on the target, and the rule that decided."""

    range: VmmRange
    restored: bool
    errno: str | None
    rule: str
    why: str


@dataclass(frozen=True)
class VmmSetting:
    """What the VMM did to the source's VM besides its registers (a capability it enabled with
    KVM_ENABLE_CAP, the vcpus' stolen-time addresses), done again on the target before the
    guest runs: whether the target's KVM takes it."""

    name: str
    c_name: str
    restored: bool
    why: str


@dataclass
class MigrationReport:
    source: Side
    target: Profile
    target_features: tuple[str, ...]
    registers: list[RegisterVerdict] = field(default_factory=list)
    filter_ranges: list[FilterVerdict] = field(default_factory=list)  # the VMM's, on the target
    stolen_time: bool = False  # the VMM gives each vcpu a stolen-time structure, on both sides
    settings: list[VmmSetting] = field(default_factory=list)  # done again on the target
    # The spec's names of the numbers some answers are (AFFINITY_INFO's states and errors)
    answer_names: dict[str, dict[int, str]] = field(default_factory=dict)
    guest_before: dict[str, Any] = field(default_factory=dict)
    guest_after: dict[str, Any] = field(default_factory=dict)
    advice: list[str] = field(default_factory=list)

    @property
    def restored(self) -> bool:
        return (
            all(r.restored for r in self.registers)
            and all(f.restored for f in self.filter_ranges)
            and all(c.restored for c in self.settings)
        )

    @property
    def changes(self) -> list[str]:
        """What the guest would notice, one line each (empty: nothing changes behind its back)."""
        return view_changes(self.guest_before, self.guest_after, self.answer_names)

    @property
    def safe(self) -> bool:
        return self.restored and not self.changes

    @property
    def seen_only_in_smccc_answers(self) -> bool:
        """Every register restores and the guest's only changes are SMCCC answers: a restore
        a view of PSCI and services alone would have called safe."""
        changes = self.changes
        return self.restored and bool(changes) and all(c.startswith(SMCCC_ANSWERS) for c in changes)

    @property
    def verdict(self) -> Verdict:
        """safe: every register restores and the guest sees nothing change; changes: every
        register restores but the guest's firmware changes under it; fails: one does not."""
        return "safe" if self.safe else "changes" if self.restored else "fails"

    def to_json(self) -> dict[str, Any]:
        return {
            "source": {
                "profile": self.source.profile.label,
                "features": list(self.source.features),
                "origin": self.source.origin,
            },
            "target": {"profile": self.target.label, "features": list(self.target_features)},
            "verdict": self.verdict,
            "safe": self.safe,
            "restored": self.restored,
            "registers": [
                {
                    "name": r.name,
                    "id": r.reg_id,
                    "value": r.value,
                    "restored": r.restored,
                    "errno": r.errno,
                    "rule": r.rule,
                    "why": r.why,
                }
                for r in self.registers
            ],
            "smccc-filter": [
                {
                    "first": r.range.first,
                    "last": r.range.last,
                    "action": r.range.action,
                    "set": r.restored,
                    "errno": r.errno,
                    "rule": r.rule,
                }
                for r in self.filter_ranges
            ],
            "stolen-time": self.stolen_time,
            "settings": [
                {"name": c.name, "c-name": c.c_name, "restored": c.restored, "why": c.why}
                for c in self.settings
            ],
            "guest-before": self.guest_before,
            "guest-after": self.guest_after,
            "guest-changes": [
                {
                    "answer": key,
                    "before": self.guest_before.get(key),
                    "after": self.guest_after.get(key),
                }
                for key in changed_answers(self.guest_before, self.guest_after)
            ],
            "advice": self.advice,
        }


def changed_answers(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """The keys of a guest view whose answers differ, sorted (absent on one side counts)."""
    return [key for key in sorted(set(before) | set(after)) if before.get(key) != after.get(key)]


def view_changes(
    before: Mapping[str, Any],
    after: Mapping[str, Any],
    names: Mapping[str, Mapping[int, str]] | None = None,
) -> list[str]:
    """`KEY: before -> after` for each answer of a guest view that differs, sorted by key; an
    answer with a name in `names` (by key) is followed by it: `0 (PSCI_0_2_AFFINITY_LEVEL_ON)`."""
    named = names or {}

    def shown(key: str, value: Any) -> str:
        name = named.get(key, {}).get(value) if isinstance(value, int) else None
        return f"{show_value(value)} ({name})" if name else show_value(value)

    return [
        f"{key}: {shown(key, before.get(key))} -> {shown(key, after.get(key))}"
        for key in changed_answers(before, after)
    ]


def answer_names(spec: Spec) -> dict[str, dict[int, str]]:
    """AFFINITY_INFO's answers by their uapi names: the affinity states, and PSCI's errors."""
    levels = next(g for g in spec.psci_constant_groups if g.name == "affinity-level")
    codes = {c.value: c.c_name for c in spec.psci_return_codes if c.value < 0}
    return {AFFINITY_KEY: codes | {c.value: c.c_name for c in levels.constants}}


def show_value(value: Any) -> str:
    if isinstance(value, int):
        return f"{value:#x}" if value > 9 else str(value)
    return "absent" if value is None else str(value)


@dataclass(frozen=True, kw_only=True)
class SideName:
    """A side as the user wrote it, `KERNEL[:HOST[:FEATURES[:PSCI]]]`, split into its fields
    (empty: the default)."""

    kernel: str
    host: str
    features: str
    psci: str


def parse_side(text: str) -> SideName:
    """Split a side. HOST may be `levels:A/B/C`, whose own colon is read with it; PSCI is a
    version to pin, written as the register holds it (0x10001). More fields are refused."""
    fields = text.split(":")
    kernel, rest = fields[0], fields[1:]
    host = ""
    if rest:
        host, rest = rest[0], rest[1:]
        if f"{host}:" == LEVELS_PREFIX:
            if not rest or not rest[0]:
                raise UsageError(
                    f"side '{text}': a {LEVELS_PREFIX} host needs its levels, {LEVELS_PREFIX}A/B/C"
                )
            host, rest = f"{LEVELS_PREFIX}{rest[0]}", rest[1:]
    if len(rest) > 2:
        raise UsageError(
            f"side '{text}' has {len(rest) - 2} field(s) too many: a side is {SIDE_SYNTAX}"
        )
    features, psci = ([*rest, "", ""])[:2]
    return SideName(kernel=kernel, host=host, features=features, psci=psci)


def side_from_profile(spec: Spec, text: str, arch: str = "arm64") -> Side:
    """`KERNEL[:HOST[:FEATURES[:PSCI]]]`, e.g. `6.13.y:mitigated:psci-0.2:0x10001`: a fresh VM
    of that KVM (its PSCI version pinned first, if PSCI is given, as a VMM pins it before the
    guest boots), saved as a VMM would save it (every register KVM lists, read with GET)."""
    name = parse_side(text)
    profile = resolve_profile(spec, name.kernel, name.host or "mitigated", arch)
    features = parse_features(name.features or "psci-0.2")
    oracle = Oracle(spec, profile)
    stored = oracle.reset_values()
    origin = f"a fresh VM of {profile.label}"
    if name.psci:
        pin = parse_psci_value(name.psci, f"side '{text}': PSCI pin")
        _pin(spec, oracle, profile, features, stored, pin)
        origin += f" with PSCI pinned to {pin:#x}"
    registers = {}
    for register in _listed(oracle):
        reg_id = register.ids[profile.arch]
        decision = oracle.decide(
            Access.before_first_run(
                "get",
                reg_id,
                bool(features),
                stored,
            )
        )
        if decision is not None and decision.value is not None:
            registers[reg_id] = decision.value
    return Side(profile, features, registers, origin)


def _pin(
    spec: Spec,
    oracle: Oracle,
    profile: Profile,
    features: tuple[str, ...],
    stored: dict[str, int],
    pin: int,
) -> None:
    """Write the PSCI version as the VMM would, into `stored`; a KVM that refuses it cannot
    be the side asked for."""
    register = next(r for r in spec.registers if r.kind == "psci-version")
    if register not in oracle.registers:
        raise UsageError(f"{profile.label} has no {register.c_name} to pin the PSCI version with")
    decision = oracle.decide(
        Access.before_first_run(
            "set",
            register.ids[profile.arch],
            bool(features),
            stored,
            pin,
        )
    )
    if decision is None or decision.errno is not None or decision.undefined is not None:
        outcome = "no defined result" if decision is None else decision.errno or "undefined"
        rule = f" ({decision.rule.id})" if decision is not None else ""
        raise UsageError(f"{profile.label} refuses PSCI pin {pin:#x}: {outcome}{rule}")
    if decision.store is not None:
        stored[register.name] = decision.store


def side_from_dump(spec: Spec, path: Path) -> Side:
    """A file written by `kvm-fwspec dump`, checked whole first (analyses.dump_file.read_dump)."""
    saved = read_dump(spec, path)
    return Side(saved.profile, saved.features, saved.registers, f"{path} ({saved.implementation})")


def _listed(oracle: Oracle) -> list[Register]:
    """The registers KVM_GET_REG_LIST shows, in its order (firmware class, then bitmaps)."""
    return sorted(oracle.registers, key=lambda r: (r.register_class.value, r.index))


def check(
    spec: Spec,
    source: Side,
    target: Profile,
    target_features: tuple[str, ...],
    vmm_filter: tuple[VmmRange, ...] = (),
    stolen_time: bool = False,
    capabilities: tuple[Capability, ...] = (),
) -> MigrationReport:
    """The migration of `source` to a fresh VM of `target`, whose VMM, if it filters SMCCC
    calls (`vmm_filter`), sets the same ranges there before the guest runs, and, if it gives
    each vcpu a stolen-time structure (`stolen_time`), sets its address there again, and
    enables there the `capabilities` it enabled on the source (KVM_ENABLE_CAP)."""
    report = MigrationReport(
        source, target, target_features, stolen_time=stolen_time, answer_names=answer_names(spec)
    )
    oracle = Oracle(spec, target)
    stored = oracle.reset_values()
    psci_02 = bool(target_features)
    by_id = {r.ids[source.profile.arch]: r for r in spec.registers if source.profile.arch in r.ids}
    for reg_id, value in source.registers.items():
        register = by_id.get(reg_id)
        name = register.name if register else f"{reg_id:#018x}"
        decision = oracle.decide(
            Access.before_first_run(
                "set",
                reg_id,
                psci_02,
                stored,
                value,
            )
        )
        if decision is None:
            report.registers.append(
                RegisterVerdict(
                    name,
                    reg_id,
                    value,
                    False,
                    None,
                    "",
                    f"the spec has no rule for this id on {target.label}",
                )
            )
            continue
        restored = decision.errno is None and decision.undefined is None
        if decision.store is not None and register is not None:
            stored[register.name] = decision.store
        report.registers.append(
            RegisterVerdict(
                name,
                reg_id,
                value,
                restored,
                decision.errno,
                decision.rule.id,
                " ".join(decision.rule.doc.split()),
            )
        )
    source_filter, on_source = recreate(spec, source.profile, vmm_filter)
    refused = [(r, rule) for r, rule in on_source if rule.errno is not None]
    if refused:
        r, rule = refused[0]
        errno = rule.errno.name if rule.errno else ""
        raise UsageError(
            f"--filter {r.label.removeprefix('smccc-filter ')}: the source, {source.profile.label}, "
            f"refuses it ({errno}, {rule.id}), so no VM there has this filter"
        )
    lacking = [c for c in capabilities if not source.profile.has(c.lifetime)]
    if lacking:
        raise UsageError(
            f"--enable-cap {lacking[0].name}: the source, {source.profile.label}, cannot enable "
            f"{lacking[0].c_name} (since {lacking[0].lifetime.since}), so no VM there has it"
        )
    pv_time = spec.stolen_time.service.lifetime
    if stolen_time and not source.profile.has(pv_time):
        raise UsageError(
            f"--stolen-time: the source, {source.profile.label}, has no PV time (since "
            f"{pv_time.since}), so no vcpu there has a stolen-time address"
        )
    report.settings = [_capability_verdict(target, c) for c in capabilities]
    if stolen_time:
        report.settings.append(_stolen_time_verdict(spec, target))
    target_filter, on_target = recreate(spec, target, vmm_filter)
    report.filter_ranges = [
        FilterVerdict(
            r,
            rule.errno is None,
            rule.errno.name if rule.errno else None,
            rule.id,
            " ".join(rule.doc.split()),
        )
        for r, rule in on_target
    ]
    report.guest_before = routed(
        spec,
        source.profile,
        source_filter,
        guest_view(
            spec,
            source.profile,
            source.features,
            dict(_stored_of(spec, source)),
            stolen_time=stolen_time,
            enabled=frozenset(c.name for c in capabilities),
        ),
    )
    report.guest_after = routed(
        spec,
        target,
        target_filter,
        guest_view(
            spec,
            target,
            target_features,
            stored,
            stolen_time=any(c.restored for c in report.settings if c.name == STOLEN_TIME),
            enabled=frozenset(c.name for c in report.settings if c.restored),
        ),
    )
    report.advice = advise(spec, report)
    return report


def _capability_verdict(target: Profile, capability: Capability) -> VmmSetting:
    if target.has(capability.lifetime):
        return VmmSetting(
            capability.name, capability.c_name, True, f"enabled since {capability.lifetime.since}"
        )
    return VmmSetting(
        capability.name,
        capability.c_name,
        False,
        f"KVM_ENABLE_CAP is EINVAL: {target.label} lacks it (since {capability.lifetime.since})",
    )


STOLEN_TIME = "stolen-time"  # the settings' name for the vcpus' stolen-time addresses


def _stolen_time_verdict(spec: Spec, target: Profile) -> VmmSetting:
    """The VMM setting each vcpu's stolen-time address again: the target's set rule for an
    address in guest memory on a vcpu without one, as the VMM makes it."""
    oracle = StolenTimeOracle(spec, target)
    rule = oracle.set(None, spec.stolen_time.attr.value, VMM_ADDRESS)
    c_name = spec.stolen_time.attr.c_name
    if rule.ok:
        return VmmSetting(STOLEN_TIME, c_name, True, f"set again on every vcpu ({rule.id})")
    errno = rule.errno.name if rule.errno else "refused"
    return VmmSetting(
        STOLEN_TIME, c_name, False, f"KVM_SET_DEVICE_ATTR is {errno} on {target.label} ({rule.id})"
    )


def _stored_of(spec: Spec, side: Side) -> dict[str, int]:
    """The VM-wide values a saved side holds, by register name (the rest at their reset)."""
    oracle = Oracle(spec, side.profile)
    stored = oracle.reset_values()
    for register in oracle.registers:
        value = side.registers.get(register.ids[side.profile.arch])
        if value is not None and register.storage == "vm":
            stored[register.name] = value
    return stored


UNDEFINED = "not recorded by the spec"
# Where the VMM puts a vcpu's stolen-time structure: any address KVM accepts (its tables ask
# only whether one is set), here the agent protocol's data region.
VMM_ADDRESS = DATA_BASE
# MPIDR_EL1's RES1 bit, which a guest reads set in its own MPIDR_EL1 and which lies outside
# MPIDR_HWID_BITMASK: the target of AFFINITY_INFO in the guest view.
MPIDR_RES1 = 1 << 31
AFFINITY_KEY = f"AFFINITY_INFO({MPIDR_RES1:#x})"
# What a guest asks to learn whether it has stolen time: PV_TIME_FEATURES(PV_TIME_ST).
STOLEN_TIME_KEY = "PV_TIME_FEATURES(pv-time-st)"
# The view's keys of the calls' own answers, beside PSCI_VERSION, PSCI_FEATURES and services.
SMCCC_ANSWERS = ("ARCH_FEATURES(", "CALL(", AFFINITY_KEY, STOLEN_TIME_KEY)


def guest_view(
    spec: Spec,
    profile: Profile,
    features: tuple[str, ...],
    stored: dict[str, int],
    levels: Mapping[str, int] | None = None,
    stolen_time: bool = False,
    enabled: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """What the guest can observe of its firmware: PSCI_VERSION and PSCI_FEATURES, the
    services it may call, SMCCC_ARCH_FEATURES of each call whose answer the spec gives (the
    workarounds at the host's `levels`, by default its profile's), and the answer of each call
    that returns a fixed value or the VM's own register (SMCCC_VERSION, TRNG_VERSION,
    KVM_FEATURES). An answer the spec leaves open is UNDEFINED, which differs from any
    answer: a restore is not called safe on what the spec does not know. AFFINITY_INFO of the
    guest's vcpu 0 named by its whole MPIDR_EL1, the RES1 bit 31 set (AFFINITY_KEY), shows
    whether KVM masks a PSCI target's reserved bits or refuses them. PV_TIME_FEATURES of
    PV_TIME_ST (STOLEN_TIME_KEY) shows whether the guest has stolen time: only where its VMM
    gave the vcpu a stolen-time structure (`stolen_time`) and KVM offers PV time. PSCI_FEATURES
    counts the capabilities the VMM `enabled` on the VM (SYSTEM_SUSPEND needs its own)."""
    oracle = Oracle(spec, profile)
    if levels is None:
        levels = {name: value.value for name, value in profile.host.levels.items()}
    view: dict[str, Any] = {}
    version = 0x1
    if features:
        version = stored.get("psci-version") or oracle.psci_latest
    view["PSCI_VERSION"] = version
    for function in spec.psci_functions:
        fid = next(iter(function.ids.values()))
        view[f"PSCI_FEATURES({function.name})"] = oracle.psci_features(fid, version, enabled)
    if profile.arch == "arm64":  # the MPIDR layout the power tables name vcpus by
        view[AFFINITY_KEY] = _own_affinity(spec, profile, oracle, version)
    for service in spec.services:
        if service.name == "arch":
            continue
        view[f"service {service.name}"] = (
            "available" if _service(profile, oracle, service.name, stored) else "absent"
        )
    view.update(_smccc_answers(spec, profile, oracle, stored, levels))
    view[STOLEN_TIME_KEY] = _stolen_time_answer(spec, profile, oracle, stored, stolen_time)
    return view


def _stolen_time_answer(
    spec: Spec, profile: Profile, oracle: Oracle, stored: dict[str, int], stolen_time: bool
) -> int:
    """PV_TIME_FEATURES(PV_TIME_ST) for a vcpu whose VMM set a stolen-time address, or not."""
    service = spec.stolen_time.service.name
    if not _service(profile, oracle, service, stored):
        return NOT_SUPPORTED
    st = next(f.function_id for f in spec.smccc_functions if f.name == "pv-time-st")
    address = VMM_ADDRESS if stolen_time else None
    answer = StolenTimeOracle(spec, profile).call("pv-time-features", address, st).value
    assert answer is not None  # every pv-time-features rule answers in x0
    return answer


def _own_affinity(spec: Spec, profile: Profile, oracle: Oracle, version: int) -> int:
    """What AFFINITY_INFO(MPIDR_RES1 | vcpu 0's affinity, level 0) answers vcpu 0 itself."""
    function = next(f for f in spec.psci_functions if f.name == "affinity-info")
    if not oracle.psci_handled(function, version):
        return NOT_SUPPORTED
    power = PowerOracle(spec, profile)
    target = MPIDR_RES1 | spec.vcpu_power.mpidr_affinity(0)
    rule = power.call(power.initial(1, ()), 0, PowerCall("affinity-info", (target, 0), smc32=True))
    assert rule.x0 is not None  # every affinity-info rule answers in x0
    return rule.x0


def _smccc_answers(
    spec: Spec, profile: Profile, oracle: Oracle, stored: dict[str, int], levels: Mapping[str, int]
) -> dict[str, Any]:
    """ARCH_FEATURES(NAME) and CALL(NAME) answers, for every SMCCC function the spec gives one
    in some release (NOT_SUPPORTED where this release lacks the call or its service is off)."""
    workarounds = {r.name: r for r in spec.registers if r.kind == "level"}
    view: dict[str, Any] = {}
    for function in spec.smccc_functions:
        offered = profile.has(function.lifetime) and _service(
            profile, oracle, function.service.name, stored
        )
        register = workarounds.get(function.name)
        if register is not None:
            view[f"ARCH_FEATURES({function.name})"] = _workaround_answer(
                profile, register, levels, offered
            )
        elif function.arch_features is not None:
            view[f"ARCH_FEATURES({function.name})"] = (
                function.arch_features if offered else NOT_SUPPORTED
            )
        if function.returns is None and function.returns_register is None:
            continue
        if not offered:
            view[f"CALL({function.name})"] = NOT_SUPPORTED
        elif function.returns_register in stored:
            view[f"CALL({function.name})"] = stored[function.returns_register]
        else:
            view[f"CALL({function.name})"] = function.returns
    return view


def _workaround_answer(
    profile: Profile,
    register: Register,
    levels: Mapping[str, int],
    offered: bool,
) -> int | str:
    """SMCCC_ARCH_FEATURES of a workaround: its host level's answer, where the spec gives it."""
    if not offered:
        return NOT_SUPPORTED
    if register.arch_features_since is None or profile.release < register.arch_features_since:
        return UNDEFINED  # KVM answered from the host, but the spec records it only since
    reported = levels.get(register.name)
    if reported is None:
        return UNDEFINED
    field = next((f for f in register.layout if f.name == "level"), None)
    number = field.extract(reported) if field is not None else reported
    level = next((v for v in register.values if v.value == number), None)
    if level is None or level.arch_features is None:
        return UNDEFINED
    return level.arch_features


def _service(profile: Profile, oracle: Oracle, service: str, stored: dict[str, int]) -> bool:
    declared = next(s for s in oracle.spec.smccc_functions if s.service.name == service)
    return profile.has(declared.lifetime) and oracle.bitmap_allows(service, stored)


def advise(spec: Spec, report: MigrationReport) -> list[str]:
    """What the VMM should do instead, for each failure and each change the guest would see."""
    advice = []
    source, target = report.source.profile, report.target
    for verdict in report.registers:
        if verdict.restored:
            continue
        if (
            verdict.rule.endswith("unknown-register")
            or verdict.rule.endswith("unknown-register-einval")
            or not verdict.rule
        ):
            advice.append(
                f"{target.label} does not have {verdict.name}; migrate to a kernel that does, or do not save it "
                "on a source whose guest never relied on it"
            )
        elif verdict.name == "psci-version" and verdict.rule.endswith("reject-unimplemented"):
            both = [
                v
                for v in spec.psci_versions
                if v.name != "0.1" and source.has(v.lifetime) and target.has(v.lifetime)
            ]
            pin = max(both, key=lambda v: v.encoded)
            advice.append(
                f"pin the PSCI version to {pin.name} ({pin.encoded:#x}) on the source, with KVM_SET_ONE_REG "
                f"before the guest first boots: {target.label} does not implement {verdict.value:#x}"
            )
        elif verdict.name == "psci-version":
            wanted = "with" if report.source.features else "without"
            advice.append(
                f"create the target's vcpus {wanted} KVM_ARM_VCPU_PSCI_0_2, as on the source"
            )
        elif "above-host" in verdict.rule:
            advice.append(
                f"{verdict.name}: the target host offers less mitigation than the source; migrate to a host "
                "at least as well mitigated"
            )
        elif "unknown-bits" in verdict.rule:
            advice.append(
                f"{verdict.name}: clear the services {target.label} does not know on the source before the "
                "guest first boots"
            )
        else:
            advice.append(f"{verdict.name}: refused by {verdict.rule}")
    for setting in report.settings:
        if not setting.restored:
            advice.append(
                f"{setting.c_name}: {setting.why}; the VMM cannot give the guest the same VM "
                "there: migrate to a kernel that has it, or do not use it on the source"
            )
    for refused in report.filter_ranges:
        if not refused.restored:
            instead = (
                "go to KVM instead of the VMM"
                if refused.range.action == "fwd-to-user"
                else "be answered by KVM as without a filter"
            )
            name = refused.range.label
            advice.append(
                f"{name}: {target.label} refuses it ({refused.errno}, {refused.rule}); "
                f"the guest's calls in it would {instead}: migrate to a kernel with the SMCCC "
                f"filter (since {spec.smccc_filter.lifetime.since})"
                if refused.rule.endswith("/absent")
                else f"{name}: {target.label} refuses it ({refused.errno}, {refused.rule})"
            )
    if not report.changes:
        return advice
    # Said whether or not every register restores: a VMM that mends the refusals (pins the
    # PSCI version, saves fewer registers) still leaves the guest these changes.
    unknown = [c for c in report.changes if UNDEFINED in c]
    if unknown:
        sides = f"{source.label} or {target.label}"
        advice.append(
            f"{'; '.join(unknown)}: the spec does not record this answer on {sides}, so what "
            "the guest sees there is not known and the migration is not called safe"
        )
    workarounds = {f"ARCH_FEATURES({r.name})" for r in spec.registers if r.kind == "level"}
    from_host = [
        c for c in report.changes if c.split(": ", 1)[0] in workarounds and UNDEFINED not in c
    ]
    if from_host:
        advice.append(
            f"{'; '.join(from_host)}: KVM answers these from the host's own mitigation, so no "
            "register setting keeps them; migrate between hosts that report the same levels "
            "(the workaround registers' values)"
        )
    masked = [c for c in report.changes if c.startswith(AFFINITY_KEY)]
    if masked:
        check = next(
            r
            for r in spec.vcpu_power.rules
            if r.id == "psci-power/affinity-info/reserved-affinity-bits"
        )
        advice.append(
            f"{'; '.join(masked)}: KVM refuses a PSCI target with bits outside MPIDR_HWID_BITMASK "
            f"since {check.lifetime.since} ({check.id}), so a guest that passes its MPIDR_EL1 whole "
            "(RES1 bit 31 set) to CPU_ON or AFFINITY_INFO works on one side only; no register "
            "setting changes that: the guest must mask its MPIDR to the affinity fields"
        )
    lost = [c for c in report.changes if c.startswith(STOLEN_TIME_KEY)]
    if lost:
        advice.append(
            f"{'; '.join(lost)}: the guest's stolen time depends on KVM offering PV time "
            f"(since {spec.stolen_time.service.lifetime.since}, and while STD_HYP_BMAP keeps it) "
            "and on the VMM setting each vcpu's stolen-time address again on the target "
            f"(KVM_SET_DEVICE_ATTR, {spec.stolen_time.attr.c_name}), which no register carries"
        )
    explained = len(from_host) + len(unknown) + len(masked) + len(lost)
    if report.restored and explained < len(report.changes):
        advice.append(
            "the restore succeeds but the guest's firmware changes; save and restore every register the "
            "target lists, and clear new services in the target's bitmaps before the guest runs"
        )
    return advice


VERDICT_LINES: dict[Verdict, str] = {
    "safe": "SAFE",
    "changes": "RESTORES, BUT THE GUEST SEES ITS FIRMWARE CHANGE",
    "fails": "NOT SAFE: A REGISTER DOES NOT RESTORE",
}


def render(report: MigrationReport) -> str:
    lines = [
        f"migration: {report.source.origin} ({'psci-0.2' if report.source.features else 'no psci-0.2'} vcpus)"
        f" -> {report.target.label} ({'psci-0.2' if report.target_features else 'no psci-0.2'} vcpus)"
    ]
    for r in report.registers:
        outcome = "restored" if r.restored else f"FAILS with {r.errno or 'no defined result'}"
        lines.append(f"  {r.name:<26} {r.value:#x}: {outcome} ({r.rule or 'no rule'})")
    for f in report.filter_ranges:
        outcome = "set again" if f.restored else f"FAILS with {f.errno}"
        lines.append(f"  {f.range.label}: {outcome} ({f.rule})")
    for c in report.settings:
        outcome = ("done again: " if c.restored else "FAILS: ") + c.why
        lines.append(f"  {c.name} ({c.c_name}): {outcome}")
    lines.append("guest view changes:" + ("" if report.changes else " none"))
    lines += [f"  {change}" for change in report.changes]
    lines += [f"advice: {a}" for a in report.advice]
    verdict = VERDICT_LINES[report.verdict]
    if report.verdict == "fails" and all(r.restored for r in report.registers):
        verdict = (
            "NOT SAFE: THE VMM'S SMCCC FILTER CANNOT BE SET AGAIN"
            if any(not f.restored for f in report.filter_ranges)
            else "NOT SAFE: THE VMM CANNOT SET THE VM UP AGAIN"
        )
    lines.append(f"verdict: {verdict}")
    return "\n".join(lines)
