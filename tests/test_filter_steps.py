"""The SMCCC filter's side of the agent protocol (docs/agent-protocol.md): the VM steps
`smccc-filter` and `has-attr` and a `call`'s `answer` are checked field by field, carried in
hex by version 2 with the outcome's `hypercall` and `hypercall-flags`, recorded by the results
schema, and laid out by the real-KVM agent as struct kvm_smccc_filter and struct
kvm_device_attr are. No /dev/kvm here: the kvm_ioctl tests replace fcntl.ioctl, the one
boundary between the agent and the kernel, with a recorder that reads what KVM would read."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import signal
import struct
from collections.abc import Callable
from typing import Any

import jsonschema
import pytest

from kvm_fwspec.codegen.generated import kvm_fw_constants as abi
from kvm_fwspec.conformance import cases
from kvm_fwspec.conformance.guest import agent, kvm_ioctl
from kvm_fwspec.conformance.guest.agent import Session
from kvm_fwspec.conformance.guest.program import execute
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
from kvm_fwspec.conformance.results import SCHEMA_PATH
from kvm_fwspec.reference_impl.kvm import ReferenceKvm
from kvm_fwspec.spec.loader import load_spec
from tests.checkout import ROOT

SPEC = load_spec()
FILTER = SPEC.smccc_filter
PSCI_VERSION_SMC32 = 0x84000000
GROUP, ATTRIBUTE = abi.SMCCC_FILTER_ATTRIBUTE
FORWARD: dict[str, Any] = {"op": "smccc-filter", "base": PSCI_VERSION_SMC32, "nr-functions": 1}
FORWARD |= {"action": int(abi.SmcccFilterAction.FWD_TO_USER), "pad": 0}


# -- the steps' fields, as the executor checks them ---------------------------------------

BROKEN_STEPS: dict[str, tuple[dict[str, Any], str]] = {
    "action-beyond-a-byte": (
        FORWARD | {"action": 0x102},
        "action 0x102 is not a number from 0 to 0xff",
    ),
    "answer-written-signed": (  # NOT_SUPPORTED as the guest reads it, not as x0 holds it
        {"op": "call", "vcpu": 0, "function": PSCI_VERSION_SMC32, "answer": -1},
        "answer -0x1 is not a number from 0 to 0xffffffffffffffff",
    ),
    "base-beyond-32-bits": (
        FORWARD | {"base": 0xC4000000_00000000},
        "base 0xc400000000000000 is not a number from 0 to 0xffffffff",
    ),
    "call-without-vcpu": (
        {"op": "call", "function": PSCI_VERSION_SMC32},
        "a call step needs vcpu, one of 0 to 1",
    ),
    "has-attr-without-attr": ({"op": "has-attr", "group": GROUP}, "a has-attr step needs attr"),
    "smccc-filter-without-pad": (
        {k: v for k, v in FORWARD.items() if k != "pad"},
        "a smccc-filter step needs pad",
    ),
}


@pytest.mark.parametrize("broken", sorted(BROKEN_STEPS))
def test_a_filter_step_without_its_fields_is_its_error(broken: str) -> None:
    step, error = BROKEN_STEPS[broken]
    program = {"vcpus": 2, "features": ["psci-0.2"], "steps": [step, {"op": "run", "vcpu": 0}]}
    assert execute(ReferenceKvm("6.12", "mitigated"), program) == [
        {"error": error},
        {"error": "not run"},
    ]


def test_the_vm_steps_name_no_vcpu_and_a_forwarded_call_is_answered() -> None:
    program = {
        "vcpus": 2,
        "features": ["psci-0.2"],
        "steps": [
            {"op": "has-attr", "group": GROUP, "attr": ATTRIBUTE},
            FORWARD,
            {"op": "call", "vcpu": 1, "function": PSCI_VERSION_SMC32, "answer": 0x10001},
        ],
    }
    assert execute(ReferenceKvm("6.12", "mitigated"), program) == [
        {"ok": True},
        {"ok": True},
        {"x0": 0x10001, "hypercall": PSCI_VERSION_SMC32, "hypercall-flags": 0},
    ]


# -- version 2 carries every new number in hex ------------------------------------------

FILTER_PROGRAM: dict[str, Any] = {
    "vcpus": 1,
    "features": ["psci-0.2"],
    "steps": [
        {"op": "has-attr", "group": 0, "attr": 0xFFFFFFFF_FFFFFFFF},
        FORWARD | {"pad": 1 << 63},
        {"op": "call", "vcpu": 0, "function": PSCI_VERSION_SMC32, "answer": 1 << 63},
    ],
}
FILTER_WIRE: list[dict[str, Any]] = [
    {"op": "has-attr", "group": "0x0", "attr": "0xffffffffffffffff"},
    {"op": "smccc-filter", "base": "0x84000000", "nr-functions": "0x1", "action": "0x2"}
    | {"pad": "0x8000000000000000"},
    {"op": "call", "vcpu": 0, "function": "0x84000000", "answer": "0x8000000000000000"},
]
FORWARDED: dict[str, Any] = {
    "x0": -(1 << 63),
    "hypercall": PSCI_VERSION_SMC32,
    "hypercall-flags": 3,
}


def test_version_2_writes_the_filter_steps_numbers_in_hex_and_reads_them_back() -> None:
    sent = encode_program(FILTER_PROGRAM, PROTOCOL_V2)
    assert sent["steps"] == FILTER_WIRE
    assert decode_program(json.loads(json.dumps(sent)), PROTOCOL_V2) == FILTER_PROGRAM


def test_version_2_writes_a_forwarded_call_s_outcome_in_hex_and_reads_it_back() -> None:
    sent = encode_outcome(FORWARDED, PROTOCOL_V2)
    assert sent == {"x0": "-0x8000000000000000", "hypercall": "0x84000000"} | {
        "hypercall-flags": "0x3"
    }
    assert decode_outcome(sent, PROTOCOL_V2) == FORWARDED
    assert decode_outcome(FORWARDED, PROTOCOL_V1) == FORWARDED


def test_a_filter_number_written_as_an_integer_on_version_2_is_refused_by_name() -> None:
    wire = {**FILTER_PROGRAM, "steps": [FILTER_WIRE[0], FILTER_WIRE[1] | {"nr-functions": 1}]}
    with pytest.raises(WireError, match=r"step 1: nr-functions: 1 is not a hex string"):
        decode_program(wire, PROTOCOL_V2)
    with pytest.raises(WireError, match=r"hypercall: 2214592512 is not a hex string"):
        decode_outcome({"x0": "0x0", "hypercall": PSCI_VERSION_SMC32}, PROTOCOL_V2)
    with pytest.raises(WireError, match=r"hypercall-flags: '0x0' is not an integer"):
        decode_outcome({"x0": 0, "hypercall-flags": "0x0"}, PROTOCOL_V1)


def test_the_reference_agent_runs_a_filter_program_over_version_2() -> None:
    session = Session(reference_served({"kernel": "6.12", "host": "mitigated"}))
    session(json.dumps({"id": 1, "method": "hello", "params": {"protocol": PROTOCOL_V2}}))
    program = {**FILTER_PROGRAM, "steps": [FILTER_WIRE[0], FILTER_WIRE[1] | {"pad": "0x0"}]}
    program["steps"].append(FILTER_WIRE[2] | {"answer": "0x10001"})
    response, _ = session(json.dumps({"id": 2, "method": "run", "params": {"programs": [program]}}))
    assert response["result"]["observed"] == [
        [
            {"errno": "ENXIO"},  # the filter's attribute is (0, 0), not (0, 2**64 - 1)
            {"ok": True},
            {"x0": "0x10001", "hypercall": "0x84000000", "hypercall-flags": "0x0"},
        ]
    ]


# -- the features a real-KVM agent offers -----------------------------------------------

SUITE_FEATURES = (cases.REQUIRES_GUEST, cases.REQUIRES_PSCI_01, cases.REQUIRES_FILTER)


def unserved(features: list[str]) -> list[str]:
    """What the suite requires of an agent that these features lack."""
    return sorted(set(SUITE_FEATURES) - set(features))


def test_the_real_kvm_agent_offers_every_feature_the_suite_requires(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """kvm_served's hello, with the machine's KVM left out: what it offers is the suite's
    vocabulary (the guest package cannot import conformance.cases, so it spells them)."""

    class Host:
        def __init__(self, device: str) -> None:
            self.device = device

        def kvm_capabilities(self) -> dict[str, int]:
            return {}

    monkeypatch.setattr(agent, "check_kvm_host", lambda device, machine: None)
    monkeypatch.setattr(agent, "KvmHost", Host)
    monkeypatch.setattr(agent, "host_levels", lambda host: {})
    monkeypatch.setattr(agent, "host_cpu", lambda: None)
    features = agent.kvm_served({}).hello["features"]
    assert unserved(features) == []
    assert cases.REQUIRES_FILTER in features
    assert unserved(["guest-calls", "psci-0.1-vcpus"]) == ["smccc-filter"]


def test_the_protocol_doc_lists_every_feature_the_real_kvm_agent_offers() -> None:
    text = (ROOT / "docs" / "agent-protocol.md").read_text(encoding="utf-8")
    table = text.split("| feature | meaning |", 1)[1].split("\n\n", 1)[0]
    listed = [row.split("`")[1] for row in table.splitlines() if row.startswith("| `")]
    assert [f for f in agent.KVM_FEATURES if f not in listed] == []


# -- the results schema records the filter's steps --------------------------------------

SCHEMA = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
CASE_SCHEMA = {**SCHEMA["properties"]["cases"]["items"], "$defs": SCHEMA["$defs"]}


def recorded_case(steps: list[dict[str, Any]]) -> dict[str, Any]:
    program = {"vcpus": 2, "features": ["psci-0.2"], "steps": steps}
    return {
        "id": "smccc-filter.call.forward.psci-version",
        "rule": "smccc-filter/call/forward",
        "scenario": "psci-0.2",
        "program": program,
        "outcome": "pass",
        "expected": [{"ok": True}, FORWARDED],
        "observed": [{"ok": True}, FORWARDED],
        "duration": 0.001,
        "reason": "",
    }


def schema_errors(record: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft202012Validator(CASE_SCHEMA)
    return sorted(e.message for e in validator.iter_errors(record))


def test_the_results_schema_takes_a_filter_case() -> None:
    assert schema_errors(recorded_case(FILTER_WIRE)) == []


OPS = (
    "['get', 'set', 'list', 'run', 'mp-state', 'call', 'smccc-filter', 'has-attr', 'enable-cap', "
    "'set-vcpu-attr', 'get-vcpu-attr']"
)
MALFORMED_STEPS: dict[str, tuple[dict[str, Any], list[str]]] = {
    "base-as-integer": (
        FILTER_WIRE[1] | {"base": PSCI_VERSION_SMC32},
        ["2214592512 is not of type 'string'"],
    ),
    "call-without-vcpu": (
        {"op": "call", "function": "0x84000000"},
        ["'vcpu' is a required property"],
    ),
    "filter-without-pad": (
        {k: v for k, v in FILTER_WIRE[1].items() if k != "pad"},
        ["'pad' is a required property"],
    ),
    "has-attr-named-as-the-struct": (  # struct kvm_device_attr's name of the field
        {"op": "has-attr", "group": "0x0", "attribute": "0x0"},
        [
            "'attr' is a required property",
            "Additional properties are not allowed ('attribute' was unexpected)",
        ],
    ),
    "unknown-op": ({"op": "smccc-ctrl", "group": "0x0"}, [f"'smccc-ctrl' is not one of {OPS}"]),
}


@pytest.mark.parametrize("malformed", sorted(MALFORMED_STEPS))
def test_the_results_schema_refuses_a_malformed_filter_step(malformed: str) -> None:
    step, messages = MALFORMED_STEPS[malformed]
    assert schema_errors(recorded_case([step])) == sorted(messages)


def test_the_results_schema_takes_the_filter_s_rule_ids_and_no_other_op() -> None:
    for rule in FILTER.rules:
        assert schema_errors(recorded_case(FILTER_WIRE) | {"rule": rule.id}) == []
    wrong = schema_errors(recorded_case(FILTER_WIRE) | {"rule": "smccc-filter/forward/psci"})
    assert len(wrong) == 1 and "does not match" in wrong[0]


# -- kvm_ioctl lays the structs out as KVM reads them -----------------------------------


def spec_fields(data: bytes) -> dict[str, int]:
    """struct kvm_smccc_filter read by the spec's own field table, little-endian."""
    assert len(data) == FILTER.struct_size
    return {
        f.name: int.from_bytes(data[f.offset : f.offset + f.size], "little") for f in FILTER.fields
    }


