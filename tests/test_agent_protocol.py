"""The agent protocol is what docs/agent-protocol.md says: the documented exchange is what the
reference agent answers, version 2 writes every 64-bit number as a hex string that JavaScript
and jq can carry, and version 1 is still spoken by both sides."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kvm_fwspec.conformance.adapters.agent import AgentAdapter, AgentError, create
from kvm_fwspec.conformance.cases import build_cases
from kvm_fwspec.conformance.guest.agent import Session
from kvm_fwspec.conformance.guest.program import execute
from kvm_fwspec.conformance.guest.wire import (
    PROTOCOL_V1,
    PROTOCOL_V2,
    WireError,
    decode_outcome,
    from_hex,
    to_hex,
)
from kvm_fwspec.conformance.profile import resolve_profile
from kvm_fwspec.conformance.reference_agent import reference_served
from kvm_fwspec.conformance.verdicts import certify_cases
from kvm_fwspec.reference_impl.kvm import ReferenceKvm
from kvm_fwspec.spec.loader import load_spec
from tests.checkout import KVM_FWSPEC, ROOT

SPEC = load_spec()
SPEC_PROFILE = ("6.12", "mitigated")
PROFILE = resolve_profile(SPEC, *SPEC_PROFILE)
DOC = ROOT / "docs" / "agent-protocol.md"
PSCI_VERSION = 0x6030000000140000


def documented_exchange() -> tuple[list[str], list[dict[str, Any]]]:
    """The client's lines and the agent's answers of the doc's complete exchange."""
    text = DOC.read_text(encoding="utf-8")
    block = text.split("## A complete exchange", 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
    sent = [line[3:] for line in block.splitlines() if line.startswith("C: ")]
    answers = [json.loads(line[3:]) for line in block.splitlines() if line.startswith("A: ")]
    return sent, answers


def without_elapsed(answer: dict[str, Any]) -> dict[str, Any]:
    result = answer.get("result")
    if isinstance(result, dict):
        return {**answer, "result": {k: v for k, v in result.items() if k != "elapsed"}}
    return answer


def test_the_documented_exchange_is_what_the_reference_agent_answers() -> None:
    sent, documented = documented_exchange()
    assert len(sent) == len(documented) == 3
    result = subprocess.run(
        [*KVM_FWSPEC, "agent", "--kernel", SPEC_PROFILE[0], "--host", SPEC_PROFILE[1]],
        input="\n".join(sent) + "\n", capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    answered = [json.loads(line) for line in result.stdout.splitlines()]
    assert [without_elapsed(a) for a in answered] == [without_elapsed(d) for d in documented]


def test_every_number_of_the_documented_run_is_a_hex_string() -> None:
    """What the doc promises an implementer in JavaScript: no JSON number beyond 2**53."""
    sent, documented = documented_exchange()

    def numbers(value: Any) -> list[int | float]:
        if isinstance(value, dict):
            return [n for v in value.values() for n in numbers(v)]
        if isinstance(value, list):
            return [n for v in value for n in numbers(v)]
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        return [value] if is_number else []

    messages = [json.loads(line) for line in sent] + documented
    assert numbers(messages) and max(abs(n) for n in numbers(messages)) < 1 << 53


@pytest.mark.parametrize(
    ("number", "text"),
    [(0, "0x0"), (0x10000, "0x10000"), (PSCI_VERSION, "0x6030000000140000"), (-1, "-0x1"),
     ((1 << 64) - 1, "0xffffffffffffffff"), (-(1 << 63), "-0x8000000000000000")],
)  # fmt: skip
def test_hex_strings_round_trip(number: int, text: str) -> None:
    assert to_hex(number) == text
    assert from_hex(text, signed=number < 0) == number


def test_x0_is_read_signed_in_either_form() -> None:
    assert from_hex("-0x1", signed=True) == from_hex("0xffffffffffffffff", signed=True) == -1
    assert from_hex("0x0000000000010001", signed=True) == 0x10001
    assert from_hex("0xFFFFFFFF") == 0xFFFFFFFF


@pytest.mark.parametrize(
    "wrong",
    [6931039826524504064, "6931039826524504064", "0x", "6030000000140000", "0X10",
     "0x1_0", " 0x10", "0x" + "1" * 17, "-0x1", True, None, "0xg"],
)  # fmt: skip
def test_a_number_written_otherwise_is_refused(wrong: Any) -> None:
    with pytest.raises(WireError, match=r"not a hex string|is negative"):
        from_hex(wrong)


def test_a_version_2_outcome_names_the_field_that_breaks_it() -> None:
    with pytest.raises(WireError, match="value: 65536 is not a hex string"):
        decode_outcome({"value": 65536}, PROTOCOL_V2)
    with pytest.raises(WireError, match=r"ids: '0x1' is not an integer"):
        decode_outcome({"ids": ["0x1"]}, PROTOCOL_V1)
    assert decode_outcome({"x0": "-0x1"}, PROTOCOL_V2) == {"x0": -1}


def exchange(session: Session, *requests: dict[str, Any]) -> list[dict[str, Any]]:
    return [session(json.dumps(request))[0] for request in requests]


RUN = {
    "vcpus": 2,
    "features": ["psci-0.2"],
    "steps": [
        {"op": "set", "vcpu": 0, "reg": PSCI_VERSION, "value": 0x10000},
        {"op": "get", "vcpu": 1, "reg": PSCI_VERSION},
    ],
}


@pytest.mark.parametrize(
    "hello_params", [{"protocol": PROTOCOL_V1}, {}], ids=["offers-version-1", "offers-nothing"]
)
def test_an_old_client_is_served_version_1(hello_params: dict[str, str]) -> None:
    session = Session(reference_served({"kernel": "6.12", "host": "mitigated"}))
    hello, run = exchange(
        session,
        {"id": 1, "method": "hello", "params": hello_params},
        {"id": 2, "method": "run", "params": {"programs": [RUN]}},
    )
    assert hello["result"]["protocol"] == PROTOCOL_V1
    assert run["result"]["observed"] == [[{"ok": True}, {"value": 0x10000}]]


def test_a_client_offering_an_unknown_version_is_told_the_newest() -> None:
    session = Session(reference_served({"kernel": "6.12", "host": "mitigated"}))
    (hello,) = exchange(
        session, {"id": 1, "method": "hello", "params": {"protocol": "kvm-fwspec-agent/9"}}
    )
    assert hello["result"]["protocol"] == PROTOCOL_V2


def test_a_version_2_agent_refuses_integers_naming_the_program_and_field() -> None:
    session = Session(reference_served({"kernel": "6.12", "host": "mitigated"}))
    hello, run = exchange(
        session,
        {"id": 1, "method": "hello", "params": {"protocol": PROTOCOL_V2}},
        {"id": 2, "method": "run", "params": {"programs": [RUN]}},
    )
    assert hello["result"]["protocol"] == PROTOCOL_V2
    assert run == {
        "id": 2,
        "error": {
            "message": "program 0: step 0: reg: 6931039826524504064 is not a hex "
            'string such as "0x1f"'
        },
    }


def agent_command(mode: str, tmp_path: Path) -> str:
    return (
        f"{sys.executable} -m tests.faulty_agent {mode} {tmp_path / 'fired'} "
        "--kernel 6.12 --host mitigated"
    )


def verdicts(adapter: AgentAdapter) -> set[str]:
    _, results = certify_cases(adapter, build_cases(SPEC, PROFILE))
    return {r.outcome for r in results}


@pytest.mark.parametrize(
    ("command", "spoken"),
    [
        (
            f"{sys.executable} -m kvm_fwspec.conformance.commands.cli agent --kernel 6.12",
            PROTOCOL_V2,
        ),
        ("v1-only", PROTOCOL_V1),
    ],
    ids=["reference-agent", "agent-of-version-1"],
)
def test_the_client_speaks_the_version_its_agent_answers(
    command: str, spoken: str, tmp_path: Path
) -> None:
    if command == "v1-only":
        command = agent_command("v1-only", tmp_path)
    adapter = create(PROFILE, {"command": command})
    try:
        assert verdicts(adapter) == {"pass"}
        assert adapter.protocol == spoken
    finally:
        adapter.close()


MISWRITTEN_AGENT = """
import json, sys
for line in sys.stdin:
    request = json.loads(line)
    if request["method"] == "hello":
        result = {"protocol": "kvm-fwspec-agent/2", "kernel": "6.12"}
    elif request["method"] == "run":  # version-1 integers on a version-2 connection
        result = {"observed": [[{"ok": True}, {"value": 65536}] for _ in request["params"]["programs"]]}
    else:
        result = {}
    print(json.dumps({"id": request["id"], "result": result}), flush=True)
"""


def test_an_agent_writing_integers_on_version_2_errs_each_step_and_keeps_its_connection(
    tmp_path: Path,
) -> None:
    script = tmp_path / "agent.py"
    script.write_text(MISWRITTEN_AGENT)
    adapter = create(PROFILE, {"command": f"{sys.executable} {script}"})
    try:
        first = adapter.run_programs([RUN])
        assert first == [
            [
                {"ok": True},
                {
                    "error": 'the agent\'s outcome {"value": 65536} breaks kvm-fwspec-agent/2: '
                    'value: 65536 is not a hex string such as "0x1f"'
                },
            ]
        ]
        channel = adapter.channel
        assert adapter.run_programs([RUN]) == first and adapter.channel is channel
        assert adapter.agents_started == 1
    finally:
        adapter.close()


HELLO_AGENT = """
import json, sys
for line in sys.stdin:
    request = json.loads(line)
    result = {"protocol": "kvm-fwspec-agent/2", **json.loads(sys.argv[1])}
    print(json.dumps({"id": request["id"], "result": result}), flush=True)
"""


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"kernel": 6.12}, "kernel 6.12 is not a string such as \"6.12\""),
        ({"features": "guest-calls"}, "features 'guest-calls' is not an array of strings"),
        ({"host-levels": {"x": "0x1"}}, "host-levels {'x': '0x1'} is not an object of integers"),
        ({"implementation": None}, "implementation None is not a string"),
    ],
)  # fmt: skip
def test_a_hello_of_the_wrong_types_is_refused_naming_the_field(
    fields: dict[str, Any], problem: str, tmp_path: Path
) -> None:
    script = tmp_path / "agent.py"
    script.write_text(HELLO_AGENT)
    command = f"{sys.executable} {script} '{json.dumps(fields)}'"
    adapter = create(PROFILE, {"command": command})
    with pytest.raises(AgentError) as raised:
        adapter.capabilities()
    assert str(raised.value) == f"the agent's hello: {problem}"
    adapter.close()


