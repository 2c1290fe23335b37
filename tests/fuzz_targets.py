"""Fuzz targets: each takes arbitrary input and must neither crash nor misreport. Shared by
tests/test_fuzz.py (a bounded number of inputs on every CI run) and benchmarks/fuzz.py (over a
million inputs, with the throughput printed)."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st

from kvm_fwspec.conformance.adapters.agent import AgentError, _parse
from kvm_fwspec.conformance.cases import (
    SCENARIOS,
    UNINITIALISED,
    Scenario,
    _Simulation,
    candidate_values,
)
from kvm_fwspec.conformance.guest.agent import answer
from kvm_fwspec.conformance.guest.agent_guard import Guard, TooLong, read_message
from kvm_fwspec.conformance.guest.program import execute
from kvm_fwspec.conformance.oracle import Oracle
from kvm_fwspec.conformance.profile import Profile
from kvm_fwspec.conformance.reference_agent import reference_served
from kvm_fwspec.reference_impl.kvm import ReferenceKvm
from kvm_fwspec.spec import rule_language as rl
from kvm_fwspec.spec.decode import describe_id, parse_id
from kvm_fwspec.spec.errors import UsageError
from kvm_fwspec.spec.loader import load_spec
from kvm_fwspec.spec.model import Register, Spec

SPEC: Spec = load_spec()
SERVED = reference_served({"kernel": "6.12", "host": "mitigated"})
U64 = st.integers(0, (1 << 64) - 1)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
step_ops = st.sampled_from(["get", "set", "list", "run", "call", "bogus"])
steps = st.fixed_dictionaries(
    {"op": step_ops, "vcpu": st.integers(-1, 3)},
    optional={"reg": U64, "value": U64 | st.integers() | st.text(max_size=3), "mask": U64,
              "match": U64, "function": U64, "args": st.lists(U64, max_size=3)},
)  # fmt: skip
requests = st.fixed_dictionaries(
    {"id": json_values, "method": st.sampled_from(["hello", "run", "bye", "nope"]) | st.text(max_size=5)},
    optional={"params": st.fixed_dictionaries(
        {}, optional={"programs": st.lists(st.fixed_dictionaries(
            {"vcpus": st.integers(-1, 3) | json_values,
             "features": st.none() | st.lists(st.sampled_from(["psci-0.2", "x"]), max_size=2),
             "steps": st.lists(steps, max_size=5)}), max_size=3) | json_values}) | json_values},
)  # fmt: skip
agent_lines = st.text(max_size=200) | requests.map(json.dumps) | json_values.map(json.dumps)


def agent_request(line: str) -> None:
    """The agent answers any line with one response object and keeps serving."""
    response, _ = answer(SERVED, line)
    assert set(response) in ({"id", "result"}, {"id", "error"}), response
    json.dumps(response)  # always sendable


def client_response(data: bytes) -> None:
    """The client accepts only a well-formed answer to its request, and says why otherwise."""
    try:
        response = _parse(data, 7)
    except AgentError as exc:
        assert str(exc)
        return
    assert response["id"] == 7 and ("result" in response or "error" in response)


def agent_reader(data: bytes) -> None:
    """The agent's reader never returns more than the limit, whatever arrives."""
    guard = Guard(max_message=64)
    source = io.BytesIO(data)
    while True:
        try:
            line = read_message(source, guard)
        except TooLong:
            return
        assert len(line) <= 64
        if not line:
            return


def register_id(reg_id: int) -> None:
    """Any 64-bit id decodes into lines that name it; its text form parses back to it."""
    lines = describe_id(SPEC, reg_id)
    assert lines[0] == f"id {reg_id:#018x}"
    assert parse_id(f"{reg_id:#x}") == reg_id


def register_id_text(text: str) -> None:
    try:
        value = parse_id(text)
    except UsageError as exc:
        assert text in str(exc) or "64 bits" in str(exc)
        return
    assert 0 <= value < 1 << 64


RULE_TOKENS = [*"abv.-_ 0123x|&!~<>=()[],{}", "value", "stored", "vcpu.initialized", "in",
               "not", "and", "or", "0x10001", "psci(", "1, 0)", "<<", ">>", "==", "!="]  # fmt: skip
rule_texts = st.lists(st.sampled_from(RULE_TOKENS), max_size=16).map("".join) | st.text(max_size=30)
RULE_SCOPE = rl.Scope(
    {"value": rl.Type.INT, "stored": rl.Type.INT, "vcpu.initialized": rl.Type.BOOL,
     "kernel.psci-versions": rl.Type.SET},
    {"psci": rl.Function((rl.Type.INT, rl.Type.INT), rl.Type.INT, lambda args: None)},
)  # fmt: skip
RULE_VALUES = {"value": 0x10001, "stored": 3, "vcpu.initialized": True,
               "kernel.psci-versions": frozenset({2, 0x10000})}  # fmt: skip