def test_a_filter_is_packed_at_the_spec_s_offsets() -> None:
    data = kvm_ioctl.smccc_filter(0xC4000000, 0x20, 2, 0x0102030405060708)
    assert spec_fields(data) == {
        "base": 0xC4000000,
        "nr-functions": 0x20,
        "action": 2,
        "pad": 0x0102030405060708,
    }
    assert data[9:] == bytes([8, 7, 6, 5, 4, 3, 2, 1]) + bytes(7)  # pad's first 8 bytes


def test_a_filter_packed_otherwise_reads_as_another_range() -> None:
    """What the field table catches: the struct written big-endian, and the action aligned
    to 4 bytes (after a u32 pad word), as a hand-written struct format might do."""
    big_endian = struct.pack(">IIB15x", 0xC4000000, 0x20, 2)
    aligned = struct.pack("<II4xB11x", 0xC4000000, 0x20, 2)
    assert spec_fields(big_endian)["base"] == 0xC4
    assert spec_fields(aligned)["action"] == 0
    assert spec_fields(aligned)["pad"] == 2 << 24


Kernel = Callable[[int, int, Any], Any]  # (fd, request, arg) -> what the test keeps of it


class Ioctls(list[tuple[int, int, bytes, Any]]):
    """Every fcntl.ioctl made, as (fd, request, the argument's bytes, what `kernel` gave);
    `kernel` plays KVM: it raises OSError for an errno, or reads and writes the argument."""

    def __init__(self) -> None:
        super().__init__()
        self.kernel: Kernel = lambda fd, request, arg: None


