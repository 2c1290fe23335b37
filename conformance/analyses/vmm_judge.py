"""Judge one real migration by the spec's VMM rules, from the evidence the lab collected.

For the firmware registers the target's real answers are set beside migrate-check's
prediction for the pair; a refusal is attributed register by register (firmware ones with the
KVM rule that makes the target refuse them, the others as what they are), and every VMM rule
gets a verdict with its evidence: `holds`, `broken` or `not-applicable`, never silence.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kvm_fwspec.conformance.analyses import migration, vmm_evidence
from kvm_fwspec.conformance.analyses.vmm_evidence import Load, Saved
from kvm_fwspec.conformance.oracle import NOT_SUPPORTED
from kvm_fwspec.conformance.profile import Profile, observed_host, resolve_profile
from kvm_fwspec.spec.decode import find_register
from kvm_fwspec.spec.model import Spec

PSCI_SETTING = f"cpu.{vmm_evidence.PSCI_SETTING}"  # as QEMU's cpu properties name it
# QEMU's cpu property for stolen time. Its default, `auto`, gives every vcpu a stolen-time
# structure where KVM offers PV time (kvm_arm_steal_time_finalize, virt machines since 5.2):
# a QEMU that has the property gives its guests stolen time.
STEAL_TIME = "cpu.kvm-steal-time"


@dataclass(frozen=True)
class GuestCall:
    """One call the tiny guest makes each round, how the report names it, and the key of
    migrate-check's guest view that predicts its answer."""

    label: str
    function_id: int
    argument: int
    view_key: str


def guest_calls(spec: Spec) -> list[GuestCall]:
    """What the guest reports of its firmware: PSCI_VERSION, PSCI_FEATURES of every PSCI
    function id, SMCCC_VERSION, ARCH_FEATURES of each workaround, and one discovery call per
    hypercall service a bitmap can hide (TRNG, PV time, KVM's vendor services)."""
    psci = {f.name: f for f in spec.psci_functions}
    smccc = {f.name: f for f in spec.smccc_functions}
    calls = [GuestCall("PSCI_VERSION", psci["psci-version"].ids["smc32"], 0, "PSCI_VERSION")]
    for function in spec.psci_functions:
        for convention, fid in sorted(function.ids.items()):
            calls.append(GuestCall(f"PSCI_FEATURES({function.name}/{convention})",
                                   psci["psci-features"].ids["smc32"], fid,
                                   f"PSCI_FEATURES({function.name})"))  # fmt: skip
    calls.append(GuestCall("SMCCC_VERSION", smccc["smccc-version"].function_id, 0,
                           "CALL(smccc-version)"))  # fmt: skip
    for name in ("smccc-arch-workaround-1", "smccc-arch-workaround-2", "smccc-arch-workaround-3"):
        calls.append(GuestCall(f"ARCH_FEATURES({name})", smccc["smccc-arch-features"].function_id,
                               smccc[name].function_id, f"ARCH_FEATURES({name})"))  # fmt: skip
    calls.append(GuestCall("TRNG_VERSION", smccc["trng-version"].function_id, 0,
                           "CALL(trng-version)"))  # fmt: skip
    calls.append(GuestCall(migration.STOLEN_TIME_KEY, smccc["pv-time-features"].function_id,
                           smccc["pv-time-st"].function_id, migration.STOLEN_TIME_KEY))  # fmt: skip
    calls.append(GuestCall("KVM_FEATURES", smccc["vendor-hyp-kvm-features"].function_id, 0,
                           "CALL(vendor-hyp-kvm-features)"))  # fmt: skip
    return calls


@dataclass(frozen=True)
class Blame:
    """A register the target refused, with the target KVM's own answer."""

    reg_id: int
    name: str
    firmware: bool
    answer: str  # the target KVM's errno, or why QEMU refused it before asking KVM
    rule: str  # the spec's KVM rule for a firmware register ("" for the others)
    predicted: str  # migrate-check's errno for a firmware register ("accepted" if none)
    saved: int  # the value the stream carries
    target_holds: int | None  # what a fresh VM of the target holds (None: no such register)

    @property
    def agrees(self) -> bool:
        return not self.firmware or self.predicted == self.answer


