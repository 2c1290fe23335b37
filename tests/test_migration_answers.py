"""migrate-check compares the guest's SMCCC answers too: ARCH_FEATURES of the workarounds and
of PV time, and what SMCCC_VERSION, TRNG_VERSION and KVM_FEATURES return. A restore whose
registers all restore is not safe when one of them changes, nor when the spec does not know
one side's answer."""

from __future__ import annotations

from kvm_fwspec.conformance.analyses import migration
from kvm_fwspec.conformance.analyses.fleet import Cell, firmware_view
from kvm_fwspec.conformance.analyses.fleet_evidence import check_answers, witnesses
from kvm_fwspec.conformance.analyses.fleet_hosts import Offer
from kvm_fwspec.conformance.profile import resolve_profile
from kvm_fwspec.conformance.sphinx_pages import answer_changes
from kvm_fwspec.spec.loader import load_spec
from tests.test_migration import migrate_check, run

SPEC = load_spec()


def test_a_better_mitigated_target_restores_but_the_guest_sees_arch_features_change() -> None:
    """Every register restores (a lower saved level is accepted), yet KVM answers the guest's
    ARCH_FEATURES from the target host: AVAIL's SUCCESS (0) becomes UNAFFECTED (1)."""
    report = run("6.12:mitigated", "6.12:unaffected")
    assert report.restored
    assert report.changes == [
        "ARCH_FEATURES(smccc-arch-workaround-1): 0 -> 1",
        "ARCH_FEATURES(smccc-arch-workaround-3): 0 -> 1",
    ]
    assert report.seen_only_in_smccc_answers
    assert any("KVM answers these from the host's own mitigation" in a for a in report.advice)
    result = migrate_check("--from", "6.12:mitigated", "--to", "6.12:unaffected")
    assert result.returncode == 3
    assert result.stdout.splitlines()[-1] == (
        "verdict: RESTORES, BUT THE GUEST SEES ITS FIRMWARE CHANGE"
    )


def test_the_same_host_and_release_is_still_safe() -> None:
    report = run("6.12:mitigated", "6.12:mitigated")
    assert report.safe
    view = report.guest_after
    assert view["CALL(smccc-version)"] == 0x10001
    assert view["CALL(trng-version)"] == 0x10000
    assert view["CALL(vendor-hyp-kvm-features)"] == 0x3
    assert view["ARCH_FEATURES(pv-time-features)"] == 0
    assert view["ARCH_FEATURES(smccc-arch-workaround-1)"] == 0


def test_an_answer_the_spec_does_not_record_is_never_taken_as_unchanged() -> None:
    """The spec records the workarounds' ARCH_FEATURES only from 5.10: 5.9 -> 5.10 is not
    called safe on an answer it does not know."""
    report = run("5.9:mitigated", "5.10:mitigated")
    assert "ARCH_FEATURES(smccc-arch-workaround-1): not recorded by the spec -> 0" in report.changes
    assert not report.safe
    assert any("the spec does not record this answer" in a for a in report.advice)
    assert not any("same levels" in a for a in report.advice)  # both hosts are `mitigated`


def test_the_guest_reads_its_own_vendor_bitmap_and_its_disabled_services_answer_not_supported() -> (
    None
):
    profile = resolve_profile(SPEC, "6.12", "mitigated")
    stored = {"vendor-hyp-bmap": 0x1, "std-bmap": 0x0, "std-hyp-bmap": 0x0}
    view = migration.guest_view(SPEC, profile, ("psci-0.2",), stored)
    assert view["CALL(vendor-hyp-kvm-features)"] == 0x1
    assert view["CALL(trng-version)"] == -1
    assert view["ARCH_FEATURES(pv-time-features)"] == -1


def test_a_fleet_pool_is_judged_by_the_levels_its_hosts_report_not_a_profile() -> None:
    """The fleet knows a host's levels only from its fingerprint: two pools of one kernel at
    different levels differ in what their guests' ARCH_FEATURES answer."""
    profile = resolve_profile(SPEC, "6.12", "mitigated")  # the placeholder host of profile_of
    wa1 = next(r for r in SPEC.registers if r.name == "smccc-arch-workaround-1")
    reg_id = wa1.ids["arm64"]

    def pool_view(level: int) -> dict[str, object]:
        offer = Offer(reg_id, wa1.name, "level", level, frozenset({0, level}), False)
        return firmware_view(SPEC, profile, [offer], {reg_id: level})

    assert pool_view(1)["ARCH_FEATURES(smccc-arch-workaround-1)"] == 0  # avail: SUCCESS
    assert pool_view(2)["ARCH_FEATURES(smccc-arch-workaround-1)"] == 1  # not required