@pytest.fixture
def kvm_ioctls(monkeypatch: pytest.MonkeyPatch) -> Ioctls:
    return recorded_ioctls(monkeypatch)


def recorded_ioctls(monkeypatch: pytest.MonkeyPatch) -> Ioctls:
    """fcntl.ioctl replaced by an Ioctls recorder (the kvm_ioctls fixture, for other files)."""
    calls = Ioctls()

    def ioctl(fd: int, request: int, arg: Any = 0, mutate: bool = True) -> int:
        data = bytes(arg) if isinstance(arg, bytearray | bytes) else b""
        calls.append((fd, int(request), data, None))  # made, even if KVM refuses it
        calls[-1] = (fd, int(request), data, calls.kernel(fd, request, arg))
        return 0

    monkeypatch.setattr(fcntl, "ioctl", ioctl)
    return calls


def fake_vm(fd: int) -> kvm_ioctl.KvmVm:
    """A KvmVm whose descriptor is `fd`, with no VM behind it: only the ioctl boundary."""
    vm = object.__new__(kvm_ioctl.KvmVm)
    vm.fd = fd
    vm.vcpus = []
    return vm


def read_filter(fd: int, request: int, arg: Any) -> tuple[tuple[int, ...], bytes]:
    """What KVM reads: the device attribute, and the 24 bytes at its addr."""
    fields = kvm_ioctl.KVM_DEVICE_ATTR.unpack(bytes(arg))
    return fields, ctypes.string_at(fields[3], FILTER.struct_size)


