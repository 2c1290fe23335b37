"""migrate-check answers the seed thread's migration questions, and reads real dumps."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from kvm_fwspec.conformance.analyses import migration
from kvm_fwspec.spec.loader import load_spec
from tests.checkout import KVM_FWSPEC

SPEC = load_spec()


def run(source: str, target: str) -> migration.MigrationReport:
    src = migration.side_from_profile(SPEC, source)
    dst = migration.side_from_profile(SPEC, target)
    return migration.check(SPEC, src, dst.profile, dst.features)


def verdict(report: migration.MigrationReport, name: str) -> migration.RegisterVerdict:
    return next(r for r in report.registers if r.name == name)


def test_psci_0_2_source_to_psci_0_1_target_fails() -> None:
    report = run("4.17:mitigated:psci-0.2", "4.17:mitigated:none")
    psci = verdict(report, "psci-version")
    assert (psci.restored, psci.errno, psci.rule) == (
        False,
        "EINVAL",
        "psci-version/set/reject-0.2-or-later-without-psci-0.2",
    )
    assert not report.safe and "with KVM_ARM_VCPU_PSCI_0_2" in report.advice[0]


def test_psci_0_1_source_to_psci_0_2_target_fails() -> None:
    report = run("4.17:mitigated:none", "4.17:mitigated:psci-0.2")
    psci = verdict(report, "psci-version")
    assert (psci.value, psci.errno, psci.rule) == (
        0x1,
        "EINVAL",
        "psci-version/set/reject-0.1-with-psci-0.2",
    )


def test_psci_1_0_source_to_a_kernel_without_the_register_fails() -> None:
    report = run("4.17", "4.16")
    psci = verdict(report, "psci-version")
    assert (psci.errno, psci.rule) == ("EINVAL", "fw/set/unknown-register-einval")
    assert "does not have psci-version" in report.advice[0]


def test_newer_default_needs_pinning_and_pinning_makes_it_safe(tmp_path: Path) -> None:
    report = run("6.13", "6.12")
    assert verdict(report, "psci-version").rule == "psci-version/set/reject-unimplemented"
    assert report.advice[0].startswith("pin the PSCI version to 1.1 (0x10001) on the source")
    dump = tmp_path / "pinned.json"
    result = subprocess.run(
        [*KVM_FWSPEC, "dump", "--kernel", "6.13", "--psci-version", "0x10001",
         "--output", str(dump)], capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    check = subprocess.run(
        [*KVM_FWSPEC, "migrate-check", "--from", str(dump), "--to", "6.12", "--json"],
        capture_output=True, text=True,
    )  # fmt: skip
    answer = json.loads(check.stdout)
    assert check.returncode == 0 and answer["safe"] and answer["guest-changes"] == []


def test_same_kernel_same_host_is_safe() -> None:
    report = run("6.12:mitigated:psci-0.2", "6.12:mitigated:psci-0.2")
    assert report.safe and report.registers and all(r.restored for r in report.registers)


def test_a_weaker_target_host_fails_the_workaround_restore() -> None:
    report = run("6.12:unaffected", "6.12:vulnerable")
    assert (
        verdict(report, "smccc-arch-workaround-1").rule
        == "smccc-arch-workaround-1/set/reject-above-host"
    )
    assert not report.safe


def test_new_services_on_the_target_are_a_change_the_guest_sees() -> None:
    report = run("5.10", "6.1")
    assert report.restored and not report.safe
    assert "service trng: absent -> available" in report.changes
    assert "service kvm-ptp: absent -> available" in report.changes


def test_dump_lists_registers_in_reg_list_order(tmp_path: Path) -> None:
    out = tmp_path / "dump.json"
    result = subprocess.run([*KVM_FWSPEC, "dump", "--kernel", "7.2", "--output", str(out)],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr
    ids = [r["id"] for r in json.loads(out.read_text())["registers"]]
    assert ids == [0x6030000000140000 + i for i in range(4)] + [
        0x6030000000160000 + i for i in range(4)
    ]
