"""`kvm-fwspec fleet plan` against real save/restore on four real kernels.

tests/fixtures/real-kvm/fleet-proof.json was recorded by `kvm-fwspec fleet-proof` (in .ci/run):
Debian's linux-image-5.10.0-32-arm64-unsigned 5.10.223-1, linux-image-6.1.0-57-arm64-unsigned
6.1.192-3, linux-image-6.12.118+deb12-arm64-unsigned 6.12.118-1~deb12u1 and
linux-binary-unsigned-7.2.13+deb14-arm64 7.2.13-1, each booted under QEMU (TCG, emulated EL2)
with its own KVM. It keeps each kernel's real fingerprint, the baseline the plan of those four
chose and that was applied, every VM saved (with defaults, and with the baseline) with the
guest's answers before the save, and the real outcome of restoring each on every kernel with
the guest's answers after. These tests re-plan the kept fingerprints with today's code and
hold every kept outcome against that plan; edited copies show the comparison failing for the
right reason.
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from kvm_fwspec.conformance.analyses.fleet import Cell
from kvm_fwspec.conformance.analyses.fleet_evidence import check_answers, compare
from kvm_fwspec.conformance.campaigns import fleet_proof
from kvm_fwspec.spec.loader import load_spec
from kvm_fwspec.spec.model import Spec

FIXTURE = Path(__file__).parent / "fixtures" / "real-kvm" / "fleet-proof.json"
LINES = {"5.10", "6.1", "6.12", "7.2"}


@pytest.fixture(scope="module")
def spec() -> Spec:
    return load_spec()


@pytest.fixture(scope="module")
def kept() -> dict[str, Any]:
    return json.loads(FIXTURE.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


@pytest.fixture
def evidence(kept: dict[str, Any]) -> dict[str, Any]:
    """A copy each test may edit."""
    return copy.deepcopy(kept)


def _restore(evidence: dict[str, Any], source: str, target: str) -> dict[str, Any]:
    return next(r for r in evidence["restores"] if r["source"] == source and r["target"] == target)


def _save(evidence: dict[str, Any], label: str) -> dict[str, Any]:
    return next(s for s in evidence["saves"] if s["label"] == label)


def _register_index(save: dict[str, Any], reg_id: int) -> int:
    return next(i for i, r in enumerate(save["registers"]) if r["id"] == reg_id)


def _reg_id(spec: Spec, name: str) -> int:
    return int(next(r for r in spec.registers if r.name == name).ids["arm64"])


def test_every_real_pair_restores_as_the_plan_says(spec: Spec, kept: dict[str, Any]) -> None:
    comparison = compare(spec, kept)
    assert comparison.disagreements == []
    # every ordered pair of the four kernels, for VMs created with defaults and with the baseline
    assert len(comparison.pairs) == 2 * len(LINES) ** 2
    verdicts = Counter((p.source.split(":")[1], p.verdict) for p in comparison.pairs)
    for configuration in ("defaults", "baseline"):
        assert verdicts[(configuration, "safe")] and verdicts[(configuration, "fails")]


def test_the_controls_restore_unchanged(spec: Spec, kept: dict[str, Any]) -> None:
    comparison = compare(spec, kept)
    controls = [p for p in comparison.pairs if p.source.split(":")[0] == p.target]
    assert len(controls) == 2 * len(LINES)
    assert all(p.verdict == "safe" and not p.disagreements for p in controls)


def test_the_fixture_records_four_real_kernels_with_provenance(kept: dict[str, Any]) -> None:
    assert {k["line"] for k in kept["kernels"]} == LINES
    for kernel, fingerprint in zip(kept["kernels"], kept["fingerprints"], strict=True):
        assert kernel["kernel-packages"] and kernel["kernel-uname"]
        assert fingerprint["host"] == kernel["host"]
        assert fingerprint["provenance"]["kernel-packages"] == kernel["kernel-packages"]
        assert fingerprint["host-levels"], "real KVM reports its workaround levels"
    outcomes = [o for r in kept["restores"] for o in r["outcomes"]]
    assert {"ok": True} in outcomes and {"errno": "EINVAL"} in outcomes
    assert {"errno": "ENOENT"} in outcomes
    # the guest really ran and answered on both sides of every restore
    for record in [*kept["saves"], *kept["restores"]]:
        assert len(record["answers"]) == len(kept["calls"])
        for call, answer in zip(kept["calls"], record["answers"], strict=True):
            read = {"x0"} | {f"x{i}" for i in range(1, call.get("results", 1))}
            assert set(answer) == read, call["name"]


def test_the_baseline_applied_is_todays_and_leaves_pools_out_for_a_real_reason(
    spec: Spec, kept: dict[str, Any]
) -> None:
    comparison = compare(spec, kept)
    baseline = comparison.plan.baseline
    assert baseline is not None and baseline.excluded
    assert kept["baseline-applied"]["pools"] == list(baseline.pools)
    assert comparison.excluded == []


def test_an_outcome_edited_from_einval_to_ok_is_a_disagreement(
    spec: Spec, evidence: dict[str, Any]
) -> None:
    # real: 5.10's workaround-3 level (not-required) is above 6.1's host level: EINVAL
    source = "debian-5.10.y:baseline"
    save = _save(evidence, source)
    index = _register_index(save, _reg_id(spec, "smccc-arch-workaround-3"))
    restore = _restore(evidence, source, "debian-6.1.y")
    assert restore["outcomes"][index] == {"errno": "EINVAL"}
    restore["outcomes"][index] = {"ok": True}
    assert compare(spec, evidence).disagreements == [
        "debian-5.10.y:baseline -> debian-6.1.y (fails): the plan has "
        "smccc-arch-workaround-3 refused with EINVAL, real KVM took it"
    ]


def test_an_errno_edited_is_a_disagreement(spec: Spec, evidence: dict[str, Any]) -> None:
    source = "debian-7.2.y:defaults"
    save = _save(evidence, source)
    index = _register_index(save, _reg_id(spec, "psci-version"))
    _restore(evidence, source, "debian-6.1.y")["outcomes"][index] = {"errno": "ENOENT"}
    wrong = compare(spec, evidence).disagreements
    assert len(wrong) == 2
    assert "psci-version refused with EINVAL, real KVM answered ENOENT" in wrong[0]
    assert "real KVM refused psci-version with ENOENT, the plan says EINVAL" in wrong[1]


def test_a_register_left_out_of_the_baseline_that_restores_is_a_disagreement(
    spec: Spec, evidence: dict[str, Any]
) -> None:
    # 7.2 is left out for vendor-hyp-bmap-2, which 6.1 and 6.12 lack: make its restores take it
    save = _save(evidence, "debian-7.2.y:baseline")
    index = _register_index(save, _reg_id(spec, "vendor-hyp-bmap-2"))
    for target in ("debian-6.1.y", "debian-6.12.y"):
        _restore(evidence, save["label"], target)["outcomes"][index] = {"ok": True}
    wrong = compare(spec, evidence).disagreements
    assert any(
        line.startswith("left out ")
        and "no real restore between it and the set failed on vendor-hyp-bmap-2" in line
        for line in wrong
    ), wrong


def test_a_fingerprint_default_edited_disagrees_with_the_real_saves(
    spec: Spec, evidence: dict[str, Any]
) -> None:
    # 7.2 really defaults to PSCI 1.3; claim 1.1 (which it also accepts)
    fingerprint = next(f for f in evidence["fingerprints"] if f["host"] == "debian-7.2.y")
    entry = next(r for r in fingerprint["registers"] if r["name"] == "psci-version")
    assert entry["default"] == "0x10003"
    entry["default"] = "0x10001"
    wrong = compare(spec, evidence).disagreements
    assert "debian-7.2.y:defaults: saved psci-version=0x10003, the plan holds 0x10001" in wrong
    assert any(
        line.startswith("debian-7.2.y:defaults -> debian-6.1.y")
        and "real KVM refused psci-version with EINVAL, the plan has it restore" in line
        for line in wrong
    ), wrong


def test_a_changed_guest_answer_on_a_safe_pair_is_a_disagreement(
    spec: Spec, evidence: dict[str, Any]
) -> None:
    names = [c["name"] for c in evidence["calls"]]
    restore = _restore(evidence, "debian-6.1.y:baseline", "debian-6.12.y")
    restore["answers"][names.index("trng-version")] = {"x0": -1}
    assert compare(spec, evidence).disagreements == [
        "debian-6.1.y:baseline -> debian-6.12.y (safe): the guest's answers changed: "
        "trng-version 0x10000 -> -1"
    ]


def test_a_baseline_refused_at_creation_is_a_disagreement(
    spec: Spec, evidence: dict[str, Any]
) -> None:
    created = _save(evidence, "debian-6.1.y:baseline")["created"]
    pin = next(c for c in created if c["reg"] == _reg_id(spec, "psci-version"))
    pin["outcome"] = {"errno": "EINVAL"}
    assert compare(spec, evidence).disagreements == [
        "debian-6.1.y:baseline: creating with psci-version=0x10001 answered "
        "{'errno': 'EINVAL'}, the fingerprint says it is taken"
    ]


def test_a_baseline_the_plan_no_longer_chooses_is_said(
    spec: Spec, evidence: dict[str, Any]
) -> None:
    evidence["baseline-applied"]["psci-version"] = 0x10000
    (line,) = compare(spec, evidence).disagreements
    assert line.startswith("the plan's baseline is now ")
    assert line.endswith("record again with kvm-fwspec fleet-proof")


def test_a_change_the_plan_names_must_show_in_the_guests_answers(
    spec: Spec, kept: dict[str, Any]
) -> None:
    """The real pairs have no `changes` cell; this one is made up on real answers: a plan
    saying TRNG disappears is wrong when trng-version answered the same, right when not."""
    save = _save(kept, "debian-6.1.y:defaults")
    restore = copy.deepcopy(_restore(kept, save["label"], "debian-6.12.y"))
    cell = Cell("P1", "P1", "changes", (), ("service trng: available -> absent",))
    (line,) = check_answers(spec, kept["calls"], save, restore, cell)
    assert line.startswith("the plan has the guest see service trng: available -> absent; its")
    names = [c["name"] for c in kept["calls"]]
    restore["answers"][names.index("psci-version")] = {"x0": 0x10000}  # not TRNG's witness
    (line,) = check_answers(spec, kept["calls"], save, restore, cell)
    assert "trng-version" in line and line.endswith("did not change")
    restore["answers"][names.index("trng-version")] = {"x0": -1}
    assert list(check_answers(spec, kept["calls"], save, restore, cell)) == []


def test_the_command_reports_each_disagreement_and_fails(
    spec: Spec,
    evidence: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """run_proof on recorded evidence (collect is what boots): the summary line, each
    disagreement, the files it writes, and exit 1."""
    monkeypatch.setattr(fleet_proof, "collect", lambda spec, cache, timing: evidence)
    assert fleet_proof.run_proof(tmp_path / "report", tmp_path / "fixtures") == 0
    out = capsys.readouterr().out
    assert out.startswith("fleet plan vs real KVM: 32 pairs, 0 disagreements\n")
    assert out.endswith(
        "guest answers vs the spec: 504 answers, 0 differ; left undefined by the spec: none\n"
    )
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.json"))
    assert written == [
        "fixtures/fleet-proof.json",
        "report/fingerprints/debian-5.10.y.json",
        "report/fingerprints/debian-6.1.y.json",
        "report/fingerprints/debian-6.12.y.json",
        "report/fingerprints/debian-7.2.y.json",
        "report/fleet-proof.json",
        "report/plan.json",
    ]
    _restore(evidence, "debian-6.1.y:defaults", "debian-5.10.y")["outcomes"][0] = {"ok": True}
    assert fleet_proof.run_proof(tmp_path / "again", None) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "fleet plan vs real KVM: 32 pairs, 1 disagreements"
    assert lines[1] == (
        "  debian-6.1.y:defaults -> debian-5.10.y (fails): the plan has psci-version "
        "refused with EINVAL, real KVM took it"
    )