def test_set_smccc_filter_points_kvm_at_the_packed_filter(kvm_ioctls: Ioctls) -> None:
    kvm_ioctls.kernel = read_filter
    assert fake_vm(7).set_smccc_filter(PSCI_VERSION_SMC32, 0x20, 1, 0) is None
    [(fd, request, _, (attr, data))] = kvm_ioctls
    assert (fd, request) == (7, abi.Ioctl.KVM_SET_DEVICE_ATTR)
    flags, group, attribute, address = attr
    assert (flags, group, attribute) == (0, GROUP, ATTRIBUTE) and address != 0
    assert spec_fields(data) == {"base": PSCI_VERSION_SMC32, "nr-functions": 0x20} | {
        "action": 1,
        "pad": 0,
    }


def refusing(code: int) -> Kernel:
    def ioctl(fd: int, request: int, arg: Any) -> None:
        raise OSError(code, os.strerror(code))

    return ioctl


@pytest.mark.parametrize("code", [errno.EEXIST, errno.EINVAL, errno.EBUSY])
def test_set_smccc_filter_answers_kvm_s_errno_by_name(kvm_ioctls: Ioctls, code: int) -> None:
    kvm_ioctls.kernel = refusing(code)
    assert fake_vm(7).set_smccc_filter(0, 0, 0, 0) == errno.errorcode[code]