def test_the_reference_agent_serves_the_stable_series_it_is_given() -> None:
    """`kvm-fwspec agent --kernel 6.1.y` is the stable series, with its backports, and says so."""
    result = subprocess.run(
        [*KVM_FWSPEC, "agent", "--kernel", "6.1.y"],
        input=json.dumps({"id": 1, "method": "hello", "params": {"protocol": PROTOCOL_V2}}) + "\n",
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert json.loads(result.stdout)["result"]["kernel"] == "6.1.y"
    served = reference_served({"kernel": "6.1.y", "host": "mitigated"})
    assert getattr(served.implementation, "stable", None) is True


BROKEN_REQUESTS = {
    "not-json": ("garbage", None, "not a JSON line: Expecting value: line 1 column 1 (char 0)"),
    "not-an-object": ("[1]", None, "not a request: not an object"),
    "id-not-integer": (
        '{"id":"x","method":"bye"}',
        None,
        "not a request: its id is not an integer",
    ),
    "no-method": ('{"id":3}', 3, "unknown method None; methods are hello, run, bye"),
    "run-without-programs": (
        '{"id":4,"method":"run"}',
        4,
        "run needs params.programs, an array of programs",
    ),
    "params-not-object": ('{"id":5,"method":"run","params":[]}', 5, "params is not an object"),
    "protocol-not-string": (
        '{"id":6,"method":"hello","params":{"protocol":2}}',
        6,
        "hello's protocol 2 is not a string such as kvm-fwspec-agent/2",
    ),
}


@pytest.mark.parametrize("broken", sorted(BROKEN_REQUESTS))
def test_a_request_that_breaks_the_protocol_is_told_how_in_one_error(broken: str) -> None:
    """What docs/agent-protocol.md says of requests an agent cannot carry out, the reference
    agent does, in words rather than Python exception names (a Node agent written from the doc
    found the reference answering `KeyError: 'programs'`)."""
    line, request_id, message = BROKEN_REQUESTS[broken]
    session = Session(reference_served({"kernel": "6.12", "host": "mitigated"}))
    assert session(line) == ({"id": request_id, "error": {"message": message}}, False)


BROKEN_STEPS = {
    "vcpu-out-of-range": (
        {"op": "get", "vcpu": 5, "reg": 1},
        "a get step names vcpu 5; the program has vcpus 0 to 1",
    ),
    "set-without-value": ({"op": "set", "vcpu": 0, "reg": 1}, "a set step needs value"),
    "unknown-op": (
        {"op": "peek", "vcpu": 0},
        "unknown step op 'peek'; steps are get, set, list, run, mp-state, call, smccc-filter, "
        "has-attr, enable-cap, set-vcpu-attr, get-vcpu-attr",
    ),
    "function-beyond-32-bits": (
        {"op": "call", "vcpu": 0, "function": 0x1FFFFFFFF},
        "function 0x1ffffffff is not a number from 0 to 0xffffffff",
    ),
}


@pytest.mark.parametrize("broken", sorted(BROKEN_STEPS))
def test_a_step_the_agent_cannot_carry_out_is_its_error_and_the_rest_are_not_run(
    broken: str,
) -> None:
    step, error = BROKEN_STEPS[broken]
    program = {"vcpus": 2, "features": ["psci-0.2"], "steps": [step, {"op": "run", "vcpu": 0}]}
    assert execute(ReferenceKvm("6.12", "mitigated"), program) == [
        {"error": error},
        {"error": "not run"},
    ]
