"""Recorded real-KVM answers (tests/fixtures/real-kvm/), re-judged against the spec by program.

A record keeps, per Debian line, what one `kvm-fwspec qemu --kernel pinned` run's results.json
held for a family of cases: the run's provenance, and each case's program and observed
outcomes. Cases are matched by program, not id: a case's id names the rule that decides it,
which a change of the spec may change.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kvm_fwspec.conformance.cases import build_cases
from kvm_fwspec.conformance.profile import resolve_profile
from kvm_fwspec.conformance.verdicts import program_in_hex
from kvm_fwspec.spec.model import Spec

FIXTURES = Path(__file__).parent / "fixtures" / "real-kvm"


def load_record(name: str) -> dict[str, Any]:
    record: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return record


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
