"""Recorded real-KVM answers (tests/fixtures/real-kvm/), re-judged against the spec by program.

A record keeps, per Debian line, what one `kvm-fwspec qemu --kernel pinned` run's results.json
held for a family of cases: the run's provenance, and each case's program and observed
outcomes. Cases are matched by program, not id: a case's id names the rule that decides it,
which a change of the spec may change.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from kvm_fwspec.conformance.cases import build_cases
from kvm_fwspec.conformance.profile import resolve_profile
from kvm_fwspec.conformance.verdicts import program_in_hex
from kvm_fwspec.spec.loader import default_spec_dir, load_spec
from kvm_fwspec.spec.model import Spec

FIXTURES = Path(__file__).parent / "fixtures" / "real-kvm"


def load_record(name: str) -> dict[str, Any]:
    record: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return record


def run_of(record: dict[str, Any], line: str) -> dict[str, Any]:
    """The record's run of one Debian line."""
    found: dict[str, Any] = next(r for r in record["runs"] if r["line"] == line)
    return found


def observed(record: dict[str, Any], line: str, case_id: str) -> list[dict[str, Any]]:
    """What real KVM of `line` answered to each step of the case `case_id`."""
    answers: list[dict[str, Any]] = next(
        c["observed"] for c in run_of(record, line)["cases"] if c["id"] == case_id
    )
    return answers


def spec_without(tmp_path: Path, file: str, first: str, after: str) -> Spec:
    """The spec with the lines of `file` from `first` up to `after` (both exact lines, `after`
    kept) removed: a rule deleted, to show the kept answers fail without it."""
    copy_dir = tmp_path / "spec"
    shutil.copytree(
        default_spec_dir(), copy_dir, ignore=shutil.ignore_patterns("*.py", "__pycache__")
    )
    path = copy_dir / file
    text = path.read_text()
    path.write_text(text[: text.index(first)] + text[text.index(after) :])
    return load_spec(copy_dir)


def judge(
    spec: Spec, run: dict[str, Any], rule_prefix: str, id_suffixes: tuple[str, ...] = ()
) -> list[str]:
    """Each way the recorded run departs from the spec's cases whose rule starts with
    `rule_prefix` or whose id ends with one of `id_suffixes`, for its kernel and host."""
    profile = resolve_profile(spec, run["kernel"], run["host-profile"])
    cases = {
        json.dumps(program_in_hex(c.program), sort_keys=True): c
        for c in build_cases(spec, profile)
        if c.rule.startswith(rule_prefix) or c.id.endswith(id_suffixes)
    }
    recorded = {json.dumps(c["program"], sort_keys=True): c for c in run["cases"]}
    problems = [
        f"{run['line']}: {cases[program].id}: not run on real KVM"
        for program in sorted(cases.keys() - recorded.keys())
    ]
    for program, real in recorded.items():
        case = cases.get(program)
        if case is None:
            problems.append(f"{run['line']}: {real['id']}: the spec's suite has no such program")
        elif list(case.expected) != real["observed"]:
            problems.append(
                f"{run['line']}: {case.id}: spec {list(case.expected)}, real KVM {real['observed']}"
            )
    return sorted(problems)
