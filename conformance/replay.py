"""`kvm-fwspec replay RESULTS CASE-ID`: run one recorded case again and show, step by step,
what the spec expects against what the implementation does now.

The case is rebuilt from the spec the results name, and its program must be the one the results
recorded: a replay of another program would prove nothing about the recorded failure.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kvm_fwspec.conformance.cases import Case, build_cases
from kvm_fwspec.conformance.greeting import greeted_adapter
from kvm_fwspec.conformance.profile import resolve_profile
from kvm_fwspec.conformance.verdicts import (
    CaseResult,
    certify_cases,
    describe_outcome,
    matches,
    program_in_hex,
)
from kvm_fwspec.conformance.verify import NotResults, read_results
from kvm_fwspec.spec.errors import UsageError
from kvm_fwspec.spec.loader import load_spec

EXIT_CODES = {"pass": 0, "fail": 1}  # not-applicable and error: the case could not be judged


def replay(path: Path, case_id: str, adapter: str | None, options: Mapping[str, str]) -> int:
    """Rerun `case_id` of the results in `path`; print each step; exit code by the verdict."""
    try:
        document = read_results(path)
    except NotResults as exc:
        raise UsageError(f"{path}: {exc}") from None
    run = document["run"]
    spec = load_spec()
    if run["spec-files"] != {f.name: f.sha256 for f in spec.files}:
        raise UsageError(f"{path}: the results are for another spec; replay needs the same spec")
    profile = resolve_profile(spec, run["kernel"], run["host-profile"], run["arch"])
    recorded = {c["id"]: c for c in document["cases"]}
    if case_id not in recorded:
        close = difflib.get_close_matches(case_id, list(recorded), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise UsageError(f"{path}: no case '{case_id}'{hint}")
    case = next(c for c in build_cases(spec, profile) if c.id == case_id)
    if program_in_hex(case.program) != recorded[case_id]["program"]:
        raise UsageError(
            f"{path}: case {case_id} recorded another program than the spec gives it; "
            "the results were edited or written by another suite"
        )
    name = adapter or run["adapter"]
    implementation = greeted_adapter(name, spec, profile, options, recorded=True)
    try:
        capabilities, (result,) = certify_cases(implementation, [case])
    finally:
        implementation.close()
    print(
        f"{case_id}: {case.rule} in a {case.scenario} VM, replayed on {capabilities.implementation} as {profile.label}"
    )
    for line in describe_steps(case, result):
        print(line)
    why = f": {result.reason}" if result.reason else ""
    print(f"kvm-fwspec: replayed {result.outcome} (recorded {recorded[case_id]['outcome']}){why}")
    return EXIT_CODES.get(result.outcome, 2)


def describe_steps(case: Case, result: CaseResult) -> list[str]:
    """One line per step: the operation in hex, expected and observed, and a mark where they differ."""
    steps = program_in_hex(case.program)["steps"]
    observed: list[Any] = [None] * len(steps) if result.observed is None else result.observed
    lines = []
    for index, (step, expected, seen) in enumerate(
        zip(steps, result.expected, observed, strict=True)
    ):
        operation = " ".join(f"{k}={v}" for k, v in step.items() if k != "op")
        mark = "  " if seen is not None and matches(expected, seen) else "!="
        shown = "not run" if seen is None else describe_outcome(seen)
        lines.append(
            f"  {mark} step {index} {step['op']} {operation}: expected {describe_outcome(expected)}, observed {shown}"
        )
    return lines