def test_the_docs_list_the_migrations_only_the_answers_tell_apart() -> None:
    groups = answer_changes(SPEC, "mitigated")
    hosts = {(g.where, g.changes) for g in groups if g.between == "hosts"}
    assert ("mitigated -> unaffected", (
        "ARCH_FEATURES(smccc-arch-workaround-1): 0 -> 1",
        "ARCH_FEATURES(smccc-arch-workaround-3): 0 -> 1",
    )) in hosts  # fmt: skip
    for group in groups:  # each really is a change the registers' restore does not show
        source, target = group.pairs[0]
        a, b = group.where.split(" -> ") if group.between == "hosts" else (group.where,) * 2
        report = run(f"{source}:{a}", f"{target}:{b}")
        assert report.seen_only_in_smccc_answers and list(group.changes) == report.changes


def test_fleet_proof_holds_a_predicted_answer_change_to_the_guest_s_own_call() -> None:
    """A plan cell that has the guest see ARCH_FEATURES or a call's answer change is held to
    the real guest's own call of it: unchanged real answers are a disagreement."""
    calls = [
        {"name": "smccc-arch-features(smccc-arch-workaround-1)", "function": 0x80000001,
         "args": [0x80008000]},
        {"name": "trng-version", "function": 0x84000050, "args": []},
    ]  # fmt: skip
    same = {"answers": [{"x0": 0}, {"x0": 0x10000}]}
    for change, witness in (
        ("ARCH_FEATURES(smccc-arch-workaround-1): 0 -> 1", calls[0]["name"]),
        ("CALL(trng-version): 0x10000 -> -1", "trng-version"),
    ):
        cell = Cell("P1", "P2", "changes", (), (change,))
        assert list(check_answers(SPEC, calls, same, same, cell)) == [
            f"the plan has the guest see {'; '.join(cell.changes)}; its answers did not change"
        ]
        assert witnesses(SPEC, change.split(": ", 1)[0]) == {witness}


def test_a_move_across_5_15_changes_how_a_whole_mpidr_target_is_answered() -> None:
    """AFFINITY_INFO of the guest's own vcpu named by its MPIDR_EL1, RES1 bit 31 set: ON where
    KVM masks the bit away (5.10, as real 5.10 answered), INVALID_PARAMETERS from 5.15. Real
    guests have made this mistake; after the move their CPU_ON fails, which no register can
    prevent, and the advice says what to do instead."""
    report = run("5.10.y:mitigated", "6.1.y:mitigated")
    assert (
        "AFFINITY_INFO(0x80000000): 0 (PSCI_0_2_AFFINITY_LEVEL_ON) -> -2 (PSCI_RET_INVALID_PARAMS)"
        in report.changes
    )
    assert any(
        a.startswith(
            "AFFINITY_INFO(0x80000000): 0 (PSCI_0_2_AFFINITY_LEVEL_ON) -> -2 (PSCI_RET_INVALID_PARAMS): KVM refuses"
        )
        and "since 5.15" in a
        and "the guest must mask its MPIDR" in a
        for a in report.advice
    )
    assert "AFFINITY_INFO(0x80000000)" not in " ".join(
        run("6.1.y:mitigated", "7.2:mitigated").changes
    )
    assert witnesses(SPEC, "AFFINITY_INFO(0x80000000)") == {"affinity-info(0x80000000)"}


def test_a_psci_0_1_guest_has_no_affinity_info_to_change() -> None:
    before = migration.guest_view(SPEC, resolve_profile(SPEC, "5.10", "mitigated"), (), {})
    after = migration.guest_view(SPEC, resolve_profile(SPEC, "6.1", "mitigated"), (), {})
    assert before["AFFINITY_INFO(0x80000000)"] == after["AFFINITY_INFO(0x80000000)"] == -1