@dataclass(frozen=True)
class RuleVerdict:
    rule: str
    verdict: str  # holds | broken | not-applicable
    evidence: str


@dataclass
class Judgement:
    """Everything the report says of one migration."""

    load: Load
    state: str
    predicted_changes: list[str]  # what migrate-check says the guest sees change, for the pair
    seen_before: dict[str, int]  # the guest's answer to each call, before the save
    seen_after: dict[str, int] | None  # and after the resume, if QEMU resumed it
    firmware: list[Blame] = field(default_factory=list)  # every saved firmware register
    refused: list[Blame] = field(default_factory=list)  # every register the target refused
    length_note: str = ""
    verdicts: list[RuleVerdict] = field(default_factory=list)
    # The guest's answers held to migrate-check's view of the pair: those that differ, and how
    # many were compared (an answer the spec leaves undefined is not)
    answer_disagreements: list[str] = field(default_factory=list)
    answers_compared: int = 0

    @property
    def changes(self) -> list[str]:
        """What the guest saw differently after the resume (nothing, if it never resumed)."""
        after = self.seen_after or self.seen_before
        return [f"{call}: {show(before)} -> {show(after[call])}"
                for call, before in self.seen_before.items() if after[call] != before]  # fmt: skip

    @property
    def refused_firmware(self) -> list[Blame]:
        return [b for b in self.refused if b.firmware]

    @property
    def disagreements(self) -> list[Blame]:
        """Firmware registers where real KVM answered otherwise than migrate-check predicted."""
        return [b for b in self.firmware if not b.agrees]


def state_name(setting: str | None) -> str:
    if setting is None:
        return "default"
    return "no PSCI 0.2 (PSCI 0.1)" if setting == "0.1" else f"pinned to PSCI {setting}"


def register_name(spec: Spec, reg_id: int) -> str:
    """A firmware register's spec name; otherwise its class and the architectural name of a
    system register (S<op0>_<op1>_C<crn>_C<crm>_<op2>), or its index."""
    layout = spec.layout("reg-id")
    register = find_register(spec, reg_id)
    if register is not None:
        return register.c_name
    value = layout.field("class").extract(reg_id)
    named = next((v for v in layout.field("class").values if v.value == value), None)
    index = layout.field("index").extract(reg_id)
    if named is None:
        return f"{reg_id:#018x}"
    if named.index_fields:
        parts = {f.name: f.extract(index) for f in named.index_fields}
        return (f"{named.name} S{parts['op0']}_{parts['op1']}_C{parts['crn']}_C{parts['crm']}_"
                f"{parts['op2']}")  # fmt: skip
    return f"{named.name} {index:#06x}"


def is_firmware(spec: Spec, reg_id: int) -> bool:
    layout = spec.layout("reg-id")
    value = layout.field("class").extract(reg_id)
    return any(v.firmware and v.value == value for v in layout.field("class").values)


def profile_of(spec: Spec, saved: Saved) -> Profile:
    """The spec's profile for the host that saved `saved`: its kernel's stable line and the
    workaround levels its KVM reported (the stream holds them)."""
    return profile_for(spec, saved.kernel, saved.registers)


def profile_for(spec: Spec, kernel: str, registers: Mapping[int, int]) -> Profile:
    """The profile of a host of Debian line `kernel` whose workaround registers hold what
    `registers` (a VM's, by id) says."""
    levels = {
        r.name: registers[r.ids["arm64"]]
        for r in spec.registers
        if r.kind == "level" and r.ids.get("arm64") in registers
    }
    return resolve_profile(spec, f"{kernel}.y", observed_host(spec, levels))


def predict(
    spec: Spec, saved: Saved, target: Profile, stolen_time: bool
) -> migration.MigrationReport:
    """migrate-check's report for the save's VM moved to a fresh VM of `target`, by QEMU."""
    features = () if saved.setting == "0.1" else migration.FEATURES
    source = migration.Side(profile_of(spec, saved), features,
                            {i: v for i, v in saved.registers.items() if is_firmware(spec, i)},
                            f"QEMU {saved.qemu} on {saved.uname}")  # fmt: skip
    return migration.check(spec, source, target, features, stolen_time=stolen_time)