def rule_expression(text: str) -> None:
    """The rule language parses or refuses with an ExpressionError, type-checks or refuses the
    same way, and evaluates what type-checks; nothing else escapes."""
    try:
        expr = rl.parse(text)
        rl.infer(expr, RULE_SCOPE)
    except rl.ExpressionError as exc:
        assert str(exc)
        return
    rl.evaluate(expr, RULE_VALUES)


def profiles() -> st.SearchStrategy[Profile]:
    return st.builds(
        lambda release, host, stable: Profile("arm64", release, host, stable),
        st.sampled_from(SPEC.releases),
        st.sampled_from(SPEC.host_profiles),
        st.booleans(),
    )


def reference_program(profile: Profile, program: dict[str, Any]) -> None:
    """The reference takes any program: one outcome per step, errors as outcomes."""
    kvm = ReferenceKvm(str(profile.release), profile.host.name, stable=profile.stable)
    observed = execute(kvm, program)
    assert len(observed) == len(program["steps"])
    assert all(isinstance(o, dict) for o in observed)


programs = st.fixed_dictionaries(
    {"vcpus": st.integers(1, 2), "features": st.none() | st.just(["psci-0.2"]) | st.just([]),
     "steps": st.lists(steps, max_size=6)},
)  # fmt: skip


def firmware_ids(profile: Profile) -> st.SearchStrategy[int]:
    """Ids the rules care about: the profile's registers, any index or size in the firmware
    classes, and anything at all."""
    known = [r.ids["arm64"] for r in SPEC.registers if "arm64" in r.ids]
    size = SPEC.layout("reg-id").field("size")
    index = SPEC.layout("reg-id").field("index")
    near = st.builds(
        lambda base, new_index, new_size: (base & ~index.mask & ~size.mask)
        | (new_index << index.low) | (new_size << size.low),
        st.sampled_from(known), st.integers(0, 4), st.sampled_from([v.value for v in size.values]),
    )  # fmt: skip
    return st.one_of(st.sampled_from(known), st.sampled_from(known), near, U64)


Build = Callable[[str, str], Any]
_ORACLES: dict[tuple[str, str], Oracle] = {}


def oracle(profile: Profile) -> Oracle:
    """One oracle per profile: building its tables costs more than a whole example."""
    key = (profile.kernel, profile.host.name)
    if key not in _ORACLES:
        _ORACLES[key] = Oracle(SPEC, profile)
    return _ORACLES[key]


def reference_build(kernel: str, host: str) -> ReferenceKvm:
    return ReferenceKvm(kernel.removesuffix(".y"), host, stable=kernel.endswith(".y"))


def disagreement(
    profile: Profile,
    scenario: Scenario,
    accesses: list[tuple[str, int, int, int]],
    build: Build = reference_build,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]] | None:
    """Where an implementation's answers to a sequence of GET/SET (any ids, any values, from
    any starting state) differ from the spec's decision tables: (expected, observed), or None."""
    simulation = _Simulation(oracle(profile), scenario)
    for op, vcpu, reg_id, value in accesses:
        if op == "set":
            simulation.set(reg_id, value, vcpu)
        elif op == "get":
            simulation.get(reg_id, vcpu)
        elif scenario.features is not None and not simulation.has_run:
            simulation.run()
    features = list(scenario.features) if scenario.features is not None else None
    program = {"vcpus": 2, "features": features, "steps": simulation.steps}
    observed = execute(build(profile.kernel, profile.host.name), program)
    return None if observed == simulation.expected else (simulation.expected, observed)


def matches_the_rules(
    profile: Profile, scenario: Scenario, accesses: list[tuple[str, int, int, int]]
) -> None:
    assert disagreement(profile, scenario, accesses) is None


scenarios = st.sampled_from([*SCENARIOS, UNINITIALISED])


def accesses(profile: Profile) -> st.SearchStrategy[list[tuple[str, int, int, int]]]:
    """GET/SET on either vcpu, and the VM's first run. Most sequences stay on one of the
    profile's registers with values worth writing to it (the case builder's candidates), so
    a write is read back, repeated, or refused after a run; the rest take any id the rules
    care about and any value."""
    ops = st.sampled_from(["get", "set", "set", "run"])
    vcpus = st.integers(0, 1)

    def on_register(register: Register) -> st.SearchStrategy[list[tuple[str, int, int, int]]]:
        values = st.sampled_from(candidate_values(oracle(profile), register)) | st.integers(0, 0x1F)
        reg_id = register.ids[profile.arch]
        return st.lists(st.tuples(ops, vcpus, st.just(reg_id), values), max_size=6)

    anywhere = st.lists(
        st.tuples(ops, vcpus, firmware_ids(profile), st.integers(0, 0x1F) | U64), max_size=8
    )
    registers = oracle(profile).registers
    if not registers:  # 4.16 has none
        return anywhere
    return st.sampled_from(registers).flatmap(on_register) | anywhere
