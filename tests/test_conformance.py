"""The kvm_fwspec.conformance suite certifies the reference, catches seeded bugs, and reports honestly."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import jsonschema
import pytest

from kvm_fwspec.conformance.adapters import load_adapter
from kvm_fwspec.conformance.adapters.reference import ReferenceAdapter
from kvm_fwspec.conformance.cases import REQUIRES_GUEST, build_cases
from kvm_fwspec.conformance.profile import resolve_profile
from kvm_fwspec.conformance.results import SCHEMA_PATH
from kvm_fwspec.conformance.verdicts import certify_cases, run_cases
from kvm_fwspec.conformance.verify import verify
from kvm_fwspec.spec.loader import load_spec
from tests.checkout import KVM_FWSPEC
from tests.mutants import MUTANTS

SPEC = load_spec()


def verdicts(
    adapter_name: str, kernel: str, host: str, options: dict[str, str]
) -> dict[str, tuple[str, object]]:
    profile = resolve_profile(SPEC, kernel, host)
    adapter = load_adapter(adapter_name, profile, options)
    try:
        _, results = certify_cases(adapter, build_cases(SPEC, profile))
    finally:
        adapter.close()
    return {r.id: (r.outcome, r.observed) for r in results}


# The oldest release and the four lines CI certifies on real KVM run in every tier; the other
# releases in the exhaustive one.
EVERY_TIER = {str(SPEC.releases[0]), "5.10", "6.1", "6.12", str(SPEC.releases[-1])}


@pytest.mark.parametrize(
    "release",
    [
        pytest.param(str(r), marks=() if str(r) in EVERY_TIER else pytest.mark.exhaustive)
        for r in SPEC.releases
    ],
)
def test_reference_conforms_for_every_kernel_profile(release: str) -> None:
    for host in SPEC.host_profiles:
        outcomes = Counter(
            outcome for outcome, _ in verdicts("reference", release, host.name, {}).values()
        )
        assert set(outcomes) <= {"pass"}, (release, host.name, outcomes)


def test_case_ids_are_stable_sorted_and_name_their_rule() -> None:
    profile = resolve_profile(SPEC, "6.12", "mitigated")
    cases = build_cases(SPEC, profile)
    ids = [c.id for c in cases]
    assert ids == sorted(ids) and len(ids) == len(set(ids))
    assert ids == [c.id for c in build_cases(SPEC, profile)]
    assert all(c.id.startswith(c.rule.replace("/", ".") + ".") for c in cases)
    rules = {c.rule for c in cases}
    assert "psci-version/set/reject-0.1-with-psci-0.2" in rules
    assert "std-bmap/set/reject-change-after-run" in rules


@pytest.mark.parametrize("mutant", MUTANTS, ids=[m.name for m in MUTANTS])
def test_seeded_bug_is_caught_by_its_rule(mutant) -> None:  # type: ignore[no-untyped-def]
    profile = resolve_profile(SPEC, mutant.kernel, mutant.host)
    adapter = ReferenceAdapter(mutant.build(mutant.kernel, mutant.host))
    results = run_cases(adapter, adapter.capabilities(), build_cases(SPEC, profile))
    caught = {r.rule for r in results if r.outcome in ("fail", "error")}
    assert mutant.caught_by in caught, f"{mutant.name} escaped; failing rules: {sorted(caught)}"


def test_at_least_fifteen_mutants() -> None:
    assert len(MUTANTS) >= 15 and len({m.name for m in MUTANTS}) == len(MUTANTS)


@pytest.fixture
def tcp_agent():  # type: ignore[no-untyped-def]
    command = ["agent", "--kernel", "5.10", "--host", "vulnerable", "--listen", "127.0.0.1:0"]
    agent = subprocess.Popen(
        [*KVM_FWSPEC, *command],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert agent.stdout is not None
    line = agent.stdout.readline()
    assert line.startswith("listening on "), line
    yield line.strip().rsplit(":", 1)[1]
    agent.kill()
    agent.wait()
    agent.stdout.close()


def test_agent_over_stdio_and_tcp_gives_the_in_process_verdicts(tcp_agent: str) -> None:
    in_process = verdicts("reference", "5.10", "vulnerable", {})
    command = f"{sys.executable} -m kvm_fwspec.conformance.commands.cli agent --kernel 5.10 --host vulnerable"
    over_stdio = verdicts("agent", "5.10", "vulnerable", {"command": command, "batch": "7"})
    over_tcp = verdicts("agent", "5.10", "vulnerable", {"address": f"127.0.0.1:{tcp_agent}"})
    assert over_stdio == in_process
    assert over_tcp == in_process
    assert len(in_process) > 200


def test_agent_that_dies_is_an_error_not_a_hang() -> None:
    results = verdicts(
        "agent",
        "6.12",
        "mitigated",
        {"command": f"{sys.executable} -c 'import sys; sys.stdin.readline()'", "timeout": "5"},
    )
    assert {outcome for outcome, _ in results.values()} == {"error"}


def test_missing_capability_is_not_applicable_never_skipped() -> None:
    results = verdicts("reference", "6.12", "mitigated", {"without": REQUIRES_GUEST})
    profile = resolve_profile(SPEC, "6.12", "mitigated")
    guest = {c.id for c in build_cases(SPEC, profile) if REQUIRES_GUEST in c.requires}
    assert guest and {results[i][0] for i in guest} == {"not-applicable"}
    assert {o for i, (o, _) in results.items() if i not in guest} == {"pass"}


def run_suite(report: Path, *extra: str) -> None:
    args = [sys.executable, "-m", "pytest", "--pyargs", "kvm_fwspec.conformance.suite", "-p", "no:cacheprovider", "-q",
            "--fwspec-adapter=reference", "--fwspec-kernel=6.13", f"--fwspec-report={report}", *extra]  # fmt: skip
    result = subprocess.run(args, capture_output=True, text=True, cwd=report.parent)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


def test_serial_and_two_workers_give_identical_verdicts(tmp_path: Path) -> None:
    run_suite(tmp_path / "serial")
    run_suite(tmp_path / "parallel", "-n", "2", "--dist", "loadgroup")
    serial, parallel = (
        json.loads((tmp_path / d / "results.json").read_text()) for d in ("serial", "parallel")
    )
    strip = lambda doc: {c["id"]: (c["outcome"], c["rule"], c["observed"]) for c in doc["cases"]}  # noqa: E731
    assert strip(serial) == strip(parallel)
    assert serial["summary"] == parallel["summary"] and serial["summary"]["conforms"]


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    report = tmp_path_factory.mktemp("certify")
    result = subprocess.run(
        [*KVM_FWSPEC, "certify", "--kernel", "6.1", "--report", str(report)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "CONFORMS" in result.stdout.splitlines()[-1]
    return report


def test_results_validate_and_verify(results_dir: Path) -> None:
    document = json.loads((results_dir / "results.json").read_text())
    jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text())).validate(document)
    assert verify(results_dir / "results.json") == []
    junit = ET.parse(results_dir / "results.junit.xml").getroot()
    assert int(junit.get("tests", "0")) == len(document["cases"]) == len(junit.findall("testcase"))
    html = (results_dir / "report.html").read_text()
    assert "for kernel profile arm64 6.1 host=mitigated: yes</h1>" in html


def test_certify_cli_reports_an_unknown_adapter_in_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [*KVM_FWSPEC, "certify", "--adapter", "nope", "--report", str(tmp_path)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert shutil.which("kvm-fwspec")
