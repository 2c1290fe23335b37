"""Real KVM's own answers to the vcpu power cases, held to the spec by a fast test.

tests/fixtures/real-kvm/vcpu-power.json keeps what Debian's 5.10, 6.1, 6.12 and 7.2 answered
under QEMU (one `kvm-fwspec qemu --kernel pinned` run; .ci/run repeats it on every CI run):
CPU_ON, CPU_OFF and AFFINITY_INFO over two vcpus, one of them powered off, KVM_GET_MP_STATE
after each, KVM_RUN of a stopped vcpu, and every vcpu stopped by SYSTEM_OFF.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import pytest

from kvm_fwspec.spec.loader import default_spec_dir, load_spec
from kvm_fwspec.spec.model import Spec
from tests import real_kvm_record as record
from tests.real_kvm_record import judge as judge_record
from tests.real_kvm_record import load_record

RECORD = load_record("vcpu-power.json")
SPEC = load_spec()


def judge(spec: Spec, run: dict[str, Any]) -> list[str]:
    return judge_record(spec, run, "psci-power/")


def run_of(line: str) -> dict[str, Any]:
    return record.run_of(RECORD, line)


def observed(line: str, case_id: str) -> list[dict[str, Any]]:
    return record.observed(RECORD, line, case_id)


@pytest.mark.parametrize("run", RECORD["runs"], ids=[r["line"] for r in RECORD["runs"]])
def test_real_kvm_answered_every_power_case_as_the_spec_says(run: dict[str, Any]) -> None:
    assert run["implementation"].startswith("Linux KVM ")
    assert run["implementation-provenance"]["kernel-packages"]
    assert judge(SPEC, run) == []


def test_real_kvm_stopped_and_started_vcpus_on_every_line() -> None:
    """CPU_OFF never returned to the guest, the vcpu read back STOPPED and stayed out of the
    guest, and another vcpu's CPU_ON made it RUNNABLE again, on all four kernels."""
    for line in ("5.10", "6.1", "6.12", "7.2"):
        answers = observed(line, "psci-power.cpu-off.stops-caller.vcpu-1-then-cpu-on")
        assert answers == [
            {"mp-state": "stopped"},
            {"mp-state": "stopped"},
            {"x0": 1},  # AFFINITY_INFO: OFF
            {"mp-state": "stopped"},  # KVM_RUN sleeps
            {"x0": 0},  # CPU_ON: SUCCESS
            {"mp-state": "runnable"},
            {"x0": 0},  # AFFINITY_INFO: ON
        ], line


def test_reserved_affinity_bits_are_refused_from_5_15_and_ignored_before() -> None:
    assert observed("5.10", "psci-power.cpu-on.starts-target.reserved-bit-31")[0] == {"x0": 0}
    for line in ("6.1", "6.12", "7.2"):
        case = "psci-power.cpu-on.reserved-affinity-bits.reserved-bit-31"
        assert observed(line, case)[:2] == [{"x0": -2}, {"mp-state": "stopped"}], line


def test_the_code_reading_without_the_5_15_check_would_fail_against_6_12(
    tmp_path: Path,
) -> None:
    """Dating the reserved-bits check from 4.16, as if 5.10 had it, fails 5.10's answers."""
    copy_dir = tmp_path / "spec"
    shutil.copytree(
        default_spec_dir(), copy_dir, ignore=shutil.ignore_patterns("*.py", "__pycache__")
    )
    path = copy_dir / "psci.yaml"
    text = path.read_text()
    assert text.count('      since: "5.15"\n') == 2
    path.write_text(text.replace('      since: "5.15"\n', ""))
    problems = judge(load_spec(copy_dir), run_of("5.10"))
    assert "5.10: psci-power.cpu-on.reserved-affinity-bits.reserved-bit-31: spec" in "\n".join(
        problems
    )
    assert judge(load_spec(copy_dir), run_of("6.12")) == []


def test_an_edited_real_answer_or_program_fails() -> None:
    run = copy.deepcopy(run_of("7.2"))
    twice = next(c for c in run["cases"] if c["id"].endswith("cpu-on.already-on.twice"))
    twice["observed"][-1] = {"x0": 0}  # as if a second CPU_ON had succeeded
    level = next(c for c in run["cases"] if c["id"].endswith("level-4"))
    level["program"]["steps"][0]["args"][1] = "0x5"
    problems = judge(SPEC, run)
    text = "\n".join(problems)
    assert "psci-power.cpu-on.already-on.twice: spec" in text
    assert "level-4: the spec's suite has no such program" in text
    assert "psci-power.affinity-info.level-beyond-aff3.level-4: not run on real KVM" in text


def test_a_case_the_record_lacks_is_named() -> None:
    run = copy.deepcopy(run_of("6.1"))
    run["cases"] = [c for c in run["cases"] if not c["id"].endswith("system-off")]
    assert judge(SPEC, run) == [
        "6.1: psci-power.system-event.stops-every-vcpu.system-off: not run on real KVM"
    ]
