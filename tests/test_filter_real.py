"""Real KVM's own answers to the SMCCC filter cases, held to the spec by a fast test.

tests/fixtures/real-kvm/smccc-filter.json keeps what Debian's 5.10, 6.1, 6.12 and 7.2 answered
under QEMU (one `kvm-fwspec qemu --kernel pinned` run; .ci/run repeats it on every CI run):
the filter absent before 6.4, and on 6.12 and 7.2 every check, a denied call, and a PSCI call
forwarded to the agent's own userspace handler whose answer the guest then read.
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

RECORD = load_record("smccc-filter.json")
SPEC = load_spec()


def judge(spec: Spec, run: dict[str, Any]) -> list[str]:
    return judge_record(spec, run, "smccc-filter/")


@pytest.mark.parametrize("run", RECORD["runs"], ids=[r["line"] for r in RECORD["runs"]])
def test_real_kvm_answered_every_filter_case_as_the_spec_says(run: dict[str, Any]) -> None:
    assert run["implementation"].startswith("Linux KVM ")
    assert run["implementation-provenance"]["kernel-packages"]
    assert judge(SPEC, run) == []


def run_of(line: str) -> dict[str, Any]:
    return record.run_of(RECORD, line)


def test_the_filter_is_absent_before_6_4_and_there_from_it() -> None:
    for line, absent in (("5.10", True), ("6.1", True), ("6.12", False), ("7.2", False)):
        ids = {c["id"].split(".")[2] for c in run_of(line)["cases"]}
        assert (ids == {"absent"}) is absent, line


def test_a_forwarded_psci_call_was_answered_by_userspace_on_real_kvm() -> None:
    for line in ("6.12", "7.2"):
        case = next(
            c for c in run_of(line)["cases"]
            if c["id"] == "smccc-filter.call.forward.psci-version-forwarded"
        )  # fmt: skip
        assert case["observed"][-1] == {
            "x0": 0x10002,
            "hypercall": 0x84000000,
            "hypercall-flags": 0,
        }


def test_the_code_reading_of_the_whole_id_space_would_fail_against_real_kvm(
    tmp_path: Path,
) -> None:
    """Without the rule real KVM taught the spec, the overlap's EEXIST is expected for an empty
    range at base 0, and the kept answers (EINVAL) fail it."""
    spec = record.spec_without(
        tmp_path,
        "smccc-filter.yaml",
        "  - id: smccc-filter/set/whole-id-space\n",
        "  - id: smccc-filter/set/overlap\n",
    )
    problems = judge(spec, run_of("6.12"))
    assert any(
        "empty-at-zero: spec [{'errno': 'EEXIST'}], real KVM [{'errno': 'EINVAL'}]" in p
        for p in problems
    )


def test_an_edited_real_answer_or_program_fails() -> None:
    run = copy.deepcopy(run_of("7.2"))
    forwarded = next(c for c in run["cases"] if c["id"].endswith("psci-version-forwarded"))
    forwarded["observed"][-1]["x0"] = 0x10001  # as if KVM had answered, not the handler
    denied = next(c for c in run["cases"] if c["id"].endswith("psci-version-denied"))
    denied["program"]["steps"][0]["action"] = "0x3"  # no action the ABI has
    problems = judge(SPEC, run)
    assert len(problems) == 3  # the edited program's own case is then not run
    text = "\n".join(problems)
    assert "psci-version-forwarded: spec" in text
    assert "psci-version-denied: the spec's suite has no such program" in text


def test_a_case_the_record_lacks_is_named() -> None:
    run = copy.deepcopy(run_of("6.12"))
    run["cases"] = [c for c in run["cases"] if not c["id"].endswith("after-run")]
    assert judge(SPEC, run) == ["6.12: smccc-filter.set.after-run.after-run: not run on real KVM"]
