"""The VMM judge on evidence made by hand: each verdict can come out `broken`, a refusal is
attributed register by register, and a firmware answer unlike migrate-check's is flagged."""

from __future__ import annotations

import dataclasses
import json
import struct
from pathlib import Path

import pytest

from kvm_fwspec.conformance.adapters.agent import AgentError
from kvm_fwspec.conformance.analyses import migration
from kvm_fwspec.conformance.analyses.migration_stream import StreamError, cpregs
from kvm_fwspec.conformance.analyses.vmm_evidence import Load, Saved
from kvm_fwspec.conformance.analyses.vmm_judge import (
    Matrix,
    expected_answers,
    guest_calls,
    judge,
    qemu_named,
    register_name,
    vcpu_mismatch,
)
from kvm_fwspec.conformance.analyses.vmm_report import summary, write_report
from kvm_fwspec.conformance.campaigns import vmm_certification
from kvm_fwspec.conformance.commands.cli import main
from kvm_fwspec.spec.loader import load_spec

SPEC = load_spec()
CALLS = guest_calls(SPEC)
PSCI_VERSION = 0x6030000000140000
BMAP_2 = 0x6030000000160003
ID_REG = 0x603000000013C020  # ID_AA64PFR0_EL1: op0 3, op1 0, CRn 0, CRm 4, op2 0


def firmware(profile: str) -> dict[int, int]:
    """What a VMM saves of a fresh VM of `profile`, as migrate-check models it."""
    return dict(migration.side_from_profile(SPEC, profile).registers)


def saved(kernel: str, registers: dict[int, int], **changes: object) -> Saved:
    """A save of a fresh VM of `kernel`, whose guest answered as the spec says it does."""
    side = migration.side_from_profile(SPEC, f"{kernel}.y")
    view = migration.check(SPEC, side, side.profile, migration.FEATURES).guest_before
    answers = expected_answers(SPEC, CALLS, view)
    before = [answers[c.label] if answers[c.label] is not None else 0 for c in CALLS]
    base = Saved(kernel, f"{kernel}.0-test", "unstable", None, "11.1.3", before,
                 {**registers, ID_REG: 0x11}, sorted({*registers, ID_REG}), ["psci-0.2"],
                 {"cpu.kvm-psci-version": "Set PSCI version. Valid values are 0.1, 1.0"}, b"")  # fmt: skip
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


SOURCE = saved("7.2", firmware("7.2.y:mitigated:psci-0.2"))
TARGET = saved("5.10", firmware("5.10.y:mitigated:psci-0.2"))


def load(answers: dict[int, str | None], completed: bool, **changes: object) -> Load:
    base = Load(SOURCE, "5.10", completed, "" if completed else "load of migration failed",
                list(SOURCE.before) if completed else None,
                dict(SOURCE.registers) if completed else None, TARGET.listed,
                {i: answers.get(i) for i in SOURCE.registers})  # fmt: skip
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def real_answers() -> dict[int, str | None]:
    """The answers 5.10 gives a 7.2 stream (seen on real KVM): PSCI 1.3 is EINVAL, the
    bitmaps are unknown, and so is the ID register's value."""
    answers: dict[int, str | None] = {PSCI_VERSION: "EINVAL", ID_REG: "EINVAL"}
    answers |= {i: "ENOENT" for i in SOURCE.registers if i >> 16 & 0xFFFF == 0x16}
    return answers


def verdict(judgement: object, rule: str) -> tuple[str, str]:
    found = next(v for v in judgement.verdicts if v.rule == rule)  # type: ignore[attr-defined]
    return found.verdict, found.evidence


def test_a_refusal_is_attributed_register_by_register() -> None:
    judged = judge(SPEC, load(real_answers(), completed=False), TARGET, CALLS)
    named = {b.name: (b.firmware, b.answer, b.rule) for b in judged.refused}
    assert named["KVM_REG_ARM_PSCI_VERSION"] == (
        True,
        "EINVAL",
        "psci-version/set/reject-unimplemented",
    )
    assert named["KVM_REG_ARM_VENDOR_HYP_BMAP_2"] == (
        True,
        "ENOENT",
        "fw-feat-bmap/set/unknown-register",
    )
    assert named["sysreg S3_0_C0_C4_0"] == (False, "EINVAL", "")
    assert judged.disagreements == []
    assert verdict(judged, "vmm/restore/refusal-fails-migration")[0] == "holds"
    assert verdict(judged, "vmm/restore/guest-firmware-unchanged")[0] == "not-applicable"


