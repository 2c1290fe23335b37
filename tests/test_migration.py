"""migrate-check answers the seed thread's migration questions, and reads real dumps."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from kvm_fwspec.conformance.analyses import migration
from kvm_fwspec.conformance.analyses.dump_file import read_dump
from kvm_fwspec.spec.errors import UsageError
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


def migrate_check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KVM_FWSPEC, "migrate-check", *args], capture_output=True, text=True)


@pytest.mark.parametrize(
    ("source", "target", "verdict", "status"),
    [
        ("6.12", "6.12", "SAFE", 0),
        ("5.10", "6.1", "RESTORES, BUT THE GUEST SEES ITS FIRMWARE CHANGE", 3),
        ("6.13", "6.12", "NOT SAFE: A REGISTER DOES NOT RESTORE", 1),
    ],
    ids=["safe", "changes", "fails"],
)
def test_three_verdicts_three_exit_codes(
    source: str, target: str, verdict: str, status: int
) -> None:
    result = migrate_check("--from", source, "--to", target)
    assert result.returncode == status, result.stderr
    assert result.stdout.splitlines()[-1] == f"verdict: {verdict}"
    as_json = json.loads(migrate_check("--from", source, "--to", target, "--json").stdout)
    assert as_json["verdict"] == {0: "safe", 3: "changes", 1: "fails"}[status]


def test_the_exit_codes_are_in_the_help() -> None:
    result = subprocess.run([*KVM_FWSPEC, "migrate-check", "--help"], capture_output=True,
                            text=True, env={**os.environ, "COLUMNS": "400"})  # fmt: skip
    assert "Exit status: 0 safe" in result.stdout
    assert "3 restores, but the guest sees its firmware change" in result.stdout
    assert (
        "1 the target cannot take the VM: a register does not restore, or the VMM cannot set its "
        "SMCCC filter, a capability or stolen time up again there; 2 a usage error"
    ) in result.stdout


def test_a_levels_host_inside_a_side() -> None:
    """`levels:A/B/C` has a colon of its own; it is read with the HOST field, and FEATURES
    after it still counts (a psci-0.1 source onto a psci-0.2 target fails on psci-version)."""
    levels = "levels:not-required/not-required/not-required"
    named = run("6.1:unaffected:none", "6.1:unaffected")
    spelled = run(f"6.1:{levels}:none", f"6.1:{levels}")
    assert spelled.source.profile.host.name == "unaffected"  # the same levels, found by name
    assert spelled.to_json() | {"source": None} == named.to_json() | {"source": None}
    assert verdict(spelled, "psci-version").rule == "psci-version/set/reject-0.1-with-psci-0.2"
    unnamed = migration.side_from_profile(SPEC, "6.1:levels:avail/avail/not-avail")
    assert unnamed.profile.host.name == "levels:avail/avail/not-avail"


def test_a_pinned_source_is_safe_where_the_default_is_not() -> None:
    assert run("6.13", "6.12").verdict == "fails"
    pinned = run("6.13:::0x10001", "6.12")
    assert pinned.verdict == "safe"
    assert pinned.source.origin.endswith("with PSCI pinned to 0x10001")
    assert verdict(pinned, "psci-version").value == 0x10001


@pytest.mark.parametrize(
    ("source", "target", "stderr"),
    [
        ("6.12:mitigated:psci-0.2:0x10001:extra", "6.12",
         "--from: side '6.12:mitigated:psci-0.2:0x10001:extra' has 1 field(s) too many: a side is "
         "KERNEL[:HOST[:FEATURES[:PSCI]]]"),
        ("6.1:levels:a/b/c:none:0x10000:x", "6.1",
         "--from: side '6.1:levels:a/b/c:none:0x10000:x' has 1 field(s) too many: a side is "
         "KERNEL[:HOST[:FEATURES[:PSCI]]]"),
        ("6.1:levels", "6.1", "--from: side '6.1:levels': a levels: host needs its levels, "
                               "levels:A/B/C"),
        ("6.12:::0x10003", "6.12", "--from: arm64 6.12 host=mitigated refuses PSCI pin 0x10003: "
                                   "EINVAL (psci-version/set/reject-unimplemented)"),
        ("6.12:::1.1", "6.12", "--from: side '6.12:::1.1': PSCI pin '1.1' is a version name, "
                               "not a register value: PSCI 1.1 is 0x10001 (major << 16 | minor)"),
        ("6.12", "6.12:::0x10001", "--to 6.12:::0x10001: a PSCI pin belongs to the source; the "
                                   "target's version is the one the source's registers restore"),
        ("missing.json", "6.12", "--from missing.json: no such dump file"),
        ("9.9", "6.1", "--from: kernel 9.9 is not a release the spec describes (it knows 4.16 to "
                       "7.2)"),
        ("6.1", "9.9", "--to: kernel 9.9 is not a release the spec describes (it knows 4.16 to "
                       "7.2)"),
        ("6.13:nosuch", "6.1", "--from: host profile 'nosuch' is not one of: vulnerable, "
                               "mitigated, mitigated-ssbs, unaffected, v2-unaffected-ssbs, "
                               "v2-bhb-unaffected-ssbs, or levels:LEVEL/LEVEL/LEVEL"),
        ("", "6.1", "--from is empty: give a dump file or a side such as 6.13:mitigated "
                    "(KERNEL[:HOST[:FEATURES[:PSCI]]])"),
        ("6.1", " ", "--to is empty: give a dump file or a side such as 6.13:mitigated "
                     "(KERNEL[:HOST[:FEATURES[:PSCI]]])"),
    ],
    ids=["extra-field", "extra-field-after-levels", "levels-without-levels", "pin-refused",
         "pin-by-name", "pin-on-target", "missing-dump", "kernel-unknown-from",
         "kernel-unknown-to", "host-unknown-from", "from-empty", "to-blank"],
)  # fmt: skip
def test_malformed_sides_are_one_line(source: str, target: str, stderr: str) -> None:
    result = migrate_check("--from", source, "--to", target)
    assert (result.returncode, result.stderr, result.stdout) == (2, f"kvm-fwspec: {stderr}\n", "")


def test_dump_for_arm_writes_arm_ids(tmp_path: Path) -> None:
    out = tmp_path / "arm.json"
    result = subprocess.run([*KVM_FWSPEC, "dump", "--arch", "arm", "--kernel", "5.4",
                             "--output", str(out)], capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr
    document = json.loads(out.read_text())
    assert document["arch"] == "arm"
    assert [r["id"] for r in document["registers"]] == [0x4030000000140000 + i for i in range(3)]
    # and migrate-check takes a target named by profile to be of the dump's architecture
    check = migrate_check("--from", str(out), "--to", "5.4")
    assert check.returncode == 0, check.stdout + check.stderr


REAL_DUMPS = json.loads(
    (Path(__file__).parent / "fixtures" / "real-kvm" / "real-restores.json").read_text()
)["dumps"]


@pytest.mark.parametrize(
    "index", range(len(REAL_DUMPS)), ids=[f"real-dump-{i}" for i in range(len(REAL_DUMPS))]
)
def test_dumps_real_kvm_wrote_are_read(tmp_path: Path, index: int) -> None:
    """Every dump the migration proof saved on real KVM (tests/fixtures/real-kvm) passes the
    checks unchanged and reads back as written."""
    path = tmp_path / "real.json"
    path.write_text(json.dumps(REAL_DUMPS[index]))
    saved = read_dump(SPEC, path)
    assert saved.profile.kernel == REAL_DUMPS[index]["kernel"]
    assert saved.registers == {r["id"]: r["value"] for r in REAL_DUMPS[index]["registers"]}


SAVED = len(REAL_DUMPS[5]["registers"])


def _edited(**changes: Any) -> dict[str, Any]:
    document = json.loads(json.dumps(REAL_DUMPS[5]))  # 6.1.y, psci-0.2
    for key, value in changes.items():
        document[key] = value
    return document


def _register(index: int, **changes: Any) -> list[dict[str, Any]]:
    registers: list[dict[str, Any]] = json.loads(json.dumps(REAL_DUMPS[5]["registers"]))
    registers[index] |= changes
    return registers


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        (_edited(kernel=6.1), 'kernel: 6.1 is a number, not a string; write the release as a '
                              'string, "6.1"'),
        (_edited(format="kvm-fwspec-dump/2"),
         "format: 'kvm-fwspec-dump/2' is not 'kvm-fwspec-dump/1'"),
        (_edited(registers=_register(0, value=1 << 64)),
         "registers[0].value: 18446744073709551616 does not fit in 64 bits"),
        (_edited(registers=_register(1, value=-1)), "registers[1].value: -1 is negative"),
        (_edited(registers=_register(0, value="0x10000")),
         "registers[0].value: '0x10000' is a string, not a 64-bit integer"),
        (_edited(registers=_register(0, value=True)),
         "registers[0].value: True is a boolean, not a 64-bit integer"),
        (_edited(registers=[*REAL_DUMPS[5]["registers"], REAL_DUMPS[5]["registers"][1]]),
         f"registers[{SAVED}].id: 0x6030000000140001 was saved already, as registers[1]"),
        (_edited(registers=[*REAL_DUMPS[5]["registers"], {"id": 0x603000000013C082, "value": 0}]),
         f"registers[{SAVED}].id: 0x603000000013c082 is a sysreg id, outside the firmware registers "
         "(KVM_REG_ARM_FW, KVM_REG_ARM_FW_FEAT_BMAP); a dump holds only those"),
        (_edited(registers=_register(0, id=0x4030000000140000)),
         "registers[0].id: 0x4030000000140000 is not an arm64 id (the dump's arch)"),
        (_edited(registers=_register(0, name="psci-version")),
         "registers[0].name: not a key of a saved register (id, value)"),
        (_edited(colour="red"), "colour: not a key of a dump"),
        (_edited(features=["psci-0.3"]), "features[0]: 'psci-0.3' is not a vcpu feature (psci-0.2)"),
        # the rest of the line is the kernel-name parser's (spec/kernel_names.py)
        (_edited(kernel="6.1.x"), "kernel: kernel '6.1.x' is not ..."),
        ([], "not a dump: the file holds a list, not an object"),
    ],
    ids=["kernel-a-number", "format", "value-beyond-64-bits", "value-negative", "value-a-string",
         "value-a-boolean", "duplicate-id", "system-register-id", "other-arch-id",
         "extra-register-key", "extra-key", "unknown-feature", "kernel-unknown", "not-an-object"],
)  # fmt: skip
def test_a_bad_dump_is_refused_naming_file_and_path(
    tmp_path: Path, document: Any, problem: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(document))
    with pytest.raises(UsageError) as refused:
        read_dump(SPEC, path)
    if problem.endswith("..."):
        assert str(refused.value).startswith(f"{path}: {problem[:-3]}")
        assert "\n" not in str(refused.value)
    else:
        assert str(refused.value) == f"{path}: {problem}"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[" * 100_000 + "]" * 100_000, "not a dump: nested too deeply (a dump is three levels "
                                        "deep)"),
        ('{"kernel": "6.1", "kernel": "6.1"}', "key 'kernel' appears twice in one object"),
        ("{", "not JSON: line 1 column 2: Expecting property name enclosed in double quotes"),
        ('{"value": ' + "9" * 5000 + "}", "not a dump: it holds a number of thousands of digits"),
    ],
    ids=["deeply-nested", "duplicate-key", "not-json", "huge-number"],
)  # fmt: skip
def test_unreadable_dump_files_are_one_line(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(UsageError) as refused:
        read_dump(SPEC, path)
    assert str(refused.value) == f"{path}: {problem}"


def test_every_problem_of_a_dump_is_its_own_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(_edited(kernel=6.1, registers=_register(2, value=-2), colour=1)))
    result = migrate_check("--from", str(path), "--to", "6.1")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"kvm-fwspec: {path}: colour: not a key of a dump",
        f"kvm-fwspec: {path}: kernel: 6.1 is a number, not a string; write the release as a "
        'string, "6.1"',
        f"kvm-fwspec: {path}: registers[2].value: -2 is negative",
    ]


def test_dump_records_the_host_the_agent_reports_with_host_auto(tmp_path: Path) -> None:
    """An agent started on another host than --host is refused (tests/test_bad_commands.py);
    with --host auto its dump is recorded as the host it reports, under the kernel it claims."""
    output = tmp_path / "vulnerable.json"
    agent = f"command={' '.join(KVM_FWSPEC)} agent --kernel 6.1 --host vulnerable"
    result = subprocess.run(
        [*KVM_FWSPEC, "dump", "--adapter", "agent", "--option", agent, "--kernel", "6.1",
         "--host", "auto", "--output", str(output)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    document = json.loads(output.read_text())
    assert (document["kernel"], document["host-profile"]) == ("6.1", "vulnerable")


def stolen_time_run(source: str, target: str, stolen_time: bool) -> migration.MigrationReport:
    src = migration.side_from_profile(SPEC, source)
    dst = migration.side_from_profile(SPEC, target)
    return migration.check(SPEC, src, dst.profile, dst.features, stolen_time=stolen_time)


def test_a_vmm_that_gives_stolen_time_is_told_when_the_target_loses_it() -> None:
    """5.10 has PV time and 5.4 does not (it came in 5.5): a guest whose VMM set its vcpus'
    stolen-time addresses loses PV_TIME_ST, although no register says so; one whose VMM set
    none sees NOT_SUPPORTED on both sides."""
    with_it = stolen_time_run("5.10", "5.4", stolen_time=True)
    assert with_it.guest_before[migration.STOLEN_TIME_KEY] == 0
    assert with_it.guest_after[migration.STOLEN_TIME_KEY] == -1
    assert "PV_TIME_FEATURES(pv-time-st): 0 -> -1" in with_it.changes
    # the VMM's KVM_SET_DEVICE_ATTR is ENXIO there: the VM cannot be made the same
    (setting,) = with_it.settings
    assert (setting.name, setting.restored) == ("stolen-time", False)
    assert setting.why == (
        "KVM_SET_DEVICE_ATTR is ENXIO on arm64 5.4 host=mitigated (stolen-time/set/absent)"
    )
    assert with_it.verdict == "fails"
    assert any(
        a.startswith("PV_TIME_FEATURES(pv-time-st): 0 -> -1: the guest's stolen time")
        for a in with_it.advice
    )
    without = stolen_time_run("5.10", "5.4", stolen_time=False)
    assert without.guest_before[migration.STOLEN_TIME_KEY] == -1
    assert not any(c.startswith(migration.STOLEN_TIME_KEY) for c in without.changes)


def test_stolen_time_between_kernels_that_both_offer_pv_time_changes_nothing() -> None:
    report = stolen_time_run("6.12", "7.2", stolen_time=True)
    assert report.guest_before[migration.STOLEN_TIME_KEY] == 0
    assert report.guest_after[migration.STOLEN_TIME_KEY] == 0


def test_stolen_time_on_the_command_line_and_in_json() -> None:
    result = migrate_check("--from", "5.10", "--to", "5.4", "--stolen-time")
    assert result.returncode == 1, result.stderr  # every register restores, stolen time does not
    assert (
        "  stolen-time (KVM_ARM_VCPU_PVTIME_IPA): FAILS: KVM_SET_DEVICE_ATTR is ENXIO on arm64 "
        "5.4 host=mitigated (stolen-time/set/absent)" in result.stdout
    )
    assert "  PV_TIME_FEATURES(pv-time-st): 0 -> -1" in result.stdout
    assert result.stdout.splitlines()[-1] == "verdict: NOT SAFE: THE VMM CANNOT SET THE VM UP AGAIN"
    kept = migrate_check("--from", "6.12", "--to", "7.2", "--stolen-time")
    assert (
        "  stolen-time (KVM_ARM_VCPU_PVTIME_IPA): done again: set again on every vcpu "
        "(stolen-time/set/accepted)" in kept.stdout
    )
    refused = migrate_check("--from", "5.4", "--to", "5.10", "--stolen-time")
    assert (refused.returncode, refused.stdout) == (2, "")
    assert refused.stderr == (
        "kvm-fwspec: --stolen-time: the source, arm64 5.4 host=mitigated, has no PV time "
        "(since 5.5), so no vcpu there has a stolen-time address\n"
    )
    as_json = json.loads(
        migrate_check("--from", "6.12", "--to", "7.2", "--stolen-time", "--json").stdout
    )
    assert as_json["stolen-time"] is True
    assert as_json["guest-after"]["PV_TIME_FEATURES(pv-time-st)"] == 0
    plain = json.loads(migrate_check("--from", "6.12", "--to", "7.2", "--json").stdout)
    assert plain["stolen-time"] is False
    assert plain["guest-after"]["PV_TIME_FEATURES(pv-time-st)"] == -1


def test_a_capability_the_vmm_enabled_is_enabled_again_or_fails_the_migration() -> None:
    """SYSTEM_SUSPEND is offered only once the VMM enables KVM_CAP_ARM_SYSTEM_SUSPEND (since
    5.19): between two kernels that have it the guest keeps PSCI_FEATURES(SYSTEM_SUSPEND), and
    to 5.10 the VMM cannot enable it, which fails the migration with its own verdict line."""
    safe = migrate_check("--from", "6.12", "--to", "7.2", "--enable-cap", "arm-system-suspend")
    assert safe.returncode == 0, safe.stdout
    assert (
        "  arm-system-suspend (KVM_CAP_ARM_SYSTEM_SUSPEND): done again: enabled since 5.19"
        in safe.stdout.splitlines()
    )
    twice = migrate_check("--from", "6.12", "--to", "7.2", "--enable-cap", "arm-system-suspend",
                          "--enable-cap", "KVM_CAP_ARM_SYSTEM_SUSPEND")  # fmt: skip
    assert twice.stdout.count("KVM_CAP_ARM_SYSTEM_SUSPEND") == 1
    as_json = json.loads(
        migrate_check("--from", "6.12", "--to", "7.2", "--enable-cap", "arm-system-suspend",
                      "--json").stdout
    )  # fmt: skip
    assert as_json["guest-after"]["PSCI_FEATURES(system-suspend)"] == 0
    assert as_json["settings"] == [
        {"name": "arm-system-suspend", "c-name": "KVM_CAP_ARM_SYSTEM_SUSPEND", "restored": True,
         "why": "enabled since 5.19"}
    ]  # fmt: skip
    plain = json.loads(migrate_check("--from", "6.12", "--to", "7.2", "--json").stdout)
    assert plain["guest-after"]["PSCI_FEATURES(system-suspend)"] == -1
    src = migration.side_from_profile(SPEC, "6.12.y:mitigated:psci-0.2:0x10000")
    to_510 = migration.check(
        SPEC,
        src,
        migration.side_from_profile(SPEC, "5.10.y").profile,
        migration.FEATURES,
        capabilities=tuple(c for c in SPEC.capabilities if c.name == "arm-system-suspend"),
    )
    assert all(r.restored for r in to_510.registers if r.name == "psci-version")
    assert [c.restored for c in to_510.settings] == [False]
    assert to_510.verdict == "fails"
    assert "PSCI_FEATURES(system-suspend): 0 -> -1" in to_510.changes
    assert any(
        a.startswith("KVM_CAP_ARM_SYSTEM_SUSPEND: KVM_ENABLE_CAP is EINVAL") for a in to_510.advice
    )


@pytest.mark.parametrize(
    ("args", "stderr"),
    [
        (("--enable-cap", "system-suspend"),
         "kvm-fwspec: --enable-cap system-suspend: not a capability a VM can enable; the spec "
         "knows arm-system-suspend\n"),
        (("--from", "5.10", "--enable-cap", "arm-system-suspend"),
         "kvm-fwspec: --enable-cap arm-system-suspend: the source, arm64 5.10 host=mitigated, "
         "cannot enable KVM_CAP_ARM_SYSTEM_SUSPEND (since 5.19), so no VM there has it\n"),
    ],
    ids=["typo", "source-lacks-it"],
)  # fmt: skip
def test_a_capability_that_cannot_be_is_one_line(args: tuple[str, ...], stderr: str) -> None:
    given = dict(zip(args[::2], args[1::2], strict=True))
    result = migrate_check(
        "--from", given.get("--from", "6.12"), "--to", "7.2", "--enable-cap", given["--enable-cap"]
    )
    assert (result.returncode, result.stdout, result.stderr) == (2, "", stderr)


def test_json_guest_changes_are_answers_before_and_after() -> None:
    report = json.loads(migrate_check("--from", "5.10", "--to", "6.1", "--json").stdout)
    affinity = next(
        c for c in report["guest-changes"] if c["answer"] == "AFFINITY_INFO(0x80000000)"
    )
    assert affinity == {"answer": "AFFINITY_INFO(0x80000000)", "before": 0, "after": -2}
    text = migrate_check("--from", "5.10", "--to", "6.1").stdout
    assert (
        "  AFFINITY_INFO(0x80000000): 0 (PSCI_0_2_AFFINITY_LEVEL_ON) -> -2 (PSCI_RET_INVALID_PARAMS)"
        in text.splitlines()
    )