def expected_answers(
    spec: Spec, calls: list[GuestCall], view: Mapping[str, Any]
) -> dict[str, int | None]:
    """What migrate-check's guest `view` says each call answers; None where the view leaves it
    undefined (UNDEFINED) or holds no number for it. The view's PSCI_VERSION is the guest's
    PSCI version; the call answers it only from the version KVM has the call in (0.2): a PSCI
    0.1 guest gets NOT_SUPPORTED."""
    psci_version = next(f for f in spec.psci_functions if f.name == "psci-version").kvm
    assert psci_version is not None  # KVM answers PSCI_VERSION (psci.yaml)
    expected: dict[str, int | None] = {}
    for call in calls:
        value = view.get(call.view_key)
        if not isinstance(value, int) or isinstance(value, bool):
            expected[call.label] = None
        elif call.view_key == "PSCI_VERSION" and value < psci_version.from_version.encoded:
            expected[call.label] = NOT_SUPPORTED
        else:
            expected[call.label] = value
    return expected


def compare_answers(
    spec: Spec,
    calls: list[GuestCall],
    predicted: migration.MigrationReport,
    before: Mapping[str, int],
    after: Mapping[str, int] | None,
) -> tuple[list[str], int]:
    """Each answer of the guest (before the save; after the resume, if it resumed) that
    differs from migrate-check's view of its side, and how many were compared: an answer the
    view leaves undefined is skipped, never agreed with."""
    differ, compared = [], 0
    rounds = [("before the save", before, predicted.guest_before)]
    if after is not None:
        rounds.append(("after the resume", after, predicted.guest_after))
    for when, seen, view in rounds:
        for label, expected in expected_answers(spec, calls, view).items():
            if expected is None:
                continue
            compared += 1
            if seen[label] != expected:
                differ.append(f"{when}, {label}: spec {show(expected)}, guest {show(seen[label])}")
    return differ, compared


def judge(spec: Spec, load: Load, target_default: Saved, calls: list[GuestCall]) -> Judgement:
    """`load` judged; `target_default` is the target's own save (its KVM's host levels)."""
    saved = load.source
    stolen_time = STEAL_TIME in saved.properties
    predicted = predict(spec, saved, profile_of(spec, target_default), stolen_time)
    by_id = {v.reg_id: v for v in predicted.registers}
    labels = [c.label for c in calls]
    judgement = Judgement(load, state_name(saved.setting), predicted.changes,
                          dict(zip(labels, saved.before, strict=True)),
                          dict(zip(labels, load.after, strict=True)) if load.after else None)  # fmt: skip
    for reg_id, value in sorted(saved.registers.items()):
        firmware = is_firmware(spec, reg_id)
        answer = load.answers.get(reg_id) or "accepted"
        verdict = by_id.get(reg_id)
        blame = Blame(reg_id, register_name(spec, reg_id), firmware, answer,
                      verdict.rule if verdict else "",
                      (verdict.errno or "accepted") if verdict else "", value,
                      target_default.registers.get(reg_id))  # fmt: skip
        if firmware:
            judgement.firmware.append(blame)
        if answer != "accepted":
            judgement.refused.append(blame)
    longer = len(saved.registers) - len(qemu_list(spec, load.target_listed))
    if longer > 0 and not load.completed and _version(saved.qemu) < (10, 2):
        judgement.length_note = (
            f"the stream holds {len(saved.registers)} registers, {longer} more than the target's "
            "QEMU lists; QEMU before 10.2 refuses such a stream before it looks at any register"
        )
    judgement.verdicts = _verdicts(spec, judgement)
    judgement.answer_disagreements, judgement.answers_compared = compare_answers(
        spec, calls, predicted, judgement.seen_before, judgement.seen_after
    )
    return judgement


def vcpu_mismatch(spec: Spec, saved: Saved) -> str:
    """Empty when the probe's vcpu lists exactly the registers QEMU saved, so the probe's
    answers are those QEMU's own vcpu gets; otherwise what differs."""
    ours = qemu_list(spec, saved.listed)
    if sorted(saved.registers) == ours:
        return ""
    extra = sorted(set(saved.registers) - set(ours))
    lacking = sorted(set(ours) - set(saved.registers))
    return (f"QEMU {saved.qemu} on {saved.kernel} saved {len(saved.registers)} registers, a vcpu "
            f"with {', '.join(saved.features)} lists {len(ours)}: only QEMU's "
            f"{[hex(i) for i in extra]}, only ours {[hex(i) for i in lacking]}")  # fmt: skip