def test_completing_despite_a_refused_firmware_register_breaks_the_rule() -> None:
    judged = judge(SPEC, load(real_answers(), completed=True), TARGET, CALLS)
    state, evidence = verdict(judged, "vmm/restore/refusal-fails-migration")
    assert state == "broken" and "KVM_REG_ARM_PSCI_VERSION (EINVAL)" in evidence


def test_a_firmware_answer_unlike_migrate_check_is_a_disagreement() -> None:
    answers = real_answers() | {PSCI_VERSION: None}  # as if 5.10 took PSCI 1.3
    judged = judge(SPEC, load(answers, completed=False), TARGET, CALLS)
    assert [(b.name, b.answer, b.predicted) for b in judged.disagreements] == [
        ("KVM_REG_ARM_PSCI_VERSION", "accepted", "EINVAL")
    ]


def test_a_guest_answer_unlike_migrate_check_is_named_and_fails_the_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A guest whose ARCH_FEATURES(WORKAROUND_1) answered 1 where the spec gives its host 0:
    the judgement names the answer, the report counts it, and vmm-certify exits 1."""
    index = [c.label for c in CALLS].index("ARCH_FEATURES(smccc-arch-workaround-1)")
    before = list(SOURCE.before)
    before[index] = 1
    source = dataclasses.replace(SOURCE, before=before)
    judged = judge(SPEC, load({}, completed=False, source=source), TARGET, CALLS)
    assert judged.answer_disagreements == [
        f"before the save, ARCH_FEATURES(smccc-arch-workaround-1): spec {SOURCE.before[index]}, "
        "guest 1"
    ]
    assert judged.answers_compared == len(CALLS)
    matrix = Matrix(["7.2", "5.10"], ["unstable"], [source, TARGET], [judged], [])
    monkeypatch.setattr(vmm_certification, "run_matrix", lambda *_: matrix)
    assert main(["vmm-certify", "--kernels", "7.2", "--report", str(tmp_path / "vmm")]) == 1
    out = capsys.readouterr().out
    assert f"guest answers unlike migrate-check: 1 of {len(CALLS)}" in out
    document = json.loads((tmp_path / "vmm" / "vmm-report.json").read_text())
    assert document["migrations"][0]["predictions-agree"] is False


def test_a_guest_that_sees_a_change_breaks_the_unchanged_rule() -> None:
    after = list(SOURCE.before)
    after[0] = 0x10000
    judged = judge(SPEC, load({}, completed=True, after=after), TARGET, CALLS)
    state, evidence = verdict(judged, "vmm/restore/guest-firmware-unchanged")
    assert state == "broken" and "PSCI_VERSION: 0x10003 -> 0x10000" in evidence
    assert verdict(judged, "vmm/restore/before-first-run")[0] == "holds"


def test_a_value_the_target_does_not_hold_breaks_restore_before_first_run() -> None:
    held = dict(SOURCE.registers) | {PSCI_VERSION: 0x10000}
    judged = judge(SPEC, load({}, completed=True, held=held), TARGET, CALLS)
    state, evidence = verdict(judged, "vmm/restore/before-first-run")
    assert state == "broken" and "KVM_REG_ARM_PSCI_VERSION holds 65536" in evidence


def test_a_listed_firmware_register_left_out_of_the_stream_breaks_the_save_rule() -> None:
    registers = {i: v for i, v in SOURCE.registers.items() if i != BMAP_2}
    source = dataclasses.replace(SOURCE, registers=registers)
    judged = judge(SPEC, dataclasses.replace(load({}, False), source=source), TARGET, CALLS)
    state, evidence = verdict(judged, "vmm/save/listed-firmware-registers")
    assert state == "broken" and "KVM_REG_ARM_VENDOR_HYP_BMAP_2" in evidence


@pytest.mark.parametrize(("seen", "stream", "expected"), [
    (0x10000, 0x10000, "holds"), (0x10003, 0x10000, "broken"), (0x10000, 0x10003, "broken"),
])  # fmt: skip
def test_the_psci_setting_must_reach_the_guest_and_the_stream(
    seen: int, stream: int, expected: str
) -> None:
    before = [seen, *SOURCE.before[1:]]
    source = dataclasses.replace(SOURCE, setting="1.0", before=before,
                                 registers=SOURCE.registers | {PSCI_VERSION: stream})  # fmt: skip
    judged = judge(SPEC, dataclasses.replace(load({}, False), source=source), TARGET, CALLS)
    assert verdict(judged, "vmm/setting/applied-through-registers")[0] == expected


def test_a_vmm_without_the_setting_is_not_applicable_with_its_properties() -> None:
    source = dataclasses.replace(SOURCE, properties={"cpu.psci-conduit": ""})
    judged = judge(SPEC, dataclasses.replace(load({}, False), source=source), TARGET, CALLS)
    state, evidence = verdict(judged, "vmm/setting/applied-through-registers")
    assert state == "not-applicable" and "cpu.psci-conduit" in evidence


def test_registers_are_named_by_the_spec_or_their_encoding() -> None:
    assert register_name(SPEC, PSCI_VERSION) == "KVM_REG_ARM_PSCI_VERSION"
    assert register_name(SPEC, ID_REG) == "sysreg S3_0_C0_C4_0"
    assert register_name(SPEC, 0x6020000000110001) == "demux 0x0001"


def test_guest_calls_cover_psci_and_each_service_once() -> None:
    labels = [c.label for c in CALLS]
    assert len(labels) == len(set(labels))
    assert labels[0] == "PSCI_VERSION"
    psci_ids = sum(len(f.ids) for f in SPEC.psci_functions)
    assert len(labels) == 1 + psci_ids + 7


def stream_with(ids: list[int], values: list[int], lead: bytes = b"QEVM\x00\x00\x00\x03") -> bytes:
    count = struct.pack(">I", len(ids))
    return lead + b"\x01" * 37 + count + struct.pack(f">{len(ids)}Q", *ids) + struct.pack(
        f">{len(values)}Q", *values) + b"\x00" * 64  # fmt: skip


def test_the_stream_parser_finds_the_register_list() -> None:
    ids = [0x6030000000130000 + n for n in range(10)] + [PSCI_VERSION]
    values = [*range(10), 0x10003]
    assert cpregs(stream_with(ids, values)) == dict(zip(ids, values, strict=True))


def test_the_stream_parser_refuses_what_it_cannot_read() -> None:
    ids = [0x6030000000130000 + n for n in range(10)]
    with pytest.raises(StreamError, match="no QEVM magic"):
        cpregs(stream_with(ids, ids, lead=b"JUNK"))
    with pytest.raises(StreamError, match="found 0"):
        cpregs(stream_with(list(reversed(ids)), ids))  # not ascending: not a register list
    twice = stream_with(ids, ids) + stream_with(ids, ids, lead=b"")
    with pytest.raises(StreamError, match="found 2"):
        cpregs(twice)


def test_a_zero_bitmap_left_behind_on_a_target_without_it_changes_nothing() -> None:
    """QEMU 11 skips VENDOR_HYP_BMAP_2 = 0 on a kernel before 6.15 (seen on real KVM): the
    target has none of its services either, so the guest's firmware is the same."""
    registers = SOURCE.registers | {PSCI_VERSION: 0x10001, BMAP_2: 0}
    source = dataclasses.replace(SOURCE, registers=registers, before=[0x10001, *SOURCE.before[1:]])
    target = saved("6.12", firmware("6.12.y:mitigated:psci-0.2"))
    moved = dataclasses.replace(load({BMAP_2: "ENOENT"}, True), source=source, target="6.12",
                                after=list(source.before), held=dict(registers),
                                target_listed=target.listed)  # fmt: skip
    judged = judge(SPEC, moved, target, CALLS)
    state, evidence = verdict(judged, "vmm/restore/refusal-fails-migration")
    assert state == "holds" and "changes nothing the guest can see" in evidence
    assert verdict(judged, "vmm/restore/before-first-run")[0] == "holds"
    # The same tolerance on a guest that then sees another PSCI version breaks the rule.
    changed = dataclasses.replace(moved, after=[0x10000, *source.before[1:]])
    assert (
        verdict(judge(SPEC, changed, target, CALLS), "vmm/restore/refusal-fails-migration")[0]
        == "broken"
    )


