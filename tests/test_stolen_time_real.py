"""Real KVM's own answers to the stolen-time cases, held to the spec by a fast test.

tests/fixtures/real-kvm/stolen-time.json keeps what Debian's 5.10, 6.1, 6.12 and 7.2 answered
under QEMU (one `kvm-fwspec qemu --kernel pinned` run; .ci/run repeats it on every CI run):
the vcpu's stolen-time address set, refused and read back with the vcpu device attribute, and
the guest's PV_TIME_FEATURES and PV_TIME_ST before and after, with PV time offered and withheld.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from kvm_fwspec.spec.loader import load_spec
from kvm_fwspec.spec.model import Spec
from tests import real_kvm_record as record
from tests.real_kvm_record import judge as judge_record
from tests.real_kvm_record import load_record

RECORD = load_record("stolen-time.json")
SPEC = load_spec()
ADDRESS = 0x90000040  # the cases' address: the data region's second 64 bytes


def judge(spec: Spec, run: dict[str, Any]) -> list[str]:
    return judge_record(spec, run, "stolen-time/", (".stolen-time-withheld",))


def run_of(line: str) -> dict[str, Any]:
    return record.run_of(RECORD, line)


def observed(line: str, case_id: str) -> list[dict[str, Any]]:
    return record.observed(RECORD, line, case_id)


@pytest.mark.parametrize("run", RECORD["runs"], ids=[r["line"] for r in RECORD["runs"]])
def test_real_kvm_answered_every_stolen_time_case_as_the_spec_says(run: dict[str, Any]) -> None:
    assert run["implementation"].startswith("Linux KVM ")
    assert run["implementation-provenance"]["kernel-packages"]
    assert judge(SPEC, run) == []


def test_every_line_gave_the_address_back_to_the_vmm_and_to_the_guest() -> None:
    for line in ("5.10", "6.1", "6.12", "7.2"):
        assert observed(line, "stolen-time.set.accepted.in-memory") == [
            {"ok": True},
            {"value": ADDRESS},
        ], line
        assert observed(line, "stolen-time.pv-time-st.address.call") == [
            {"ok": True},
            {"x0": ADDRESS},
        ], line
        assert observed(line, "stolen-time.get.address.unset") == [{"value": (1 << 64) - 1}]


def test_withholding_pv_time_refuses_both_calls_from_the_bitmaps_on() -> None:
    assert "std-hyp-bmap.set.store.stolen-time-withheld" not in {
        c["id"] for c in run_of("5.10")["cases"]
    }
    for line in ("6.1", "6.12", "7.2"):
        answers = observed(line, "std-hyp-bmap.set.store.stolen-time-withheld")
        assert answers[-2:] == [{"x0": -1}, {"x0": -1}], line
        assert answers[2] == {"value": ADDRESS}, line  # the address itself is kept


def test_the_spec_without_the_already_set_rule_fails_against_real_kvm(tmp_path: Path) -> None:
    """Deleting stolen-time/set/already-set (a second address replaces the first) fails the
    kept answers on every line, where KVM refused the second address with EEXIST."""
    spec = record.spec_without(
        tmp_path,
        "smccc.yaml",
        "    - id: stolen-time/set/already-set\n",
        "    - id: stolen-time/set/not-in-memory\n",
    )
    for line in ("5.10", "7.2"):
        assert judge(spec, run_of(line)) == [
            f"{line}: stolen-time.set.accepted.twice: spec [{{'ok': True}}, {{'ok': True}}, "
            f"{{'ok': True}}, {{'value': {ADDRESS}}}], real KVM [{{'ok': True}}, "
            f"{{'errno': 'EEXIST'}}, {{'errno': 'EEXIST'}}, {{'value': {ADDRESS}}}]"
        ]


def test_an_edited_real_answer_or_program_fails() -> None:
    run = copy.deepcopy(run_of("6.12"))
    unaligned = next(c for c in run["cases"] if c["id"].endswith("unaligned-8"))
    unaligned["observed"][0] = {"ok": True}  # as if KVM had taken an unaligned address
    st = next(c for c in run["cases"] if c["id"] == "stolen-time.pv-time-st.address.call")
    st["program"]["steps"][0]["value"] = "0x90000080"
    text = "\n".join(judge(SPEC, run))
    assert "stolen-time.set.unaligned.unaligned-8: spec" in text
    assert "stolen-time.pv-time-st.address.call: the spec's suite has no such program" in text
    assert "stolen-time.pv-time-st.address.call: not run on real KVM" in text