def _version(qemu: str) -> tuple[int, ...]:
    return tuple(int(p) for p in qemu.split(".")[:2])


def qemu_named(error: str) -> list[str]:
    """The registers QEMU's own messages name (QEMU 10.2 and later name each one they could
    not set, and those only in the incoming stream); none before."""
    named = re.findall(r"Could not set register (.+?)(?: to |: )", error)
    named += re.findall(r":\s*([^:]+?) in the incoming stream but unknown", error)
    return sorted(set(named))


def qemu_list(spec: Spec, listed: list[int]) -> list[int]:
    """QEMU's cpreg list from KVM's: every id but those of the core and SVE classes."""
    classes = spec.layout("reg-id").field("class")
    left_out = {classes.value_named(name).value for name in ("core", "sve")}
    return [i for i in listed if classes.extract(i) not in left_out]


def show(value: int) -> str:
    return f"{value:#x}" if value > 9 else str(value)


def _verdicts(spec: Spec, judgement: Judgement) -> list[RuleVerdict]:
    load, saved = judgement.load, judgement.load.source
    return [
        _save_rule(spec, saved),
        _before_first_run(spec, load),
        _refusal_fails(judgement),
        _unchanged(judgement),
        _setting(spec, judgement),
    ]


def _save_rule(spec: Spec, saved: Saved) -> RuleVerdict:
    listed = [i for i in saved.listed if is_firmware(spec, i)]
    missing = [i for i in listed if i not in saved.registers]
    rule = "vmm/save/listed-firmware-registers"
    if missing:
        names = ", ".join(f"{register_name(spec, i)} ({i:#x})" for i in missing)
        return RuleVerdict(rule, "broken", f"{saved.uname}'s KVM lists {names}; the stream "
                           f"QEMU {saved.qemu} saved does not carry it")  # fmt: skip
    return RuleVerdict(rule, "holds", f"the stream carries all {len(listed)} firmware registers "
                       f"{saved.uname}'s KVM lists")  # fmt: skip


def _before_first_run(spec: Spec, load: Load) -> RuleVerdict:
    rule = "vmm/restore/before-first-run"
    if not load.completed or load.held is None:
        return RuleVerdict(rule, "not-applicable", "QEMU did not complete the migration")
    saved = {i: v for i, v in load.source.registers.items()
             if is_firmware(spec, i) and i in load.target_listed}  # fmt: skip
    differ = [f"{register_name(spec, i)} holds {load.held.get(i, 'nothing')} not {v}"
              for i, v in saved.items() if load.held.get(i) != v]  # fmt: skip
    if differ:
        return RuleVerdict(
            rule, "broken", "after the resume the target's KVM: " + "; ".join(differ)
        )
    return RuleVerdict(rule, "holds", f"after the resume the target's KVM holds all {len(saved)} "
                       "saved firmware values it has (QEMU saved the VM again on the target)")  # fmt: skip


def _refusal_fails(judgement: Judgement) -> RuleVerdict:
    rule = "vmm/restore/refusal-fails-migration"
    refused = judgement.refused_firmware
    if not refused:
        return RuleVerdict(
            rule, "not-applicable", "the target's KVM accepts every saved firmware value"
        )
    names = ", ".join(f"{b.name} ({b.answer})" for b in refused)
    if not judgement.load.completed:
        return RuleVerdict(rule, "holds", f"the target refuses {names}; QEMU failed the migration")
    if not judgement.changes and not judgement.predicted_changes:
        return RuleVerdict(rule, "holds", f"QEMU left {names} behind and completed the migration; "
                           "that changes nothing the guest can see: its answers after the resume "
                           "equal those before, and so does migrate-check's view of its firmware")  # fmt: skip
    seen = "; ".join(judgement.changes or judgement.predicted_changes)
    return RuleVerdict(rule, "broken", f"the target refuses {names}, yet QEMU completed the "
                       f"migration and resumed the guest, whose firmware changes: {seen}")  # fmt: skip


