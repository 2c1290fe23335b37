"""Compare observed outcomes with expected ones and give each case its verdict."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from kvm_fwspec.conformance.adapters import Adapter, Capabilities, describe_failure
from kvm_fwspec.conformance.cases import Case
from kvm_fwspec.conformance.guest.wire import STEP_NUMBERS

OUTCOMES = ("pass", "fail", "not-applicable", "error")


@dataclass(frozen=True)
class CaseResult:
    """One case's verdict with the evidence for it, and the program that produced it."""

    case: Case
    outcome: str
    expected: list[dict[str, Any]]
    observed: list[dict[str, Any]] | None
    duration: float
    reason: str = ""

    @property
    def id(self) -> str:
        return self.case.id

    @property
    def rule(self) -> str:
        return self.case.rule

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "rule": self.rule,
            "scenario": self.case.scenario,
            "program": program_in_hex(self.case.program),
            "outcome": self.outcome,
            "expected": self.expected,
            "observed": self.observed,
            "duration": round(self.duration, 6),
            "reason": self.reason,
        }


def program_in_hex(program: dict[str, Any]) -> dict[str, Any]:
    """The program as results.json records it, to rerun a case by hand: register ids, values
    and function ids in hex, as KVM_GET_REG_LIST dumps and kernel headers spell them."""
    steps = [{key: _hex(key, value) for key, value in step.items()} for step in program["steps"]]
    return {**program, "steps": steps}


def _hex(key: str, value: Any) -> Any:
    if key == "args":
        return [hex(arg) for arg in value]
    return hex(value) if key in STEP_NUMBERS else value


def matches(expected: dict[str, Any], observed: dict[str, Any]) -> bool:
    """Whether an observed outcome is the expected one: the same keys, each value equal, or,
    where the spec fixes only a shape ({"bits": N}, for entropy or a clock), an integer from
    0 to 2**N - 1."""
    if expected.keys() != observed.keys():
        return False
    return all(_value_matches(expected[key], observed[key]) for key in expected)


def _value_matches(expected: Any, observed: Any) -> bool:
    if isinstance(expected, dict) and expected.keys() == {"bits"}:
        return (
            isinstance(observed, int)
            and not isinstance(observed, bool)
            and 0 <= observed < 1 << expected["bits"]
        )
    return bool(expected == observed)


def describe_outcome(outcome: dict[str, Any]) -> str:
    """`value=0x10000`, `errno=EINVAL`, `x0=-1`: an outcome as a reader compares it with the
    program, numbers in hex as the program is, except x0, which is signed."""
    return ", ".join(f"{key}={_shown(key, value)}" for key, value in outcome.items())


def _shown(key: str, value: Any) -> str:
    if isinstance(value, dict) and value.keys() == {"bits"}:
        return f"any {value['bits']}-bit value"
    if isinstance(value, bool | str) or value is None:
        return json.dumps(value)  # true, "0x1f": as the results record it, not as Python
    if isinstance(value, list):
        return "[" + ", ".join(_shown(key, item) for item in value) + "]"
    if isinstance(value, int) and not isinstance(value, bool) and key != "x0":
        return hex(value)
    return str(value)


def judge(case: Case, observed: list[dict[str, Any]], duration: float) -> CaseResult:
    expected = list(case.expected)
    errors = [o["error"] for o in observed if "error" in o]
    if errors:
        return CaseResult(case, "error", expected, observed, duration, errors[0])
    mismatched = [
        i for i, (e, o) in enumerate(zip(expected, observed, strict=True)) if not matches(e, o)
    ]
    if mismatched:
        first = mismatched[0]
        step = case.program["steps"][first]
        reason = (
            f"step {first} ({step['op']}): expected {describe_outcome(expected[first])}, "
            f"observed {describe_outcome(observed[first])}"
        )
        return CaseResult(case, "fail", expected, observed, duration, reason)
    return CaseResult(case, "pass", expected, observed, duration)


UNAVAILABLE = Capabilities("unavailable", None, "arm64")


def certify_cases(adapter: Adapter, cases: list[Case]) -> tuple[Capabilities, list[CaseResult]]:
    """Ask the adapter what it can do, then run the cases; an adapter that cannot even say
    gives every case an error verdict rather than stopping the run."""
    try:
        capabilities = adapter.capabilities()
    except Exception as exc:
        reason = f"adapter unavailable: {describe_failure(exc)}"
        return UNAVAILABLE, [
            CaseResult(c, "error", list(c.expected), None, 0.0, reason) for c in cases
        ]
    return capabilities, run_cases(adapter, capabilities, cases)


def run_cases(adapter: Adapter, capabilities: Capabilities, cases: list[Case]) -> list[CaseResult]:
    """Run the applicable cases in one adapter round trip; mark the others not applicable."""
    applicable = [c for c in cases if set(c.requires) <= capabilities.features]
    results = {
        c.id: CaseResult(
            c,
            "not-applicable",
            list(c.expected),
            None,
            0.0,
            f"needs {', '.join(sorted(set(c.requires) - capabilities.features))}",
        )
        for c in cases
        if c not in applicable
    }
    if applicable:
        start = time.perf_counter()
        try:
            observed = adapter.run_programs([c.program for c in applicable])
        except Exception as exc:  # a broken adapter is every case's error, not a crash
            observed = [
                [{"error": describe_failure(exc)}] * len(c.program["steps"]) for c in applicable
            ]
        share = (time.perf_counter() - start) / len(applicable)
        for case, outcome in zip(applicable, observed, strict=True):
            results[case.id] = judge(case, outcome, share)
    return [results[c.id] for c in cases]
