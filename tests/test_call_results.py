"""A call's answer in x0-x3 (docs/agent-protocol.md, the `call` step's `results`): some SMCCC
calls answer in four registers (the vendor CALL_UID, TRNG_GET_UUID), so a call step may ask
for x1 to x(results - 1) besides x0. The executor checks the field and hands it to the vcpu,
the wire carries the registers in hex on version 2 (the field itself stays a JSON integer),
the results schema records it, the real-KVM agent reads the registers with KVM_GET_ONE_REG at
the exit that carries x0, and the Node agent relays both. The executor's tests run on a fake
implementation of the Vcpu protocol; the kvm_ioctl ones replace fcntl.ioctl as
tests/test_filter_steps.py does."""

from __future__ import annotations

import errno
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from kvm_fwspec.codegen.generated import kvm_fw_constants as abi
from kvm_fwspec.conformance.guest.agent import Session
from kvm_fwspec.conformance.guest.program import NOT_SUPPORTED_U64, execute
from kvm_fwspec.conformance.guest.wire import (
    PROTOCOL_V1,
    PROTOCOL_V2,
    WireError,
    decode_outcome,
    decode_program,
    encode_outcome,
    encode_program,
)
from kvm_fwspec.conformance.reference_agent import reference_served
from kvm_fwspec.spec.loader import load_spec
from tests.test_filter_steps import (
    KVM_ANSWER,
    PSCI_VERSION_SMC32,
    X0,
    ForwardingVcpu,
    Ioctls,
    recorded_case,
    recorded_ioctls,
    schema_errors,
    unarmed_watchdog,
)
from tests.test_filter_steps import call as kvm_call
from tests.test_node_agent import agent_argv, converse, request

# The vendor hypervisor service's CALL_UID and KVM's answer, the UUID
# 28b46fb6-2ec5-11e9-a9ca-4b564d003a74 in x0-x3 (include/linux/arm-smccc.h,
# ARM_SMCCC_VENDOR_HYP_UID_KVM_REG_0..3).
VENDOR_HYP_CALL_UID = 0x8600FF01
KVM_UID = (0xB66FB428, 0xE911C52E, 0x564BCAA9, 0x743A004D)
# The core registers x1-x3 as KVM_GET_ONE_REG names them (Documentation/virt/kvm/api.rst:
# "0x6030 0000 0010 0002 X1 64 regs.regs[1]", ...): arm64 | u64 | core | the 32-bit word of
# struct kvm_regs where regs[i] starts, 2 * i.
X1_TO_X3 = (0x6030000000100002, 0x6030000000100004, 0x6030000000100006)


# -- the executor checks `results` and hands it to the vcpu -------------------------------


class FakeVcpu:
    """A Vcpu whose call answers KVM's UID in as many registers as it is asked for, and
    records how it was called: (function, args, answer, results)."""

    def __init__(self, calls: list[tuple[int, list[int], int, int]]) -> None:
        self.calls = calls

    def init(self, features: list[str]) -> str | None:
        return None

    def get_one_reg(self, reg_id: int) -> tuple[str | None, int | None]:
        return "ENOENT", None

    def set_one_reg(self, reg_id: int, value: int) -> str | None:
        return "ENOENT"

    def reg_list(self) -> tuple[str | None, list[int]]:
        return None, []

    def run(self) -> dict[str, Any]:
        return {"ok": True}

    def mp_state(self) -> tuple[str | None, str | None]:
        return None, "runnable"

    def call(
        self, function_id: int, args: list[int], answer: int, results: int = 1
    ) -> dict[str, Any]:
        self.calls.append((function_id, args, answer, results))
        return {"x0": KVM_UID[0]} | {f"x{i}": KVM_UID[i] for i in range(1, results)}


class FakeVm:
    def __init__(self, calls: list[tuple[int, list[int], int, int]]) -> None:
        self.calls = calls

    def create_vcpu(self) -> FakeVcpu:
        return FakeVcpu(self.calls)

    def set_smccc_filter(self, base: int, nr_functions: int, action: int, pad: int) -> str | None:
        return None

    def has_attribute(self, group: int, attr: int) -> str | None:
        return None