def test_has_attribute_asks_for_the_attribute_it_is_given(kvm_ioctls: Ioctls) -> None:
    vm = fake_vm(9)
    assert vm.has_attribute(GROUP, ATTRIBUTE) is None
    kvm_ioctls.kernel = refusing(errno.ENXIO)
    assert vm.has_attribute(GROUP, 1) == "ENXIO"
    sent = [(fd, r, kvm_ioctl.KVM_DEVICE_ATTR.unpack(d)) for fd, r, d, _ in kvm_ioctls]
    assert sent == [
        (9, abi.Ioctl.KVM_HAS_DEVICE_ATTR, (0, GROUP, ATTRIBUTE, 0)),
        (9, abi.Ioctl.KVM_HAS_DEVICE_ATTR, (0, GROUP, 1, 0)),
    ]


@pytest.mark.parametrize(
    ("code", "reported"), [(None, 1), (errno.ENXIO, 0), (errno.EINVAL, 0)],
    ids=["6.4-and-later", "unknown-attribute", "before-6.4"],
)  # fmt: skip
def test_the_filter_capability_is_whether_a_fresh_vm_has_the_attribute(
    kvm_ioctls: Ioctls, code: int | None, reported: int
) -> None:
    assert capabilities(kvm_ioctls, code)["arm-vm-smccc-filter"] == reported


def test_an_errno_that_is_no_answer_about_the_attribute_is_raised(kvm_ioctls: Ioctls) -> None:
    with pytest.raises(OSError, match=r"KVM_HAS_DEVICE_ATTR \(0, 0\) failed with EFAULT"):
        capabilities(kvm_ioctls, errno.EFAULT)


def capabilities(kvm_ioctls: Ioctls, code: int | None) -> dict[str, int]:
    """KvmHost.kvm_capabilities on a KVM that has every host capability and answers the
    attribute question with `code` (None: success). The fresh VM's descriptor is /dev/null's,
    so that closing it closes a descriptor this test opened."""

    def kvm(fd: int, request: int, arg: Any) -> None:
        if request == abi.Ioctl.KVM_HAS_DEVICE_ATTR and code is not None:
            raise OSError(code, os.strerror(code))

    kvm_ioctls.kernel = kvm
    host = object.__new__(kvm_ioctl.KvmHost)
    host.fd = 3
    vm = fake_vm(os.open(os.devnull, os.O_RDONLY))
    host.create_vm = lambda: vm  # type: ignore[method-assign]
    return host.kvm_capabilities()


# -- a forwarded call: this side answers in x0 and runs the vcpu on ----------------------

MMIO = 0x1000_0040
KVM_ANSWER = 0x10002  # PSCI 1.2, as KVM answers PSCI_VERSION
X0 = abi.CORE_REGISTER_BASE + abi.CORE_REGISTER_WORDS["x"][0]


