"""A faulty implementation under test costs only the cases its fault touched: each fault is
an error with its reason (for an agent that exits, its status and the last of its stderr), in
bounded time, every other case still runs, and the results file stays complete and valid. A
hung implementation costs two timeouts, not one per request."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from kvm_fwspec.conformance.adapters.agent import AgentError, create
from kvm_fwspec.conformance.profile import resolve_profile
from kvm_fwspec.conformance.results import SCHEMA_PATH
from kvm_fwspec.conformance.verify import verify
from kvm_fwspec.spec.loader import load_spec
from tests.checkout import KVM_FWSPEC, ROOT
from tests.faulty_agent import FATAL, FAULTS

REASONS = {
    "crash": "agent exited with status 3",
    "fatal": f"agent exited with status 1: starting the implementation | {FATAL}",
    "hang": "agent did not answer within 3 s",
    "garbage": "answer is not JSON",
    "oversized": "answer longer than 1000000 bytes",
    "truncated": "agent exited with status 0 after",
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


PROFILE = resolve_profile(load_spec(), "6.12", "mitigated")
PROGRAM = {"vcpus": 1, "features": ["psci-0.2"], "steps": [{"op": "run", "vcpu": 0}]}


def faulty(mode: str, tmp_path: Path, *extra: str) -> str:
    return (
        f"{sys.executable} -m tests.faulty_agent {mode} {tmp_path / 'fired'} "
        f"--kernel 6.12 --host mitigated --starts {tmp_path / 'starts'} {' '.join(extra)}"
    )


def test_an_agent_that_gives_up_says_why_in_the_reason(tmp_path: Path) -> None:
    """Its exit status and the last lines of its stderr, not only that the pipe closed."""
    agent = (
        f"{sys.executable} -c \"import sys; print('loading', file=sys.stderr); "
        f"print('{FATAL}', file=sys.stderr); sys.exit(1)\""
    )
    adapter = create(PROFILE, {"command": agent})
    with pytest.raises(AgentError) as raised:
        adapter.capabilities()
    assert str(raised.value) == f"agent exited with status 1: loading | {FATAL}"
    adapter.close()


def test_an_agent_killed_by_a_signal_says_which(tmp_path: Path) -> None:
    agent = f'{sys.executable} -c "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"'
    adapter = create(PROFILE, {"command": agent})
    with pytest.raises(AgentError, match=r"^agent was killed by SIGSEGV$"):
        adapter.capabilities()
    adapter.close()


def test_a_flood_on_stderr_neither_blocks_the_agent_nor_fills_the_client(tmp_path: Path) -> None:
    """8 MiB of stderr, far beyond a pipe's 64 KiB, before the agent serves: it must be
    drained as it comes, and only its last lines kept, each cut short."""
    flood = tmp_path / "flood.py"
    flood.write_text(
        f"import runpy, sys\nsys.path.insert(0, {str(ROOT)!r})\n"
        "for _ in range(64):\n"
        "    sys.stderr.write('x' * (128 << 10) + '\\n')\n"  # lines far longer than kept
        "sys.stderr.flush()\n"
        "sys.argv = ['faulty_agent', *sys.argv[1:]]\n"
        "runpy.run_module('tests.faulty_agent', run_name='__main__')\n"
    )
    agent = f"{sys.executable} {flood} crash {tmp_path / 'fired'} --kernel 6.12 --host mitigated"
    adapter = create(PROFILE, {"command": agent})
    try:
        assert adapter.run_programs([PROGRAM]) == [[{"ok": True}]]
        with pytest.raises(AgentError) as raised:  # the second run crashes (status 3)
            adapter.run_programs([PROGRAM])
        reason = str(raised.value)
        assert reason.startswith("agent exited with status 3: xxx")
        assert reason.count(" | ") == 4 and len(reason) < 5 * 320
    finally:
        adapter.close()


def test_a_hung_implementation_costs_two_timeouts_not_one_per_request(tmp_path: Path) -> None:
    """Every agent started hangs on its first run: after the first agent's timeout and its
    replacement's, the remaining requests fail at once, no further agent started."""
    adapter = create(PROFILE, {"command": faulty("hang-always", tmp_path), "timeout": "1"})
    reasons = []
    try:
        adapter.capabilities()
        for _ in range(8):
            with pytest.raises(AgentError) as raised:
                adapter.run_programs([PROGRAM])
            reasons.append(str(raised.value))
    finally:
        adapter.close()
    timeout = "agent did not answer within 1 s"
    assert reasons[:2] == [timeout, timeout]
    assert reasons[2:] == [f"not run: the agent timed out twice in a row ({timeout})"] * 6
    assert len((tmp_path / "starts").read_text().splitlines()) == 2


def test_one_timeout_between_answers_is_not_two_in_a_row(tmp_path: Path) -> None:
    """The `hang` agent hangs once; the agents after it answer, so no request is given up."""
    adapter = create(PROFILE, {"command": faulty("hang", tmp_path), "timeout": "1"})
    outcomes = []
    try:
        for _ in range(6):
            try:
                outcomes.append(adapter.run_programs([PROGRAM]))
            except AgentError as exc:
                outcomes.append(str(exc))  # type: ignore[arg-type]
    finally:
        adapter.close()
    assert outcomes[1] == "agent did not answer within 1 s"
    assert [o for i, o in enumerate(outcomes) if i != 1] == [[[{"ok": True}]]] * 5
    assert len((tmp_path / "starts").read_text().splitlines()) == 2


def test_certify_with_a_hung_implementation_waits_out_two_timeouts(tmp_path: Path) -> None:
    """No case executes, so there is no verdict; but only two agents were waited out."""
    report = tmp_path / "report"
    result = subprocess.run(
        [*KVM_FWSPEC, "certify", "--adapter", "agent", "--kernel", "6.12", "-q",
         "--option", f"command={faulty('hang-always', tmp_path)}", "--option", "timeout=1",
         "--option", "batch=64", "--report", str(report)],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "agent did not answer within 1 s" in result.stderr
    # the agent certify greets, and the one that replaced it: none for the requests given up
    assert len((tmp_path / "starts").read_text().splitlines()) == 2