class FakeImplementation:
    def __init__(self) -> None:
        self.calls: list[tuple[int, list[int], int, int]] = []

    def create_vm(self) -> FakeVm:
        return FakeVm(self.calls)


def run_calls(*steps: dict[str, Any]) -> tuple[list[dict[str, Any]], FakeImplementation]:
    implementation = FakeImplementation()
    program = {"vcpus": 1, "features": ["psci-0.2"], "steps": list(steps)}
    return execute(implementation, program), implementation


def uid_call(**fields: Any) -> dict[str, Any]:
    return {"op": "call", "vcpu": 0, "function": VENDOR_HYP_CALL_UID} | fields


@pytest.mark.parametrize(
    ("results", "error"),
    [
        (0, "results 0 is not a number from 1 to 4"),  # counting from x1, x0 not asked for
        (5, "results 5 is not a number from 1 to 4"),  # x4: SMCCC answers in x0-x3 only
        (True, "results true is not a number from 1 to 4"),
        ("0x4", 'results "0x4" is not a number from 1 to 4'),  # hex, as version 2's numbers
        (4.0, "results 4.0 is not a number from 1 to 4"),
    ],
    ids=["zero", "five", "bool", "hex-string", "float"],
)
def test_a_results_outside_1_to_4_is_the_step_s_error(results: Any, error: str) -> None:
    observed, implementation = run_calls(uid_call(results=results), {"op": "run", "vcpu": 0})
    assert observed == [{"error": error}, {"error": "not run"}]
    assert implementation.calls == []  # refused before the guest made the call


def test_results_reaches_the_vcpu_and_its_registers_the_outcome() -> None:
    observed, implementation = run_calls(uid_call(results=4), uid_call(results=2))
    assert observed == [
        {"x0": 0xB66FB428, "x1": 0xE911C52E, "x2": 0x564BCAA9, "x3": 0x743A004D},
        {"x0": 0xB66FB428, "x1": 0xE911C52E},
    ]
    assert implementation.calls == [
        (VENDOR_HYP_CALL_UID, [], NOT_SUPPORTED_U64, 4),
        (VENDOR_HYP_CALL_UID, [], NOT_SUPPORTED_U64, 2),
    ]


def test_a_call_without_results_or_with_1_is_x0_alone() -> None:
    """As before `results` existed: absent, it is 1, and 1 is x0 alone."""
    observed, implementation = run_calls(uid_call(), uid_call(results=1))
    assert observed == [{"x0": 0xB66FB428}, {"x0": 0xB66FB428}]
    assert [c[3] for c in implementation.calls] == [1, 1]


def test_the_reference_answers_kvm_s_uid_in_four_registers_over_version_2() -> None:
    """The whole chain on the reference agent: `results` read from a version-2 program, the
    UID the spec gives KVM (6.1 and later) in x0-x3, written back in hex."""
    session = Session(reference_served({"kernel": "6.12", "host": "mitigated"}))
    session(json.dumps({"id": 1, "method": "hello", "params": {"protocol": PROTOCOL_V2}}))
    program = encode_program(UUID_CALL, PROTOCOL_V2)
    response, _ = session(json.dumps({"id": 2, "method": "run", "params": {"programs": [program]}}))
    assert response["result"]["observed"] == [
        [{"x0": "0xb66fb428", "x1": "0xe911c52e", "x2": "0x564bcaa9", "x3": "0x743a004d"}]
    ]


# -- version 2 carries x1-x3 in hex and `results` as an integer ---------------------------

UUID_CALL = {"vcpus": 1, "features": ["psci-0.2"], "steps": [uid_call(results=4)]}
# A forwarded call whose guest passed 2**63 + 1 in x1: unsigned, unlike x0.
ANSWERED: dict[str, Any] = {"x0": -1, "x1": (1 << 63) + 1, "x2": 0, "x3": (1 << 64) - 1}
ANSWERED_WIRE = {"x0": "-0x1", "x1": "0x8000000000000001", "x2": "0x0"} | {
    "x3": "0xffffffffffffffff"
}