def test_the_registers_qemu_names_are_read_from_its_messages() -> None:
    said = (
        "qemu-system-aarch64: Could not set register fw reg 0 to 10003 (is 10000)\n"
        "qemu-system-aarch64: handle_cpreg_only_in_incoming_stream: fw feat reg 2 in the "
        "incoming stream but unknown on the destination: fail migration\n"
        "qemu-system-aarch64: Could not set register fw reg 9: unknown to KVM\n"
        "qemu-system-aarch64: load of migration failed: Invalid argument\n"
    )
    assert qemu_named(said) == ["fw feat reg 2", "fw reg 0", "fw reg 9"]
    assert qemu_named("qemu-system-aarch64: Failed to load cpu:cpreg_vmstate_array_len") == []


def test_the_report_shows_each_build_side_by_side_and_every_verdict(tmp_path: Path) -> None:
    refused = judge(SPEC, load(real_answers(), completed=False), TARGET, CALLS)
    bookworm = dataclasses.replace(SOURCE, build="bookworm", qemu="7.2.22", properties={})
    old = judge(
        SPEC, dataclasses.replace(load(real_answers(), False), source=bookworm), TARGET, CALLS
    )
    matrix = Matrix(
        ["5.10", "7.2"], ["bookworm", "unstable"], [SOURCE, bookworm, TARGET], [old, refused], []
    )
    paths = write_report(SPEC, matrix, tmp_path, 12.0)
    text = paths[1].read_text()
    firmware = "PSCI_VERSION, STD_BMAP, STD_HYP_BMAP, VENDOR_HYP_BMAP, VENDOR_HYP_BMAP_2"
    assert f"| 7.2 -> 5.10 | refused: {firmware}, 1 other -- QEMU names no register |" in text
    assert "| `vmm/restore/refusal-fails-migration` | 1 | 0 | 0 |" in text
    assert "the guest saw before the save: PSCI_VERSION 0x10003" in text
    document = json.loads(paths[0].read_text())
    assert [m["build"] for m in document["migrations"]] == ["bookworm", "unstable"]
    assert document["migrations"][1]["predictions-agree"] is True
    assert summary(matrix)[1].startswith(
        "unstable (QEMU 11.1.3): 1 migrations, 0 completed; rules broken: none"
    )


def test_a_probe_vcpu_unlike_qemus_is_reported() -> None:
    assert vcpu_mismatch(SPEC, SOURCE) == ""
    core_and_sve = [0x6030000000100000, 0x6080000000150000]  # never in QEMU's list
    assert (
        vcpu_mismatch(SPEC, dataclasses.replace(SOURCE, listed=SOURCE.listed + core_and_sve)) == ""
    )
    pmu = 0x603000000013DCE0  # PMCR_EL0, listed when the vcpu has a PMU
    mismatch = vcpu_mismatch(
        SPEC, dataclasses.replace(SOURCE, listed=sorted([*SOURCE.listed, pmu]))
    )
    assert "only ours ['0x603000000013dce0']" in mismatch


def test_a_host_that_fails_mid_run_is_one_line_and_writes_no_report(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def failing(*_: object) -> None:
        raise AgentError("the guest's QEMU exited with -9")

    monkeypatch.setattr(vmm_certification, "run_matrix", failing)
    assert main(["vmm-certify", "--kernels", "6.12", "--report", str(tmp_path / "vmm")]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "kvm-fwspec: vmm-certify could not finish, no report written: the guest's QEMU exited with -9"
    ]
    assert not (tmp_path / "vmm").exists()
