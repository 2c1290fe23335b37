"""QEMU's save and restore between real kernels, judged as `kvm-fwspec vmm-certify` judges it:
the register list QEMU saves, the registers each refusal is down to (which QEMU 7.2 never
names and QEMU 11 does), QEMU 11's PSCI setting, and a tolerated register left behind."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from kvm_fwspec.conformance.analyses.vmm_evidence import Saved
from kvm_fwspec.conformance.analyses.vmm_judge import (
    Judgement,
    guest_calls,
    judge,
    qemu_named,
    vcpu_mismatch,
)
from kvm_fwspec.conformance.lab.qemu_adapter import default_cache
from kvm_fwspec.conformance.lab.vmm_lab import Lab
from kvm_fwspec.conformance.oracle import Oracle
from kvm_fwspec.conformance.profile import resolve_profile
from kvm_fwspec.spec.loader import load_spec

pytestmark = pytest.mark.lab  # QEMU builds migrating guests between real kernels

SPEC = load_spec()
CALLS = guest_calls(SPEC)
PSCI_VERSION = 0x6030000000140000


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    calls = [(c.function_id, c.argument) for c in CALLS]
    running = Lab(["5.10", "6.12", "7.2"], ["bookworm", "unstable"], calls, default_cache())
    yield running
    running.close()


@pytest.fixture(scope="module")
def defaults(lab: Lab) -> dict[tuple[str, str], Saved]:
    return {
        (k, b): lab.save(k, b) for k in ("5.10", "6.12", "7.2") for b in ("bookworm", "unstable")
    }


def moved(lab: Lab, defaults: dict[tuple[str, str], Saved], saved: Saved, target: str) -> Judgement:
    return judge(SPEC, lab.load(saved, target), defaults[(target, saved.build)], CALLS)


def test_qemu_saves_every_register_kvm_lists_but_core_and_sve(
    defaults: dict[tuple[str, str], Saved],
) -> None:
    for saved in defaults.values():
        assert vcpu_mismatch(SPEC, saved) == ""  # and so the probe's vcpu is QEMU's
        assert {"psci-0.2", "pmu-v3"} <= set(saved.features)
        latest = Oracle(SPEC, resolve_profile(SPEC, f"{saved.kernel}.y", "mitigated")).psci_latest
        assert saved.registers[PSCI_VERSION] == saved.before[0] == latest


def test_the_same_kernel_control_resumes_the_guest_unchanged(
    lab: Lab, defaults: dict[tuple[str, str], Saved]
) -> None:
    judged = moved(lab, defaults, defaults[("6.12", "bookworm")], "6.12")
    assert judged.load.completed and judged.changes == [] and judged.refused == []
    assert {v.rule: v.verdict for v in judged.verdicts} == {
        "vmm/save/listed-firmware-registers": "holds",
        "vmm/restore/before-first-run": "holds",
        "vmm/restore/refusal-fails-migration": "not-applicable",
        "vmm/restore/guest-firmware-unchanged": "holds",
        "vmm/setting/applied-through-registers": "not-applicable",
    }


def test_qemu_7_refuses_without_naming_a_register_and_the_report_names_them(
    lab: Lab, defaults: dict[tuple[str, str], Saved]
) -> None:

    judged = moved(lab, defaults, defaults[("7.2", "bookworm")], "5.10")
    assert not judged.load.completed
    assert "Failed to load cpu:cpreg_vmstate_array_len" in judged.load.qemu_error
    assert qemu_named(judged.load.qemu_error) == []
    assert "QEMU before 10.2 refuses such a stream" in judged.length_note
    firmware = {b.name: (b.answer, b.rule) for b in judged.refused if b.firmware}
    assert firmware["KVM_REG_ARM_PSCI_VERSION"] == (
        "EINVAL",
        "psci-version/set/reject-unimplemented",
    )
    assert firmware["KVM_REG_ARM_STD_BMAP"] == ("ENOENT", "fw-feat-bmap/set/unknown-register")
    assert any(not b.firmware for b in judged.refused)  # ID and cache registers too
    assert judged.disagreements == []


def test_qemu_11_names_the_registers_the_report_names(
    lab: Lab, defaults: dict[tuple[str, str], Saved]
) -> None:
    judged = moved(lab, defaults, defaults[("7.2", "unstable")], "5.10")
    assert not judged.load.completed
    said = set(re.findall(r"Could not set register fw reg (\d+) to (\w+)", judged.load.qemu_error))
    assert said == {("0", "10003")}  # PSCI 1.3, which 5.10 does not implement
    assert "fw reg 0" in qemu_named(judged.load.qemu_error)
    refused_fw = {b.reg_id for b in judged.refused if b.firmware and b.answer == "EINVAL"}
    assert refused_fw == {PSCI_VERSION}
    unknown = re.findall(
        r"fw feat reg (\d+) in the incoming stream but unknown", judged.load.qemu_error
    )
    unknown_ids = {0x6030000000160000 + int(n) for n in unknown}
    assert unknown_ids and unknown_ids <= {b.reg_id for b in judged.refused if b.answer == "ENOENT"}
    assert judged.disagreements == []


def test_qemu_11_pins_the_psci_version_and_tolerates_a_zero_bitmap(
    lab: Lab, defaults: dict[tuple[str, str], Saved]
) -> None:
    pinned = lab.save("7.2", "unstable", "1.1")
    assert pinned.before[0] == pinned.registers[PSCI_VERSION] == 0x10001
    judged = moved(lab, defaults, pinned, "6.12")
    verdicts = {v.rule: v for v in judged.verdicts}
    assert verdicts["vmm/setting/applied-through-registers"].verdict == "holds"
    assert judged.load.completed and judged.changes == []
    assert [(b.name, b.answer, b.saved) for b in judged.refused] == [
        ("KVM_REG_ARM_VENDOR_HYP_BMAP_2", "ENOENT", 0)
    ]
    assert verdicts["vmm/restore/refusal-fails-migration"].verdict == "holds"
    assert (
        "changes nothing the guest can see"
        in verdicts["vmm/restore/refusal-fails-migration"].evidence
    )


def test_a_setting_the_target_cannot_honour_stops_qemu_before_the_load(
    lab: Lab, defaults: dict[tuple[str, str], Saved]
) -> None:
    pinned = lab.save("7.2", "unstable", "1.3")
    judged = moved(lab, defaults, pinned, "6.12")
    assert not judged.load.completed
    assert "does not support PSCI version 1.3" in judged.load.qemu_error
    assert [b.name for b in judged.refused if b.firmware and b.answer == "EINVAL"] == [
        "KVM_REG_ARM_PSCI_VERSION"
    ]
