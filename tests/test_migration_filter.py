"""migrate-check --filter: a VM whose VMM takes SMCCC calls away from KVM (6.4's filter) is
judged on what its guest then sees, and on whether the target takes the same ranges."""

from __future__ import annotations

import json

import pytest

from kvm_fwspec.conformance.analyses import migration
from kvm_fwspec.conformance.analyses.migration_filter import FORWARDED, parse_filter
from kvm_fwspec.spec.errors import UsageError
from kvm_fwspec.spec.loader import load_spec
from tests.test_migration import migrate_check

SPEC = load_spec()
PSCI_TO_VMM = "0x84000000-0x8400001f=fwd-to-user"


def run(source: str, target: str, ranges: str) -> migration.MigrationReport:
    src = migration.side_from_profile(SPEC, source)
    dst = migration.side_from_profile(SPEC, target)
    return migration.check(SPEC, src, dst.profile, dst.features, parse_filter(SPEC, ranges))


def test_the_guest_of_a_vmm_that_answers_psci_sees_the_vmm_not_kvm() -> None:
    report = run("6.12", "7.2", PSCI_TO_VMM)
    assert report.guest_before["PSCI_VERSION"] == FORWARDED
    assert report.guest_before["PSCI_FEATURES(cpu-on)"] == FORWARDED
    assert report.guest_before["CALL(smccc-version)"] == 0x10001  # outside the range: KVM's
    assert [(f.range.label, f.restored, f.rule) for f in report.filter_ranges] == [
        (f"smccc-filter {PSCI_TO_VMM}", True, "smccc-filter/set/accepted")
    ]
    assert report.safe


def test_a_target_without_the_filter_cannot_take_the_vm() -> None:
    report = run("6.12", "6.1", PSCI_TO_VMM)
    assert not report.restored
    [refused] = report.filter_ranges
    assert (refused.errno, refused.rule) == ("EINVAL", "smccc-filter/set/absent")
    assert any("migrate to a kernel with the SMCCC filter (since 6.4)" in a for a in report.advice)
    result = migrate_check("--from", "6.12", "--to", "6.1", "--filter", PSCI_TO_VMM)
    assert result.returncode == 1
    assert f"  smccc-filter {PSCI_TO_VMM}: FAILS with EINVAL (smccc-filter/set/absent)" in (
        result.stdout.splitlines()
    )
    as_json = json.loads(
        migrate_check("--from", "6.12", "--to", "6.1", "--filter", PSCI_TO_VMM, "--json").stdout
    )
    assert as_json["smccc-filter"] == [
        {"first": 0x84000000, "last": 0x8400001F, "action": "fwd-to-user", "set": False,
         "errno": "EINVAL", "rule": "smccc-filter/set/absent"}
    ]  # fmt: skip


def test_a_denied_range_is_not_supported_on_both_sides() -> None:
    report = run("6.12", "7.2", "0x84000000-0x8400001f=deny")
    assert report.guest_before["PSCI_VERSION"] == report.guest_after["PSCI_VERSION"] == -1


@pytest.mark.parametrize(
    ("source", "ranges", "stderr"),
    [
        ("6.1", PSCI_TO_VMM,
         f"kvm-fwspec: --filter {PSCI_TO_VMM}: the source, arm64 6.1 host=mitigated, refuses it "
         "(EINVAL, smccc-filter/set/absent), so no VM there has this filter\n"),
        ("6.12", "0x80000000=deny",
         "kvm-fwspec: --filter 0x80000000-0x80000000=deny: the source, arm64 6.12 "
         "host=mitigated, refuses it (EEXIST, smccc-filter/set/overlap), so no VM there has "
         "this filter\n"),
        ("6.12", "0x84000000-0x8400001f=forward",
         "kvm-fwspec: --filter 0x84000000-0x8400001f=forward: no action 'forward'; actions are "
         "handle, deny, fwd-to-user\n"),
        ("6.12", "0x8400001f-0x84000000=deny",
         "kvm-fwspec: --filter 0x8400001f-0x84000000=deny: its last id is below its first\n"),
        ("6.12", "psci=deny",
         "kvm-fwspec: --filter psci=deny: write FIRST[-LAST]=ACTION,..., e.g. "
         "0x84000000-0x8400001f=fwd-to-user\n"),
    ],
)  # fmt: skip
def test_a_filter_no_vm_of_the_source_can_have_is_one_line(
    source: str, ranges: str, stderr: str
) -> None:
    result = migrate_check("--from", source, "--to", "7.2", "--filter", ranges)
    assert (result.returncode, result.stdout, result.stderr) == (2, "", stderr)


def test_parse_filter_takes_several_ranges_and_single_ids() -> None:
    parsed = parse_filter(SPEC, "0x84000000-0x8400001f=fwd-to-user, 0xc6000040=deny")
    assert [(r.first, r.last, r.action) for r in parsed] == [
        (0x84000000, 0x8400001F, "fwd-to-user"),
        (0xC6000040, 0xC6000040, "deny"),
    ]
    with pytest.raises(UsageError, match="function ids are 32-bit, up to 0xffffffff"):
        parse_filter(SPEC, "0x100000000=deny")


def test_filter_given_twice_adds_its_ranges_and_a_bad_one_is_never_dropped() -> None:
    """An operator writing one --filter per range gets all of them judged, never only the
    last: a garbage first one is refused, not silently replaced."""
    both = migrate_check(
        "--from", "6.12", "--to", "6.1", "--filter", "0xc4000000=deny", "--filter", PSCI_TO_VMM
    )
    assert both.returncode == 1
    assert both.stdout.count("FAILS with EINVAL (smccc-filter/set/absent)") == 2
    assert both.stdout.splitlines()[-1] == (
        "verdict: NOT SAFE: THE VMM'S SMCCC FILTER CANNOT BE SET AGAIN"
    )
    garbage = migrate_check("--from", "6.12", "--to", "7.2", "--filter", "garbage",
                            "--filter", "0x84000000=deny")  # fmt: skip
    assert (garbage.returncode, garbage.stderr) == (
        2, "kvm-fwspec: --filter garbage: write FIRST[-LAST]=ACTION,..., e.g. "
        "0x84000000-0x8400001f=fwd-to-user\n",
    )  # fmt: skip


def test_the_advice_for_a_denied_range_is_not_about_the_vmm() -> None:
    report = run("6.12", "6.1", "0x84000000=deny")
    assert any("would be answered by KVM as without a filter" in a for a in report.advice)
