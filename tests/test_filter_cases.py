"""The SMCCC filter's cases come from spec/smccc-filter.yaml's tables, and only from them.

Every rule of the filter that exists in a release has a case there; before 6.4 the cases show
the filter absent; an edit to the tables changes what the cases expect; and the oracle fills
exactly the names spec/filter_names.py declares for each table.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kvm_fwspec.conformance.cases import REQUIRES_FILTER, Case, build_cases
from kvm_fwspec.conformance.filter_oracle import FilterOracle, VmFilter
from kvm_fwspec.conformance.profile import Profile
from kvm_fwspec.spec.filter_names import FILTER_OPS, filter_names
from kvm_fwspec.spec.loader import default_spec_dir, load_spec
from kvm_fwspec.spec.model import Release, Spec
from kvm_fwspec.spec.rule_language import Type

SPEC = load_spec()
HOST = next(h for h in SPEC.host_profiles if h.name == "mitigated")


def profile(release: str) -> Profile:
    major, minor = release.split(".")
    return Profile("arm64", Release(int(major), int(minor)), HOST, stable=True)


def filter_cases(spec: Spec, release: str) -> dict[str, Case]:
    return {
        c.id: c for c in build_cases(spec, profile(release)) if c.rule.startswith("smccc-filter/")
    }


@pytest.mark.parametrize("release", ["6.4", "6.12", "7.2"])
def test_every_filter_rule_of_a_release_with_the_filter_has_a_case(release: str) -> None:
    live = {r.id for r in SPEC.smccc_filter.rules if profile(release).has(r.lifetime)}
    covered = {c.rule for c in filter_cases(SPEC, release).values()}
    assert covered == live
    assert not any(rule.endswith("/absent") for rule in covered)


@pytest.mark.parametrize("release", ["5.10", "6.1", "6.3"])
def test_before_6_4_the_cases_show_the_filter_absent(release: str) -> None:
    cases = filter_cases(SPEC, release)
    assert cases, "the absence is certified, not skipped"
    assert {c.rule for c in cases.values()} == {
        "smccc-filter/has/absent",
        "smccc-filter/set/absent",
    }
    assert all(c.expected[-1] == {"errno": "EINVAL"} for c in cases.values())
    assert all(REQUIRES_FILTER in c.requires for c in cases.values())


def test_a_forwarded_psci_call_is_answered_by_userspace_and_seen_by_the_guest() -> None:
    case = filter_cases(SPEC, "6.12")["smccc-filter.call.forward.psci-version-forwarded"]
    call = case.program["steps"][-1]
    assert call["function"] == 0x84000000 and call["answer"] == 0x10002
    assert case.expected[-1] == {"x0": 0x10002, "hypercall": 0x84000000, "hypercall-flags": 0}


def test_the_filter_is_consulted_before_the_bitmaps() -> None:
    case = filter_cases(SPEC, "6.12")["smccc-filter.call.forward.trng-version-withheld-by-std-bmap"]
    assert case.program["steps"][0]["value"] == 0  # STD_BMAP cleared: KVM alone would refuse
    assert "hypercall" in case.expected[-1]


def edited_spec(tmp_path: Path, old: str, new: str) -> Spec:
    copy = tmp_path / "spec"
    shutil.copytree(default_spec_dir(), copy, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    path = copy / "smccc-filter.yaml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    return load_spec(copy)


def test_the_cases_follow_an_edit_to_the_tables(tmp_path: Path) -> None:
    """Were the VM-has-run check made before the action's (as it was in the series' first
    version), a run VM asked for an unknown action would get EBUSY: the cases say so."""
    after_run = "  - id: smccc-filter/set/after-run\n"
    unknown = "  - id: smccc-filter/set/unknown-action\n"
    text = (default_spec_dir() / "smccc-filter.yaml").read_text()
    start, middle = text.index(unknown), text.index(after_run)
    end = text.index("  - id: smccc-filter/set/overlap\n")
    swapped = text[:start] + text[middle:end] + text[start:middle] + text[end:]
    spec = edited_spec(tmp_path, text, swapped)
    case_id = "smccc-filter.set.unknown-action.after-run-unknown-action"
    assert filter_cases(SPEC, "6.12")[case_id].expected[-1] == {"errno": "EINVAL"}
    edited = filter_cases(spec, "6.12")
    assert case_id not in edited
    assert edited["smccc-filter.set.after-run.after-run-unknown-action"].expected[-1] == {
        "errno": "EBUSY"
    }


def test_a_wrong_errno_in_the_spec_is_what_the_cases_expect(tmp_path: Path) -> None:
    spec = edited_spec(
        tmp_path,
        "    when: filter.overlaps\n    result: {errno: EEXIST}",
        "    when: filter.overlaps\n    result: {errno: EBUSY}",
    )
    case = filter_cases(spec, "6.12")["smccc-filter.set.overlap.arch-smc32-first"]
    assert case.expected[-1] == {"errno": "EBUSY"}


def value_type(value: object) -> Type:
    if isinstance(value, bool):
        return Type.BOOL
    return Type.SET if isinstance(value, frozenset) else Type.INT


@pytest.mark.parametrize("op", FILTER_OPS)
def test_the_oracle_fills_exactly_the_declared_names(op: str) -> None:
    oracle = FilterOracle(SPEC, profile("6.12"))
    filled = {
        "has": lambda: oracle.has_names(0, 0),
        "set": lambda: oracle.set_names(VmFilter(), False, 0x84000000, 0x20, 1, 0),
        "call": lambda: oracle.call_names(VmFilter(), 0x84000000),
    }[op]()
    declared = filter_names(op, tuple(a.name for a in SPEC.smccc_filter.actions))
    assert {name: value_type(value) for name, value in filled.items()} == declared