class ForwardingVcpu:
    """The kernel side of one vcpu, at the ioctl boundary: KVM_RUN exits as `exits` say, in
    turn (`hypercall` forwards the guest's x0 as the function id, with `flags`; `mmio` is the
    guest's store of x0; `answered` is KVM answering the call itself, in x0 and in the
    registers `answers` gives, then that store; `shutdown` is PSCI SYSTEM_OFF's system event),
    KVM_SET_ONE_REG writes the registers, read from the address its struct kvm_one_reg gives,
    and KVM_GET_ONE_REG writes one there: ENOENT for a register no ioctl has set (every
    register the guest's call uses is set before it runs), or `get_errno`'s errno."""

    def __init__(
        self,
        exits: list[str],
        flags: int = 0,
        answers: dict[int, int] | None = None,
        get_errno: int | None = None,
    ) -> None:
        self.exits = exits
        self.flags = flags
        self.answers = answers or {}
        self.get_errno = get_errno
        self.registers: dict[int, int] = {}
        self.run_area = bytearray(4096)
        self.events: list[str] = []

    def __call__(self, fd: int, request: int, arg: Any) -> None:
        if request == abi.Ioctl.KVM_SET_ONE_REG:
            reg_id, address = struct.unpack("<QQ", bytes(arg))
            self.registers[reg_id] = int.from_bytes(ctypes.string_at(address, 8), "little")
            self.events.append(f"set {reg_id:#x}={self.registers[reg_id]:#x}")
        elif request == abi.Ioctl.KVM_GET_ONE_REG:
            reg_id, address = struct.unpack("<QQ", bytes(arg))
            self.events.append(f"get {reg_id:#x}")
            if self.get_errno is not None:
                raise OSError(self.get_errno, os.strerror(self.get_errno))
            if reg_id not in self.registers:
                raise OSError(errno.ENOENT, os.strerror(errno.ENOENT))
            ctypes.memmove(address, self.registers[reg_id].to_bytes(8, "little"), 8)
        elif request == abi.Ioctl.KVM_RUN:
            exit_kind = self.exits.pop(0)
            self.events.append(f"run {exit_kind}")
            if exit_kind == "einval":
                raise OSError(errno.EINVAL, "Invalid argument")
            self.put("exit-reason", 0)
            if exit_kind == "answered":  # KVM's own answer, which the guest then stores
                self.registers |= {X0: KVM_ANSWER} | self.answers
                exit_kind = "mmio"
            if exit_kind in ("shutdown", "reset"):  # PSCI SYSTEM_OFF, or a RESET with `flags`
                self.put("exit-reason", abi.ExitReason.SYSTEM_EVENT)
                self.put("system-event-type", abi.SystemEvent[exit_kind.upper()])
                self.put("system-event-flags", self.flags if exit_kind == "reset" else 0)
            elif exit_kind == "hypercall":
                self.put("exit-reason", abi.ExitReason.HYPERCALL)
                self.put("hypercall-nr", self.registers[X0])
                self.put("hypercall-flags", self.flags)
            else:
                self.put("exit-reason", abi.ExitReason.MMIO)
                self.put("mmio-phys-addr", MMIO)
                self.put("mmio-is-write", 1)
                self.put("mmio-data", self.registers[X0])

    def put(self, field: str, value: int) -> None:
        offset, size = abi.KVM_RUN_FIELDS[field]
        self.run_area[offset : offset + size] = value.to_bytes(size, "little")