def _unchanged(judgement: Judgement) -> RuleVerdict:
    rule = "vmm/restore/guest-firmware-unchanged"
    if not judgement.load.completed:
        return RuleVerdict(rule, "not-applicable", "QEMU did not complete the migration")
    if judgement.changes:
        return RuleVerdict(rule, "broken", "QEMU reported the migration complete; the guest then "
                           "saw " + "; ".join(judgement.changes))  # fmt: skip
    return RuleVerdict(rule, "holds", "the guest's answers after the resume equal those before it")


def _setting(spec: Spec, judgement: Judgement) -> RuleVerdict:
    rule = "vmm/setting/applied-through-registers"
    saved = judgement.load.source
    if PSCI_SETTING not in saved.properties:
        offered = [p for p in saved.properties if "psci" in p or "bmap" in p]
        return RuleVerdict(rule, "not-applicable", f"QEMU {saved.qemu} offers no setting for the "
                           f"PSCI version or the bitmaps (its PSCI properties: {offered or 'none'})")  # fmt: skip
    if saved.setting is None:
        return RuleVerdict(rule, "not-applicable", "the setting was left at QEMU's default")
    wanted = next(v.encoded for v in spec.psci_versions if v.name == saved.setting)
    psci_version = next(r for r in spec.registers if r.kind == "psci-version").ids["arm64"]
    stream = saved.registers.get(psci_version)
    seen = judgement.seen_before["PSCI_VERSION"]
    guest_wanted = wanted if saved.setting != "0.1" else -1  # PSCI 0.1 has no PSCI_VERSION call
    evidence = (f"{PSCI_SETTING}={saved.setting}: the guest's PSCI_VERSION answered "
                f"{show(seen)}, the stream's KVM_REG_ARM_PSCI_VERSION holds {show(stream or 0)}")  # fmt: skip
    holds = seen == guest_wanted and stream == wanted
    return RuleVerdict(rule, "holds" if holds else "broken", evidence)


def to_json(judgement: Judgement) -> dict[str, Any]:
    load = judgement.load
    return {
        "build": load.source.build,
        "qemu": load.source.qemu,
        "source": load.source.kernel,
        "source-uname": load.source.uname,
        "state": judgement.state,
        "target": load.target,
        "completed": load.completed,
        "qemu-error": load.qemu_error.strip().splitlines()[-12:],
        "qemu-named": qemu_named(load.qemu_error),
        "guest-before": judgement.seen_before,
        "guest-after": judgement.seen_after,
        "guest-changes": judgement.changes,
        "predicted-guest-changes": judgement.predicted_changes,
        "refused": [_blame(b) for b in judgement.refused],
        "firmware": [_blame(b) for b in judgement.firmware],
        "length-note": judgement.length_note,
        "verdicts": [
            {"rule": v.rule, "verdict": v.verdict, "evidence": v.evidence}
            for v in judgement.verdicts
        ],
        "answer-disagreements": judgement.answer_disagreements,
        "answers-compared": judgement.answers_compared,
        "predictions-agree": not judgement.disagreements and not judgement.answer_disagreements,
    }


def _blame(blame: Blame) -> dict[str, Any]:
    return {"id": f"{blame.reg_id:#018x}", "name": blame.name, "firmware": blame.firmware,
            "answer": blame.answer, "rule": blame.rule, "predicted": blame.predicted,
            "saved": blame.saved, "target-holds": blame.target_holds}  # fmt: skip


@dataclass
class Matrix:
    """A whole certification: every save, every migration's judgement, and the probe vcpus
    that did not list QEMU's registers."""

    kernels: list[str]
    builds: list[str]
    saves: list[Saved]
    judgements: list[Judgement]
    vcpu_mismatches: list[str]  # saves whose probe vcpu did not list QEMU's registers

    @property
    def unames(self) -> dict[str, str]:
        """Each kernel line's running kernel, as its guest host reported it."""
        return {s.kernel: s.uname for s in self.saves}

    @property
    def qemus(self) -> dict[str, str]:
        """Each build's QEMU version, as QEMU's QMP greeting gave it."""
        return {s.build: s.qemu for s in self.saves}
