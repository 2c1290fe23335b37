"""Arbitrary input never crashes the agent protocol, the id decoder, the rule language or the
reference implementation, and the reference answers random accesses as the spec's rules say.
CI runs a bounded number of inputs (FUZZ_EXAMPLES, default 300 per target);
benchmarks/fuzz.py runs over a million."""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st

from kvm_fwspec.conformance.profile import resolve_profile
from tests import fuzz_targets as t
from tests.mutants import MUTANTS, Mutant

BOUNDED = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)


@BOUNDED
@given(t.agent_lines)
def test_agent_answers_any_line(line: str) -> None:
    t.agent_request(line)


@BOUNDED
@given(st.binary(max_size=300) | t.json_values.map(lambda v: json.dumps(v).encode()))
def test_client_accepts_only_well_formed_answers(data: bytes) -> None:
    t.client_response(data)


@BOUNDED
@given(st.binary(max_size=400))
def test_agent_reader_is_bounded(data: bytes) -> None:
    t.agent_reader(data)


@BOUNDED
@given(t.U64)
def test_any_register_id_decodes(reg_id: int) -> None:
    t.register_id(reg_id)


@BOUNDED
@given(st.text(max_size=40))
def test_register_id_text_parses_or_is_refused(text: str) -> None:
    t.register_id_text(text)


@BOUNDED
@given(t.rule_texts)
def test_rule_language_parses_or_refuses(text: str) -> None:
    t.rule_expression(text)


@BOUNDED
@given(t.profiles(), t.programs)
def test_reference_takes_any_program(profile: t.Profile, program: dict[str, object]) -> None:
    t.reference_program(profile, program)


@BOUNDED
@given(st.data())
def test_reference_matches_the_rules_for_random_accesses(data: st.DataObject) -> None:
    profile = data.draw(t.profiles())
    t.matches_the_rules(profile, data.draw(t.scenarios), data.draw(t.accesses(profile)))


# Bugs only a guest call shows (what PSCI_VERSION or PSCI_FEATURES answers, a disabled
# service still answering); the random accesses here are GET/SET only.
GUEST_VIEW = {
    "guest-sees-latest-psci",
    "features-ignore-selected-version",
    "disabled-service-still-answers",
    "system-suspend-without-its-capability",
    "system-suspend-stops-every-vcpu",
    "trng-leaks-bits-above-the-count",
    "trng-takes-too-many-bits",
    "kvm-features-x2-from-the-wrong-bitmap",
}
# Bugs of the SMCCC filter, a VM attribute no register access reaches: the suite's filter
# cases catch them (tests/test_conformance.py runs every mutant through the suite).
FILTER = {"filter-after-run-allowed"}
# Bugs of which vcpus are on, which only calls over several vcpus show.
POWER = {m.name for m in MUTANTS if m.caught_by.startswith("psci-power/")}
# Bugs of a vcpu's stolen-time address, a vcpu attribute no register access reaches.
STOLEN_TIME = {m.name for m in MUTANTS if m.caught_by.startswith("stolen-time/")}
GET_SET_MUTANTS = [m for m in MUTANTS if m.name not in GUEST_VIEW | FILTER | POWER | STOLEN_TIME]


@pytest.mark.exhaustive
@pytest.mark.parametrize("mutant", GET_SET_MUTANTS, ids=[m.name for m in GET_SET_MUTANTS])
def test_random_accesses_find_each_seeded_bug(mutant: Mutant) -> None:
    """The property is not vacuous: random accesses alone expose every GET/SET mutant."""
    profile = resolve_profile(t.SPEC, mutant.kernel, mutant.host)
    strategy = st.tuples(t.scenarios, t.accesses(profile))
    found = find(
        strategy,
        lambda drawn: t.disagreement(profile, drawn[0], drawn[1], mutant.build) is not None,
        settings=settings(max_examples=4000, database=None, deadline=None, derandomize=True),
    )
    assert t.disagreement(profile, found[0], found[1], mutant.build) is not None


def test_a_program_cannot_ask_for_unbounded_work() -> None:
    """Found by the million-input run: 10**20 vcpus exhausted the reference's memory."""
    program = {"vcpus": 10**20, "features": None, "steps": [{"op": "run", "vcpu": 0}]}
    line = json.dumps({"id": 1, "method": "run", "params": {"programs": [program]}})
    response, _ = t.answer(t.SERVED, line)
    reason = f"ValueError: a program has 1 to 8 vcpus, not {10**20}"
    assert response["result"]["observed"] == [[{"error": reason}]]