@pytest.fixture
def watchdog(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    return unarmed_watchdog(monkeypatch)


def unarmed_watchdog(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """signal.setitimer recorded, never armed: the tests do not depend on time."""
    armed: list[str] = []

    def setitimer(which: int, seconds: float, interval: float = 0.0) -> tuple[float, float]:
        armed.append("arm" if seconds else "disarm")
        return (0.0, 0.0)

    monkeypatch.setattr(signal, "setitimer", setitimer)  # as kvm_ioctl calls it
    return armed


def call(
    kvm_ioctls: Ioctls,
    kernel: ForwardingVcpu,
    answer: int,
    events: list[str],
    results: int = 1,
    args: tuple[int, ...] = (),
) -> Any:
    """KvmVcpu.call of PSCI_VERSION on a vcpu whose kernel side is `kernel`."""

    def recorded(fd: int, request: int, arg: Any) -> None:
        if request == abi.Ioctl.KVM_RUN:
            events.append("KVM_RUN")
        kernel(fd, request, arg)

    kvm_ioctls.kernel = recorded
    vm = fake_vm(5)
    vm.code_base, vm.mmio = 0x4000_0000, MMIO
    vcpu = object.__new__(kvm_ioctl.KvmVcpu)
    vcpu.vm, vcpu.fd, vcpu.run_area = vm, 6, kernel.run_area  # type: ignore[assignment]
    vcpu.value, vcpu.one_reg, vcpu.started = kvm_ioctl._Buffer(256), bytearray(16), False
    return vcpu.call(PSCI_VERSION_SMC32, list(args), answer, results)


def test_a_forwarded_call_is_answered_in_x0_and_the_vcpu_runs_on(
    kvm_ioctls: Ioctls, watchdog: list[str]
) -> None:
    kernel = ForwardingVcpu(["hypercall", "mmio"], flags=0)
    outcome = call(kvm_ioctls, kernel, 0xFFFFFFFF_FFFFFFFD, watchdog)
    assert outcome == {"x0": -3, "hypercall": PSCI_VERSION_SMC32, "hypercall-flags": 0}
    assert kernel.events[-3:] == ["run hypercall", f"set {X0:#x}=0xfffffffffffffffd", "run mmio"]
    # each KVM_RUN under the watchdog, the second one too
    assert watchdog == ["arm", "KVM_RUN", "disarm", "arm", "KVM_RUN", "disarm"]


def test_the_exit_flags_are_reported_as_kvm_sets_them(
    kvm_ioctls: Ioctls, watchdog: list[str]
) -> None:
    smc = next(f.value for f in FILTER.exit_flags if f.name == "smc")
    kernel = ForwardingVcpu(["hypercall", "mmio"], flags=smc)
    assert call(kvm_ioctls, kernel, 0, watchdog)["hypercall-flags"] == smc == 1


def test_a_call_kvm_answers_itself_has_no_hypercall_fields(
    kvm_ioctls: Ioctls, watchdog: list[str]
) -> None:
    kernel = ForwardingVcpu(["answered"])
    assert call(kvm_ioctls, kernel, 0x10001, watchdog) == {"x0": KVM_ANSWER}
    assert kernel.events[-1] == "run answered"  # and no answer of this side's in x0 after it


@pytest.mark.parametrize(
    ("exits", "error"),
    [
        (["hypercall", "hypercall"], "unexpected KVM_RUN exit reason 3"),
        (["hypercall", "einval"], "KVM_RUN after answering forwarded call 0x84000000: EINVAL"),
    ],
    ids=["forwarded-twice", "second-run-fails"],
)
def test_a_vcpu_that_does_not_go_on_after_the_answer_is_an_error(
    kvm_ioctls: Ioctls, watchdog: list[str], exits: list[str], error: str
) -> None:
    with pytest.raises((RuntimeError, OSError), match=error):
        call(kvm_ioctls, ForwardingVcpu(exits), 0, watchdog)


@pytest.mark.parametrize(
    ("step", "error"),
    [
        ({"op": "has-attr", "vcpu": 0, "group": 0, "attr": 0},
         "a has-attr step is made on the VM and names no vcpu"),
        ({"op": "call", "vcpu": 0, "function": 0x84000000, "args": [1, 2, 3, 4]},
         "args [1, 2, 3, 4] is not a list of at most 3 numbers (x1 to x3)"),
    ],
)  # fmt: skip
def test_a_vm_step_with_a_vcpu_or_a_call_with_four_args_is_refused(
    step: dict[str, Any], error: str
) -> None:
    """The agent used to carry these out, ignoring the vcpu or the fourth argument."""
    program = {"vcpus": 1, "features": ["psci-0.2"], "steps": [step]}
    assert execute(ReferenceKvm("6.12", "mitigated"), program) == [{"error": error}]