def test_version_2_writes_results_as_an_integer_and_x1_to_x3_in_hex() -> None:
    sent = encode_program(UUID_CALL, PROTOCOL_V2)
    assert sent["steps"] == [{"op": "call", "vcpu": 0, "function": "0x8600ff01", "results": 4}]
    assert decode_program(json.loads(json.dumps(sent)), PROTOCOL_V2) == UUID_CALL
    assert encode_outcome(ANSWERED, PROTOCOL_V2) == ANSWERED_WIRE
    assert decode_outcome(json.loads(json.dumps(ANSWERED_WIRE)), PROTOCOL_V2) == ANSWERED
    assert encode_outcome(ANSWERED, PROTOCOL_V1) == ANSWERED
    assert decode_outcome(ANSWERED, PROTOCOL_V1) == ANSWERED


def test_an_outcome_without_x1_is_written_as_before() -> None:
    assert encode_outcome({"x0": -1}, PROTOCOL_V2) == {"x0": "-0x1"}
    assert decode_outcome({"x0": "0xffffffffffffffff"}, PROTOCOL_V2) == {"x0": -1}


@pytest.mark.parametrize(
    ("outcome", "protocol", "error"),
    [
        (ANSWERED_WIRE | {"x1": 0xE911C52E}, PROTOCOL_V2, "x1: 3910255918 is not a hex string"),
        # signed like x0: x1-x3 are a UUID's words or the guest's arguments, never an error
        (ANSWERED_WIRE | {"x3": "-0x1"}, PROTOCOL_V2, "x3: '-0x1' is negative; only x0"),
        (ANSWERED | {"x3": -1}, PROTOCOL_V1, "x3: -1 is not an integer from 0"),
        (ANSWERED | {"x2": "0x0"}, PROTOCOL_V1, "x2: '0x0' is not an integer"),
    ],
    ids=["v2-integer", "v2-signed", "v1-negative", "v1-hex"],
)
def test_a_register_written_against_its_version_is_refused_by_name(
    outcome: dict[str, Any], protocol: str, error: str
) -> None:
    with pytest.raises(WireError, match=error):
        decode_outcome(outcome, protocol)


def test_results_written_in_hex_on_version_2_is_the_step_s_error() -> None:
    """decode_program leaves `results` alone (it is not a 64-bit number), so "0x4" reaches
    the executor, which refuses it by name."""
    step = {"op": "call", "vcpu": 0, "function": "0x8600ff01", "results": "0x4"}
    wire = {**UUID_CALL, "steps": [step]}
    program = decode_program(wire, PROTOCOL_V2)
    assert program["steps"][0]["results"] == "0x4"
    observed, _ = run_calls(*program["steps"])
    assert observed == [{"error": 'results "0x4" is not a number from 1 to 4'}]


# -- the results schema records `results` ------------------------------------------------

WIRE_UID_CALL = {"op": "call", "vcpu": 0, "function": "0x8600ff01"}


def test_the_results_schema_takes_a_call_with_results() -> None:
    assert schema_errors(recorded_case([WIRE_UID_CALL | {"results": 4}])) == []
    assert schema_errors(recorded_case([WIRE_UID_CALL | {"results": 1}])) == []


@pytest.mark.parametrize(
    ("results", "message"),
    [
        ("0x4", "'0x4' is not of type 'integer'"),
        (0, "0 is less than the minimum of 1"),
        (5, "5 is greater than the maximum of 4"),
    ],
    ids=["hex-string", "zero", "five"],
)
def test_the_results_schema_refuses_a_results_outside_1_to_4(results: Any, message: str) -> None:
    assert schema_errors(recorded_case([WIRE_UID_CALL | {"results": results}])) == [message]


# -- kvm_ioctl reads x1-x3 with KVM_GET_ONE_REG at the exit that carries x0 ---------------


@pytest.fixture
def kvm_ioctls(monkeypatch: pytest.MonkeyPatch) -> Ioctls:
    return recorded_ioctls(monkeypatch)


