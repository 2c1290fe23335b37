"""A faulty implementation under test costs only the cases its fault touched: each fault is
an error with its reason, in bounded time, every other case still runs, and the results file
stays complete and valid."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from kvm_fwspec.conformance.results import SCHEMA_PATH
from kvm_fwspec.conformance.verify import verify
from tests.checkout import KVM_FWSPEC, ROOT
from tests.faulty_agent import FAULTS

REASONS = {
    "crash": "agent closed the connection",
    "hang": "agent did not answer within 3 s",
    "garbage": "answer is not JSON",
    "oversized": "answer longer than 1000000 bytes",
    "truncated": "agent closed the connection after",
    "old-protocol": "agent speaks 'kvm-fwspec-agent/0', not kvm-fwspec-agent/1",
    "wrong-id": "answer to request 999999 while waiting for",
}


@pytest.mark.parametrize("fault", FAULTS)
def test_a_fault_is_the_error_of_the_cases_it_touched(fault: str, tmp_path: Path) -> None:
    agent = f"{sys.executable} -m tests.faulty_agent {fault} {tmp_path / 'fired'} --kernel 6.12 --host mitigated"
    report = tmp_path / "report"
    result = subprocess.run(
        [*KVM_FWSPEC, "certify", "--adapter", "agent", "--kernel", "6.12",
         "--option", f"command={agent}", "--option", "timeout=3", "--option", "max-message=1000000",
         "--report", str(report)],
        capture_output=True, text=True, cwd=ROOT,
        timeout=600,  # a guard against a hang, not a claim about speed
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert (tmp_path / "fired").exists()
    document = json.loads((report / "results.json").read_text())
    jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text())).validate(document)
    assert verify(report / "results.json") == []
    errors = [c for c in document["cases"] if c["outcome"] == "error"]
    rest = {c["outcome"] for c in document["cases"] if c["outcome"] != "error"}
    assert errors and rest == {"pass"}
    assert {REASONS[fault] in c["reason"] for c in errors} == {True}, errors[0]["reason"]
    # one request's cases (at most a batch of 256), not the run's
    assert len(errors) <= 256 and len(errors) < len(document["cases"]) / 2