@pytest.fixture
def watchdog(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    return unarmed_watchdog(monkeypatch)


KVM_ANSWERS = dict(zip(X1_TO_X3, KVM_UID[1:], strict=True))


def test_the_core_register_ids_of_x1_to_x3_are_the_generated_constants() -> None:
    """The ids KVM documents are arm64 | u64 | core | word offset; a word offset of i (not
    2 * i) would name the upper half of x(i - 1), which KVM refuses (EINVAL)."""
    first, count = abi.CORE_REGISTER_WORDS["x"]
    derived = tuple(abi.CORE_REGISTER_BASE + first + 2 * i for i in (1, 2, 3))
    assert derived == X1_TO_X3 and count == 31
    assert tuple(abi.CORE_REGISTER_BASE + first + i for i in (1, 2, 3)) != X1_TO_X3


def test_x1_to_x3_are_read_after_the_mmio_exit_that_carries_x0(
    kvm_ioctls: Ioctls, watchdog: list[str]
) -> None:
    kernel = ForwardingVcpu(["answered"], answers=KVM_ANSWERS)
    outcome = kvm_call(kvm_ioctls, kernel, 0, watchdog, results=4)
    assert outcome == {"x0": KVM_ANSWER} | {"x1": 0xE911C52E, "x2": 0x564BCAA9, "x3": 0x743A004D}
    assert kernel.events[-4:] == ["run answered", *(f"get {i:#x}" for i in X1_TO_X3)]
    reads = [r for _, r, _, _ in kvm_ioctls if r == abi.Ioctl.KVM_GET_ONE_REG]
    assert len(reads) == 3 and watchdog[-1] == "disarm"  # read with the vcpu stopped


def test_results_reads_only_the_registers_it_asks_for(
    kvm_ioctls: Ioctls, watchdog: list[str]
) -> None:
    kernel = ForwardingVcpu(["answered"], answers=KVM_ANSWERS)
    assert kvm_call(kvm_ioctls, kernel, 0, watchdog, results=2) == {
        "x0": KVM_ANSWER,
        "x1": 0xE911C52E,
    }
    assert kernel.events[-1] == f"get {X1_TO_X3[0]:#x}"


def test_results_1_reads_no_register_and_the_outcome_is_x0_alone(
    kvm_ioctls: Ioctls, watchdog: list[str]
) -> None:
    kernel = ForwardingVcpu(["answered"], answers=KVM_ANSWERS)
    assert kvm_call(kvm_ioctls, kernel, 0, watchdog) == {"x0": KVM_ANSWER}
    assert [r for _, r, _, _ in kvm_ioctls if r == abi.Ioctl.KVM_GET_ONE_REG] == []


def test_a_forwarded_call_reports_x1_to_x3_as_the_guest_passed_them(
    kvm_ioctls: Ioctls, watchdog: list[str]
) -> None:
    """This side, the VMM, answers x0 only: after the second run x1 and x2 still hold the
    guest's arguments, read after that run's exit and not after the first."""
    kernel = ForwardingVcpu(["hypercall", "mmio"])
    args = ((1 << 63) + 1, 7)
    outcome = kvm_call(kvm_ioctls, kernel, 0x10001, watchdog, results=3, args=args)
    assert outcome == {
        "x0": 0x10001,
        "x1": (1 << 63) + 1,  # unsigned, unlike x0
        "x2": 7,
        "hypercall": PSCI_VERSION_SMC32,
        "hypercall-flags": 0,
    }
    assert kernel.events[-5:] == [
        "run hypercall",
        f"set {X0:#x}=0x10001",
        "run mmio",
        f"get {X1_TO_X3[0]:#x}",
        f"get {X1_TO_X3[1]:#x}",
    ]


def test_a_register_kvm_will_not_read_is_the_call_s_error(
    kvm_ioctls: Ioctls, watchdog: list[str]
) -> None:
    kernel = ForwardingVcpu(["answered"], get_errno=errno.EFAULT)
    with pytest.raises(OSError, match=r"^reading x1 after the call failed with EFAULT$"):
        kvm_call(kvm_ioctls, kernel, 0, watchdog, results=4)
    kernel = ForwardingVcpu(["hypercall", "mmio"], get_errno=errno.EINVAL)
    with pytest.raises(OSError, match=r"^reading x1 after the call failed with EINVAL$"):
        kvm_call(kvm_ioctls, kernel, 0, watchdog, results=2)


def test_a_call_that_does_not_return_to_the_guest_reads_no_register(
    kvm_ioctls: Ioctls, watchdog: list[str]
) -> None:
    """PSCI SYSTEM_OFF exits with a system event: the guest never got x0, nor x1-x3."""
    kernel = ForwardingVcpu(["shutdown"])
    assert kvm_call(kvm_ioctls, kernel, 0, watchdog, results=4) == {"exit": "shutdown"}
    assert not any(e.startswith("get") for e in kernel.events)


def test_a_system_event_s_flags_are_reported_when_set(
    kvm_ioctls: Ioctls, watchdog: list[str]
) -> None:
    """PSCI SYSTEM_RESET2 exits with a RESET event flagged KVM_SYSTEM_EVENT_RESET_FLAG_PSCI_RESET2
    (run->system_event.flags); SYSTEM_RESET's has none, and its outcome stays as it was."""
    flagged = ForwardingVcpu(["reset"], flags=abi_flag("psci-reset2"))
    assert kvm_call(kvm_ioctls, flagged, 0, watchdog) == {"exit": "reset", "flags": 1}
    plain = ForwardingVcpu(["reset"], flags=0)
    assert kvm_call(kvm_ioctls, plain, 0, watchdog) == {"exit": "reset"}


def abi_flag(name: str) -> int:
    return next(f.value for f in load_spec().system_event_flags if f.name == name)


def test_the_flags_of_an_exit_travel_in_hex_on_version_2() -> None:
    outcome = {"exit": "shutdown", "flags": 1}
    assert encode_outcome(outcome, PROTOCOL_V2) == {"exit": "shutdown", "flags": "0x1"}
    assert decode_outcome({"exit": "shutdown", "flags": "0x1"}, PROTOCOL_V2) == outcome
    with pytest.raises(WireError, match="flags"):
        decode_outcome({"exit": "shutdown", "flags": 1}, PROTOCOL_V2)


# -- the Node agent relays `results` and x1-x3 -------------------------------------------

# A version-1 implementation for the Node agent to relay to: each call step is answered with
# x1-x3 as `X1`, 2**64 - 1 and the `results` it received (so an agent that converted the
# field would show it), other steps with {"ok": true}.
ECHO_IMPLEMENTATION = """\
import json, sys
X1 = int(sys.argv[1])
for line in sys.stdin:
    request = json.loads(line)
    if request["method"] == "hello":
        answer = {"protocol": "kvm-fwspec-agent/1", "implementation": "echo", "kernel": "6.12"}
    elif request["method"] == "run":
        observed = [
            [
                {"x0": -1, "x1": X1, "x2": 2**64 - 1, "x3": step.get("results")}
                if step["op"] == "call" else {"ok": True}
                for step in program["steps"]
            ]
            for program in request["params"]["programs"]
        ]
        answer = {"observed": observed, "elapsed": 0.0}
    else:
        answer = {}
    print(json.dumps({"id": request["id"], "result": answer}), flush=True)
"""


def node_relay(tmp_path: Path, x1: int) -> list[Any]:
    echo = tmp_path / "echo.py"
    echo.write_text(ECHO_IMPLEMENTATION)
    program = encode_program(UUID_CALL, PROTOCOL_V2)
    answers, stderr, status = converse(
        agent_argv("6.12", child=[sys.executable, str(echo), str(x1)]),
        [
            request(1, "hello", {"protocol": PROTOCOL_V2}),
            request(2, "run", {"programs": [program]}),
        ],
    )
    assert status == 0, stderr
    return list(answers[1]["result"]["observed"][0])


@pytest.mark.tools
def test_the_node_agent_passes_results_on_and_writes_x1_to_x3_in_hex(tmp_path: Path) -> None:
    observed = node_relay(tmp_path, (1 << 63) + 1)
    assert observed == [
        {"x0": "-0x1", "x1": "0x8000000000000001", "x2": "0xffffffffffffffff", "x3": "0x4"}
    ]


@pytest.mark.tools
def test_the_node_agent_refuses_a_signed_x1_from_its_implementation(tmp_path: Path) -> None:
    reason = "the reference agent answered a number out of range: x1 -1"
    assert node_relay(tmp_path, -1) == [{"error": reason}]
